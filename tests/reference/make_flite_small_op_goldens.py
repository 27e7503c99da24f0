#!/usr/bin/env python3
"""Goldens for two small ops of F-Lite (kernels/kernels.h): the exact GELU of
its MLP (k_gelu_erf_forward, k_gelu_erf_backward: torch.nn.GELU(), i.e.
torch.nn.functional.gelu with approximate='none') and its residual value mix
(k_mix_forward, k_mix_backward: in block i > 0 of f_lite/model.py,
v = lambda_param * v + (1 - lambda_param) * v_0, lambda_param a Parameter of
shape [1]).

Run from the repository root with the reference environment (torch,
safetensors, mpmath):

    /work/refenv/bin/python tests/reference/make_flite_small_op_goldens.py

It rewrites tests/fixtures/flite_small_ops/goldens.safetensors (committed, so
the C tests need no Python), in the layout make_t5_op_goldens.py writes, then
reads it back with the safetensors package and compares. Inputs come from
torch.manual_seed(0) and are rounded to float32; everything then runs in
float64 on them, gradients by autograd, so the goldens are exact (to ~1e-16)
for the float32 inputs the C tests read. Every tensor is F32:

  gelu/x [301]     -10, -9.9, ..., 10 (0 among them), then 100 normal values
                   of spread 3: the curved part and both tails, far enough out
                   that Phi(x) leaves 0 and 1 behind in float32
  gelu/out [301]   gelu(x), approximate='none'
  gelu/dout [301]  a random upstream gradient
  gelu/dinp [301]  d(sum(gelu(x) * dout)) / dx, autograd's GeluBackward
  gelu/out_exact, gelu/dinp_exact [301]
                   the same from mpmath's normal CDF and density at 50
                   digits. torch computes Phi(x) as 0.5 (1 + erf(x / sqrt 2))
                   even in float64, which cancels in the negative tail
                   (gelu(-10) comes out -0, its gradient 1% off): the C test
                   holds the op to torch's values for x >= -5, where these two
                   agree to 1e-9 (checked here), and to these everywhere
  mix/a, mix/b [6, 19]
                   v of block i and v_0 of block 0 (the C test places them in
                   the v columns of [6, 57] fused qkv buffers itself)
  mix/lam [1]      lambda_param, 0.37 rounded to float32
  mix/out [6, 19]  lam * a + (1 - lam) * b, written as F-Lite writes it
  mix/dout [6, 19] a random upstream gradient of out
  mix/da, mix/db [6, 19], mix/dlam [1]
                   the gradients of sum(out * dout) for a, b and lambda_param
"""

import json
import os
import sys
import struct

import mpmath
import numpy as np
import torch
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import f32, save_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "flite_small_ops", "goldens.safetensors")


def gelu(g):
    ramp = torch.arange(-100, 101, dtype=torch.float64) / 10
    x = f32(torch.cat([ramp, torch.randn(100, dtype=torch.float64) * 3]))
    dout = f32(torch.randn(x.shape, dtype=torch.float64))
    x.requires_grad_(True)
    out = torch.nn.functional.gelu(x, approximate="none")
    # torch.nn.GELU() is the module F-Lite's MLP holds: the same function
    assert torch.equal(out, torch.nn.GELU()(x))
    (dinp,) = torch.autograd.grad(out, x, dout)
    g["gelu/x"], g["gelu/out"] = x, out
    g["gelu/dout"], g["gelu/dinp"] = dout, dinp
    mpmath.mp.dps = 50
    exact, dexact = [], []
    for xi, di in zip(x.tolist(), dout.tolist()):
        X = mpmath.mpf(xi)
        exact.append(float(X * mpmath.ncdf(X)))
        dexact.append(float(mpmath.mpf(di) * (mpmath.ncdf(X) + X * mpmath.npdf(X))))
    exact = torch.tensor(exact, dtype=torch.float64)
    dexact = torch.tensor(dexact, dtype=torch.float64)
    near = x.detach() >= -5
    assert torch.allclose(out.detach()[near], exact[near], rtol=1e-9, atol=0)
    assert torch.allclose(dinp[near], dexact[near], rtol=1e-9, atol=1e-15)
    g["gelu/out_exact"], g["gelu/dinp_exact"] = exact, dexact


def mix(g, M, C):
    a = f32(torch.randn(M, C, dtype=torch.float64)).requires_grad_(True)
    b = f32(torch.randn(M, C, dtype=torch.float64) * 2).requires_grad_(True)
    lam = torch.nn.Parameter(f32(torch.tensor(0.37).reshape(1)))
    out = lam * a + (1 - lam) * b  # f_lite/model.py's residual value
    dout = f32(torch.randn(M, C, dtype=torch.float64))
    da, db, dlam = torch.autograd.grad(out, (a, b, lam), dout)
    g["mix/a"], g["mix/b"], g["mix/lam"], g["mix/out"] = a, b, lam, out
    g["mix/dout"], g["mix/da"], g["mix/db"], g["mix/dlam"] = dout, da, db, dlam


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    g = {}
    gelu(g)
    mix(g, 6, 19)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, g, {"format": "dit F-Lite small op goldens",
                              "producer": "tests/reference/make_flite_small_op_goldens.py",
                              "torch": torch.__version__})
    back = load_file(OUT)
    assert sorted(back) == sorted(g)
    for name, t in g.items():
        want = t.detach().numpy().astype(np.float32)
        assert back[name].shape == want.shape and np.array_equal(back[name], want), name
    print(f"wrote {os.path.relpath(OUT)}: {len(g)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
