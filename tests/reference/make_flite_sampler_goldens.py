#!/usr/bin/env python3
"""Goldens for F-Lite's sampling loop (f_lite/pipeline.py, FLitePipeline.__call__
steps 3-6) with given starting latents: the Euler integration over the
alpha-shifted grid, classifier-free guidance as one batched [negative; positive]
pass, and APG, run with fal-ai/f-lite's own DiT from tests/fixtures/flite/rv_bias
(make_flite_goldens.py) in float64.

Run from the repository root with /work/refenv/bin/python and FLITE_SRC as for
make_flite_goldens.py. The loop below restates the pipeline's arithmetic (no
code of it is copied): for i = N..1, t = i/N and t' = (i-1)/N through
s(u) = a u / (1 + (a - 1) u), a = 2 sqrt(h w / 64^2) of the latent; the model at
s(t); x += (s(t) - s(t')) v. The negative condition is the zero embedding
(negative_prompt=None). Writes tests/fixtures/flite/sampler_golden.safetensors:

  noise    [2, C, H, W] the starting latents     context [2, L, Dc]
  cfg      [2, C, H, W] 3 steps, guidance 3.0
  apg_batch  [2, C, H, W] 3 steps, APG, guidance 5.0, threshold 0.03, the
             statistics over the whole batch of 2 (F-Lite's code)
  apg_each   [2, C, H, W] the same with each image run alone (batch 1), which
             is what per-image APG gives for a batch of 2
"""
import importlib.util
import json
import math
import os
import sys

import torch
from safetensors.torch import load_file, save_file

FIX = "tests/fixtures/flite"


def load_model():
    src = os.environ.get("FLITE_SRC")
    if not src or not os.path.isfile(os.path.join(src, "f_lite", "model.py")):
        sys.exit("FLITE_SRC must name a checkout of fal-ai/f-lite (with f_lite/model.py)")
    spec = importlib.util.spec_from_file_location("f_lite_model", os.path.join(src, "f_lite", "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = json.load(open(os.path.join(FIX, "rv_bias", "config.json")))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    model = mod.DiT(**cfg)
    sd = load_file(os.path.join(FIX, "rv_bias", "diffusion_pytorch_model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.startswith("rope.") for k in missing), (missing, unexpected)
    return model.double().eval()


def sample(model, noise, ctx, steps, g, apg, threshold=0.03):
    B, C, H, W = noise.shape
    alpha = 2 * math.sqrt(H * W / (64 * 64))
    neg = torch.zeros_like(ctx)
    x = noise.clone()
    with torch.no_grad():
        for i in range(steps, 0, -1):
            t = i / steps
            tn = (i - 1) / steps
            t = t * alpha / (1 + (alpha - 1) * t)
            tn = tn * alpha / (1 + (alpha - 1) * tn)
            tt = torch.full((2 * B,), t, dtype=torch.float64)
            out = model(torch.cat([x, x]), torch.cat([neg, ctx]), tt)
            u, c = out.chunk(2)
            if apg:
                dd = c - u
                par = (c * dd).sum() / (c * c).sum() * c
                orth = dd - par
                orth = orth * min(1.0, threshold / orth.std().item())
                v = c + (g - 1) * orth
            else:
                v = u + g * (c - u)
            x = x + (t - tn) * v
    return x


def main():
    model = load_model()
    gen = torch.Generator().manual_seed(7)
    B, C, H, W, L, Dc = 2, 4, 8, 12, 7, 24
    noise = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64).float().double()
    ctx = torch.randn(B, L, Dc, generator=gen, dtype=torch.float64).float().double()
    g = {
        "noise": noise,
        "context": ctx,
        "cfg": sample(model, noise, ctx, 3, 3.0, False),
        "apg_batch": sample(model, noise, ctx, 3, 5.0, True),
        "apg_each": torch.cat([sample(model, noise[i:i + 1], ctx[i:i + 1], 3, 5.0, True) for i in range(B)]),
    }
    save_file({k: v.float().contiguous() for k, v in g.items()}, os.path.join(FIX, "sampler_golden.safetensors"))
    print({k: tuple(v.shape) for k, v in g.items()})


if __name__ == "__main__":
    main()
