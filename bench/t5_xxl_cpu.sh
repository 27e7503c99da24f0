#!/bin/sh
# T5-XXL as F-Lite runs it, on the CPU: a random encoder of T5-v1.1-XXL's
# config (d_model 4096, 24 layers, 64 heads of 64, d_ff 10240 gated-GELU,
# vocab 32128) saved in bf16 as pipelines ship it (9.5 GB), encoded at
# layer -8 through the final norm (17 of the 24 blocks), 512 tokens, no
# mask. Prints our captions/s and peak memory; transformers is not run here
# (it would hold the f32 model, 19 GB, beside ours on a 24 GiB machine).
# Usage: make bench && [PYTHON=python3] bench/t5_xxl_cpu.sh [N] [BATCH]
set -eu
n=${1:-2}
batch=${2:-1}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$top/build/release/bench/t5_encode"
tok="$top/tests/fixtures/t5_tokenizer/tokenizer"
work=${BENCH_DIR:-/tmp/dit-t5-bench}
mkdir -p "$work"
py=${PYTHON:-python3}
[ -f "$work/t5xxl/model.safetensors.index.json" ] || [ -f "$work/t5xxl/model.safetensors" ] || "$py" - "$work/t5xxl" <<'PY'
import sys, torch
from transformers import T5Config, T5EncoderModel
torch.manual_seed(0)
cfg = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
               feed_forward_proj="gated-gelu", tie_word_embeddings=False)
torch.set_default_dtype(torch.bfloat16)
T5EncoderModel(cfg).save_pretrained(sys.argv[1], max_shard_size="5GB")
PY
"$bin" "t5:$work/t5xxl,tokenizer=$tok,layer=-8,final_norm,max_length=512" "$n" "$batch"
