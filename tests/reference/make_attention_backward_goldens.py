#!/usr/bin/env python3
"""Goldens for k_attention_bias_backward (kernels/kernels.h): the gradients
of attention with an additive bias and a key mask, by torch autograd in
float64.

Run from the repository root with the reference environment (torch 2.15,
safetensors):

    /work/refenv/bin/python tests/reference/make_attention_backward_goldens.py

It rewrites tests/fixtures/attention_backward/goldens.safetensors (committed,
so the C tests need no Python), written by hand to the safetensors layout as
make_t5_op_goldens.py writes its file, then read back with the safetensors
package and compared. Inputs come from torch.manual_seed(0) and are rounded
to float32; the attention and its gradients are then computed in float64 on
them, so the goldens are exact (to ~1e-16) next to the C tests' float32
results. The math, per batch b, head h, query i, key j:

    s_ij = scale q_i . k_j + bias[h, i, j], -inf where key_mask[b, j] = 0
    P = softmax_j(s), out_i = sum_j P_ij v_j, lse_i = logsumexp_j(s_ij)

and a query with no attended key gets P = 0 (out = 0, lse = -inf: the op's
contract, where a plain softmax would give NaN). dq, dk, dv are autograd's
gradients of sum(out * dout) for a random dout; the bias gets none. Every
tensor is F32 and named GROUP/WHAT:

  self/qkv [2,7,144], /dout [2,7,48], /out, /lse [2,3,7], /dqkv [2,7,144]
        self-attention from one fused buffer, q | k | v per token (rows of
        3C: F-Lite's layout), 3 heads of 16, scale 1/sqrt(16), no bias, no
        mask; dqkv the gradients in the same layout (dq | dk | dv)
  self_long/qkv [1,70,48], /dout [1,70,16], /out, /lse [1,2,70], /dqkv
        the same with 70 tokens (more than the CPU's blocks of 64 queries,
        so dk and dv sum over two), 2 heads of 8, scale 1/sqrt(8) rounded to
        float32
  cross/q [2,11,32], /kv [2,5,64], /dout [2,11,32], /out, /lse [2,2,11],
  /dq [2,11,32], /dkv [2,5,64]
        cross-attention as F-Lite's: q from 11 image tokens (rows of C), k | v
        fused per text token (rows of 2C), Tq != Tk, 2 heads of 16, scale
        1/sqrt(16), no bias, no mask
  masked/qkv [3,8,48], /bias [2,8,8], /mask [3,8], /dout [3,8,16], /out,
  /lse [3,2,8], /dqkv
        fused self-attention, unscaled (T5's scale 1), a bias of spread 2, and
        a key mask: row 0 misses keys 2 and 5, row 1 attends nothing (zero
        gradients everywhere, lse -inf), row 2 is padded after 5 keys (so
        keys 5..7 get zero dk and dv)
  odd/q [2,19,24], /k [2,7,24], /v [2,7,24], /bias [2,19,7], /mask [2,7],
  /scale [1], /dout [2,19,24], /out, /lse [2,2,19], /dq, /dk, /dv
        Tq 19, Tk 7, 2 heads of 12 (not a power of two), scale 0.3, a bias,
        a mask with holes (row 0 misses key 3, row 1 keys 0 and 6); the C
        test lays q, k and v out at odd strides
"""

import json
import math
import os
import sys
import struct

import numpy as np
import torch
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import f32, save_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "attention_backward", "goldens.safetensors")


def attention(q, k, v, bias, mask, scale):
    """q [B, NH, Tq, HS], k and v [B, NH, Tk, HS], bias [NH, Tq, Tk] or None,
    mask [B, Tk] or None -> out [B, NH, Tq, HS], lse [B, NH, Tq]. A row with
    no attended key gets P = 0: its scores are replaced by zeros before the
    softmax (so autograd meets no -inf - -inf) and its probabilities
    multiplied by 0."""
    s = scale * (q @ k.transpose(-1, -2))
    if bias is not None:
        s = s + bias[None]
    if mask is not None:
        s = s.masked_fill(mask[:, None, None, :] == 0, -math.inf)
    any_key = torch.isfinite(s).any(-1, keepdim=True)
    p = torch.softmax(torch.where(any_key, s, torch.zeros_like(s)), dim=-1) * any_key
    lse = torch.logsumexp(s.detach(), dim=-1)
    return p @ v, lse


def case(g, group, q, k, v, bias, mask, scale):
    """The forward and the gradients for given [B, T, NH, HS] inputs (float64
    leaves); writes GROUP/dout, /out, /lse and returns dq, dk, dv as
    [B, T, C]."""
    B, Tq, NH, HS = q.shape
    heads = lambda t: t.transpose(1, 2)  # noqa: E731  [B, T, NH, HS] -> [B, NH, T, HS]
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out, lse = attention(heads(q), heads(k), heads(v), bias, mask, scale)
    out = out.transpose(1, 2).reshape(B, Tq, NH * HS)
    dout = f32(torch.randn_like(out))
    out.backward(dout)
    g[group + "/dout"] = dout
    g[group + "/out"] = out.detach()
    g[group + "/lse"] = lse
    flat = lambda t: t.grad.reshape(t.shape[0], t.shape[1], NH * HS)  # noqa: E731
    return flat(q), flat(k), flat(v)


def fused_self(g, group, B, T, NH, HS, scale, bias=None, mask=None):
    """Self-attention from one fused [B, T, 3C] buffer (q | k | v)."""
    C = NH * HS
    qkv = f32(torch.randn(B, T, 3 * C))
    split = lambda i: qkv[..., i * C:(i + 1) * C].reshape(B, T, NH, HS)  # noqa: E731
    dq, dk, dv = case(g, group, split(0), split(1), split(2), bias, mask, scale)
    g[group + "/qkv"] = qkv
    g[group + "/dqkv"] = torch.cat([dq, dk, dv], dim=-1)
    if bias is not None:
        g[group + "/bias"] = bias
    if mask is not None:
        g[group + "/mask"] = mask


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    g = {}

    fused_self(g, "self", 2, 7, 3, 16, 1.0 / math.sqrt(16))
    # the scale as the C test passes it, a float32
    fused_self(g, "self_long", 1, 70, 2, 8, float(np.float32(1.0 / math.sqrt(8))))

    # cross-attention: q of image tokens, a fused kv of text tokens
    B, Tq, Tk, NH, HS = 2, 11, 5, 2, 16
    C = NH * HS
    q = f32(torch.randn(B, Tq, C))
    kv = f32(torch.randn(B, Tk, 2 * C))
    dq, dk, dv = case(g, "cross", q.reshape(B, Tq, NH, HS), kv[..., :C].reshape(B, Tk, NH, HS),
                      kv[..., C:].reshape(B, Tk, NH, HS), None, None, 1.0 / math.sqrt(HS))
    g["cross/q"], g["cross/kv"] = q, kv
    g["cross/dq"], g["cross/dkv"] = dq, torch.cat([dk, dv], dim=-1)

    # a bias and a mask, one batch row attending nothing
    B, T, NH, HS = 3, 8, 2, 8
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[0, 2] = mask[0, 5] = 0
    mask[1, :] = 0
    mask[2, 5:] = 0
    fused_self(g, "masked", B, T, NH, HS, 1.0, bias=f32(torch.randn(NH, T, T) * 2), mask=mask)

    # odd sizes
    B, Tq, Tk, NH, HS = 2, 19, 7, 2, 12
    C = NH * HS
    q, k, v = f32(torch.randn(B, Tq, C)), f32(torch.randn(B, Tk, C)), f32(torch.randn(B, Tk, C))
    bias = f32(torch.randn(NH, Tq, Tk) * 2)
    mask = torch.ones(B, Tk, dtype=torch.float64)
    mask[0, 3] = 0
    mask[1, 0] = mask[1, 6] = 0
    scale = float(np.float32(0.3))
    dq, dk, dv = case(g, "odd", q.reshape(B, Tq, NH, HS), k.reshape(B, Tk, NH, HS),
                      v.reshape(B, Tk, NH, HS), bias, mask, scale)
    g["odd/q"], g["odd/k"], g["odd/v"], g["odd/bias"], g["odd/mask"] = q, k, v, bias, mask
    g["odd/scale"] = torch.tensor([scale], dtype=torch.float64)
    g["odd/dq"], g["odd/dk"], g["odd/dv"] = dq, dk, dv

    for name, t in g.items():
        finite = t[torch.isfinite(t)]
        assert finite.numel() == t.numel() or name.endswith("/lse"), name

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, g, {"format": "dit attention backward goldens",
                              "producer": "tests/reference/make_attention_backward_goldens.py",
                              "torch": torch.__version__})
    back = load_file(OUT)
    assert sorted(back) == sorted(g)
    for name, t in g.items():
        want = t.detach().numpy().astype(np.float32)
        assert back[name].shape == want.shape and np.array_equal(back[name], want), name
    print(f"wrote {os.path.relpath(OUT)}: {len(g)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
