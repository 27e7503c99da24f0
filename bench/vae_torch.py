"""diffusers' AutoencoderKL on the CPU, timed as bench/vae_encode_decode.c
times ours: N encodes of one SIZE x SIZE image (latent_dist mean and std),
then N decodes, batch 1, fp32, inference mode.
Usage: vae_torch.py MODEL_DIR SIZE N THREADS  (prints the same line)."""
import resource
import sys
import time

import safetensors.torch  # noqa: F401 (diffusers reads through it; an old torch needs the import)
import torch
from diffusers import AutoencoderKL

model_dir, size, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
vae = AutoencoderKL.from_pretrained(model_dir).eval()
x = torch.rand(1, 3, size, size) * 2 - 1
with torch.inference_mode():
    d = vae.encode(x).latent_dist
    z = d.mean
    vae.decode(z)
    t0 = time.perf_counter()
    for _ in range(n):
        d = vae.encode(x).latent_dist
        _ = (d.mean, d.std)
    t1 = time.perf_counter()
    for _ in range(n):
        vae.decode(z)
    t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"encode {n / (t1 - t0):.3f} img/s decode {n / (t2 - t1):.3f} img/s peak {peak:.0f} MB")
