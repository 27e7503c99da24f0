#!/usr/bin/env python3
"""DiT training-step throughput in PyTorch: the baseline our CUDA backend is
measured against (bench/gpu/README.md).

One step is what facebookresearch/DiT's train.py does per batch: random t,
q_sample, model forward (bf16 autocast, SDPA attention), the loss MSE(eps) +
the learned-variance VLB term, backward, AdamW (lr 1e-4, wd 0) on fp32 master
weights, EMA update (0.9999). The model is written here (no timm, no DiT
checkout), with DiT's parameter names so its state dict loads either way.

Prints one JSON object on stdout; progress goes to stderr.
  python3 dit_train_torch.py --model XL/2 --batch 256 --steps 20 --compile
  python3 dit_train_torch.py --device cpu --model S/8 --batch 2 --steps 2
  python3 dit_train_torch.py --check-ref /path/to/DiT   # against DiT's code

FLOPs are counted analytically (flops_forward below): 2*M*N*K for every
matrix product, attention as 4*T*T*C per block, elementwise work not counted;
a training step is 3x the forward (backward = 2x forward).
"""
import argparse
import copy
import gc
import json
import math
import platform
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (depth, hidden, patch, heads), as DiT's models.py
CONFIGS = {}
for _p in (2, 4, 8):
    CONFIGS[f"XL/{_p}"] = (28, 1152, _p, 16)
    CONFIGS[f"L/{_p}"] = (24, 1024, _p, 16)
    CONFIGS[f"B/{_p}"] = (12, 768, _p, 12)
    CONFIGS[f"S/{_p}"] = (12, 384, _p, 6)

# Dense bf16 tensor-core peak (TFLOP/s) used for MFU when --peak-tflops is not
# given: the H100 SXM datasheet number; the H200 has the same SMs and clocks.
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}


# ---------------------------------------------------------------- the model
def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def pos_embed_2d(dim, grid):
    """Fixed sin-cos position table (grid*grid, dim), MAE/DiT layout: first
    half from the column index, second half from the row index."""
    r = torch.arange(grid, dtype=torch.float64)
    row, col = torch.meshgrid(r, r, indexing="ij")

    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.reshape(-1, 1) * omega
        return torch.cat([out.sin(), out.cos()], dim=1)

    return torch.cat([one_axis(dim // 2, col), one_axis(dim // 2, row)], dim=1).float()


def timestep_freqs(t, dim=256, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) *
                      torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class PatchEmbed(nn.Module):
    def __init__(self, patch, in_ch, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        return self.mlp(timestep_freqs(t, self.freq_dim))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, dim, dropout):
        super().__init__()
        self.num_classes, self.dropout = num_classes, dropout
        # the extra row is the null class of classifier-free guidance
        self.embedding_table = nn.Embedding(num_classes + (dropout > 0), dim)

    def forward(self, y):
        if self.training and self.dropout > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout
            y = torch.where(drop, self.num_classes, y)
        return self.embedding_table(y)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(B, T, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), s1, sc1))
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), s2, sc2))


class FinalLayer(nn.Module):
    def __init__(self, dim, patch, out_ch):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out_ch)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, input_size=32, patch=2, in_ch=4, hidden=1152, depth=28, heads=16,
                 mlp_ratio=4.0, num_classes=1000, class_dropout=0.1, learn_sigma=True):
        super().__init__()
        self.in_ch, self.patch = in_ch, patch
        self.out_ch = in_ch * 2 if learn_sigma else in_ch
        self.grid = input_size // patch
        self.x_embedder = PatchEmbed(patch, in_ch, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden, class_dropout)
        self.register_buffer("pos_embed", pos_embed_2d(hidden, self.grid).unsqueeze(0))
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden, patch, self.out_ch)
        self.init_weights()

    def init_weights(self):
        # DiT's: xavier linears, N(0, .02) embeddings, adaLN and output zeroed
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for mod in [b.adaLN_modulation[-1] for b in self.blocks] + [
                self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)

    def unpatchify(self, x):
        n, g, p, c = x.shape[0], self.grid, self.patch, self.out_ch
        x = x.reshape(n, g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, g * p, g * p)

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))


# ---------------------------------------------------------------- diffusion
class Diffusion:
    """DDPM with DiT's linear schedule, optionally respaced to `steps` of the
    original `base` steps (DiT's space_timesteps for one section)."""

    def __init__(self, steps=1000, base=1000, device="cpu"):
        betas = torch.linspace(1e-4, 0.02, base, dtype=torch.float64)
        ac = torch.cumprod(1 - betas, 0)
        if steps != base:
            stride = (base - 1) / (steps - 1) if steps > 1 else 1
            use = sorted({round(i * stride) for i in range(steps)})
            last, nb = 1.0, []
            for i in use:
                nb.append(1 - ac[i].item() / last)
                last = ac[i].item()
            betas = torch.tensor(nb, dtype=torch.float64)
            ac = torch.cumprod(1 - betas, 0)
        else:
            use = list(range(base))
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        post_var = betas * (1 - ac_prev) / (1 - ac)
        tab = {
            "sqrt_ac": ac.sqrt(), "sqrt_1m_ac": (1 - ac).sqrt(),
            "sqrt_recip_ac": (1 / ac).sqrt(), "sqrt_recipm1_ac": (1 / ac - 1).sqrt(),
            "post_logvar": torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            "log_betas": betas.log(),
            "coef1": betas * ac_prev.sqrt() / (1 - ac),
            "coef2": (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac),
        }
        self.T = len(betas)
        self.timestep_map = torch.tensor(use, dtype=torch.long, device=device)
        for k, v in tab.items():
            setattr(self, k, v.float().to(device))

    @staticmethod
    def at(tab, t):
        return tab[t].view(-1, 1, 1, 1)

    def q_sample(self, x0, t, noise):
        return self.at(self.sqrt_ac, t) * x0 + self.at(self.sqrt_1m_ac, t) * noise

    def p_mean_logvar(self, xt, t, eps, v):
        """Mean and log-variance of p(x_{t-1}|x_t) from the model's eps and
        its variance output v in [-1, 1] (learned range)."""
        frac = (v + 1) / 2
        logvar = frac * self.at(self.log_betas, t) + (1 - frac) * self.at(self.post_logvar, t)
        x0 = self.at(self.sqrt_recip_ac, t) * xt - self.at(self.sqrt_recipm1_ac, t) * eps
        mean = self.at(self.coef1, t) * x0 + self.at(self.coef2, t) * xt
        return mean, logvar

    def vb_bits(self, x0, xt, t, eps, v):
        """The VLB term in bits per dim: KL(q(x_{t-1}|x_t,x_0) || p) for
        t > 0, the discretised decoder NLL at t = 0."""
        true_mean = self.at(self.coef1, t) * x0 + self.at(self.coef2, t) * xt
        true_logvar = self.at(self.post_logvar, t)
        mean, logvar = self.p_mean_logvar(xt, t, eps, v)
        kl = 0.5 * (-1.0 + logvar - true_logvar + torch.exp(true_logvar - logvar)
                    + (true_mean - mean) ** 2 * torch.exp(-logvar))
        inv_std = torch.exp(-0.5 * logvar)

        def cdf(z):  # the tanh approximation DiT uses
            return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))

        cdf_plus = cdf(inv_std * (x0 - mean + 1 / 255))
        cdf_min = cdf(inv_std * (x0 - mean - 1 / 255))
        log_probs = torch.where(
            x0 < -0.999, torch.log(cdf_plus.clamp(min=1e-12)),
            torch.where(x0 > 0.999, torch.log((1 - cdf_min).clamp(min=1e-12)),
                        torch.log((cdf_plus - cdf_min).clamp(min=1e-12))))
        dims = tuple(range(1, x0.ndim))
        kl = kl.mean(dim=dims) / math.log(2.0)
        nll = -log_probs.mean(dim=dims) / math.log(2.0)
        return torch.where(t == 0, nll, kl)


def loss_terms(model, diff, x0, y, t, noise, amp_dtype):
    """Per-sample DiT loss: MSE on eps + VLB with the mean frozen."""
    xt = diff.q_sample(x0, t, noise)
    with torch.autocast(x0.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(xt, t, y)
    eps, v = out.float().chunk(2, dim=1)
    mse = ((noise - eps) ** 2).mean(dim=(1, 2, 3))
    return mse + diff.vb_bits(x0, xt, t, eps.detach(), v)


# ---------------------------------------------------------------- FLOPs
def flops_forward(cfg):
    """Matrix-product FLOPs of one image's forward pass (2*M*N*K each)."""
    T, C, p = cfg["tokens"], cfg["hidden"], cfg["patch"]
    H = int(C * cfg["mlp_ratio"])
    patch_embed = 2 * T * (cfg["in_ch"] * p * p) * C
    t_mlp = 2 * 256 * C + 2 * C * C
    block = (2 * C * 6 * C              # adaLN modulation (one row per image)
             + 2 * T * C * 3 * C        # qkv
             + 4 * T * T * C            # Q K^T and P V over all heads
             + 2 * T * C * C            # attention output projection
             + 2 * T * C * H * 2)       # MLP fc1 + fc2
    final = 2 * C * 2 * C + 2 * T * C * (p * p * cfg["out_ch"])
    return patch_embed + t_mlp + cfg["depth"] * block + final


# ---------------------------------------------------------------- harness
def model_config(args):
    name = args.model.replace("DiT-", "")
    if name not in CONFIGS:
        sys.exit(f"unknown model {args.model}; one of {', '.join(CONFIGS)}")
    depth, hidden, patch, heads = CONFIGS[name]
    depth = args.depth or depth
    hidden = args.hidden or hidden
    heads = args.heads or heads
    if hidden % heads:
        sys.exit(f"hidden {hidden} is not a multiple of heads {heads}")
    latent = args.image_size // 8
    return dict(model=f"DiT-{name}", depth=depth, hidden=hidden, patch=patch, heads=heads,
                mlp_ratio=4.0, in_ch=4, out_ch=8, latent=latent,
                tokens=(latent // patch) ** 2, num_classes=args.num_classes,
                class_dropout=0.1, learn_sigma=True)


def build_model(cfg, device):
    with torch.device(device):
        return DiT(input_size=cfg["latent"], patch=cfg["patch"], in_ch=cfg["in_ch"],
                   hidden=cfg["hidden"], depth=cfg["depth"], heads=cfg["heads"],
                   mlp_ratio=cfg["mlp_ratio"], num_classes=cfg["num_classes"],
                   class_dropout=cfg["class_dropout"], learn_sigma=cfg["learn_sigma"])


def common_args(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="XL/2", help="XL/2, L/4, B/2, S/8 ... (DiT- prefix optional)")
    ap.add_argument("--depth", type=int, help="override the config's depth")
    ap.add_argument("--hidden", type=int, help="override the config's hidden size")
    ap.add_argument("--heads", type=int, help="override the config's head count")
    ap.add_argument("--image-size", type=int, default=256, help="pixels; latents are size/8")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compiles)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the step")
    ap.add_argument("--compile-scope", choices=["step", "blocks"], default="step",
                    help="step: the whole loss/sampling step as one graph; blocks: each "
                         "DiT block alone (one graph reused 28 times: much shorter compile)")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode (default, reduce-overhead, max-autotune)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                    help="bf16: autocast over fp32 weights; fp32: TF32 off")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float,
                    help="peak for MFU; default 989.4 on H100/H200 bf16, else no MFU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="", help="free text copied into the JSON")
    return ap


def setup(args):
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        tf32 = args.precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return dev, (torch.bfloat16 if args.precision == "bf16" else None)


def compile_fn(args, model, fn):
    """`fn` compiled as --compile-scope says (or `fn` itself without --compile)."""
    if not args.compile:
        return fn
    if args.compile_scope == "blocks":
        for b in model.blocks:
            b.compile(dynamic=False, mode=args.compile_mode)
        return fn
    return torch.compile(fn, dynamic=False, mode=args.compile_mode)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_steps(fn, n, dev):
    """Per-call milliseconds: CUDA events around each call on the GPU, the
    host clock (the CPU runs synchronously) elsewhere."""
    if dev.type == "cuda":
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        ev[0].record()
        for i in range(n):
            fn()
            ev[i + 1].record()
        torch.cuda.synchronize(dev)
        return [ev[i].elapsed_time(ev[i + 1]) for i in range(n)]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def peak_tflops(args, dev):
    if args.peak_tflops:
        return args.peak_tflops, "--peak-tflops"
    if dev.type == "cuda" and args.precision == "bf16":
        name = torch.cuda.get_device_name(dev)
        for key, val in PEAK_BF16_TFLOPS.items():
            if key in name:
                return val, f"dense bf16 datasheet peak for {key}"
    return None, None


def environment(dev):
    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "host": platform.node(),
           "cpu_threads": torch.get_num_threads(), "device": str(dev)}
    if dev.type == "cuda":
        prop = torch.cuda.get_device_properties(dev)
        env.update(gpu=prop.name, sm_count=prop.multi_processor_count,
                   gpu_mem_bytes=prop.total_memory, capability=f"{prop.major}.{prop.minor}",
                   cudnn=torch.backends.cudnn.version())
    return env


def gemm_probe(dev, n=8192, iters=10):
    """Measured bf16 matrix-product rate, the practical ceiling for MFU."""
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ms = sorted(time_steps(lambda: a @ b, iters, dev))[iters // 2]
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def summarize(ms, images_per_call):
    ms_sorted = sorted(ms)
    mean = sum(ms) / len(ms)
    return {"ms_per_step": mean, "ms_per_step_median": ms_sorted[len(ms) // 2],
            "ms_per_step_min": ms_sorted[0], "ms_per_step_max": ms_sorted[-1],
            "images_per_s": images_per_call * 1e3 / mean}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def is_oom(e):
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def free_memory(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


# ---------------------------------------------------------------- training
def train_once(args, cfg, dev, amp, batch):
    model = build_model(cfg, dev).train()
    ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    ema_params = [p for p in ema.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0,
                            **({"fused": True} if dev.type == "cuda" else {"foreach": True}))
    diff = Diffusion(device=dev)
    g = torch.Generator(device=dev).manual_seed(args.seed)
    x0 = torch.randn(batch, cfg["in_ch"], cfg["latent"], cfg["latent"], device=dev, generator=g)
    y = torch.randint(0, cfg["num_classes"], (batch,), device=dev, generator=g)

    def loss_fn(x0_, y_):
        t = torch.randint(0, diff.T, (x0_.shape[0],), device=x0_.device)
        noise = torch.randn_like(x0_)
        return loss_terms(model, diff, x0_, y_, t, noise, amp).mean()

    loss_step = compile_fn(args, model, loss_fn)
    losses = []

    def step():
        loss = loss_step(x0, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - args.ema_decay)
        losses.append(loss.detach())

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for i in range(args.warmup):
        step()
        if i == 0:
            sync(dev)
            first_s = time.perf_counter() - t0
            log(f"first step (compile, allocation) {first_s:.1f} s")
    sync(dev)
    warm_s = time.perf_counter() - t0
    ms = time_steps(step, args.steps, dev)
    res = summarize(ms, batch)
    res.update(first_step_s=first_s if args.warmup else None, warmup_s=warm_s,
               loss_first=losses[0].item(), loss_last=losses[-1].item(),
               params=sum(p.numel() for p in params),
               optimizer="AdamW fused" if dev.type == "cuda" else "AdamW foreach")
    if not math.isfinite(res["loss_last"]):
        raise RuntimeError(f"loss is {res['loss_last']}")
    if dev.type == "cuda":
        res.update(peak_mem_bytes=torch.cuda.max_memory_allocated(dev),
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(dev))
    else:
        import resource
        res.update(peak_mem_bytes=None,
                   peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return res


def check_reference(args, dev):
    """Our model and loss against facebookresearch/DiT's code (needs timm):
    the same random weights, inputs, t and noise must give the same output
    and the same per-sample loss."""
    sys.path.insert(0, args.check_ref)
    from models import DiT as RefDiT
    from diffusion import create_diffusion
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    kw = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2,
              num_heads=4, num_classes=10)
    ref = RefDiT(**kw).to(dev).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.requires_grad:  # also the zero-initialised ones
                p.normal_(0, 0.1)
    ours = DiT(input_size=8, patch=2, in_ch=4, hidden=64, depth=2, heads=4,
               num_classes=10).to(dev).eval()
    pos_diff = (ours.pos_embed - ref.pos_embed).abs().max().item()  # before the load
    ours.load_state_dict(ref.state_dict(), strict=True)
    B = 6
    x0 = torch.randn(B, 4, 8, 8, device=dev)
    y = torch.tensor([0, 3, 9, 10, 5, 1], device=dev)  # 10: the null class
    t = torch.tensor([0, 1, 10, 500, 998, 999], device=dev)
    noise = torch.randn_like(x0)
    with torch.no_grad():
        out_ref, out = ref(x0, t, y), ours(x0, t, y)
        loss_ref = create_diffusion("").training_losses(ref, x0, t, dict(y=y), noise)["loss"]
        loss = loss_terms(ours, Diffusion(device=dev), x0, y, t, noise, None)
    res = {"check": "dit_train_torch vs facebookresearch/DiT",
           "pos_embed_max_abs_diff": pos_diff,
           "forward_max_abs_diff": (out - out_ref).abs().max().item(),
           "forward_ref_max_abs": out_ref.abs().max().item(),
           "loss_max_rel_diff": ((loss - loss_ref).abs() / loss_ref.abs()).max().item(),
           "loss_ref": loss_ref.tolist()}
    res["ok"] = (pos_diff < 1e-6 and res["forward_max_abs_diff"] < 1e-4
                 and res["loss_max_rel_diff"] < 1e-4)
    return res


def main():
    ap = common_args(__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256,
                    help="images per step; halved until it fits in GPU memory")
    ap.add_argument("--min-batch", type=int, default=8, help="give up below this")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--ema-decay", type=float, default=0.9999)
    ap.add_argument("--no-gemm-probe", action="store_true",
                    help="skip the 8192^3 bf16 matmul rate measurement on CUDA")
    ap.add_argument("--check-ref", metavar="DIT_DIR",
                    help="compare model and loss with facebookresearch/DiT in DIT_DIR and exit")
    args = ap.parse_args()
    dev, amp = setup(args)
    if args.check_ref:
        res = check_reference(args, dev)
        print(json.dumps(res, indent=1))
        return 0 if res["ok"] else 1

    cfg = model_config(args)
    peak, peak_src = peak_tflops(args, dev)
    out = {"bench": "dit_train_torch", "label": args.label, "config": cfg,
           "precision": args.precision, "compile": args.compile,
           "compile_scope": args.compile_scope if args.compile else None,
           "compile_mode": args.compile_mode, "attention": "sdpa",
           "loss": "mse(eps) + vlb (learned sigma), as DiT train.py",
           "warmup": args.warmup, "steps": args.steps, "batch_requested": args.batch,
           "env": environment(dev)}
    if dev.type == "cuda" and not args.no_gemm_probe and args.precision == "bf16":
        out["gemm_bf16_tflops"] = gemm_probe(dev)
        log(f"bf16 8192^3 matmul: {out['gemm_bf16_tflops']:.0f} TFLOP/s")
    batch, ooms = args.batch, []
    while True:
        log(f"{cfg['model']} batch {batch} {args.precision} "
            f"{'compiled' if args.compile else 'eager'} on {dev}")
        try:
            res = train_once(args, cfg, dev, amp, batch)
            break
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_oom(e) or batch // 2 < args.min_batch:
                raise
            log(f"batch {batch}: out of memory, trying {batch // 2}")
        ooms.append(batch)
        batch //= 2
        free_memory(dev)
    fwd = flops_forward(cfg)
    out.update(res)
    out.update(batch=batch, oom_batches=ooms, flops_per_image_forward=fwd,
               flops_per_image=3 * fwd, tflops_per_s=3 * fwd * res["images_per_s"] / 1e12,
               peak_tflops=peak, peak_source=peak_src,
               mfu=3 * fwd * res["images_per_s"] / (peak * 1e12) if peak else None)
    if "gemm_bf16_tflops" in out:
        out["fraction_of_gemm"] = out["tflops_per_s"] / out["gemm_bf16_tflops"]
    log(f"{res['images_per_s']:.1f} images/s, {res['ms_per_step']:.1f} ms/step"
        + (f", MFU {out['mfu']:.3f}" if out["mfu"] else ""))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
