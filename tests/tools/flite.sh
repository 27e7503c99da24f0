# dit-train on captioned data: a tiny F-Lite (the released architecture at
# toy sizes) trains on pixel latents with T5 caption embeddings (the tiny
# random T5 of tests/fixtures/t5/deep), its loss falls, the objective is
# flow by default, resuming after kill -9 is bitwise identical to an
# uninterrupted run (and validation changes no bit of it), the checkpoint is a diffusers folder F-Lite's own
# DiT.from_pretrained reads (config.json "DiT"), resolution buckets of
# several sizes train in one run, samples come from prompts (during
# training and after), and mismatched data or options are named.
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images/classes"
t5="$DIT_TESTS/fixtures/t5/deep"
tok="$DIT_TESTS/fixtures/t5_tokenizer/tokenizer"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

cp -r "$img" "$t/img"
printf 'a zebra in the grass\na dog in the snow\n' >"$t/img/prompts.txt"
{
    echo "image_path,caption"
    echo "cat/cat_01.jpg,a tabby cat asleep on a red sofa"
    echo "cat/cat_02.png,a grey cat on a chair"
    echo "dog/dog_01.webp,a dog in the snow"
    echo "dog/dog_02.jpg,\"a dog, running\""
    echo "zebra/zebra_01.png,a zebra in the grass"
    echo "zebra/zebra_02.webp,two zebras"
} >"$t/img/train.csv"
"$bin/dit-index" "$t/img/train.csv" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 16 2>/dev/null |
    "$bin/dit-precompute" --text-encoder "$t5" --tokenizer "$tok" --max-sequence-length 12 -o "$t/data" \
        2>"$t/err" || fail "making the shard set: $(cat "$t/err")"
small="--model F-Lite --depth 2 --hidden-size 32 --num-heads 4 --train-batch-size 3 --learning-rate 2e-3 --threads 2"
train() { "$bin/dit-train" --data-path "$t/data" $small --max-steps 30 --log-every 10 --ckpt-every 10 \
              --checkpoints-total-limit 2 "$@"; }

train --output-dir "$t/a" 2>"$t/err" || fail "training: $(cat "$t/err")"
grep -q 'parameters' "$t/err" || fail "no memory line: $(cat "$t/err")"
first=$(head -n 1 "$t/a/metrics.jsonl" | sed 's/.*"loss": *\([0-9.e-]*\).*/\1/')
last=$(tail -n 1 "$t/a/metrics.jsonl" | sed 's/.*"loss": *\([0-9.e-]*\).*/\1/')
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.8 * a) }' || fail "loss did not fall: $first -> $last"
ck="$t/a/checkpoint-0000030"
grep -q '"_class_name": "DiT"' "$ck/transformer/config.json" || fail "config.json: $(cat "$ck/transformer/config.json")"
grep -q '"cross_attn_input_size": 16' "$ck/transformer/config.json" || fail "text width"
grep -q '"objective": *"flow"' "$ck/checkpoint.json" ||
    fail "the objective is not flow by default"
"$bin/dit-inspect" --verify "$ck" >/dev/null || fail "checkpoint does not verify"

# kill -9 after a checkpoint: the resumed run ends in the same bits; the
# validation loss of this run (on the same shards) changes none of them.
val="--val-data-path $t/data --eval-every 10"
(exec "$bin/dit-train" --data-path "$t/data" $small --max-steps 30 --log-every 10 --ckpt-every 10 \
    --checkpoints-total-limit 2 $val --output-dir "$t/b") 2>/dev/null &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -d "$t/b/checkpoint-0000010" ]; do :; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
train --output-dir "$t/b" --resume latest $val 2>"$t/err" || fail "resume: $(cat "$t/err")"
grep -q '"val_loss"' "$t/b/metrics.jsonl" || fail "no validation loss: $(cat "$t/b/metrics.jsonl")"
for f in transformer/diffusion_pytorch_model.safetensors ema/diffusion_pytorch_model.safetensors \
         training_state.safetensors; do
    cmp -s "$t/a/checkpoint-0000030/$f" "$t/b/checkpoint-0000030/$f" || fail "$f differs after kill -9 and resume"
done

# Resolution buckets of several sizes in one run: planned for the largest,
# each batch at its own size; the data position resumes across them.
"$bin/dit-index" "$t/img/train.csv" 2>/dev/null | "$bin/dit-bucket" --buckets 16x16,32x16,16x32 2>/dev/null |
    "$bin/dit-precompute" --text-encoder "$t5" --tokenizer "$tok" --max-sequence-length 12 -o "$t/mixed" \
        2>"$t/err" || fail "bucketed shard set: $(cat "$t/err")"
[ "$("$bin/dit-inspect" "$t/mixed" 2>&1 | grep -c 'records, .* shards')" -ge 2 ] ||
    fail "not several buckets: $("$bin/dit-inspect" "$t/mixed" 2>&1)"
mixed() { "$bin/dit-train" --data-path "$t/mixed" $small --train-batch-size 1 --max-steps 12 --log-every 4 \
              --ckpt-every 6 "$@"; }
mixed --output-dir "$t/m1" 2>"$t/err" || fail "training on buckets: $(cat "$t/err")"
[ "$(grep -c '"loss"' "$t/m1/metrics.jsonl")" = 3 ] || fail "bucket metrics: $(cat "$t/m1/metrics.jsonl")"
mixed --output-dir "$t/m2" --max-steps 6 2>/dev/null || fail "buckets, first half"
mixed --output-dir "$t/m2" --resume latest 2>"$t/err" || fail "buckets, resumed: $(cat "$t/err")"
cmp -s "$t/m1/checkpoint-0000012/transformer/diffusion_pytorch_model.safetensors" \
    "$t/m2/checkpoint-0000012/transformer/diffusion_pytorch_model.safetensors" || fail "bucketed resume differs"

# A validation set whose buckets do not fit the training plan: the run goes
# on, and the log says why there is no validation loss.
"$bin/dit-train" --data-path "$t/data" $small --max-steps 2 --log-every 1 --ckpt-every 10 --eval-every 1 \
    --val-data-path "$t/mixed" --output-dir "$t/vx" 2>"$t/err" || fail "a misfit validation set stopped the run"
grep -q 'no validation loss: .*mixed.*do not fit' "$t/err" || fail "no reason for the missing validation: $(cat "$t/err")"

# F-Lite's bf16 timestep rounding changes what the model sees, hence the weights.
for v in plain bf16; do
    "$bin/dit-train" --data-path "$t/data" $small --max-steps 3 --log-every 3 --ckpt-every 10 --output-dir "$t/ts_$v" \
        $([ $v = bf16 ] && echo --bf16-timesteps) 2>"$t/err" || fail "timesteps $v: $(cat "$t/err")"
done
cmp -s "$t/ts_plain/checkpoint-0000003/transformer/diffusion_pytorch_model.safetensors" \
    "$t/ts_bf16/checkpoint-0000003/transformer/diffusion_pytorch_model.safetensors" && fail "--bf16-timesteps changed nothing"

# A validation batch larger than the training one runs in parts: same loss.
"$bin/dit-train" --data-path "$t/data" $small --max-steps 10 --log-every 10 --ckpt-every 10 $val \
    --eval-batch-size 6 --output-dir "$t/e" 2>"$t/err" || fail "--eval-batch-size: $(cat "$t/err")"
v_b=$(grep '"val_loss"' "$t/b/metrics.jsonl" | head -n 1 | sed 's/.*"val_loss": *\([0-9.e-]*\).*/\1/')
v_e=$(grep '"val_loss"' "$t/e/metrics.jsonl" | head -n 1 | sed 's/.*"val_loss": *\([0-9.e-]*\).*/\1/')
awk -v a="$v_b" -v b="$v_e" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-6 * a) }' ||
    fail "validation loss with --eval-batch-size 6: $v_e, with 3: $v_b"

# Fine-tuning from the checkpoint's folder (the --pretrained-model-path of the guide).
"$bin/dit-train" --data-path "$t/data" --pretrained-model-path "$ck/transformer" --max-steps 2 --log-every 1 \
    --ckpt-every 10 --train-batch-size 3 --threads 2 --output-dir "$t/p" 2>"$t/err" || fail "pretrained: $(cat "$t/err")"

# Samples during training from a prompts file, encoded once by the data's
# own text encoder (its identity in the shards): grids on schedule, and the
# training's bits unchanged by them.
train --output-dir "$t/s" --sample-every 10 --sample-prompts-file "$t/img/prompts.txt" --sample-steps 2 \
    2>"$t/err" || fail "--sample-every: $(cat "$t/err")"
ls "$t/s/samples/step-0000010.png" "$t/s/samples/step-0000030.png" >/dev/null || fail "no sample grids: $(ls "$t/s")"
grep -q '2 prompts encoded' "$t/err" || grep -q 'text encoder' "$t/err" || fail "prompts not encoded: $(cat "$t/err")"
cmp -s "$t/a/checkpoint-0000030/transformer/diffusion_pytorch_model.safetensors" \
    "$t/s/checkpoint-0000030/transformer/diffusion_pytorch_model.safetensors" || fail "samples changed the training"
grep -q '"text_encoder": *"t5/1 ' "$ck/checkpoint.json" || fail "checkpoint.json names no text encoder"

# Sampling from prompts: the T5 of the data, one image per prompt line,
# any multiple of the patch, the parameters in each PNG; APG and a
# negative prompt change the images; --init-noise reproduces a start.
text="--text-encoder $t5 --tokenizer $tok --max-sequence-length 12"
printf 'a zebra in the grass\n\na dog in the snow\n' >"$t/prompts.txt"
sample() { "$bin/dit-sample" --model-path "$ck" $text --num-inference-steps 3 --threads 2 "$@"; }
sample --prompts-file "$t/prompts.txt" --width 32 --height 16 -o "$t/o1" --grid "$t/grid.png" \
    --latents-out "$t/lat.safetensors" 2>"$t/err" || fail "dit-sample: $(cat "$t/err")"
[ -f "$t/o1/000000.png" ] && [ -f "$t/o1/000001.png" ] && [ ! -e "$t/o1/000002.png" ] || fail "images: $(ls "$t/o1")"
grep -aq 'a dog in the snow' "$t/o1/000001.png" || fail "no prompt in the PNG's parameters"
"$bin/dit-inspect" "$t/lat.safetensors" 2>&1 | grep -q '\[2, 3, 16, 32\]' || fail "latents shape"
sample --prompt "a zebra in the grass" --width 32 --height 16 --apg -o "$t/o2" 2>"$t/err" || fail "--apg: $(cat "$t/err")"
cmp -s "$t/o1/000000.png" "$t/o2/000000.png" && fail "APG gave the CFG image"
sample --prompt "a zebra in the grass" --width 32 --height 16 --negative-prompt "a dog" -o "$t/o3" 2>"$t/err" ||
    fail "--negative-prompt: $(cat "$t/err")"
cmp -s "$t/o1/000000.png" "$t/o3/000000.png" && fail "the negative prompt changed nothing"
sample --prompts-file "$t/prompts.txt" --width 32 --height 16 --init-noise "$t/lat.safetensors" -o "$t/o4" \
    --latents-out "$t/l4.safetensors" 2>"$t/err" || fail "--init-noise: $(cat "$t/err")"
sample --prompts-file "$t/prompts.txt" --width 32 --height 16 --init-noise "$t/lat.safetensors" --seed 9 -o "$t/o5" \
    --latents-out "$t/l5.safetensors" 2>/dev/null || fail "--init-noise again"
cmp -s "$t/l4.safetensors" "$t/l5.safetensors" || fail "--init-noise does not fix the start"
cmp -s "$t/lat.safetensors" "$t/l4.safetensors" && fail "--init-noise was not used"
"$bin/dit-sample" --model-path "$ck" --prompt "two zebras" --width 16 --height 16 --num-inference-steps 2 \
    --threads 2 -o "$t/o6" 2>"$t/err" || fail "the checkpoint's text encoder: $(cat "$t/err")"
rc=0; sample --prompt x --width 17 --height 16 -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q 'multiples of 2 px' "$t/err" || fail "odd width: exit $rc, $(cat "$t/err")"
rc=0; sample --class-labels 1 --width 16 --height 16 -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q 'prompts-file, not class labels' "$t/err" || fail "labels on F-Lite: exit $rc, $(cat "$t/err")"
rc=0; sample --prompt x --width 32 --height 16 --init-noise "$t/lat.safetensors" -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q '\[1, 3, 16, 32\]' "$t/err" || fail "init noise of 2 for 1 image: exit $rc, $(cat "$t/err")"

# Mismatches, named: DiT on text data, ddpm without a variance, dropout
# on a class model, samples during text training (not built yet).
rc=0; "$bin/dit-train" --data-path "$t/data" --model DiT-S/2 --depth 1 --output-dir "$t/x" --max-steps 1 \
    2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'class-conditional, but' "$t/err" || fail "DiT on text: exit $rc, $(cat "$t/err")"
rc=0; train --output-dir "$t/x" --objective ddpm 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'objective flow' "$t/err" || fail "ddpm on F-Lite: exit $rc, $(cat "$t/err")"
rc=0; train --output-dir "$t/x" --sample-every 5 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'sample-prompts-file' "$t/err" || fail "--sample-every without prompts: exit $rc, $(cat "$t/err")"
echo "flite: all checks passed"
