#!/usr/bin/env python3
"""Goldens for 8-bit AdamW: bitsandbytes' dynamic quantisation maps, its
blockwise quantisation, and 200 steps of its own AdamW8bit on the CPU.

Run from the repository root with /work/refenv/bin/python (torch and
bitsandbytes >= 0.50, the first release with a CPU 8-bit optimizer):

    /work/refenv/bin/python tests/reference/make_adamw8bit_goldens.py

Writes tests/fixtures/adamw8bit/golden.safetensors:
  qmap_signed, qmap_unsigned  create_dynamic_map(True) and (False): the codes of
                       state1 (the first moment) and state2 (the second)
  x                    [4096] random values in blocks of 256 at scales from 1e-7
                       to 1e3, one block all zero and one with a single non-zero
  codes_signed, absmax_signed, dequant_signed    quantize_blockwise(x, qmap_signed,
                       blocksize=256) and dequantize_blockwise of them, by
                       bitsandbytes' reference ("default") kernel: absmax per block,
                       x * (1 / absmax), the nearest code by bucketize on the
                       midpoints (the CUDA kernels' rule; it is called past the CPU
                       kernel by redispatching to CompositeExplicitAutograd)
  codes_signed_cpu     what the CPU kernel of the native library gives: a
                       65,536-bin lookup table, approximately the nearest (it maps
                       an exact 0 to a code near 2e-5); for the record, not a target
  codes_unsigned, absmax_unsigned, dequant_unsigned   the same of |x| with
                       qmap_unsigned
  p0, target, curv     a [64, 128] parameter (8-bit state: >= 4096 elements) and a
                       [100] one (fp32 state: under min_8bit_size), concatenated;
                       the loss is sum(curv * (p - target)^2) / 2, so the gradient
                       is curv * (p - target), computed in float32
  p200                 the parameters after 200 steps of bnb.optim.AdamW8bit
                       (lr 1e-3, betas 0.9, 0.999, eps 1e-8, weight decay 0.01)
  p200_fp32            the same 200 steps with torch.optim.AdamW, for scale
  state1, absmax1, state2, absmax2   AdamW8bit's state of the large parameter
                       after the 200 steps
Integers are stored as float32 (exact). Only numbers are written.
"""
import os

import bitsandbytes as bnb
import bitsandbytes.functional as F
import torch
from safetensors.torch import save_file

OUT = "tests/fixtures/adamw8bit"


def main():
    os.makedirs(OUT, exist_ok=True)
    g = {}
    qs = F.create_dynamic_map(signed=True).float()
    qu = F.create_dynamic_map(signed=False).float()
    g["qmap_signed"], g["qmap_unsigned"] = qs, qu

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4096, generator=gen)
    scales = [1e-7, 1e-5, 1e-3, 0.1, 1, 10, 1e3, 0.5]
    for b in range(16):
        x[b * 256:(b + 1) * 256] *= scales[b % len(scales)]
    x[3 * 256:4 * 256] = 0
    x[5 * 256:6 * 256] = 0
    x[5 * 256 + 17] = -2.5
    g["x"] = x
    op = torch.ops.bitsandbytes.quantize_blockwise.default
    reference = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    for name, code, v in (("signed", qs, x), ("unsigned", qu, x.abs())):
        codes, absmax = op.redispatch(reference, v, code, 256)
        g["codes_" + name] = codes.float()
        g["absmax_" + name] = absmax.float()
        g["dequant_" + name] = F.dequantize_blockwise(codes, absmax=absmax, code=code, blocksize=256).float()
        cpu, _ = op(v, code, 256)
        g["codes_%s_cpu" % name] = cpu.float()
        print(name, "codes where the CPU kernel's lookup table differs from the reference:",
              (cpu != codes).sum().item(), "of", codes.numel())

    big = torch.randn(64, 128, generator=gen) * 0.5
    small = torch.randn(100, generator=gen) * 0.5
    target = torch.randn(64 * 128 + 100, generator=gen)
    curv = torch.rand(64 * 128 + 100, generator=gen) * 2 + 0.01
    g["p0"] = torch.cat([big.flatten(), small])
    g["target"], g["curv"] = target, curv

    def run(make):
        pb = torch.nn.Parameter(big.clone())
        ps = torch.nn.Parameter(small.clone())
        opt = make([pb, ps])
        for _ in range(200):
            flat = torch.cat([pb.flatten(), ps])
            grad = curv * (flat - target)
            pb.grad = grad[:64 * 128].reshape(64, 128).clone()
            ps.grad = grad[64 * 128:].clone()
            opt.step()
        return torch.cat([pb.detach().flatten(), ps.detach()]), opt, pb

    hp = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    p8, opt, pb = run(lambda ps: bnb.optim.AdamW8bit(ps, **hp))
    st = opt.state[pb]
    assert st["state1"].dtype == torch.uint8 and st["absmax1"].numel() == 32, st.keys()
    g["p200"] = p8
    g["state1"], g["absmax1"] = st["state1"].flatten().float(), st["absmax1"].float()
    g["state2"], g["absmax2"] = st["state2"].flatten().float(), st["absmax2"].float()
    p32, _, _ = run(lambda ps: torch.optim.AdamW(ps, **hp))
    g["p200_fp32"] = p32
    print("bitsandbytes", bnb.__version__, "max |p8 - p32| =", (p8 - p32).abs().max().item(),
          "max |p8 - p0| =", (p8 - g["p0"]).abs().max().item())
    save_file({k: v.contiguous() for k, v in g.items()}, os.path.join(OUT, "golden.safetensors"),
              metadata={"bitsandbytes": bnb.__version__, "torch": torch.__version__})


if __name__ == "__main__":
    main()
