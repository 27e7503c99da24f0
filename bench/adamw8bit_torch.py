"""torch.optim.AdamW against bitsandbytes' AdamW8bit on the CPU (its CPU
8-bit kernel, bitsandbytes >= 0.50), fp32 parameters shaped as the original
DiT's (facebookresearch/DiT models.py from $DIT_REF): state bytes and the
time of one optimizer step, as bench/adamw8bit_step.c measures ours.
Usage: python3 adamw8bit_torch.py MODEL ITERS"""
import os, sys, time
sys.path.insert(0, os.environ.get("DIT_REF", "/work/refs/DiT"))
import torch
import bitsandbytes as bnb
from models import DiT_models

name, iters = sys.argv[1], int(sys.argv[2])
model = DiT_models[name](input_size=32)
params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
n = sum(p.numel() for p in params)
for label, make in (("adamw", torch.optim.AdamW), ("adamw8bit", bnb.optim.AdamW8bit)):
    ps = [torch.nn.Parameter(torch.randn_like(p)) for p in params]
    opt = make(ps, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    best = 1e30
    for it in range(iters + 1):
        for p in ps:
            p.grad = torch.randn_like(p)
        t0 = time.perf_counter()
        opt.step()
        dt = time.perf_counter() - t0
        if it > 0:
            best = min(best, dt)
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                if torch.is_tensor(v) and v.numel() > 1)
    print("%s\t%d\t%.1f\t%.1f" % (label, n, state / 1e6, best * 1e3))
