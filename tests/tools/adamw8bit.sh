# dit-train --use-8bit-adam: bitsandbytes' AdamW8bit trains a small DiT to
# a loss within a stated band of fp32 AdamW's on the same data and seed
# (the mean of the last three logged losses within 10% of each other), its
# state is codes and block maxima (a quarter of AdamW's bytes and less), and
# a kill -9 and resume ends in the same bits as an uninterrupted run.
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

"$bin/dit-index" --class-from-dir "$img/classes" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 32 2>/dev/null |
    "$bin/dit-precompute" --random-flip -o "$t/data" 2>/dev/null || fail "making the shard set"
small="--model DiT-S/4 --depth 2 --hidden-size 64 --num-heads 4 --train-batch-size 4 --learning-rate 1e-3 --threads 2
       --weight-decay 0.01 --max-steps 60 --log-every 10 --ckpt-every 20"
train() { "$bin/dit-train" --data-path "$t/data" $small "$@"; }

train --output-dir "$t/fp32" 2>"$t/err32" || fail "AdamW: $(cat "$t/err32")"
train --output-dir "$t/a" --use-8bit-adam 2>"$t/err" || fail "AdamW8bit: $(cat "$t/err")"
grep -q 'adamw8bit state' "$t/err" || fail "no adamw8bit line: $(cat "$t/err")"
st32=$(sed -n 's/.*adamw state and EMA \([0-9.]*\) MB.*/\1/p' "$t/err32")
st8=$(sed -n 's/.*adamw8bit state and EMA \([0-9.]*\) MB.*/\1/p' "$t/err")
[ -n "$st32" ] && [ -n "$st8" ] || fail "no state sizes: $(cat "$t/err32" "$t/err")"
# both with an f32 EMA (4 bytes a parameter): AdamW 12 a parameter in all, 8-bit about 6
awk -v a="$st32" -v b="$st8" 'BEGIN { exit !(b < 0.6 * a) }' || fail "8-bit state $st8 MB next to AdamW's $st32 MB"
"$bin/dit-inspect" "$t/a/checkpoint-0000060/training_state.safetensors" 2>&1 | grep -q 'adam8_state1 *U8' ||
    fail "no 8-bit state in the checkpoint: $("$bin/dit-inspect" "$t/a/checkpoint-0000060/training_state.safetensors" 2>&1)"
tail3() { tail -n 3 "$1" | sed 's/.*"loss": *\([0-9.e-]*\).*/\1/' | awk '{ s += $1 } END { print s / NR }'; }
l32=$(tail3 "$t/fp32/metrics.jsonl") l8=$(tail3 "$t/a/metrics.jsonl")
first=$(head -n 1 "$t/a/metrics.jsonl" | sed 's/.*"loss": *\([0-9.e-]*\).*/\1/')
awk -v a="$l32" -v b="$l8" -v f="$first" 'BEGIN { d = (b - a) / a; if (d < 0) d = -d; exit !(d <= 0.10 && b < 0.8 * f) }' ||
    fail "AdamW8bit's loss $l8 (from $first) is not within 10% of AdamW's $l32"
echo "adamw8bit: last losses $l8, AdamW $l32; state $st8 MB, AdamW $st32 MB" >&2

(exec "$bin/dit-train" --data-path "$t/data" $small --use-8bit-adam --output-dir "$t/b") 2>/dev/null &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -d "$t/b/checkpoint-0000040" ]; do :; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
train --output-dir "$t/b" --use-8bit-adam --resume latest 2>"$t/err" || fail "resume: $(cat "$t/err")"
for f in transformer/diffusion_pytorch_model.safetensors ema/diffusion_pytorch_model.safetensors \
         training_state.safetensors; do
    cmp -s "$t/a/checkpoint-0000060/$f" "$t/b/checkpoint-0000060/$f" || fail "$f differs after kill -9 and resume"
done
rc=0; train --output-dir "$t/b" --resume latest --max-steps 80 2>"$t/err" || rc=$?
[ "$rc" != 0 ] && grep -q 'optimizer: the checkpoint.s' "$t/err" || fail "an AdamW8bit run resumed by AdamW: exit $rc, $(cat "$t/err")"
exit 0
