#!/bin/sh
# T5 on the CPU next to transformers, same machine, same run: a T5-base-sized
# v1.1 encoder (d_model 768, 12 layers, 12 heads of 64, d_ff 2048 gated-GELU,
# vocab 32128) with random weights, captions/s at 512 tokens, fp32, and peak
# memory. The tokenizer is the test fixture's (tests/fixtures/t5_tokenizer):
# the ids differ from T5's vocabulary, the work does not.
# Usage: make bench && [PYTHON=python3] bench/t5_bench.sh [N] [BATCH]   (PYTHON with torch and transformers)
set -eu
n=${1:-8}
batch=${2:-4}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/bench/t5_encode"
tok="$top/tests/fixtures/t5_tokenizer/tokenizer"
work=${BENCH_DIR:-/tmp/dit-t5-bench}
mkdir -p "$work"
threads=$(nproc)
py=${PYTHON:-python3}
[ -f "$work/t5base/model.safetensors" ] || "$py" - "$work/t5base" <<'PY'
import sys, torch
from transformers import T5Config, T5EncoderModel
torch.manual_seed(0)
cfg = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
               feed_forward_proj="gated-gelu", tie_word_embeddings=False)
T5EncoderModel(cfg).save_pretrained(sys.argv[1])
PY
ours=$("$bin" "t5:$work/t5base,tokenizer=$tok,max_length=512" "$n" "$batch")
theirs=$("$py" "$top/bench/t5_torch.py" "$work/t5base" "$tok" "$n" "$batch" "$threads" 2>/dev/null)
echo "| model | dit captions | transformers captions | dit peak | transformers peak |"
echo "|---|---|---|---|---|"
set -- $ours; oc=$2; op=$4
set -- $theirs; tc=$2; tp=$4
echo "| T5-base size, 512 tokens, batch $batch | $oc | $tc | $op MB | $tp MB |"
