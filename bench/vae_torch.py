"""diffusers' AutoencoderKL on the CPU, timed as bench/vae_encode_decode.c
times ours: N encodes of one SIZE x SIZE image (latent_dist mean and std),
then N decodes, batch 1, fp32, inference mode.
Usage: vae_torch.py MODEL_DIR SIZE N THREADS [decode] [tiling]  (prints the
same line). decode: the decoder alone on random normal latents, N may be 0;
tiling: vae.enable_tiling() first."""
import resource
import sys
import time

import safetensors.torch  # noqa: F401 (diffusers reads through it; an old torch needs the import)
import torch
from diffusers import AutoencoderKL

model_dir, size, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
decode_only, tiling = "decode" in sys.argv[5:], "tiling" in sys.argv[5:]
torch.set_num_threads(threads)
vae = AutoencoderKL.from_pretrained(model_dir).eval()
if tiling:
    vae.enable_tiling()
x = torch.rand(1, 3, size, size) * 2 - 1
f = 2 ** (len(vae.config.block_out_channels) - 1)
with torch.inference_mode():
    if decode_only:
        z = torch.randn(1, vae.config.latent_channels, size // f, size // f)
    else:
        z = vae.encode(x).latent_dist.mean
    vae.decode(z)
    t0 = time.perf_counter()
    for _ in range(0 if decode_only else n):
        d = vae.encode(x).latent_dist
        _ = (d.mean, d.std)
    t1 = time.perf_counter()
    for _ in range(n):
        vae.decode(z)
    t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
enc = 0 if decode_only else n / (t1 - t0)
dec = n / (t2 - t1) if n else 0
print(f"encode {enc:.3f} img/s decode {dec:.3f} img/s peak {peak:.0f} MB")
