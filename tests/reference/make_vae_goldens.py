#!/usr/bin/env python3
"""Goldens for models/vae/: diffusers' AutoencoderKL on tiny random configs.

Run from the repository root with /usr/bin/python3 (Debian's python3-torch
1.13 and python3-torchvision, diffusers 0.31.0, safetensors, Pillow; see
tests/reference/README.md). Reads nothing from this repository. Writes, under
tests/fixtures/vae/:

  <name>/config.json, <name>/diffusion_pytorch_model.safetensors
      save_pretrained of each config, weights randomised (seeded):
      sd      block_out_channels [4, 8], layers_per_block 1, norm_num_groups 2,
              latent 4, quant convs, scaling 0.18215, no shift
      flux    [4, 8, 8], layers_per_block 2, groups 2, latent 16, no quant
              convs, scaling 0.3611, shift 0.1159, mid-block attention
      noattn  [4, 8], layers_per_block 1, groups 2, latent 4,
              mid_block_add_attention false, quant_conv only
  sd_legacy/   the sd weights under the legacy attention names
               (query/key/value/proj_attn) and the sd config.json
  sd_ldm.safetensors   the sd weights under the ldm single-file names with
               the first_stage_model. prefix, attention as 1x1 convs
               (checked: diffusers' convert_ldm_vae_checkpoint maps it back)
  sd_bf16/     the sd weights in bfloat16 (save_pretrained of vae.to(bf16))
  <name>_golden.safetensors   for sd, flux, noattn and sd_bf16 (the bf16
               weights run in fp32, so the C side compares the same numbers):
      image        uint8 [H, W, 3], H = 16, W = 24 (seeded noise)
      x            float32 [3, H, W]: ToTensor + Normalize(0.5, 0.5) of image
      mean, std    float32 [L, H/f, W/f]: vae.encode(x).latent_dist, unscaled
      latents      float32 [L, H/f, W/f]: what a denoiser would make (seeded)
      z            latents / scaling_factor + shift_factor in float32 (numpy)
      decoded      float32 [3, H, W]: vae.decode(z).sample
      decoded_rgb  uint8 [H, W, 3]: VaeImageProcessor.postprocess(decoded,
                   output_type="pil")
  sd_tiled_golden.safetensors   the same tensors for the sd model with
               enable_tiling() (tile = sample_size 16, latent tile 8, overlap
               0.25) on a 40x28 image, so that tiles at both edges are partial
"""
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file, save_file

OUT = "tests/fixtures/vae"
H, W = 16, 24

CONFIGS = {
    "sd": dict(block_out_channels=[4, 8], layers_per_block=1, norm_num_groups=2, latent_channels=4,
               scaling_factor=0.18215, sample_size=16),
    "flux": dict(block_out_channels=[4, 8, 8], layers_per_block=2, norm_num_groups=2, latent_channels=16,
                 use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159,
                 mid_block_add_attention=True, sample_size=16),
    "noattn": dict(block_out_channels=[4, 8], layers_per_block=1, norm_num_groups=2, latent_channels=4,
                   use_post_quant_conv=False, mid_block_add_attention=False, sample_size=16),
}

written = []


def model(name, seed):
    cfg = dict(CONFIGS[name])
    n = len(cfg["block_out_channels"])
    cfg["down_block_types"] = ["DownEncoderBlock2D"] * n
    cfg["up_block_types"] = ["UpDecoderBlock2D"] * n
    torch.manual_seed(seed)
    vae = AutoencoderKL(**cfg).eval()
    # Every parameter random and O(1) activations: weights ~ N(0, 1/fan_in),
    # biases N(0, 0.05^2), GroupNorm affine 1 + N(0, 0.3^2) and N(0, 0.2^2).
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for pname, p in vae.named_parameters():
            is_norm = "norm" in pname.split(".")[-2]
            if is_norm and pname.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif is_norm:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif pname.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return vae


def save_folder(vae, name):
    d = os.path.join(OUT, name)
    vae.save_pretrained(d, safe_serialization=True)
    written.extend([os.path.join(d, "config.json"), os.path.join(d, "diffusion_pytorch_model.safetensors")])


def save(tensors, path, check=True):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata={"format": "pt"})
    back = load_file(path)
    assert set(back) == set(tensors)
    for k in tensors:
        assert torch.equal(back[k], tensors[k]), k
    written.append(path)


def ldm_names(sd, n):
    """diffusers state dict -> ldm/SD single-file names (the inverse of
    diffusers' convert_ldm_vae_checkpoint, checked against it below)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        s = k
        if k.startswith("encoder.down_blocks."):
            i = parts[2]
            rest = ".".join(parts[3:])
            rest = rest.replace("resnets.", "block.").replace("downsamplers.0.conv", "downsample.conv")
            s = f"encoder.down.{i}.{rest}"
        elif k.startswith("decoder.up_blocks."):
            i = n - 1 - int(parts[2])
            rest = ".".join(parts[3:])
            rest = rest.replace("resnets.", "block.").replace("upsamplers.0.conv", "upsample.conv")
            s = f"decoder.up.{i}.{rest}"
        s = s.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        s = s.replace("mid_block.attentions.0.group_norm", "mid.attn_1.norm")
        for a, b in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            s = s.replace(f"mid_block.attentions.0.{a}.", f"mid.attn_1.{b}.")
        s = s.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if ".attn_1." in s and s.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # ldm's attention projections are 1x1 convs
        out["first_stage_model." + s] = v
    return out


def legacy_names(sd):
    out = {}
    for k, v in sd.items():
        for a, b in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            k = k.replace(f"attentions.0.{a}.", f"attentions.0.{b}.")
        out[k] = v
    return out


def goldens(vae, name, seed, H=H, W=W):
    cfg = vae.config
    f = 2 ** (len(cfg.block_out_channels) - 1)
    L = cfg.latent_channels
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    x = T.Compose([T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])(image)
    latents = rng.standard_normal((L, H // f, W // f)).astype(np.float32)
    shift = cfg.shift_factor if cfg.shift_factor is not None else 0.0
    z = latents / np.float32(cfg.scaling_factor) + np.float32(shift)
    with torch.no_grad():
        dist = vae.encode(x[None]).latent_dist
        dec = vae.decode(torch.from_numpy(z)[None]).sample
    pil = VaeImageProcessor().postprocess(dec, output_type="pil")[0]
    rgb = np.asarray(pil, dtype=np.uint8)
    g = {
        "image": torch.from_numpy(image),
        "x": x,
        "mean": dist.mean[0],
        "std": dist.std[0],
        "latents": torch.from_numpy(latents),
        "z": torch.from_numpy(z),
        "decoded": dec[0],
        "decoded_rgb": torch.from_numpy(rgb.copy()),
    }
    save(g, os.path.join(OUT, f"{name}_golden.safetensors"))


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    seeds = {"sd": 1, "flux": 2, "noattn": 3}
    vaes = {}
    for name, seed in seeds.items():
        vaes[name] = model(name, seed)
        save_folder(vaes[name], name)
        goldens(vaes[name], name, seed + 10)
    sd = vaes["sd"]
    state = {k: v.detach().clone() for k, v in sd.state_dict().items()}

    # Legacy attention names: a folder diffusers itself loads (it renames them).
    d = os.path.join(OUT, "sd_legacy")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(OUT, "sd", "config.json")) as fh:
        config_text = fh.read()
    with open(os.path.join(d, "config.json"), "w") as fh:
        fh.write(config_text)
    written.append(os.path.join(d, "config.json"))
    save(legacy_names(state), os.path.join(d, "diffusion_pytorch_model.safetensors"))
    back = AutoencoderKL.from_pretrained(d)
    for k, v in back.state_dict().items():
        assert torch.equal(v, state[k]), k

    # ldm single file, checked against diffusers' own conversion.
    ldm = ldm_names(state, len(sd.config.block_out_channels))
    conv = convert_ldm_vae_checkpoint(dict(ldm), dict(sd.config))
    assert set(conv) == set(state), set(conv) ^ set(state)
    for k in state:
        assert torch.equal(conv[k].reshape(state[k].shape), state[k]), k
    save(ldm, os.path.join(OUT, "sd_ldm.safetensors"))

    # bf16 weights; the golden runs them in fp32.
    # diffusers' tiling: enable_tiling() on an image larger than the tile.
    sd.enable_tiling()
    goldens(sd, "sd_tiled", seeds["sd"] + 20, H=28, W=40)
    sd.disable_tiling()

    bf = model("sd", seeds["sd"]).to(torch.bfloat16)
    save_folder(bf, "sd_bf16")
    goldens(bf.float(), "sd_bf16", seeds["sd"] + 10)

    for p in written:
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
