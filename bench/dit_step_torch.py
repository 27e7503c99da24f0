"""Forward + backward time per image of the original DiT (facebookresearch/DiT
models.py, imported from $DIT_REF) with torch on the CPU, fp32, the same
batch and step as bench/dit_step.c. Usage: python3 dit_step_torch.py MODEL BATCH ITERS LATENT"""
import os, sys, time
sys.path.insert(0, os.environ.get("DIT_REF", "/work/refs/DiT"))
import torch
from models import DiT_models

name, B, iters, latent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = DiT_models[name](input_size=latent)
for p in model.parameters():
    if p.requires_grad:
        torch.nn.init.normal_(p, std=0.02)
x = torch.randn(B, 4, latent, latent)
t = torch.arange(B) * 997 % 1000
y = torch.arange(B) % 1000
R = torch.randn(B, 8, latent, latent)
def step():
    model.zero_grad(set_to_none=False)
    (model(x, t, y) * R).sum().backward()
step()
t0 = time.time()
for _ in range(iters):
    step()
ms = (time.time() - t0) / iters * 1e3
print(f"{name}\t{B}\t{ms:.1f}\t{ms / B:.2f}\t{B / ms * 1e3:.2f}")
