#!/bin/sh
# The VAE on the CPU next to diffusers, same machine, same run: an
# SD-VAE-sized AutoencoderKL (block_out_channels 128,256,512,512, two layers
# per block, 4 latent channels, 32 groups) with random weights, encode and
# decode images/s at 256 and 512 px, batch 1, fp32, and peak memory.
# Usage: make bench && [PYTHON=python3] bench/vae_bench.sh [N]   (PYTHON with torch and diffusers)
set -eu
n=${1:-3}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/bench/vae_encode_decode"
work=${BENCH_DIR:-/tmp/dit-vae-bench}
mkdir -p "$work"
threads=$(nproc)
py=${PYTHON:-python3}
[ -f "$work/sdvae/diffusion_pytorch_model.safetensors" ] || "$py" - "$work/sdvae" <<'PY'
import sys, torch
import safetensors.torch  # noqa: F401 (an old torch needs the import before save_pretrained)
from diffusers import AutoencoderKL
torch.manual_seed(0)
vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                    norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256)
vae.save_pretrained(sys.argv[1])
PY
echo "| size | dit encode | diffusers encode | dit decode | diffusers decode | dit peak | diffusers peak |"
echo "|---|---|---|---|---|---|---|"
for s in 256 512; do
    ours=$("$bin" "vae:$work/sdvae" "$s" "$n")
    theirs=$("$py" "$top/bench/vae_torch.py" "$work/sdvae" "$s" "$n" "$threads" 2>/dev/null)
    set -- $ours; oe=$2; od=$5; op=$8
    set -- $theirs; te=$2; td=$5; tp=$8
    echo "| $s | $oe img/s | $te img/s | $od img/s | $td img/s | $op MB | $tp MB |"
done
