#!/usr/bin/env python3
"""Goldens for models/flite/: fal-ai/f-lite's own DiT (f_lite/model.py) on tiny
random configurations, forward and every parameter's gradient.

Run from the repository root with /work/refenv/bin/python (torch, diffusers,
peft and einops, which f_lite/model.py imports) and FLITE_SRC naming a checkout
of fal-ai/f-lite (the folder holding f_lite/), e.g.

    git -C MIRROR archive HEAD f_lite | tar x -C /tmp/flite_src
    FLITE_SRC=/tmp/flite_src /work/refenv/bin/python tests/reference/make_flite_goldens.py

Nothing of F-Lite is copied here or committed: its model is imported from
FLITE_SRC and only the numbers it produces are written, under
tests/fixtures/flite/:

  <name>/config.json, <name>/diffusion_pytorch_model.safetensors
      DiT.save_pretrained of the configuration with every parameter
      randomised (F-Lite zero-initialises adaLN and the final layers, which
      would leave most gradients zero), then the two rotary buffers
      (rope.freqs_hw_cos / _sin, 512 x 512 x HS/2: megabytes) removed from
      the file, since the model computes them; the file stays in F32.
  <name>_golden.safetensors
      x        [B, C, H, W] latents        t    [B] in (0, 1)
      context  [B, L, Dc] text embeddings, sample 1 all zeros (F-Lite's
               unconditional input, what our null condition gives)
      dout     [B, C, H, W] the gradient of a loss sum(out * dout)
      out      [B, C, H, W] DiT.forward(x, context, t) in float64
      grad.<parameter name>  that loss's gradient for every parameter

The model runs in float64, but F-Lite's RMSNorm, rotary embedding and
timestep embedding compute in float32 whatever the dtype (x.float()), so the
goldens carry float32 rounding at those points; the C side runs all in f32.
Configurations (every feature on and off):
  rv_bias   residual_v and train_bias_and_rms on, 3 blocks, hidden 32, 2 heads
            of 16, mlp 4, text 24 wide; latents 4 x 8 x 12 (a 4 x 6 grid, not
            square), 7 text tokens, batch 2
  plain     both off (the released 10B's setting): 2 blocks, hidden 24, 2
            heads of 12, mlp 2.5 (60), text 20; latents 16 x 6 x 4, 5 text
            tokens, batch 3, rope_base 500
"""
import importlib.util
import os
import sys

import torch
from safetensors.torch import load_file, save_file

OUT = "tests/fixtures/flite"

CONFIGS = {
    "rv_bias": dict(
        model=dict(in_channels=4, patch_size=2, hidden_size=32, depth=3, num_heads=2, mlp_ratio=4.0,
                   cross_attn_input_size=24, residual_v=True, train_bias_and_rms=True, use_rope=True,
                   rope_base=10000),
        B=2, H=8, W=12, L=7, seed=1),
    "plain": dict(
        model=dict(in_channels=16, patch_size=2, hidden_size=24, depth=2, num_heads=2, mlp_ratio=2.5,
                   cross_attn_input_size=20, residual_v=False, train_bias_and_rms=False, use_rope=True,
                   rope_base=500),
        B=3, H=6, W=4, L=5, seed=2),
}


def load_flite():
    src = os.environ.get("FLITE_SRC")
    if not src or not os.path.isfile(os.path.join(src, "f_lite", "model.py")):
        sys.exit("FLITE_SRC must name a checkout of fal-ai/f-lite (with f_lite/model.py)")
    # model.py alone: the package's __init__ pulls in the pipeline.
    spec = importlib.util.spec_from_file_location("f_lite_model", os.path.join(src, "f_lite", "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda_param"):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * 0.8 + 0.1)
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or \
                    name.endswith("norm3.weight") or name == "final_norm.weight":
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif name == "register_tokens":
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                fan_in = p.shape[1] if p.ndim >= 2 else p.shape[0]
                if p.ndim == 4:
                    fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan_in ** 0.5)


def main():
    fl = load_flite()
    os.makedirs(OUT, exist_ok=True)
    for name, cfg in CONFIGS.items():
        gen = torch.Generator().manual_seed(cfg["seed"])
        model = fl.DiT(**cfg["model"])
        randomise(model, gen)
        folder = os.path.join(OUT, name)
        model.save_pretrained(folder, safe_serialization=True)
        wpath = os.path.join(folder, "diffusion_pytorch_model.safetensors")
        sd = load_file(wpath)
        for k in ("rope.freqs_hw_cos", "rope.freqs_hw_sin"):
            sd.pop(k, None)
        save_file({k: v.float().contiguous() for k, v in sd.items()}, wpath, metadata={"format": "pt"})

        # The golden pass from the saved (f32) weights, in float64.
        model = model.double()
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(sd[k].double())
        model.train(False)
        m = cfg["model"]
        B, H, W, L = cfg["B"], cfg["H"], cfg["W"], cfg["L"]
        C, Dc = m["in_channels"], m["cross_attn_input_size"]
        x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
        # f32 values of t, so that F-Lite's float64 t * 1000 rounded to f32 is
        # the f32 product the C side computes, bit for bit
        t = (torch.rand(B, generator=gen, dtype=torch.float64) * 0.98 + 0.01).float().double()
        ctx = torch.randn(B, L, Dc, generator=gen, dtype=torch.float64)
        ctx[1].zero_()
        dout = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
        out = model(x, ctx, t)
        model.zero_grad()
        (out * dout).sum().backward()
        g = {"x": x, "t": t, "context": ctx, "dout": dout, "out": out.detach()}
        for k, p in model.named_parameters():
            g["grad." + k] = p.grad if p.grad is not None else torch.zeros_like(p)  # block 0's lambda: unused
        save_file({k: v.float().contiguous() for k, v in g.items()},
                  os.path.join(OUT, name + "_golden.safetensors"))
        print(name, "out", tuple(out.shape), "params", sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
