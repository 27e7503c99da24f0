#!/usr/bin/env python3
"""Step-by-step goldens for the samplers of models/sampler.c, from the code
users run: facebookresearch/DiT's sampling loops (sample.py's
create_diffusion(str(N)) + p_sample_loop, and ddim_sample_loop), diffusers'
DiTPipeline with DDPMScheduler and DDIMScheduler, and F-Lite's FLitePipeline.

Run from the repository root (see tests/reference/README.md):

    DIT_REF=/work/refs/DiT F_LITE_REF=/work/refs/f-lite \\
        /usr/bin/python3 tests/reference/make_sampler_goldens.py

Needs torch (Debian's 1.13), diffusers 0.31.0, safetensors, and timm 0.6.13
(DiT's models.py imports it; only DiT.forward_with_cfg is used). DIT_REF and
F_LITE_REF name checkouts that are imported from, never copied. F-Lite's
pipeline.py imports transformers only for type names (T5EncoderModel,
T5TokenizerFast); a stub module stands in for it, so transformers need not be
installed. Every loop below is the reference's own code, run whole: no
sampling line is replicated here. Deterministic: fixed seeds, one thread.

Every run samples B = 2 images through a deterministic fake model, so the C
test can run the same model. All constants are computed in float64 and
rounded to float32 once; the tensor arithmetic is float32:

  DiT-style fake (4 latent channels, learned sigma: 8 output channels), for
  image b with class y and integer timestep t, channel c:
      eps = 0.3 * x + fp32(0.1 sin(t / 100 + c) + (y != 1000 ? 0.05 cos(y + c) : 0))
      var = 0.1 * x + fp32(0.8 cos(t / 50 + c))
  (1000 is the null class of DiT and of DiTPipeline.)
  F-Lite-style fake (16 channels), t the float32 time the model is given:
      v = -0.8 * x + fp32(0.3 sin(3 t + c) + (conditional ? 0.25 cos(c) : 0))
  where "conditional" is the prompt half of the guidance batch (its context
  is the prompt embedding, ones here; the negative one is zeros).

tests/fixtures/sampler/sampler.safetensors, for each run R:
  R/x         [N+1, 2, C, H, W] float32: x[0] the starting noise, x[i+1] the
              sample after step i (the first, guided half of the batch where
              the loop carries the unconditional half too)
  R/noise     [N, 2, C, H, W] float32: the noise step i drew (the first half
              of its draw), where the run draws any
  R/timesteps [N] int64: the timestep the model saw at step i (DDPM/DDIM)
  R/t         [N] float32: the time the model saw at step i (flow)
  R/labels    [2] int64 (DiT-style runs)
and spacing/<rule>/<N> [N] int64: the timesteps visited, in order, by
  IDDPM's space_timesteps(1000, str(N)) ("iddpm", as SpacedDiffusion's
  timestep_map, reversed) and by DDPMScheduler.set_timesteps(N) with
  timestep_spacing "leading", "leading" with steps_offset 1
  ("leading_offset1"), "trailing" and "linspace".

tests/fixtures/sampler/sampler.json: each run's settings (sampler, steps,
eta, guidance, guided channels, shift, scheduler config), the spacing step
counts, versions and notes.

The runs:
  dit_ddpm25      DiT: create_diffusion("25").p_sample_loop_progressive with
                  DiT.forward_with_cfg (cfg 4, the first 3 channels guided),
                  clip_denoised=False, as sample.py; learned-range variance.
  dit_ddim10_eta0, dit_ddim10_eta1
                  DiT: create_diffusion("10").ddim_sample_loop_progressive,
                  same model and guidance, eta 0 and 1.
  hf_ddpm25       diffusers DiTPipeline (guidance 4 on all 4 latent channels,
                  learned sigma split off before the step) with
                  DDPMScheduler.from_config(the DiT-XL-2 scheduler config):
                  leading spacing, fixed_small variance.
  hf_ddim25       the same pipeline with DDIMScheduler (eta 0: the pipeline
                  passes none).
  hf_ddim10_eta1  DDIMScheduler.step(eta=1, variance_noise=noise) driven as
                  the pipeline drives it, without guidance.
  hf_ddpm10_trailing
                  DDPMScheduler with timestep_spacing="trailing" driven as the
                  pipeline drives it, without guidance: its last step is at
                  t = 99 > 0, so it adds noise there too.
  flite_euler10   F-Lite's FLitePipeline.__call__, 10 steps, alpha (shift) 3,
                  guidance 4, 16 channels, latent 1 x 1.
"""

import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch

DIT_REF = os.environ.get("DIT_REF", "/work/refs/DiT")
F_LITE_REF = os.environ.get("F_LITE_REF", "/work/refs/f-lite")
sys.path.insert(0, DIT_REF)

from diffusion import create_diffusion  # noqa: E402  (from DIT_REF)
from diffusion.respace import space_timesteps  # noqa: E402
from models import DiT  # noqa: E402  (DiT's models.py; only forward_with_cfg is used)

import diffusers  # noqa: E402
import diffusers.schedulers.scheduling_ddpm as ddpm_module  # noqa: E402
from diffusers import DDIMScheduler, DDPMScheduler, DiTPipeline  # noqa: E402
import safetensors  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "sampler"))
B, C, H, W = 2, 4, 2, 2
LABELS = [207, 360]
NULL = 1000
CFG = 4.0
FLOW_C, FLOW_HW = 16, 1
SPACING_N = [1, 3, 7, 10, 25, 50, 100, 250]

# The scheduler config of facebook/DiT-XL-2-256 (and -512): what diffusers'
# scripts/convert_dit_to_diffusers.py builds, DDIMScheduler(num_train_timesteps=1000,
# beta_schedule="linear", prediction_type="epsilon", clip_sample=False), saved
# by diffusers 0.12 (no timestep_spacing key, so "leading"). The hub's
# scheduler_config.json is 310 bytes, which is exactly this JSON as diffusers
# writes it (indent 2, sorted keys).
HUB_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler", "_diffusers_version": "0.12.0.dev0", "beta_end": 0.02,
    "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "set_alpha_to_one": True, "steps_offset": 0, "trained_betas": None,
}


def versions():
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "diffusers": diffusers.__version__, "safetensors": safetensors.__version__}


def f32_consts(values, shape):
    return torch.tensor(values, dtype=torch.float64).to(torch.float32).reshape(shape)


def dit_fake_out(x, t, y):
    """The DiT-style fake model: x [n, 4, H, W], t int, y [n] -> [n, 8, H, W]."""
    n = x.shape[0]
    ke = [0.1 * np.sin(t / 100.0 + c) + (0.05 * np.cos(int(y[b]) + c) if int(y[b]) != NULL else 0.0)
          for b in range(n) for c in range(C)]
    kv = [0.8 * np.cos(t / 50.0 + c) for b in range(n) for c in range(C)]
    return torch.cat([0.3 * x + f32_consts(ke, (n, C, 1, 1)), 0.1 * x + f32_consts(kv, (n, C, 1, 1))], dim=1)


class NoiseTape:
    """Hands out fresh normals from its own generator and keeps the first
    half-batch (or the whole batch) of each draw."""

    def __init__(self, seed, keep):
        self.g = torch.Generator().manual_seed(seed)
        self.keep = keep
        self.draws = []

    def draw(self, shape, dtype=torch.float32):
        z = torch.randn(*shape, generator=self.g, dtype=dtype)
        self.draws.append(z[: self.keep].clone())
        return z


# ----------------------------------------------------------------------------
# DiT's own sampling code


class FakeDiT:
    """Stands in for DiT: forward() is the fake, forward_with_cfg is DiT's."""

    in_channels = C

    def __init__(self):
        self.seen_t = []

    def forward(self, x, t, y):
        assert bool((t == t[0]).all())
        return dit_fake_out(x, int(t[0]), y)

    def forward_with_cfg(self, x, t, y, cfg_scale):
        self.seen_t.append(int(t[0]))
        return DiT.forward_with_cfg(self, x, t, y, cfg_scale)


def dit_run(kind, n, eta, seed):
    diffusion = create_diffusion(str(n))
    model = FakeDiT()
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, H, W, generator=g)
    tape = NoiseTape(seed + 1, B)
    # As sample.py: the batch doubled, the second half with the null class.
    z2 = torch.cat([z, z], 0)
    y = torch.tensor(LABELS + [NULL] * B)
    kwargs = dict(y=y, cfg_scale=CFG)
    saved = torch.randn_like
    torch.randn_like = lambda x, *a, **k: tape.draw(x.shape, x.dtype)
    try:
        if kind == "ddpm":
            loop = diffusion.p_sample_loop_progressive(model.forward_with_cfg, z2.shape, z2, clip_denoised=False,
                                                        model_kwargs=kwargs, device="cpu")
        else:
            loop = diffusion.ddim_sample_loop_progressive(model.forward_with_cfg, z2.shape, z2, clip_denoised=False,
                                                           model_kwargs=kwargs, device="cpu", eta=eta)
        xs = [z] + [out["sample"][:B].clone() for out in loop]
    finally:
        torch.randn_like = saved
    assert len(xs) == n + 1 and len(tape.draws) == n
    out = {"x": torch.stack(xs), "timesteps": torch.tensor(model.seen_t, dtype=torch.int64),
           "labels": torch.tensor(LABELS, dtype=torch.int64)}
    if kind == "ddpm" or eta > 0:
        out["noise"] = torch.stack(tape.draws)
    info = {"reference": "facebookresearch/DiT diffusion/ (%s)" % (
                "p_sample_loop_progressive" if kind == "ddpm" else "ddim_sample_loop_progressive"),
            "sampler": kind, "steps": n, "eta": eta, "cfg_scale": CFG, "guided_channels": 3,
            "clip_denoised": False, "respacing": str(n), "variance": "LEARNED_RANGE",
            "timestep_map": list(diffusion.timestep_map)}
    return out, info


# ----------------------------------------------------------------------------
# diffusers


class Config(dict):
    __getattr__ = dict.__getitem__


class FakeTransformer(torch.nn.Module):
    """Stands in for DiTTransformer2DModel inside DiTPipeline."""

    def __init__(self):
        super().__init__()
        self.config = Config(sample_size=H, in_channels=C, out_channels=2 * C)
        self.seen = []

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x, timestep, class_labels):
        assert bool((timestep == timestep[0]).all())
        self.seen.append((int(timestep[0]), x[:B].clone()))
        return types.SimpleNamespace(sample=dit_fake_out(x, int(timestep[0]), class_labels))


class FakeVAE(torch.nn.Module):
    """Records the latents it is asked to decode (scaling factor 1)."""

    def __init__(self):
        super().__init__()
        self.config = Config(scaling_factor=1.0, shift_factor=0.0)
        self.latents = None

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32

    def decode(self, latents):
        self.latents = latents.clone()
        return types.SimpleNamespace(sample=torch.zeros(latents.shape[0], 3, 2, 2))


def hub_config():
    return {k: v for k, v in HUB_SCHEDULER_CONFIG.items() if not k.startswith("_")}


def hf_pipeline_run(scheduler, n, seed):
    transformer, vae = FakeTransformer(), FakeVAE()
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    tape = NoiseTape(seed + 1, B)
    saved = ddpm_module.randn_tensor

    def fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
        return tape.draw(shape, dtype)

    ddpm_module.randn_tensor = fake_randn
    try:
        pipe(class_labels=LABELS, guidance_scale=CFG, generator=torch.Generator().manual_seed(seed),
             num_inference_steps=n, output_type="np")
    finally:
        ddpm_module.randn_tensor = saved
    assert len(transformer.seen) == n
    xs = [x for _, x in transformer.seen] + [vae.latents[:B].clone()]
    out = {"x": torch.stack(xs), "timesteps": torch.tensor([t for t, _ in transformer.seen], dtype=torch.int64),
           "labels": torch.tensor(LABELS, dtype=torch.int64)}
    if tape.draws:
        assert len(tape.draws) == n - (1 if int(scheduler.timesteps[-1]) == 0 else 0)
        # DDPMScheduler draws no noise at t = 0; the C test gets zeros there.
        draws = tape.draws + [torch.zeros(B, C, H, W)] * (n - len(tape.draws))
        out["noise"] = torch.stack(draws)
    return out


def hf_direct_run(scheduler, n, seed, eta=None):
    """The pipeline's loop without guidance: set_timesteps, scale_model_input,
    the learned sigma split off, step."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g)
    tape = NoiseTape(seed + 1, B)
    y = torch.tensor(LABELS)
    scheduler.set_timesteps(n)
    xs, ts, draws = [x], [], []
    saved = ddpm_module.randn_tensor
    ddpm_module.randn_tensor = lambda shape, generator=None, device=None, dtype=None, layout=None: tape.draw(shape)
    try:
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t)
            out = dit_fake_out(inp, int(t), y)
            eps, _ = torch.split(out, C, dim=1)
            ts.append(int(t))
            if eta is None:
                x = scheduler.step(eps, t, x).prev_sample
            else:
                noise = tape.draw((B, C, H, W))
                x = scheduler.step(eps, t, x, eta=eta, variance_noise=noise).prev_sample
            xs.append(x.clone())
    finally:
        ddpm_module.randn_tensor = saved
    out = {"x": torch.stack(xs), "timesteps": torch.tensor(ts, dtype=torch.int64),
           "labels": torch.tensor(LABELS, dtype=torch.int64)}
    if tape.draws:
        assert len(tape.draws) == n
        out["noise"] = torch.stack(tape.draws)
    return out


def hf_info(scheduler, n, pipeline, cfg, eta=0.0):
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    kind = "ddpm" if isinstance(scheduler, DDPMScheduler) else "ddim"
    return {"reference": "diffusers %s %s" % (type(scheduler).__name__,
                                              "in DiTPipeline.__call__" if pipeline else "driven as DiTPipeline does"),
            "sampler": kind, "steps": n, "eta": eta, "cfg_scale": cfg, "guided_channels": C if cfg > 1 else 0,
            "scheduler_config": config, "timesteps": [int(t) for t in scheduler.timesteps]}


# ----------------------------------------------------------------------------
# F-Lite


def load_flite_pipeline():
    # pipeline.py imports transformers for two type names only.
    if "transformers" not in sys.modules:
        stub = types.ModuleType("transformers")
        stub.T5EncoderModel = type("T5EncoderModel", (), {})
        stub.T5TokenizerFast = type("T5TokenizerFast", (), {})
        sys.modules["transformers"] = stub
    path = os.path.join(F_LITE_REF, "f_lite", "pipeline.py")
    spec = importlib.util.spec_from_file_location("f_lite_pipeline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeFLiteDiT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x, context, t):
        n = x.shape[0]
        assert x.dtype == torch.float32 and t.dtype == torch.float32 and bool((t == t[0]).all())
        tt = float(t[0])
        self.seen.append((t[0].clone(), x[:B].clone()))
        cond = [bool(context[b].abs().sum() > 0) for b in range(n)]
        k = [0.3 * np.sin(3.0 * tt + c) + (0.25 * np.cos(c) if cond[b] else 0.0)
             for b in range(n) for c in range(FLOW_C)]
        return -0.8 * x + f32_consts(k, (n, FLOW_C, 1, 1))


class FakeT5(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.encoder = torch.nn.Module()
        self.encoder.final_layer_norm = torch.nn.Identity()
        self.encoder.dropout = torch.nn.Identity()

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32

    def forward(self, ids, return_dict=True, output_hidden_states=True):
        h = torch.ones(ids.shape[0], ids.shape[1], 8)
        return types.SimpleNamespace(hidden_states=[h] * 12)


class FakeTokenizer:
    def __call__(self, prompt, **kwargs):
        return types.SimpleNamespace(input_ids=torch.zeros(len(prompt), 4, dtype=torch.int64))


def flite_run(n, alpha, seed):
    mod = load_flite_pipeline()
    dit, vae = FakeFLiteDiT(), FakeVAE()
    pipe = mod.FLitePipeline(dit_model=dit, vae=vae, text_encoder=FakeT5(), tokenizer=FakeTokenizer())
    pipe.set_progress_bar_config(disable=True)
    px = 8 * FLOW_HW
    pipe(prompt=["a", "b"], height=px, width=px, num_inference_steps=n, guidance_scale=CFG,
         generator=torch.Generator().manual_seed(seed), alpha=alpha)
    assert len(dit.seen) == n
    xs = [x for _, x in dit.seen] + [vae.latents[:B].clone()]
    out = {"x": torch.stack(xs), "t": torch.stack([t for t, _ in dit.seen]).to(torch.float32)}
    info = {"reference": "F-Lite f_lite/pipeline.py FLitePipeline.__call__ (train.py's sample_images loop is the "
                         "same update)", "sampler": "euler", "steps": n, "shift": alpha, "cfg_scale": CFG,
            "guided_channels": FLOW_C, "channels": FLOW_C, "latent_size": FLOW_HW,
            "conditional_half": "second (F-Lite batches [negative, prompt])"}
    return out, info


# ----------------------------------------------------------------------------


def spacing_tables():
    tensors, info = {}, {}
    for n in SPACING_N:
        tensors["spacing/iddpm/%d" % n] = torch.tensor(sorted(space_timesteps(1000, str(n)), reverse=True),
                                                       dtype=torch.int64)
        for name, kw in [("leading", {}), ("leading_offset1", {"steps_offset": 1}),
                         ("trailing", {"timestep_spacing": "trailing"}),
                         ("linspace", {"timestep_spacing": "linspace"})]:
            cfg = dict(hub_config(), **kw)
            if name.startswith("leading"):
                cfg["timestep_spacing"] = "leading"
            s = DDPMScheduler.from_config(cfg)
            s.set_timesteps(n)
            tensors["spacing/%s/%d" % (name, n)] = s.timesteps.clone().to(torch.int64)
    info["spacing_steps"] = SPACING_N
    return tensors, info


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    tensors, runs = {}, {}

    def add(name, out, info):
        for k, v in out.items():
            tensors["%s/%s" % (name, k)] = v
        runs[name] = info

    out, info = dit_run("ddpm", 25, 0.0, 11)
    add("dit_ddpm25", out, info)
    out, info = dit_run("ddim", 10, 0.0, 12)
    add("dit_ddim10_eta0", out, info)
    out, info = dit_run("ddim", 10, 1.0, 13)
    add("dit_ddim10_eta1", out, info)

    s = DDPMScheduler.from_config(hub_config())
    add("hf_ddpm25", hf_pipeline_run(s, 25, 21), hf_info(s, 25, True, CFG))
    s = DDIMScheduler.from_config(hub_config())
    add("hf_ddim25", hf_pipeline_run(s, 25, 22), hf_info(s, 25, True, CFG))
    s = DDIMScheduler.from_config(hub_config())
    add("hf_ddim10_eta1", hf_direct_run(s, 10, 23, eta=1.0), hf_info(s, 10, False, 1.0, eta=1.0))
    s = DDPMScheduler.from_config(dict(hub_config(), timestep_spacing="trailing"))
    add("hf_ddpm10_trailing", hf_direct_run(s, 10, 24), hf_info(s, 10, False, 1.0))

    out, info = flite_run(10, 3.0, 31)
    add("flite_euler10", out, info)

    sp, sp_info = spacing_tables()
    tensors.update(sp)

    assert runs["hf_ddpm25"]["scheduler_config"]["variance_type"] == "fixed_small"
    assert runs["hf_ddpm25"]["scheduler_config"]["timestep_spacing"] == "leading"
    meta_info = {
        "runs": runs, "spacing": sp_info, "versions": versions(),
        "hub_scheduler_config": HUB_SCHEDULER_CONFIG,
        "shape": {"B": B, "C": C, "H": H, "W": W}, "labels": LABELS, "null_class": NULL,
        "notes": [
            "DiTPipeline splits the learned sigma off before scheduler.step, so DDPMScheduler samples with its "
            "variance_type (fixed_small from the hub config); DiT's sample.py samples with the learned range.",
            "DiTPipeline guides all latent channels (eps only; the variance half is dropped); DiT's "
            "forward_with_cfg guides channels 0-2 only and keeps the conditional values of the rest.",
            "DDPMScheduler and DDIMScheduler compute the previous timestep as t - 1000 // N whatever the spacing.",
            "diffusers' schedules are float32 (torch.linspace then cumprod); IDDPM's are float64 cast to float32 "
            "when they multiply tensors.",
        ],
    }
    path = os.path.join(OUT, "sampler.safetensors")
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    meta = {"script": "tests/reference/make_sampler_goldens.py",
            "content": "per-step samples of DiT, diffusers and F-Lite samplers with fake models"}
    meta.update(versions())
    save_file(tensors, path, metadata={"producer": json.dumps(meta, sort_keys=True)})
    back = load_file(path)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    jpath = os.path.join(OUT, "sampler.json")
    with open(jpath, "w") as f:
        json.dump(meta_info, f, indent=2, sort_keys=True)
        f.write("\n")
    for q in (path, jpath):
        print("wrote %s (%d bytes)" % (os.path.relpath(q), os.path.getsize(q)))


if __name__ == "__main__":
    main()
