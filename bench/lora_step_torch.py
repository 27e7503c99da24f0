"""LoRA (PEFT) against full fine-tuning of the original DiT (facebookresearch/DiT
models.py, from $DIT_REF) with torch on the CPU, fp32: trainable parameters,
AdamW state and the time of one step (forward, backward of DiT's loss shape,
AdamW), as bench/lora_step.c measures ours.
Usage: python3 lora_step_torch.py MODEL BATCH ITERS RANK LATENT"""
import os, sys, time
sys.path.insert(0, os.environ.get("DIT_REF", "/work/refs/DiT"))
import torch
from models import DiT_models
from peft import LoraConfig, inject_adapter_in_model

name, B, iters, rank, latent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
for mode in ("full", "lora"):
    torch.manual_seed(0)
    model = DiT_models[name](input_size=latent)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    if mode == "lora":
        model.requires_grad_(False)
        model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=["qkv", "proj"],
                                                   init_lora_weights="gaussian"), model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0)
    x = torch.randn(B, 4, latent, latent)
    t = torch.arange(B) * 997 % 1000
    y = torch.arange(B) % 1000
    R = torch.randn(B, 8, latent, latent)
    def step():
        opt.zero_grad(set_to_none=False)
        (model(x, t, y) * R).sum().backward()
        opt.step()
    step()
    t0 = time.time()
    for _ in range(iters):
        step()
    ms = (time.time() - t0) / iters * 1e3
    n = sum(p.numel() for p in params)
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    print(f"{name}\t{mode}\t{n}\t{state / 1e6:.1f}\t-\t{ms:.0f}")
