#!/usr/bin/env python3
"""What PyTorch keeps for backward in F-Lite's training forward (fal-ai/f-lite's
f_lite/model.py, the released 10B configuration, bf16 as its train.py casts the
whole model), per sample at 512 and 1024 px, with and without its
gradient_checkpoint flag: the reference column of the F-Lite memory table in
bench/RESULTS.md, next to bench/flite_memory (ours, from the arena planner).

The model runs on PyTorch's meta device, so nothing is computed or allocated:
every tensor autograd saves passes a saved_tensors_hooks pack hook and its
storage is counted once, parameters excluded (they are the weights, not
activations). The attention is counted twice: as the math SDPA kernel the CPU
and meta devices run (it saves the T x T probabilities), and as a flash kernel
on a GPU saves it (q, k, v, out and the log-sum-exp: FlashLike below). A 10B
model does not fit this machine, so the forward is run at
depth 1 and depth 2 at the full width: the difference is one block, and the
model's count is outside + 40 blocks. FLITE_SRC names a checkout of
fal-ai/f-lite (nothing of it is copied).

    FLITE_SRC=/tmp/flite_src python3 bench/flite_memory_torch.py
"""
import importlib.util
import json
import os
import sys

import torch

RELEASED = dict(in_channels=16, patch_size=2, hidden_size=3072, num_heads=12, mlp_ratio=4.0,
                cross_attn_input_size=4096, residual_v=True, train_bias_and_rms=False, use_rope=True)
DEPTH = 40


def load():
    src = os.environ.get("FLITE_SRC")
    if not src:
        sys.exit("FLITE_SRC must name a checkout of fal-ai/f-lite")
    spec = importlib.util.spec_from_file_location("f_lite_model", os.path.join(src, "f_lite", "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MATH_SDPA = torch.nn.functional.scaled_dot_product_attention


class FlashLike(torch.autograd.Function):
    """What a flash-attention SDPA kernel saves for backward on a GPU (q, k, v,
    the output and the f32 log-sum-exp), instead of the math kernel the CPU
    and meta devices fall back to, which saves the T x T probabilities."""

    @staticmethod
    def forward(ctx, q, k, v):
        with torch.no_grad():
            out = MATH_SDPA(q, k, v)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, dout):
        raise NotImplementedError


def saved_bytes(mod, depth, px, checkpoint):
    # Built on the CPU (its rotary table is made there), then moved to meta.
    model = mod.DiT(depth=depth, gradient_checkpoint=checkpoint, **RELEASED)
    model = model.to(device="meta", dtype=torch.bfloat16)
    model.train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s._cdata not in params:
            seen[s._cdata] = s.nbytes()
        return t

    lat = px // 8
    x = torch.randn(1, 16, lat, lat, dtype=torch.bfloat16, device="meta")
    ctx = torch.randn(1, 512, 4096, dtype=torch.bfloat16, device="meta")
    t = torch.rand(1, dtype=torch.bfloat16, device="meta")
    with torch.device("meta"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, ctx, t)
    return sum(seen.values())


def main():
    mod = load()
    for attention in ("math", "flash"):
        # model.py calls F.scaled_dot_product_attention, F being torch.nn.functional
        mod.F.scaled_dot_product_attention = MATH_SDPA if attention == "math" else FlashLike.apply
        for px in (512, 1024):
            for ck in (False, True):
                one, two = saved_bytes(mod, 1, px, ck), saved_bytes(mod, 2, px, ck)
                block = two - one
                total = one - block + DEPTH * block
                print(json.dumps({"attention": attention, "px": px, "checkpointing": ck,
                                  "block_mib": block / 2**20, "total_gib": total / 2**30}), flush=True)


if __name__ == "__main__":
    main()
