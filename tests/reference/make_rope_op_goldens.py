#!/usr/bin/env python3
"""Goldens for F-Lite's query/key path and its trainable RMS norm, the ops of
kernels/kernels.h k_rope_norm_forward, k_rope_norm_backward and
k_rmsnorm_backward, from F-Lite's own definitions.

Run from the repository root with the reference environment (torch 2.15,
safetensors):

    /work/refenv/bin/python tests/reference/make_rope_op_goldens.py

FLITE_REF names F-Lite (https://github.com/fal-ai/f-lite): a checkout holding
f_lite/model.py, or a git directory whose HEAD has it (default
/work/.mirror/fal-ai+f-lite/repo). Its model.py imports diffusers, peft and
einops at the top, which the reference environment lacks, so the script
takes from it only the three definitions it needs, RMSNorm, TwoDimRotary and
apply_rotary_emb (found by name with ast, run unchanged with torch and nn in
scope); no F-Lite code is copied into this repository.

It rewrites tests/fixtures/rope_ops/goldens.safetensors (committed, so the C
tests need no Python), written by hand to the safetensors layout as
make_t5_op_goldens.py writes its file, then read back with the safetensors
package and compared. Inputs come from torch.manual_seed(0) and are rounded to
float32; the formulas then run in float64 on them with torch autograd for the
gradients, so the goldens are the exact values the C tests' float32 results
must come within 1e-5 of. F-Lite's own modules compute in float32 (RMSNorm and
apply_rotary_emb both cast to it), so they cannot give those values; they are
run in float32 on the same inputs and must agree with the float64 formulas to
float32's rounding (asserted), which ties the formulas to F-Lite's pairing,
signs and eps. Every tensor is F32 and named GROUP/WHAT:

  rope/cos [28,4], /sin [28,4]
        TwoDimRotary(HS / 2 = 4, base 10000) of F-Lite for a 3 x 4 grid of
        patches with extend_with_register_tokens=16 (F-Lite's DiT passes 16):
        rows 0..15 cos 1, sin 0; then the grid row-major, the first half of
        each row the frequencies of the patch row, the second those of the
        patch column (as F-Lite computes them, in float32)
  rope/x [2,28,16], /dout [2,28,16]
        B 2, T 28, NH 2 heads of HS 8, head h of token t at channels
        h*8 .. h*8+7 (F-Lite's "b l (h d)"); x spread 1.5 around 0.3
  rope/out_both, /rstd_both [112], /dx_both
        y = RMSNorm(apply_rotary_emb(x)) per head (F-Lite's QK path: the
        rotation, then QKNorm's RMSNorm, eps 1e-6, no weight); rstd =
        1 / sqrt(mean(r^2) + eps) at (b*T + t)*NH + h; dx the gradient of
        sum(y * dout)
  rope/out_rope, /dx_rope
        the rotation alone (y = r)
  rope/out_norm, /rstd_norm, /dx_norm
        the norm alone (r = x)
  fused/qkv [2,28,48], /out [2,28,32], /rstd_q [112], /rstd_k [112],
  /dout [2,28,32], /dqk [2,28,32]
        a fused q | k | v buffer (rows of 3C, C 16) as F-Lite's qkv Linear
        gives it; out = the rotated and normalised q | k (rows of 2C, as the
        C test writes them), rstd of q and of k, dout = upstream gradients
        of q | k, dqk = their gradients with respect to the q and k parts of
        qkv (v gets none from this path)
  rmsnorm/x [6,40], /w [40], /dout [6,40], /rstd [6], /dx, /dw,
  /dx_noweight
        F-Lite's RMSNorm(40, trainable=True), eps 1e-6, weight w: dx and dw
        the gradients of sum(out * dout); dx_noweight that of the untrained
        norm (no weight: out = x * rstd)
"""

import ast
import json
import math
import os
import sys
import struct
import subprocess

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_io import f32, save_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "rope_ops", "goldens.safetensors")
FLITE_REF = os.environ.get("FLITE_REF", "/work/.mirror/fal-ai+f-lite/repo")

EPS = 1e-6
B, GH, GW, REG, NH, HS = 2, 3, 4, 16, 2, 8
T = REG + GH * GW
C = NH * HS


def flite_source():
    """F-Lite's f_lite/model.py, and where it came from (for the metadata)."""
    path = os.path.join(FLITE_REF, "f_lite", "model.py")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    git = ["git", "-C", FLITE_REF]
    text = subprocess.run(git + ["show", "HEAD:f_lite/model.py"], check=True,
                          capture_output=True, text=True).stdout
    commit = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    return text, "fal-ai/f-lite@" + commit


def flite_definitions():
    """RMSNorm, TwoDimRotary and apply_rotary_emb from F-Lite's model.py,
    executed alone: the rest of the file needs packages we do not have."""
    text, origin = flite_source()
    tree = ast.parse(text)
    want = {"RMSNorm", "TwoDimRotary", "apply_rotary_emb"}
    nodes = [n for n in tree.body
             if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in want]
    assert {n.name for n in nodes} == want, "model.py lacks one of " + ", ".join(sorted(want))
    scope = {"torch": torch, "nn": nn, "math": math}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), origin, "exec"), scope)
    return scope, origin


def heads(x):
    """[B, T, NH*HS] -> [B, NH, T, HS], the layout F-Lite's attention uses."""
    return x.view(x.shape[0], x.shape[1], -1, HS).transpose(1, 2)


def unheads(x):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def rotate(x, cos, sin):
    """The rotation in float64 on [..., HS]: x1 = x[:HS/2], x2 = x[HS/2:],
    r1 = x1 cos + x2 sin, r2 = -x1 sin + x2 cos."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], -1)


def rms(x):
    """1 / sqrt(mean(x^2) + eps) over the last axis, kept."""
    return 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS)


def qk_path(x, dout, cos, sin, rope, norm):
    """The op in float64 on [B, T, NH*HS] rows: (y, rstd flat in (b, t, h)
    order or None, dx)."""
    x = x.clone().requires_grad_(True)
    r = heads(x)
    if rope:
        r = rotate(r, cos, sin)
    rs = None
    if norm:
        rs = rms(r)
        r = r * rs
    y = unheads(r)
    (y * dout).sum().backward()
    rstd = rs.detach()[..., 0].transpose(1, 2).reshape(-1) if norm else None
    return y.detach(), rstd, x.grad.detach()


def check_close(what, got, want, rtol):
    """F-Lite's float32 result against the float64 formula: within float32's
    rounding of the values' scale."""
    err = (got.double() - want).abs().max().item()
    scale = want.abs().max().item()
    assert err <= rtol * scale, f"{what}: F-Lite's float32 differs by {err:.3g} (scale {scale:.3g})"


def flite_qk(fl, x, dout, cos, sin, rope, norm):
    """F-Lite's own modules (float32) on the same rows: y and dx."""
    x = x.float().clone().requires_grad_(True)
    q = heads(x)
    if rope:
        q = fl["apply_rotary_emb"](q, cos.float()[None, None], sin.float()[None, None])
    if norm:
        q = fl["RMSNorm"](HS)(q)
    y = unheads(q)
    (y * dout.float()).sum().backward()
    return y.detach(), x.grad.detach()


def rope_groups(g, fl):
    rot = fl["TwoDimRotary"](HS // 2, base=10000, h=GH, w=GW)
    cos, sin = rot(None, height_width=(GH, GW), extend_with_register_tokens=REG)
    cos, sin = f32(cos[0, 0]), f32(sin[0, 0])
    assert cos.shape == (T, HS // 2)
    assert torch.all(cos[:REG] == 1) and torch.all(sin[:REG] == 0)
    g["rope/cos"], g["rope/sin"] = cos, sin

    x = f32(torch.randn(B, T, C) * 1.5 + 0.3)
    dout = f32(torch.randn(B, T, C))
    g["rope/x"], g["rope/dout"] = x, dout
    for tag, rope, norm in (("both", True, True), ("rope", True, False), ("norm", False, True)):
        y, rstd, dx = qk_path(x, dout, cos, sin, rope, norm)
        g["rope/out_" + tag], g["rope/dx_" + tag] = y, dx
        if rstd is not None:
            g["rope/rstd_" + tag] = rstd
        fy, fdx = flite_qk(fl, x, dout, cos, sin, rope, norm)
        check_close("rope " + tag + " out", fy, y, 1e-6)
        check_close("rope " + tag + " dx", fdx, dx, 1e-5)

    # q and k as views of a fused qkv buffer
    qkv = f32(torch.randn(B, T, 3 * C) * 1.5 - 0.2)
    dqk_out = f32(torch.randn(B, T, 2 * C))
    outs, grads = [], []
    for part, name in ((0, "q"), (1, "k")):
        y, rstd, dx = qk_path(qkv[..., part * C:(part + 1) * C], dqk_out[..., part * C:(part + 1) * C],
                              cos, sin, True, True)
        outs.append(y)
        grads.append(dx)
        g["fused/rstd_" + name] = rstd
    g["fused/qkv"], g["fused/dout"] = qkv, dqk_out
    g["fused/out"], g["fused/dqk"] = torch.cat(outs, -1), torch.cat(grads, -1)


def rmsnorm_group(g, fl):
    M, CC = 6, 40
    x = f32(torch.randn(M, CC) * 2 + 0.5)
    w = f32(torch.randn(CC) * 0.5 + 1)
    dout = f32(torch.randn(M, CC))
    g["rmsnorm/x"], g["rmsnorm/w"], g["rmsnorm/dout"] = x, w, dout
    g["rmsnorm/rstd"] = rms(x)[:, 0]

    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)
    ((xg * rms(xg) * wg) * dout).sum().backward()
    g["rmsnorm/dx"], g["rmsnorm/dw"] = xg.grad, wg.grad
    xn = x.clone().requires_grad_(True)
    ((xn * rms(xn)) * dout).sum().backward()
    g["rmsnorm/dx_noweight"] = xn.grad

    norm = fl["RMSNorm"](CC, trainable=True)
    with torch.no_grad():
        norm.weight.copy_(w.float())
    xf = x.float().clone().requires_grad_(True)
    (norm(xf) * dout.float()).sum().backward()
    check_close("rmsnorm dx", xf.grad, xg.grad, 1e-5)
    check_close("rmsnorm dw", norm.weight.grad, wg.grad, 1e-5)
    xf = x.float().clone().requires_grad_(True)
    (fl["RMSNorm"](CC)(xf) * dout.float()).sum().backward()
    check_close("rmsnorm dx_noweight", xf.grad, xn.grad, 1e-5)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    fl, origin = flite_definitions()
    g = {}
    rope_groups(g, fl)
    rmsnorm_group(g, fl)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_safetensors(OUT, g, {"format": "dit rope op goldens",
                              "producer": "tests/reference/make_rope_op_goldens.py",
                              "reference": origin, "torch": torch.__version__})
    back = load_file(OUT)
    assert sorted(back) == sorted(g)
    for name, t in g.items():
        want = t.detach().numpy().astype(np.float32)
        assert back[name].shape == want.shape and np.array_equal(back[name], want), name
    print(f"wrote {os.path.relpath(OUT)}: {len(g)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
