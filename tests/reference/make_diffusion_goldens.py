#!/usr/bin/env python3
"""Goldens for the DiT diffusion objective and its samplers, from the original
facebookresearch/DiT diffusion/ package (the 1000-step linear schedule DiT
trains with: create_diffusion(timestep_respacing=""), learn_sigma=True, so
ModelVarType.LEARNED_RANGE, ModelMeanType.EPSILON and LossType.MSE plus the
VLB term).

Run from the repository root (see tests/reference/README.md):

    DIT_REF=/work/refs/DiT /usr/bin/python3 tests/reference/make_diffusion_goldens.py

DIT_REF names a checkout of facebookresearch/DiT (default /work/refs/DiT); its
diffusion/ package is imported from there, never copied. The script rewrites
the two files below and prints what it wrote.

tests/fixtures/dit/diffusion.safetensors
  schedule/<name> [1000] float64, as GaussianDiffusion holds them: betas,
      alphas_cumprod, alphas_cumprod_prev, posterior_variance,
      posterior_log_variance_clipped, posterior_mean_coef1,
      posterior_mean_coef2.
  train/*  one training_losses() call of the 1000-step diffusion, float32:
      x_start [4,4,8,8], t [4] int64 = [0, 1, 500, 999], noise [4,4,8,8]
      (passed explicitly), model_output [4,8,8,8] (what a fake model returns
      whatever its input: channels 0-3 the eps prediction, 4-7 the
      LEARNED_RANGE variance values), model_t [4] int64 (the timesteps the
      model was called with), x_t (q_sample), mse, vb, loss [4] (terms),
      vb_kl and vb_decoder_nll [4] (both branches of _vb_terms_bpd, in bits;
      vb takes decoder_nll where t == 0 and kl elsewhere),
      grad_model_output [4,8,8,8]: d loss.mean() / d model_output. The VB
      term sees cat([eps.detach(), var]), so channels 0-3 get gradient from
      the MSE only.
  respaced<N>/* for N = 250 and 25 (create_diffusion("N")):
      timestep_map [N] int64, betas, alphas_cumprod,
      posterior_log_variance_clipped [N] float64; then for one batch, each
      row at its own respaced step t [4] int64 = [0, 1, N/2, N-1],
      float32: x [4,4,4,4], model_output [4,8,4,4], noise [4,4,4,4] (the
      noise every sampler below draws, in place of th.randn_like),
      model_t [4] int64 (= timestep_map[t], what the model receives),
      p_mean_variance with clip_denoised=False (as DiT's sample.py
      samples): mean, variance, log_variance, pred_xstart; with
      clip_denoised=True: clip_mean, clip_pred_xstart;
      ddim_eta0, ddim_eta1: ddim_sample(...)["sample"] with eta 0 and 1;
      p_sample: p_sample(...)["sample"]; all three with clip_denoised=False.

tests/fixtures/dit/diffusion.json
  The settings and scalars: enum values, timesteps, seeds, versions.
"""

import contextlib
import json
import os
import sys

import numpy as np
import torch

DIT_REF = os.environ.get("DIT_REF", "/work/refs/DiT")
sys.path.insert(0, DIT_REF)

from diffusion import create_diffusion  # noqa: E402  (from DIT_REF)
from diffusion import gaussian_diffusion as gd  # noqa: E402
from diffusion.diffusion_utils import discretized_gaussian_log_likelihood, normal_kl  # noqa: E402

import safetensors  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "dit"))
SEED = 3
TRAIN_T = [0, 1, 500, 999]
SCHEDULE = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
            "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"]
RESPACINGS = [250, 25]


def versions():
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "safetensors": safetensors.__version__}


class FakeModel:
    """Returns a fixed output and records the timesteps it was given."""

    def __init__(self, out):
        self.out = out
        self.t = None

    def __call__(self, x, t, **kwargs):
        self.t = t.clone()
        return self.out


@contextlib.contextmanager
def fixed_randn_like(noise):
    """The samplers draw their noise with th.randn_like(x); hand them ours."""
    saved = torch.randn_like

    def fake(x, *args, **kwargs):
        assert x.shape == noise.shape
        return noise.clone()

    torch.randn_like = fake
    try:
        yield
    finally:
        torch.randn_like = saved


def schedule(diff, names):
    return {n: torch.from_numpy(np.ascontiguousarray(getattr(diff, n), dtype=np.float64)) for n in names}


def train_goldens(g):
    diff = create_diffusion(timestep_respacing="")
    assert diff.model_var_type == gd.ModelVarType.LEARNED_RANGE
    assert diff.model_mean_type == gd.ModelMeanType.EPSILON
    assert diff.loss_type == gd.LossType.MSE
    assert diff.num_timesteps == 1000 and diff.timestep_map == list(range(1000))

    out = {"schedule/" + k: v for k, v in schedule(diff, SCHEDULE).items()}

    x_start = torch.randn(4, 4, 8, 8, generator=g)
    noise = torch.randn(4, 4, 8, 8, generator=g)
    eps = torch.randn(4, 4, 8, 8, generator=g)
    var = torch.rand(4, 4, 8, 8, generator=g) * 2 - 1  # LEARNED_RANGE values live in about [-1, 1]
    model_output = torch.cat([eps, var], dim=1).requires_grad_(True)
    t = torch.tensor(TRAIN_T, dtype=torch.int64)

    model = FakeModel(model_output)
    terms = diff.training_losses(model, x_start, t, noise=noise)
    terms["loss"].mean().backward()
    x_t = diff.q_sample(x_start, t, noise=noise)

    # Both branches of _vb_terms_bpd, as it computes them, for debugging.
    with torch.no_grad():
        frozen = model_output.detach()
        true_mean, _, true_logvar = diff.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)
        pmv = diff.p_mean_variance(lambda *a, **k: frozen, x_t, t, clip_denoised=False)
        kl = gd.mean_flat(normal_kl(true_mean, true_logvar, pmv["mean"], pmv["log_variance"])) / np.log(2.0)
        nll = gd.mean_flat(-discretized_gaussian_log_likelihood(
            x_start, means=pmv["mean"], log_scales=0.5 * pmv["log_variance"])) / np.log(2.0)
        assert torch.equal(torch.where(t == 0, nll, kl), terms["vb"].detach())
        assert torch.equal(terms["loss"], terms["mse"] + terms["vb"])

    out.update({
        "train/x_start": x_start, "train/t": t, "train/noise": noise, "train/model_output": model_output,
        "train/model_t": model.t, "train/x_t": x_t, "train/mse": terms["mse"], "train/vb": terms["vb"],
        "train/loss": terms["loss"], "train/vb_kl": kl, "train/vb_decoder_nll": nll,
        "train/grad_model_output": model_output.grad,
    })
    info = {
        "num_timesteps": diff.num_timesteps,
        "beta_start": float(diff.betas[0]),
        "beta_end": float(diff.betas[-1]),
        "model_mean_type": diff.model_mean_type.name,
        "model_var_type": diff.model_var_type.name,
        "loss_type": diff.loss_type.name,
        "train_t": TRAIN_T,
        "train_loss_mean": float(terms["loss"].mean()),
        "train_mse": [float(v) for v in terms["mse"]],
        "train_vb": [float(v) for v in terms["vb"]],
        "train_loss": [float(v) for v in terms["loss"]],
    }
    return out, info


def respaced_goldens(n, g):
    diff = create_diffusion(str(n))
    p = "respaced%d/" % n
    out = {p + "timestep_map": torch.tensor(diff.timestep_map, dtype=torch.int64)}
    out.update({p + k: v for k, v in schedule(diff, ["betas", "alphas_cumprod",
                                                     "posterior_log_variance_clipped"]).items()})

    t = torch.tensor([0, 1, n // 2, n - 1], dtype=torch.int64)
    x = torch.randn(4, 4, 4, 4, generator=g)
    model_output = torch.cat([torch.randn(4, 4, 4, 4, generator=g),
                              torch.rand(4, 4, 4, 4, generator=g) * 2 - 1], dim=1)
    noise = torch.randn(4, 4, 4, 4, generator=g)
    model = FakeModel(model_output)

    with torch.no_grad(), fixed_randn_like(noise):
        pmv = diff.p_mean_variance(model, x, t, clip_denoised=False)
        model_t = model.t
        pmv_clip = diff.p_mean_variance(model, x, t, clip_denoised=True)
        ddim0 = diff.ddim_sample(model, x, t, clip_denoised=False, eta=0.0)["sample"]
        ddim1 = diff.ddim_sample(model, x, t, clip_denoised=False, eta=1.0)["sample"]
        psamp = diff.p_sample(model, x, t, clip_denoised=False)["sample"]

    out.update({
        p + "t": t, p + "x": x, p + "model_output": model_output, p + "noise": noise, p + "model_t": model_t,
        p + "mean": pmv["mean"], p + "variance": pmv["variance"], p + "log_variance": pmv["log_variance"],
        p + "pred_xstart": pmv["pred_xstart"], p + "clip_mean": pmv_clip["mean"],
        p + "clip_pred_xstart": pmv_clip["pred_xstart"],
        p + "ddim_eta0": ddim0, p + "ddim_eta1": ddim1, p + "p_sample": psamp,
    })
    info = {
        "respacing": str(n),
        "num_timesteps": diff.num_timesteps,
        "t": t.tolist(),
        "model_t": model_t.tolist(),
        "timestep_map_head": diff.timestep_map[:5],
        "timestep_map_tail": diff.timestep_map[-3:],
    }
    return out, info


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(SEED)

    tensors, train_info = train_goldens(g)
    info = {"train": train_info, "seed": SEED, "versions": versions(),
            "create_diffusion": {"timestep_respacing": "", "noise_schedule": "linear", "learn_sigma": True,
                                 "diffusion_steps": 1000},
            "sampler_clip_denoised": False,
            "notes": [
                "SpacedDiffusion recomputes every schedule, the unspaced 1000-step one too, as betas[i] = 1 - "
                "alphas_cumprod[i] / alphas_cumprod[prev kept step] from the linspace(1e-4, 0.02, 1000) betas; "
                "so schedule/betas differs from the linspace by rounding (at most 1.7e-16 absolute, 4e-13 relative).",
                "Coefficients are gathered as float64 and cast to float32 before they multiply tensors "
                "(_extract_into_tensor(...).float()); all tensor arithmetic is float32.",
                "At t = 500 and 999 the LEARNED_RANGE gradient is tiny (about 1e-8 and 1e-11): there "
                "posterior_log_variance_clipped and log(betas) nearly coincide, so the variance hardly "
                "depends on the model output; compare it with an absolute tolerance.",
            ]}
    for n in RESPACINGS:
        t, i = respaced_goldens(n, g)
        tensors.update(t)
        info["respaced%d" % n] = i

    path = os.path.join(OUT, "diffusion.safetensors")
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    # One metadata key: safetensors writes __metadata__ in hash order, so
    # several keys would make the file differ from run to run.
    meta = {"script": "tests/reference/make_diffusion_goldens.py",
            "content": "DiT diffusion/: schedule, training_losses, respaced p_mean_variance / ddim / p_sample"}
    meta.update(versions())
    save_file(tensors, path, metadata={"producer": json.dumps(meta, sort_keys=True)})
    back = load_file(path)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k

    jpath = os.path.join(OUT, "diffusion.json")
    with open(jpath, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")

    for q in (path, jpath):
        print("wrote %s (%d bytes)" % (os.path.relpath(q), os.path.getsize(q)))
    print("train loss per sample %s" % ", ".join("%.6g" % v for v in train_info["train_loss"]))


if __name__ == "__main__":
    main()
