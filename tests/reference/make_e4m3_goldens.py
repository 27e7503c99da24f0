#!/usr/bin/env python3
"""Goldens for fp8 E4M3: torch.float8_e4m3fn's decoding of all 256 codes and
its rounding of float32 values (ties, subnormals, saturation past 448,
infinities, NaN, and random values at every scale).

Run from the repository root with /work/refenv/bin/python (torch):

    /work/refenv/bin/python tests/reference/make_e4m3_goldens.py

Writes tests/fixtures/numeric/e4m3_golden.safetensors:
  decoded  [256] F32: code i as float32 (NaN for 0x7f and 0xff)
  x        [N] F32: values to convert
  codes    [N] F32: x.to(torch.float8_e4m3fn) as its uint8 code (exact integers)
  w        [8, 50] F32: a weight (row 3 all zero, rows at scales 1e-6 to 1e3)
  w_scale  [8] F32: w.abs().amax(1) / 448 (1 for the zero row)
  w_codes  [8, 50] F32: (w / w_scale[:, None]).to(torch.float8_e4m3fn), per-output-channel fp8
Only numbers are written.
"""
import torch
from safetensors.torch import save_file

codes = torch.arange(256, dtype=torch.uint8)
decoded = codes.view(torch.float8_e4m3fn).float()
g = torch.Generator().manual_seed(3)
# every midpoint between neighbouring codes (the ties) and a step either side
vals = decoded[torch.isfinite(decoded)].unique().sort().values
mids = (vals[:-1].double() + vals[1:].double()) / 2
edges = torch.tensor([448.0, 449.0, 463.9, 464.0, 464.1, 480.0, 1e4, float("inf"), -float("inf"), float("nan"),
                      2.0 ** -9, 2.0 ** -10, 3 * 2.0 ** -11, 2.0 ** -6, 0.0, -0.0, 1e-30, -1e-30, 1e-45])
rand = torch.randn(4000, generator=g) * torch.exp2(torch.randint(-14, 10, (4000,), generator=g).float())
x = torch.cat([mids.float(), torch.nextafter(mids.float(), torch.tensor(1e9)),
               torch.nextafter(mids.float(), torch.tensor(-1e9)), -mids.float(), vals, edges, rand])
out = x.to(torch.float8_e4m3fn).view(torch.uint8).float()
w = torch.randn(8, 50, generator=g) * torch.tensor([1e-6, 1e-3, 0.1, 0.0, 1.0, 3.0, 100.0, 1e3])[:, None]
amax = w.abs().amax(1)
w_scale = torch.where(amax > 0, amax / 448.0, torch.ones_like(amax))
w_codes = (w / w_scale[:, None]).to(torch.float8_e4m3fn).view(torch.uint8).float()
save_file({"decoded": decoded.contiguous(), "x": x.contiguous(), "codes": out.contiguous(), "w": w.contiguous(),
           "w_scale": w_scale.contiguous(), "w_codes": w_codes.contiguous()},
          "tests/fixtures/numeric/e4m3_golden.safetensors", metadata={"torch": torch.__version__})
print(x.numel(), "values")
