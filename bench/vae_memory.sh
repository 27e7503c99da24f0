#!/bin/sh
# Peak memory of one 1024-px decode on the CPU, ours and diffusers', untiled
# and tiled (ours: the spec's ",tiling"; diffusers: enable_tiling()), with the
# SD-VAE-sized random model of vae_bench.sh (made there first). Each decode
# runs in a process of its own, so each peak is that decode's alone.
# Usage: make bench && [PYTHON=python3] bench/vae_memory.sh [SIZE]
set -eu
s=${1:-1024}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/bench/vae_encode_decode"
work=${BENCH_DIR:-/tmp/dit-vae-bench}
py=${PYTHON:-python3}
threads=$(nproc)
[ -f "$work/sdvae/diffusion_pytorch_model.safetensors" ] || { echo "run bench/vae_bench.sh first (it makes $work/sdvae)" >&2; exit 1; }
peak() { sed 's/.*peak \([0-9]*\) MB.*/\1/'; }
ours=$("$bin" "vae:$work/sdvae" "$s" 0 decode | peak)
ours_t=$("$bin" "vae:$work/sdvae,tiling" "$s" 0 decode | peak)
theirs=$("$py" "$top/bench/vae_torch.py" "$work/sdvae" "$s" 0 "$threads" decode 2>/dev/null | peak)
theirs_t=$("$py" "$top/bench/vae_torch.py" "$work/sdvae" "$s" 0 "$threads" decode tiling 2>/dev/null | peak)
echo "| decode $s px | dit | diffusers |"
echo "|---|---|---|"
echo "| untiled | $ours MB | $theirs MB |"
echo "| tiled | $ours_t MB | $theirs_t MB |"
