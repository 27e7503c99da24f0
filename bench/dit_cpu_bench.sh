#!/bin/sh
# DiT forward + backward per image on the CPU: this toolkit next to the
# original DiT code under torch, same machine, same run.
# Usage: bench/dit_cpu_bench.sh [BATCH [ITERS]]  (after `make bench`; the
# torch side needs /usr/bin/python3 with torch and timm, and DiT's models.py
# in $DIT_REF).
set -eu
B=${1:-8}
iters=${2:-5}
threads=$(nproc)
echo "model	batch	ms/step	ms/image	images/s	(threads: $threads)"
for model in DiT-S/2 DiT-B/2; do
    printf 'dit   '; build/release/bench/dit_step "$model" "$B" "$iters" 32
    printf 'torch '; OMP_NUM_THREADS=$threads /usr/bin/python3 bench/dit_step_torch.py "$model" "$B" "$iters" 32
done
