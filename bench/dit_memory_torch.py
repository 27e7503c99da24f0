#!/usr/bin/env python3
"""The activations PyTorch keeps for backward in DiT's training forward
(eager, bf16 autocast, SDPA attention): the reference column of the memory
table in bench/RESULTS.md, next to bench/dit_memory (ours, from the arena
planner).

Every tensor autograd saves passes a saved_tensors_hooks pack hook; storages
are counted once. Running the forward at two batch sizes and taking the
difference leaves the bytes per sample (the bf16 weight copies autocast
caches, and anything else batch-independent, cancel). This runs on the CPU:
which tensors autograd saves, and in which dtype, is the same on a GPU
(autocast's op lists put linear and SDPA in bf16 and layer_norm in fp32 on
both); what a GPU run adds is the allocator's transient buffers and
fragmentation, which torch.cuda.max_memory_allocated would show.

    python3 bench/dit_memory_torch.py [--models S/2,B/2,L/2,XL/2] [--image-size 256]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu"))
from dit_train_torch import CONFIGS, build_model  # noqa: E402


def saved_bytes(model, cfg, batch):
    seen = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg["in_ch"], cfg["latent"], cfg["latent"], generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, cfg["num_classes"], (batch,), generator=g)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, y)
    del out
    return sum(seen.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="S/2,B/2,L/2,XL/2")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        depth, hidden, patch, heads = CONFIGS[name]
        latent = args.image_size // 8
        cfg = dict(depth=depth, hidden=hidden, patch=patch, heads=heads, mlp_ratio=4.0, in_ch=4,
                   latent=latent, num_classes=1000, class_dropout=0.1, learn_sigma=True)
        torch.manual_seed(0)
        model = build_model(cfg, "cpu")
        model.train()
        b1, b2 = saved_bytes(model, cfg, 1), saved_bytes(model, cfg, 3)
        per = (b2 - b1) / 2
        rows.append({"model": f"DiT-{name}", "saved_mib_per_sample": per / 2**20,
                     "torch": torch.__version__})
        print(json.dumps(rows[-1]), flush=True)
        del model


if __name__ == "__main__":
    main()
