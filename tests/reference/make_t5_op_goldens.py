#!/usr/bin/env python3
"""Forward goldens for the T5 text encoder's ops of kernels/kernels.h
(k_rmsnorm_forward, k_gated_gelu_forward, k_attention_bias_forward), from
transformers' own T5 modules.

Run from the repository root with the reference environment (torch 2.15,
transformers 5.24, safetensors):

    /work/refenv/bin/python tests/reference/make_t5_op_goldens.py

It rewrites tests/fixtures/t5_ops/goldens.safetensors (committed, so the C
tests need no Python), written by hand to the safetensors layout as
make_kernel_goldens.py writes its file, then read back with the safetensors
package and compared. Inputs come from torch.manual_seed(0) and are rounded to
float32; every module then runs in float64 on them, so the goldens are the
exact values (to ~1e-16) that the C tests' float32 results must come within
1e-5 of, free of PyTorch's own float32 rounding. Every tensor is F32 and
named GROUP/WHAT:

  rmsnorm/x [6,37], /w [37], /out, /out_noweight, /rstd [6]
        modeling_t5.T5LayerNorm(37, eps=1e-6) with weight w, and with its
        default weight of ones (plain RMS normalisation); rstd =
        1 / sqrt(mean(x^2) + eps). T5LayerNorm takes the mean of squares in
        float32 whatever its input's dtype, so out is within float32's
        rounding of that statistic.
  rmsnorm_wide/x [3,256], /w [256], /out
        the same with rows of 256 (whole vectors), mean 1.5, spread 3
  gated_gelu/inp [5,38], /out [5,19]
        T5DenseGatedActDense's activation on given pre-activations:
        ACT2FN["gelu_new"](inp[:, :19]) * inp[:, 19:], as one [M, 2F] input
        (wi_0 | wi_1), inp spread 3 so both tails are met
  attention_self/qkv [2,7,144], /bias [3,7,7], /mask [2,7], /out [2,7,48],
  /lse [2,3,7]
        modeling_t5.T5Attention (d_model 32, d_kv 16, 3 heads, relative
        attention bias with 32 buckets, max distance 128, eager attention,
        scale 1) run on random hidden states [2,7,32] with mask m (row 1
        padded after 4 tokens, row 0 missing token 2) passed as T5 passes it,
        (1 - m) * finfo.min; q, k, v are what its q, k, v Linears gave
        (written as one fused buffer, q | k | v per token, rows of 3C), bias
        the position_bias it computed, out the input of its o Linear, lse
        the log-sum-exp of q k^T + bias over the attended keys
  attention_long/qkv [1,70,48], /bias [2,70,70], /mask [1,70], /out [1,70,16],
  /lse [1,2,70]
        the same with d_kv 8, 2 heads, 70 tokens (more than the CPU's block of
        64 queries, and relative distances in the logarithmic buckets), the
        last 9 padded
  attention_cross/q [2,5,48], /kv [2,9,96], /bias [3,5,9], /mask [2,9],
  /scale [1], /out [2,5,48], /lse [2,3,5]
        modeling_t5.eager_attention_forward with scaling 1/sqrt(16) (the
        scaled variant), Tq 5 != Tk 9, q separate and k | v fused per key
        token (rows of 2C), a random bias of spread 2; batch row 1's mask is
        all zeros: there the op's contract gives zeros and lse = -inf (T5's
        additive mask would give the mean of v over every key), which is what
        is written for it
"""

import json
import math
import os
import sys
import struct

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import T5Config
from transformers.activations import ACT2FN
from transformers.models.t5 import modeling_t5

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import f32, save_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "t5_ops", "goldens.safetensors")


def rmsnorm(g, group, x, w, with_noweight):
    C = x.shape[-1]
    norm = modeling_t5.T5LayerNorm(C, eps=1e-6).double()
    g[group + "/x"] = x
    if with_noweight:
        g[group + "/out_noweight"] = norm(x)
        g[group + "/rstd"] = 1.0 / torch.sqrt((x * x).mean(-1) + 1e-6)
    with torch.no_grad():
        norm.weight.copy_(w)
    g[group + "/w"] = w
    g[group + "/out"] = norm(x)


def lse_of(q, k, bias, mask, scale):
    """log-sum-exp over the attended keys of scale q k^T + bias; q, k
    [B, NH, T, HS], bias [NH, Tq, Tk], mask [B, Tk]; -inf for a row with
    none."""
    s = scale * (q @ k.transpose(-1, -2)) + bias[None]
    s = s.masked_fill(mask[:, None, None, :] == 0, -math.inf)
    return torch.logsumexp(s, dim=-1)


def t5_self_attention(g, group, B, T, d_model, NH, HS, mask):
    """T5Attention's forward on random hidden states, its q, k, v, bias and
    pre-o output captured with hooks."""
    cfg = T5Config(d_model=d_model, d_kv=HS, num_heads=NH, relative_attention_num_buckets=32,
                   relative_attention_max_distance=128, dropout_rate=0.0, is_decoder=False)
    cfg._attn_implementation = "eager"
    att = modeling_t5.T5Attention(cfg, has_relative_attention_bias=True).double().eval()
    with torch.no_grad():
        for lin in (att.q, att.k, att.v, att.o):
            lin.weight.copy_(f32(torch.randn_like(lin.weight) * 0.3))
        att.relative_attention_bias.weight.copy_(
            f32(torch.randn_like(att.relative_attention_bias.weight) * 2))
    seen = {}
    att.q.register_forward_hook(lambda m, i, o: seen.__setitem__("q", o))
    att.k.register_forward_hook(lambda m, i, o: seen.__setitem__("k", o))
    att.v.register_forward_hook(lambda m, i, o: seen.__setitem__("v", o))
    att.o.register_forward_pre_hook(lambda m, i: seen.__setitem__("out", i[0]))
    x = f32(torch.randn(B, T, d_model))
    additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float64).min
    with torch.no_grad():
        _, position_bias, _ = att(x, mask=additive)
    # The C test reads q, k and v back from float32: the output must be the
    # one they give, so the attention core is rerun on the rounded values
    # (the same function T5Attention called) and checked against the first.
    q, k, v = (f32(seen[n]) for n in ("q", "k", "v"))
    bias = f32(position_bias[0])
    heads = lambda t: t.view(B, T, NH, HS).transpose(1, 2)  # noqa: E731
    out, _ = modeling_t5.eager_attention_forward(att, heads(q), heads(k), heads(v), additive,
                                                 scaling=1.0, position_bias=bias[None])
    out = out.reshape(B, T, NH * HS)
    assert torch.allclose(out, seen["out"], rtol=1e-5, atol=1e-6), "rounding moved the output"
    g[group + "/qkv"] = torch.cat([q, k, v], dim=-1)
    g[group + "/bias"] = bias
    g[group + "/mask"] = mask
    g[group + "/out"] = out
    g[group + "/lse"] = lse_of(heads(q), heads(k), bias, mask, 1.0)


def cross_attention(g, group, B, Tq, Tk, NH, HS, mask):
    C = NH * HS
    scale = 1.0 / math.sqrt(HS)
    q = f32(torch.randn(B, Tq, C))
    kv = f32(torch.randn(B, Tk, 2 * C))
    bias = f32(torch.randn(NH, Tq, Tk) * 2)
    heads = lambda t, n: t.view(B, n, NH, HS).transpose(1, 2)  # noqa: E731
    qh, kh, vh = heads(q, Tq), heads(kv[..., :C], Tk), heads(kv[..., C:], Tk)
    additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float64).min
    module = torch.nn.Module().eval()
    out, _ = modeling_t5.eager_attention_forward(module, qh, kh, vh, additive, scaling=scale,
                                                 position_bias=bias[None])
    out = out.reshape(B, Tq, C)
    lse = lse_of(qh, kh, bias, mask, scale)
    none = mask.sum(-1) == 0
    out[none] = 0.0  # the op's contract for a query with no attended key
    g[group + "/q"], g[group + "/kv"], g[group + "/bias"] = q, kv, bias
    g[group + "/mask"], g[group + "/scale"] = mask, torch.tensor([scale], dtype=torch.float64)
    g[group + "/out"], g[group + "/lse"] = out, lse


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    g = {}

    rmsnorm(g, "rmsnorm", f32(torch.randn(6, 37) * 2), f32(torch.randn(37) * 0.5 + 1), True)
    rmsnorm(g, "rmsnorm_wide", f32(torch.randn(3, 256) * 3 + 1.5), f32(torch.randn(256) * 0.5 + 1),
            False)

    F = 19
    inp = f32(torch.randn(5, 2 * F) * 3)
    g["gated_gelu/inp"] = inp
    g["gated_gelu/out"] = ACT2FN["gelu_new"](inp[:, :F]) * inp[:, F:]

    mask = torch.ones(2, 7, dtype=torch.float64)
    mask[0, 2] = 0
    mask[1, 4:] = 0
    t5_self_attention(g, "attention_self", 2, 7, 32, 3, 16, mask)
    mask = torch.ones(1, 70, dtype=torch.float64)
    mask[0, 61:] = 0
    t5_self_attention(g, "attention_long", 1, 70, 24, 2, 8, mask)

    mask = torch.ones(2, 9, dtype=torch.float64)
    mask[0, 3] = mask[0, 7] = 0
    mask[1, :] = 0
    cross_attention(g, "attention_cross", 2, 5, 9, 3, 16, mask)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    import transformers
    save_safetensors(OUT, g, {"format": "dit T5 op goldens",
                              "producer": "tests/reference/make_t5_op_goldens.py",
                              "torch": torch.__version__,
                              "transformers": transformers.__version__})
    back = load_file(OUT)
    assert sorted(back) == sorted(g)
    for name, t in g.items():
        want = t.detach().numpy().astype(np.float32)
        assert back[name].shape == want.shape and np.array_equal(back[name], want), name
    print(f"wrote {os.path.relpath(OUT)}: {len(g)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
