# A frozen base stored in fp8 or bf16 (--base-weight-dtype), as a LoRA
# fine-tune of a large model runs it: the start-up line says where the
# linears live and what they take, next to the f32 base's; LoRA training
# on the fp8 base lowers the validation loss (records and noise fixed by
# the seed), ending within 1% of the f32 base's; the run remembers its base's storage (a resume with another
# is refused, naming it); a base that trains is refused; dit-sample samples
# from an fp8 base. And a full fine-tune with its linears' gradients in
# bf16 (--grad-accum-dtype).
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images/classes"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

"$bin/dit-index" --class-from-dir "$img" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 16 2>/dev/null |
    "$bin/dit-precompute" -o "$t/data" 2>/dev/null || fail "making the class shard set"
dit="--model DiT-S/4 --depth 2 --hidden-size 128 --num-heads 4 --train-batch-size 2 --threads 2"
"$bin/dit-train" --data-path "$t/data" $dit --learning-rate 3e-3 --max-steps 60 --ckpt-every 60 \
    --output-dir "$t/base" 2>/dev/null || fail "the base"
base="$t/base/checkpoint-0000060/transformer"
lora="--pretrained-model-path $base --use-lora --train-only-lora --lora-rank 4 --learning-rate 1e-2
      --val-data-path $t/data --eval-every 10 --log-every 10 --max-steps 100 --ckpt-every 100 --ema-decay 0"
"$bin/dit-train" --data-path "$t/data" $dit $lora --output-dir "$t/f32" 2>"$t/err32" ||
    fail "LoRA on the f32 base: $(cat "$t/err32")"
"$bin/dit-train" --data-path "$t/data" $dit $lora --base-weight-dtype fp8 --output-dir "$t/fp8" 2>"$t/err8" ||
    fail "LoRA on the fp8 base: $(cat "$t/err8")"
grep -q 'weights (frozen, linears stored in fp8)' "$t/err8" || fail "no fp8 line: $(cat "$t/err8")"
mb() { sed -n 's/.*parameters; weights (frozen[^)]*) \([0-9.]*\) MB.*/\1/p' "$1"; }
w32=$(mb "$t/err32") w8=$(mb "$t/err8")
awk -v a="$w8" -v b="$w32" 'BEGIN { exit !(a > 0 && a < b / 2) }' ||
    fail "the fp8 base takes $w8 MB, the f32 one $w32 MB"

# The validation loss every 10 steps of the adapter (the base is a DiT
# trained 60 steps): it falls on the fp8 base as on the f32 one, and ends
# within 1% of it.
val() { sed -n 's/.*"val_loss":\([0-9.e+-]*\).*/\1/p' "$1/metrics.jsonl" | tr '\n' ' '; }
v8=$(val "$t/fp8") v32=$(val "$t/f32")
echo "validation loss at steps 10..100: fp8 base $v8; f32 base $v32; weights $w8 MB against $w32 MB" >&2
echo "$v8" | awk '{ exit !(NF == 10 && $10 < 0.98 * $1) }' || fail "LoRA on the fp8 base did not learn: $v8"
echo "$v8 $v32" | awk '{ d = $10 - $20; if (d < 0) d = -d; exit !(NF == 20 && d < 0.01 * $20) }' ||
    fail "the fp8 base ends away from the f32 one: $v8 against $v32"

# A full fine-tune with the linears' gradients accumulated in bf16
# (gradient accumulation 2, clipping on): the start-up line says so and
# counts fewer bytes; the validation loss ends within 1% of the fp32
# gradients' run; a run stopped at a checkpoint and resumed ends in the
# same bits as one that was not.
full="--pretrained-model-path $base --learning-rate 1e-3 --gradient-accumulation-steps 2 --max-grad-norm 1
      --val-data-path $t/data --eval-every 20 --log-every 20 --max-steps 20 --ckpt-every 10 --ema-decay 0.99"
"$bin/dit-train" --data-path "$t/data" $dit $full --output-dir "$t/g32" 2>"$t/errg32" ||
    fail "full fine-tune: $(cat "$t/errg32")"
"$bin/dit-train" --data-path "$t/data" $dit $full --grad-accum-dtype bf16 --output-dir "$t/g16" 2>"$t/errg16" ||
    fail "bf16 gradients: $(cat "$t/errg16")"
grep -q "weights and gradients (the linears' in bf16)" "$t/errg16" || fail "no bf16 line: $(cat "$t/errg16")"
gmb() { sed -n 's/.*parameters; weights and gradients.* \([0-9.][0-9.]*\) MB, adamw.*/\1/p' "$1"; }
g32=$(gmb "$t/errg32") g16=$(gmb "$t/errg16")
awk -v a="$g16" -v b="$g32" 'BEGIN { exit !(a > 0 && a < 0.9 * b) }' || fail "bf16 gradients: $g16 MB against $g32 MB"
l32=$(val "$t/g32") l16=$(val "$t/g16")
echo "full fine-tune, validation loss at step 20: bf16 gradients $l16, fp32 $l32; weights and gradients $g16 MB against $g32 MB" >&2
echo "$l16 $l32" | awk '{ d = $1 - $2; if (d < 0) d = -d; exit !(NF == 2 && d < 0.01 * $2) }' ||
    fail "bf16 gradients end away from fp32 ones: $l16 against $l32"
"$bin/dit-train" --data-path "$t/data" $dit $full --grad-accum-dtype bf16 --output-dir "$t/g16r" --max-steps 10 \
    2>/dev/null || fail "the first half"
"$bin/dit-train" --data-path "$t/data" $dit $full --grad-accum-dtype bf16 --output-dir "$t/g16r" --resume latest \
    2>"$t/err" || fail "resume with bf16 gradients: $(cat "$t/err")"
for f in transformer/diffusion_pytorch_model.safetensors ema/diffusion_pytorch_model.safetensors training_state.safetensors; do
    cmp -s "$t/g16/checkpoint-0000020/$f" "$t/g16r/checkpoint-0000020/$f" || fail "$f differs after a resume"
done
rc=0; "$bin/dit-train" --data-path "$t/data" $dit $full --output-dir "$t/g16r" --resume latest --max-steps 30 \
    2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'grad_accum_dtype' "$t/err" || fail "resume with fp32 gradients: exit $rc, $(cat "$t/err")"

# A resume with another storage is another run.
rc=0; "$bin/dit-train" --data-path "$t/data" $dit $lora --max-steps 120 --base-weight-dtype bf16 \
    --output-dir "$t/fp8" --resume latest 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'base_weight_dtype' "$t/err" || fail "resume with another base: exit $rc, $(cat "$t/err")"
rc=0; "$bin/dit-train" --data-path "$t/data" $dit --base-weight-dtype bf16 --max-steps 1 --output-dir "$t/x" \
    2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q 'needs --use-lora --train-only-lora' "$t/err" || fail "a base that trains: exit $rc, $(cat "$t/err")"
rc=0; "$bin/dit-sample" --model-path "$base" --base-weight-dtype int4 -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q "unknown base weight dtype 'int4'" "$t/err" || fail "int4: exit $rc, $(cat "$t/err")"

"$bin/dit-sample" --model-path "$base" --base-weight-dtype fp8 --class-labels 1,2 --num-inference-steps 2 \
    --threads 2 -o "$t/s8" 2>"$t/err" || fail "dit-sample on an fp8 base: $(cat "$t/err")"
grep -q 'linears stored in fp8' "$t/err" || fail "dit-sample's line: $(cat "$t/err")"
[ "$(ls "$t/s8" | grep -c '\.png$')" = 2 ] || fail "dit-sample wrote $(ls "$t/s8")"
exit 0
