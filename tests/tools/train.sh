# dit-train: a small DiT trains on a shard set and its loss falls; resuming
# after SIGTERM and after kill -9 is bitwise identical to an uninterrupted
# run; logs; bad input.
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

"$bin/dit-index" --class-from-dir "$img/classes" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 32 2>/dev/null |
    "$bin/dit-precompute" --random-flip -o "$t/data" 2>/dev/null || fail "making the shard set"
small="--model DiT-S/4 --depth 2 --hidden-size 64 --num-heads 4 --train_batch_size 4 --learning-rate 1e-3 --threads 2"

# Trains, the loss falls, metrics and TensorBoard hold the values.
"$bin/dit-train" --data-path "$t/data" --output-dir "$t/a" $small --max-steps 60 --log-every 10 --ckpt-every 20 \
    --report-to tensorboard 2>"$t/err" || fail "training: $(cat "$t/err")"
first=$(head -n 1 "$t/a/metrics.jsonl" | sed 's/.*"loss": *\([0-9.e-]*\).*/\1/')
last=$(tail -n 1 "$t/a/metrics.jsonl" | sed 's/.*"loss": *\([0-9.e-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.8 * a) }' || fail "loss did not fall: $first -> $last"
[ "$(wc -l <"$t/a/metrics.jsonl")" = 6 ] || fail "metrics.jsonl lines: $(cat "$t/a/metrics.jsonl")"
ls "$t"/a/logs/events.out.tfevents.* >/dev/null || fail "no TensorBoard file"
"$bin/dit-inspect" "$t"/a/logs/events.out.tfevents.* >"$t/tb" || fail "TensorBoard file does not read back"
tb_loss=$(awk '$1 == "train/loss" { print $2, $4, $5 }' "$t/tb")
[ "${tb_loss% *}" = "6 60" ] || fail "TensorBoard train/loss: $(cat "$t/tb")"
awk -v a="${tb_loss##* }" -v b="$last" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * b) }' ||
    fail "TensorBoard's last loss ${tb_loss##* } is not metrics.jsonl's $last"
ls -d "$t"/a/checkpoint-0000020 "$t"/a/checkpoint-0000040 "$t"/a/checkpoint-0000060 >/dev/null || fail "checkpoints"
"$bin/dit-inspect" --verify "$t/a/checkpoint-0000060" >/dev/null || fail "checkpoint does not verify"
grep -q '"_class_name": "DiTTransformer2DModel"' "$t/a/checkpoint-0000060/transformer/config.json" || fail "diffusers config"

same() { # same A B: the final checkpoints are identical, file by file
    for f in transformer/diffusion_pytorch_model.safetensors ema/diffusion_pytorch_model.safetensors \
             training_state.safetensors transformer/dit.json; do
        cmp -s "$1/$f" "$2/$f" || fail "$f differs between $1 and $2"
    done
}
train_b() { "$bin/dit-train" --data-path "$t/data" --output-dir "$t/b" $small --max-steps 60 --log-every 10 --ckpt-every 20 "$@"; }
# In the background through exec, so that $! is dit-train itself.
train_b_bg() { (exec "$bin/dit-train" --data-path "$t/data" --output-dir "$t/b" $small --max-steps 60 --log-every 10 --ckpt-every 20) 2>/dev/null & }

# SIGTERM: finishes the step, checkpoints, exits 0; --resume latest completes.
rm -rf "$t/b"
train_b_bg
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -d "$t/b/checkpoint-0000020" ]; do :; done
kill -TERM "$pid" 2>/dev/null || true
rc=0; wait "$pid" || rc=$?
[ "$rc" = 0 ] || fail "SIGTERM: exit $rc"
train_b --resume latest 2>"$t/err" || fail "resume after SIGTERM: $(cat "$t/err")"
same "$t/a/checkpoint-0000060" "$t/b/checkpoint-0000060"
losses() { sed 's/.*"loss": *\([^,]*\),.*"step": *\([0-9]*\).*/\2 \1/' "$1"; }
[ "$(losses "$t/a/metrics.jsonl")" = "$(losses "$t/b/metrics.jsonl")" ] ||
    fail "logged losses differ after SIGTERM: $(losses "$t/b/metrics.jsonl")"

# kill -9 between checkpoints: resume from the last one.
rm -rf "$t/b"
train_b_bg
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -d "$t/b/checkpoint-0000040" ]; do :; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
train_b --resume latest 2>"$t/err" || fail "resume after kill -9: $(cat "$t/err")"
grep -q 'resumed from .*checkpoint-00000[24]0' "$t/err" || fail "did not resume: $(cat "$t/err")"
same "$t/a/checkpoint-0000060" "$t/b/checkpoint-0000060"
[ "$(grep -c '"loss"' "$t/b/metrics.jsonl")" = 6 ] || fail "metrics after resume: $(cat "$t/b/metrics.jsonl")"

# Samples during training: grids under samples/ and in TensorBoard; the
# training itself is unchanged by them.
"$bin/dit-train" --data-path "$t/data" --output-dir "$t/s" $small --max-steps 20 --log-every 10 --ckpt-every 20 \
    --sample-every 10 --sample-class-labels 0,2 --sample-steps 3 --report-to tensorboard 2>"$t/err" ||
    fail "--sample-every: $(cat "$t/err")"
ls "$t/s/samples/step-0000010.png" "$t/s/samples/step-0000020.png" >/dev/null || fail "sample grids: $(ls "$t/s")"
grep -a -q 'dit-train step 10' "$t/s/samples/step-0000010.png" || fail "sample grid parameters"
grep -a -q 'samples' "$t"/s/logs/events.out.tfevents.* || fail "no sample image in TensorBoard"
cmp -s "$t/s/checkpoint-0000020/transformer/diffusion_pytorch_model.safetensors" \
    "$t/a/checkpoint-0000020/transformer/diffusion_pytorch_model.safetensors" || fail "sampling changed the training"
rc=0; "$bin/dit-train" --data-path "$t/data" --output-dir "$t/s2" $small --sample-every 5 --sample-class-labels 9 \
    2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q "'9' is not a class" "$t/err" || fail "bad sample label: $(cat "$t/err")"

# Gradient checkpointing and accumulation run; the limit keeps the newest.
"$bin/dit-train" --data-path "$t/data" --output-dir "$t/c" $small --max-steps 6 --ckpt-every 2 \
    --checkpoints-total-limit 2 --gradient-checkpointing --gradient-accumulation-steps 2 2>/dev/null || fail "options"
[ "$(ls -d "$t"/c/checkpoint-* | wc -l)" = 2 ] || fail "--checkpoints-total-limit: $(ls "$t/c")"

# Bad input.
rc=0; "$bin/dit-train" --data-path "$t/nope" --output-dir "$t/d" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'nope' "$t/err" || fail "missing data: $rc $(cat "$t/err")"
rc=0; "$bin/dit-train" --data-path "$t/data" --output-dir "$t/d" $small --num-classes 2 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q "label 2 is outside the model's 2 classes" "$t/err" || fail "classes: $(cat "$t/err")"
rc=0; "$bin/dit-train" --data-path "$t/data" --output-dir "$t/d" $small --report-to wandb 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q 'wandb' "$t/err" || fail "wandb not refused"
rc=0; "$bin/dit-train" --data-path "$t/data" --output-dir "$t/d" $small --image-size 64 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q -- '--image-size 64' "$t/err" || fail "--image-size check: $(cat "$t/err")"
# A loss that turns NaN stops the run and keeps the last checkpoint.
rc=0; "$bin/dit-train" --data-path "$t/data" --output-dir "$t/e" $small --learning-rate 1e30 --max-steps 50 \
    --ckpt-every 1 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'loss is .* at step' "$t/err" || fail "NaN loss: $rc $(tail -n 3 "$t/err")"
"$bin/dit-inspect" --verify "$(ls -d "$t"/e/checkpoint-* | tail -n 1)" >/dev/null || fail "last checkpoint after NaN"
# A full disk while checkpointing (here a file-size limit): a clear error,
# the earlier checkpoint intact, no partial one left.
"$bin/dit-train" --data-path "$t/data" --output-dir "$t/f" $small --max-steps 10 --ckpt-every 10 2>/dev/null ||
    fail "run before the full disk"
rc=0
(ulimit -f 200; exec "$bin/dit-train" --data-path "$t/data" --output-dir "$t/f" $small --max-steps 20 --ckpt-every 10 \
    --resume latest) 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'checkpoint at step 20 failed, the previous ones are intact' "$t/err" ||
    fail "full disk: $rc $(tail -n 2 "$t/err")"
[ "$(ls -a "$t/f" | grep -c checkpoint)" = 1 ] || fail "a partial checkpoint is left: $(ls -a "$t/f")"
"$bin/dit-inspect" --verify "$t/f/checkpoint-0000010" >/dev/null || fail "the earlier checkpoint is damaged"

# Validation: the loss at fixed timesteps and noise, logged and comparable.
"$bin/dit-train" --data-path "$t/data" --val-data-path "$t/data" --eval-every 5 --output-dir "$t/v" $small \
    --max-steps 10 --report-to tensorboard 2>"$t/err" || fail "validation: $(cat "$t/err")"
[ "$(grep -c '"val_loss"' "$t/v/metrics.jsonl")" = 2 ] || fail "val_loss lines: $(cat "$t/v/metrics.jsonl")"
"$bin/dit-inspect" "$t"/v/logs/events.out.tfevents.* | grep -q 'val/loss  *2 ' || fail "val/loss in TensorBoard"
v1=$(grep '"val_loss"' "$t/v/metrics.jsonl" | head -n 1)
"$bin/dit-train" --data-path "$t/data" --val-data-path "$t/data" --eval-every 5 --output-dir "$t/v2" $small \
    --max-steps 5 2>/dev/null
[ "$(grep '"val_loss"' "$t/v2/metrics.jsonl")" = "$v1" ] || fail "validation is not reproducible"

# Weights that do not fit: a pretrained model with other shapes, named.
rc=0; "$bin/dit-train" --data-path "$t/data" --output-dir "$t/p" --pretrained-model-path "$t/a/checkpoint-0000060/transformer" \
    --num-classes 5 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'num-classes 5' "$t/err" || fail "pretrained class mismatch: $(cat "$t/err")"
mkdir -p "$t/pw"
cp "$t/a/checkpoint-0000060/transformer/"* "$t/pw/"
sed 's/"depth": 2/"depth": 3/' "$t/a/checkpoint-0000060/transformer/dit.json" >"$t/pw/dit.json"
rc=0; "$bin/dit-train" --data-path "$t/data" --output-dir "$t/p" --pretrained-model-path "$t/pw" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'missing transformer_blocks.2' "$t/err" || fail "pretrained missing tensors: $(cat "$t/err")"
[ ! -e "$t/p" ] || [ -z "$(ls "$t/p")" ] || fail "a failed start left files in the output directory: $(ls "$t/p")"

# An empty shard set.
mkdir -p "$t/empty"
head -n 1 "$t/data/manifest.tsv" >"$t/empty/manifest.tsv"
rc=0; "$bin/dit-train" --data-path "$t/empty" --output-dir "$t/g" $small 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'no records' "$t/err" || fail "empty data: $(cat "$t/err")"
echo "train: all checks passed"
