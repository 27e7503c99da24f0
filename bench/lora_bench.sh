#!/bin/sh
# LoRA rank R against full fine-tuning of a DiT on the CPU: this toolkit
# next to the original DiT code with PEFT under torch, same machine, same
# run. Usage: bench/lora_bench.sh [MODEL [BATCH [ITERS [RANK]]]] (after
# `make bench`; the torch side needs torch, timm and peft, and DiT's models.py
# in $DIT_REF).
set -eu
model=${1:-DiT-B/2}
B=${2:-4}
iters=${3:-3}
rank=${4:-16}
py=${PYTHON:-/work/refenv/bin/python}
echo "side	model	mode	trainable	optimizer MB	weights+grads MB	ms/step	(threads: $(nproc))"
build/release/bench/lora_step "$model" "$B" "$iters" "$rank" 32 | sed 's/^/dit	/'
OMP_NUM_THREADS=$(nproc) "$py" bench/lora_step_torch.py "$model" "$B" "$iters" "$rank" 32 | sed 's/^/torch	/'
