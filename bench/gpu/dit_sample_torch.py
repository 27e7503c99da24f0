#!/usr/bin/env python3
"""DiT sampling throughput in PyTorch: the loop of facebookresearch/DiT's
sample.py (DDPM respaced to --sampling-steps of 1000, learned variance,
classifier-free guidance with the batch doubled by the null class, guidance
on the first three latent channels as sample.py does), bf16 autocast, eager or
torch.compile. The model, schedule and FLOP count come from
dit_train_torch.py beside this file (bench/gpu/README.md).

Prints one JSON object on stdout; progress goes to stderr.
  python3 dit_sample_torch.py --model XL/2 --images 32 --compile
  python3 dit_sample_torch.py --device cpu --model S/8 --images 2 --sampling-steps 5
  python3 dit_sample_torch.py --check-ref /path/to/DiT   # against DiT's code

FLOPs per image: 2 (conditional + null pass) x sampling steps x the forward
FLOPs of dit_train_torch.flops_forward.
"""
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dit_train_torch as dt  # noqa: E402


def guided_step(model, diff, x, y2, idx, cfg_scale, amp, noise):
    """One reverse step for the n images in x: the model sees [x, x] with
    [labels, null]; idx is a 0-d tensor (a tensor, so that a compiled step
    is not specialised to each of the 250 values)."""
    n = x.shape[0]
    t = idx.expand(2 * n)
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        out = model(torch.cat([x, x]), diff.timestep_map[t], y2)
    out = out.float()
    eps, rest = out[:, :3], out[:, 3:]
    cond, uncond = eps.split(n)
    guided = uncond + cfg_scale * (cond - uncond)
    c = x.shape[1]
    eps = torch.cat([guided, rest[:n, :c - 3]], dim=1)
    v = rest[:n, c - 3:]
    mean, logvar = diff.p_mean_logvar(x, t[:n], eps, v)
    nonzero = (idx > 0).float()
    return mean + nonzero * torch.exp(0.5 * logvar) * noise


def sample_once(args, cfg, dev, amp, n):
    model = dt.build_model(cfg, dev).eval()
    if not args.zero_init:
        # DiT's initialisation zeroes the adaLN gates and the output layer, so
        # the loop would be all zeros; random weights keep the numbers real.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1 and p.abs().max() == 0:
                    p.normal_(0, 0.02)
    diff = dt.Diffusion(steps=args.sampling_steps, device=dev)
    g = torch.Generator(device=dev).manual_seed(args.seed)
    labels = torch.randint(0, cfg["num_classes"], (n,), device=dev, generator=g)
    y2 = torch.cat([labels, torch.full_like(labels, cfg["num_classes"])])
    shape = (n, cfg["in_ch"], cfg["latent"], cfg["latent"])
    idx = [torch.tensor(i, device=dev) for i in range(diff.T)]

    def step(x, it):
        return guided_step(model, diff, x, y2, it, args.cfg_scale, amp, torch.randn_like(x))

    step_fn = dt.compile_fn(args, model, step)

    def loop(steps):
        x = torch.randn(shape, device=dev)
        for i in reversed(range(diff.T - steps, diff.T)):
            x = step_fn(x, idx[i])
        return x

    with torch.inference_mode():
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        if args.warmup:
            loop(min(args.warmup, diff.T))
        dt.sync(dev)
        warm_s = time.perf_counter() - t0
        dt.log(f"warm-up ({args.warmup} steps, compile) {warm_s:.1f} s")
        # one timing per whole loop of --sampling-steps steps
        outs = []
        ms = dt.time_steps(lambda: outs.append(loop(diff.T)), args.repeats, dev)
    x = outs[-1]
    if not torch.isfinite(x).all():
        raise RuntimeError("the samples hold NaN or Inf")
    res = {"ms_per_loop": sum(ms) / len(ms), "ms_per_loop_min": min(ms),
           "ms_per_step": sum(ms) / len(ms) / diff.T,
           "images_per_s": n * 1e3 * len(ms) / sum(ms), "warmup_s": warm_s,
           "sample_std": x.std().item()}
    if dev.type == "cuda":
        res.update(peak_mem_bytes=torch.cuda.max_memory_allocated(dev),
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(dev))
    else:
        res.update(peak_mem_bytes=None)
    return res


def check_reference(args, dev):
    """One guided step's mean and log-variance against DiT's
    p_mean_variance(forward_with_cfg) on the respaced schedule."""
    sys.path.insert(0, args.check_ref)
    from models import DiT as RefDiT
    from diffusion import create_diffusion
    torch.manual_seed(args.seed)
    ref = RefDiT(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2,
                 num_heads=4, num_classes=10).to(dev).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    ours = dt.DiT(input_size=8, patch=2, in_ch=4, hidden=64, depth=2, heads=4,
                  num_classes=10).to(dev).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    S, n = args.sampling_steps, 3
    rdiff, diff = create_diffusion(str(S)), dt.Diffusion(steps=S, device=dev)
    res = {"check": "dit_sample_torch vs facebookresearch/DiT", "sampling_steps": S,
           "timestep_map_equal": rdiff.timestep_map == diff.timestep_map.tolist()}
    labels = torch.tensor([1, 7, 9], device=dev)
    y2 = torch.cat([labels, torch.full_like(labels, 10)])
    worst = 0.0
    with torch.no_grad():
        for i in (S - 1, S // 2, 1, 0):
            x = torch.randn(n, 4, 8, 8, device=dev)
            t2 = torch.full((2 * n,), i, device=dev)
            r = rdiff.p_mean_variance(ref.forward_with_cfg, torch.cat([x, x]), t2,
                                      clip_denoised=False,
                                      model_kwargs=dict(y=y2, cfg_scale=args.cfg_scale))
            # zero noise: the step returns the mean; unit noise: mean + std
            idx = torch.tensor(i, device=dev)
            m = guided_step(ours, diff, x, y2, idx, args.cfg_scale, None, torch.zeros_like(x))
            m_plus = guided_step(ours, diff, x, y2, idx, args.cfg_scale, None, torch.ones_like(x))
            std_ref = torch.exp(0.5 * r["log_variance"][:n]) * (1.0 if i > 0 else 0.0)
            d_mean = ((m - r["mean"][:n]).abs().max() / r["mean"].abs().max()).item()
            d_std = ((m_plus - m - std_ref).abs().max() / (std_ref.abs().max() + 1e-12)).item()
            res[f"step_{i}_mean_rel_diff"] = d_mean
            res[f"step_{i}_std_rel_diff"] = d_std if i > 0 else (m_plus - m).abs().max().item()
            worst = max(worst, d_mean, res[f"step_{i}_std_rel_diff"])
    res["ok"] = res["timestep_map_equal"] and worst < 1e-4
    return res


def main():
    ap = dt.common_args(__doc__.split("\n")[0])
    ap.set_defaults(warmup=3)
    ap.add_argument("--images", type=int, default=32,
                    help="images per loop (the model's batch is twice this)")
    ap.add_argument("--sampling-steps", type=int, default=250)
    ap.add_argument("--cfg-scale", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=1, help="timed loops")
    ap.add_argument("--zero-init", action="store_true",
                    help="keep DiT's zeroed adaLN/output weights (default: random)")
    ap.add_argument("--check-ref", metavar="DIT_DIR",
                    help="compare one guided step with facebookresearch/DiT and exit")
    args = ap.parse_args()
    dev, amp = dt.setup(args)
    if args.check_ref:
        res = check_reference(args, dev)
        print(json.dumps(res, indent=1))
        return 0 if res["ok"] else 1

    cfg = dt.model_config(args)
    peak, peak_src = dt.peak_tflops(args, dev)
    out = {"bench": "dit_sample_torch", "label": args.label, "config": cfg,
           "precision": args.precision, "compile": args.compile,
           "compile_scope": args.compile_scope if args.compile else None,
           "compile_mode": args.compile_mode, "attention": "sdpa",
           "sampler": f"DDPM {args.sampling_steps} steps (respaced from 1000), learned sigma",
           "cfg_scale": args.cfg_scale, "images": args.images, "model_batch": 2 * args.images,
           "warmup": args.warmup, "repeats": args.repeats, "env": dt.environment(dev)}
    dt.log(f"{cfg['model']} sampling {args.images} images x {args.sampling_steps} steps, "
           f"{args.precision} {'compiled' if args.compile else 'eager'} on {dev}")
    res = sample_once(args, cfg, dev, amp, args.images)
    fwd = dt.flops_forward(cfg)
    per_image = 2 * args.sampling_steps * fwd
    out.update(res)
    out.update(flops_per_image_forward=fwd, flops_per_image=per_image,
               tflops_per_s=per_image * res["images_per_s"] / 1e12,
               peak_tflops=peak, peak_source=peak_src,
               mfu=per_image * res["images_per_s"] / (peak * 1e12) if peak else None)
    dt.log(f"{res['images_per_s']:.2f} images/s, {res['ms_per_step']:.2f} ms/step"
           + (f", MFU {out['mfu']:.3f}" if out["mfu"] else ""))
    print(json.dumps(out, indent=1))
    return 0 if math.isfinite(res["images_per_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
