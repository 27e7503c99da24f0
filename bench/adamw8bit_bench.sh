#!/bin/sh
# 8-bit AdamW against fp32 AdamW, optimizer step alone, on the CPU: this
# toolkit next to torch.optim.AdamW and bitsandbytes' AdamW8bit under torch,
# same machine, same run, parameters shaped as a DiT's. Usage:
# bench/adamw8bit_bench.sh [MODEL [ITERS]] (after `make bench`; the torch side
# needs torch, bitsandbytes >= 0.50 and DiT's models.py in $DIT_REF).
set -eu
model=${1:-DiT-B/2}
iters=${2:-5}
py=${PYTHON:-/work/refenv/bin/python}
echo "side	optimizer	parameters	state MB	ms/step	(threads: $(nproc))"
build/release/bench/adamw8bit_step "$model" "$iters" | sed 's/^/dit	/'
OMP_NUM_THREADS=$(nproc) "$py" bench/adamw8bit_torch.py "$model" "$iters" 2>/dev/null | sed 's/^/torch	/'
