#!/usr/bin/env python3
"""Forward goldens for the CPU backend of kernels/kernels.h, from PyTorch.

Run from the repository root with the Debian Python (python3-torch, numpy):

    /usr/bin/python3 tests/reference/make_kernel_goldens.py

It rewrites tests/fixtures/kernels/goldens.safetensors (committed, so the C
tests need no Python). The file is written by hand (struct + json) to the
safetensors layout, so the script needs no safetensors package; inputs come
from torch.manual_seed(0), so a rerun with the same torch leaves the file
unchanged. Every tensor is F32 and named OP/WHAT:

  gelu/x [67], gelu/out            F.gelu(x, approximate='tanh')
  silu/x [67], silu/out            F.silu
  layernorm/x [5,12], /out, /mean, /rstd
                                   F.layer_norm without affine, eps 1e-6;
                                   rstd = 1 / sqrt(biased var + eps)
  linear/x [7,12], /w [10,12], /b [10], /out, /out_nobias
                                   F.linear
  attention/qkv [2,5,36], /out [2,5,12], /lse [2,3,5]
                                   B 2, T 5, C 12, NH 3; q | k | v each
                                   [NH, HS] per token, written out below
  patchify/img [2,3,8,6], /w [8,3,2,2], /b [8], /out [2,12,8]
                                   F.conv2d(stride 2) then flatten(2).transpose(1, 2),
                                   as DiT's PatchEmbed
  unpatchify/tok [2,6,16], /img [2,4,4,6]
                                   DiT's unpatchify, c 4, p 2, h 2, w 3
  timestep/t [6], /dit [6,18], /diffusers [6,18]
                                   DiT's TimestepEmbedder.timestep_embedding and
                                   diffusers' get_timestep_embedding
                                   (flip_sin_to_cos=True, downscale_freq_shift=1),
                                   both written out from their definitions,
                                   dim 18, max_period 10000
  mse/pred [50], /target, /loss [1], /grad [50]
                                   F.mse_loss; grad of 0.5 * loss
  adamw/p0 [37], /g [3,37], /p1, /m1, /v1, /p3, /m3, /v3
                                   torch.optim.AdamW(lr 1e-3, betas (0.9, 0.999),
                                   eps 1e-8, weight_decay 0.01) after 1 and 3 steps
"""

import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "kernels", "goldens.safetensors")


def save_safetensors(path, tensors, metadata):
    """The safetensors layout: u64 header length, JSON header, data; tensors
    in name order, data offsets contiguous, header padded to 8 bytes."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].detach().numpy(), dtype="<f4")
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def dit_timestep_embedding(t, dim, max_period=10000):
    # DiT models.py, TimestepEmbedder.timestep_embedding
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def diffusers_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=True,
                                 downscale_freq_shift=1, scale=1, max_period=10000):
    # diffusers embeddings.py, get_timestep_embedding
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float32)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    return emb


def attention(qkv, NH):
    B, T, C3 = qkv.shape
    C = C3 // 3
    HS = C // NH
    # [B, T, 3, NH, HS] -> three [B, NH, T, HS]
    q, k, v = qkv.view(B, T, 3, NH, HS).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-1, -2) / math.sqrt(HS)
    lse = torch.logsumexp(s, dim=-1)
    out = torch.softmax(s, dim=-1) @ v
    return out.transpose(1, 2).reshape(B, T, C), lse


def main():
    torch.manual_seed(0)
    g = {}

    x = torch.randn(67) * 3
    g["gelu/x"], g["gelu/out"] = x, F.gelu(x, approximate="tanh")
    x = torch.randn(67) * 4
    g["silu/x"], g["silu/out"] = x, F.silu(x)

    # A large common offset: what a one-pass variance would get wrong.
    x = torch.randn(5, 12) * 2 + 3
    mean = x.mean(-1)
    var = x.var(-1, unbiased=False)
    g["layernorm/x"] = x
    g["layernorm/out"] = F.layer_norm(x, (12,), eps=1e-6)
    g["layernorm/mean"] = mean
    g["layernorm/rstd"] = 1.0 / torch.sqrt(var + 1e-6)

    x, w, b = torch.randn(7, 12), torch.randn(10, 12) * 0.3, torch.randn(10)
    g["linear/x"], g["linear/w"], g["linear/b"] = x, w, b
    g["linear/out"], g["linear/out_nobias"] = F.linear(x, w, b), F.linear(x, w)

    qkv = torch.randn(2, 5, 36) * 1.5
    g["attention/qkv"] = qkv
    g["attention/out"], g["attention/lse"] = attention(qkv, 3)

    img, w, b = torch.randn(2, 3, 8, 6), torch.randn(8, 3, 2, 2) * 0.3, torch.randn(8)
    g["patchify/img"], g["patchify/w"], g["patchify/b"] = img, w, b
    g["patchify/out"] = F.conv2d(img, w, b, stride=2).flatten(2).transpose(1, 2)

    # DiT's unpatchify with h != w, so a swapped h and w cannot pass.
    c, p, h, w_ = 4, 2, 2, 3
    tok = torch.randn(2, h * w_, p * p * c)
    x = tok.reshape(2, h, w_, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    g["unpatchify/tok"] = tok
    g["unpatchify/img"] = x.reshape(2, c, h * p, w_ * p)

    t = torch.tensor([0.0, 1.0, 17.5, 250.0, 500.25, 999.0])
    g["timestep/t"] = t
    g["timestep/dit"] = dit_timestep_embedding(t, 18)
    g["timestep/diffusers"] = diffusers_timestep_embedding(t, 18)

    pred, target = torch.randn(50), torch.randn(50)
    pred.requires_grad_(True)
    loss = F.mse_loss(pred, target)
    (0.5 * loss).backward()
    g["mse/pred"], g["mse/target"] = pred.detach().clone(), target
    g["mse/loss"], g["mse/grad"] = loss.detach().reshape(1), pred.grad.clone()

    p0, grads = torch.randn(37), torch.randn(3, 37)
    param = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([param], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    g["adamw/p0"], g["adamw/g"] = p0, grads
    for step in range(3):
        param.grad = grads[step].clone()
        opt.step()
        if step in (0, 2):
            st = opt.state[param]
            k = step + 1
            g[f"adamw/p{k}"] = param.detach().clone()
            g[f"adamw/m{k}"] = st["exp_avg"].clone()
            g[f"adamw/v{k}"] = st["exp_avg_sq"].clone()

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, g, {"format": "dit kernel goldens",
                              "producer": "tests/reference/make_kernel_goldens.py",
                              "torch": torch.__version__})
    print(f"wrote {os.path.relpath(OUT)}: {len(g)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
