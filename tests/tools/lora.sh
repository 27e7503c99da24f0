# LoRA end to end, as the F-Lite guide fine-tunes: a tiny F-Lite trained
# briefly is the base; dit-train --use-lora --train-only-lora trains rank-4
# adapters on it (dropout on, cosine schedule with warmup), the checkpoints
# hold the adapter only, the learning rate follows the schedule asked for
# (F-Lite's own script never steps it), a kill -9 and resume ends in the
# same bits, dit-sample applies the adapter on the fly and dit-lora-merge
# merges it (ratio 0: the base, bit for bit); the LoRA files made here are
# what diffusers reads (tests/reference/make_lora_goldens.py checks
# tests/fixtures/lora/ours.safetensors, written by this dit-lora-merge).
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images/classes"
t5="$DIT_TESTS/fixtures/t5/deep"
tok="$DIT_TESTS/fixtures/t5_tokenizer/tokenizer"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

cp -r "$img" "$t/img"
{
    echo "image_path,caption"
    echo "cat/cat_01.jpg,a tabby cat asleep on a red sofa"
    echo "cat/cat_02.png,a grey cat on a chair"
    echo "dog/dog_01.webp,a dog in the snow"
    echo "zebra/zebra_01.png,a zebra in the grass"
    echo "zebra/zebra_02.webp,two zebras"
} >"$t/img/train.csv"
printf 'a zebra in the grass\n' >"$t/prompts.txt"
"$bin/dit-index" "$t/img/train.csv" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 16 2>/dev/null |
    "$bin/dit-precompute" --text-encoder "$t5" --tokenizer "$tok" --max-sequence-length 12 -o "$t/data" \
        2>"$t/err" || fail "making the shard set: $(cat "$t/err")"
small="--train-batch-size 2 --threads 2 --log-every 1"
"$bin/dit-train" --data-path "$t/data" --model F-Lite --depth 2 --hidden-size 32 --num-heads 4 $small \
    --learning-rate 2e-3 --max-steps 4 --ckpt-every 4 --output-dir "$t/base" 2>"$t/err" || fail "base: $(cat "$t/err")"
base="$t/base/checkpoint-0000004/transformer"

lora="--pretrained-model-path $base --use-lora --train-only-lora --lora-rank 4 --lora-alpha 8 --lora-dropout 0.1
      --learning-rate 1e-2 --lr-scheduler cosine --num-warmup-steps 3 --max-steps 12 --ckpt-every 6 --ema-decay 0.9"
train() { "$bin/dit-train" --data-path "$t/data" $small $lora "$@"; }
train --output-dir "$t/a" --sample-every 6 --sample-prompts-file "$t/prompts.txt" --sample-steps 2 2>"$t/err" ||
    fail "LoRA training: $(cat "$t/err")"
grep -q 'LoRA: 10 modules, .* trainable parameters .*the model frozen' "$t/err" || fail "no LoRA line: $(cat "$t/err")"
ck="$t/a/checkpoint-0000012"
[ -f "$ck/pytorch_lora_weights.safetensors" ] && [ -f "$ck/pytorch_lora_weights_ema.safetensors" ] ||
    fail "no adapter in the checkpoint: $(ls "$ck")"
[ ! -e "$ck/transformer" ] || fail "a frozen model's weights were saved"
size=$(wc -c <"$ck/pytorch_lora_weights.safetensors")
base_size=$(wc -c <"$base/diffusion_pytorch_model.safetensors")
[ "$size" -lt "$((base_size / 4))" ] || fail "the adapter ($size bytes) is not small next to the model ($base_size)"
"$bin/dit-inspect" "$ck/pytorch_lora_weights.safetensors" 2>&1 | grep -q 'transformer.blocks.0.self_attn.qkv.lora_A.weight' ||
    fail "not in the diffusers naming: $("$bin/dit-inspect" "$ck/pytorch_lora_weights.safetensors" 2>&1)"
grep -q '"lora"' "$ck/checkpoint.json" || fail "checkpoint.json names no adapter"
ls "$t/a/samples/step-0000012.png" >/dev/null || fail "no samples with the adapter"

# The schedule asked for: warmup 3, then half a cosine to step 12 (the lr
# logged at step s is the one of update s, lr_at(s - 1)).
awk -v FS='"lr": *' 'NF > 1 { split($2, a, /[,}]/); s++; lr = a[1];
        k = s - 1; want = k < 3 ? 1e-2 * k / 3 : 1e-2 * 0.5 * (1 + cos(3.141592653589793 * (k - 3) / 9));
        d = lr - want; if (d < 0) d = -d; if (d > 1e-9) { print "step " s ": lr " lr ", want " want; bad = 1 } }
    END { exit bad || s != 12 }' "$t/a/metrics.jsonl" || fail "the learning rate is not the cosine schedule"

# kill -9 after the first checkpoint, then resume: the same adapter, EMA and optimizer state.
(exec "$bin/dit-train" --data-path "$t/data" $small $lora --output-dir "$t/b") 2>/dev/null &
pid=$!
while kill -0 "$pid" 2>/dev/null && [ ! -d "$t/b/checkpoint-0000006" ]; do :; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
train --output-dir "$t/b" --resume latest 2>"$t/err" || fail "resume: $(cat "$t/err")"
for f in pytorch_lora_weights.safetensors pytorch_lora_weights_ema.safetensors training_state.safetensors; do
    cmp -s "$ck/$f" "$t/b/checkpoint-0000012/$f" || fail "$f differs after kill -9 and resume"
done

# Continuing from the adapter file (--lora-checkpoint), in kohya's format this time.
"$bin/dit-train" --data-path "$t/data" $small --pretrained-model-path "$base" --use-lora --train-only-lora \
    --lora-checkpoint "$ck/pytorch_lora_weights.safetensors" --lora-format kohya --max-steps 2 --ckpt-every 2 \
    --output-dir "$t/c" 2>"$t/err" || fail "--lora-checkpoint: $(cat "$t/err")"
"$bin/dit-inspect" "$t/c/checkpoint-0000002/lora_kohya.safetensors" 2>&1 |
    grep -q 'lora_unet_blocks_0_self_attn_qkv.lora_down.weight' || fail "no kohya file"

# Base and adapter training together: the model is saved too.
"$bin/dit-train" --data-path "$t/data" $small --pretrained-model-path "$base" --use-lora --lora-rank 2 \
    --lora-target-modules qkv --max-steps 2 --ckpt-every 2 --output-dir "$t/d" 2>"$t/err" || fail "both: $(cat "$t/err")"
[ -d "$t/d/checkpoint-0000002/transformer" ] || fail "the trained model was not saved with its adapter"
grep -q 'LoRA: 2 modules, .*the model.s weights train too' "$t/err" || fail "$(cat "$t/err")"

# On the fly and merged: near, not equal (the merge rounds W + s B A once);
# ratio 0 gives the base's own weights back, bit for bit.
text="--text-encoder $t5 --tokenizer $tok --max-sequence-length 12 --num-inference-steps 2 --threads 2 --width 16 --height 16"
adapter="$ck/pytorch_lora_weights.safetensors"
"$bin/dit-sample" --model-path "$base" --lora "$adapter" $text --prompt "a zebra" -o "$t/s1" \
    --latents-out "$t/l1.safetensors" 2>"$t/err" || fail "dit-sample --lora: $(cat "$t/err")"
grep -q 'LoRA .*: 10 modules (diffusers naming), strength 1' "$t/err" || fail "$(cat "$t/err")"
"$bin/dit-sample" --model-path "$base" $text --prompt "a zebra" -o "$t/s0" --latents-out "$t/l0.safetensors" \
    2>/dev/null || fail "dit-sample"
cmp -s "$t/l0.safetensors" "$t/l1.safetensors" && fail "the adapter changed nothing"
"$bin/dit-lora-merge" --base "$base" --lora "$adapter" --output-dir "$t/merged" 2>"$t/err" || fail "merge: $(cat "$t/err")"
"$bin/dit-sample" --model-path "$t/merged" $text --prompt "a zebra" -o "$t/s2" --latents-out "$t/l2.safetensors" \
    2>/dev/null || fail "dit-sample of the merged model"
m1=$("$bin/dit-inspect" --stats "$t/l1.safetensors" 2>&1 | grep -o 'mean [-0-9.e]*' | head -n 1)
m2=$("$bin/dit-inspect" --stats "$t/l2.safetensors" 2>&1 | grep -o 'mean [-0-9.e]*' | head -n 1)
[ -n "$m1" ] && [ "$m1" = "$m2" ] || fail "merged ($m2) and on the fly ($m1) differ"
"$bin/dit-lora-merge" --base "$base" --lora "$adapter:0" --output-dir "$t/zero" 2>/dev/null || fail "merge at 0"
cmp -s "$base/diffusion_pytorch_model.safetensors" "$t/zero/diffusion_pytorch_model.safetensors" ||
    fail "merging at ratio 0 changed the weights"
"$bin/dit-lora-merge" --base "$base" --lora "$adapter" --save-precision bf16 --output-dir "$t/m16" 2>/dev/null ||
    fail "merge to bf16"
"$bin/dit-inspect" "$t/m16/diffusion_pytorch_model.safetensors" 2>&1 | grep -q 'BF16' || fail "not saved in bf16"
rc=0; "$bin/dit-lora-merge" --base "$base" --lora "$adapter" --output-dir "$t/merged" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'exists' "$t/err" || fail "an existing output: exit $rc, $(cat "$t/err")"

# Several LoRAs into one, re-ranked; a LoRA of another model is named.
"$bin/dit-lora-merge" --lora "$adapter:0.5" --lora "$t/c/checkpoint-0000002/lora_kohya.safetensors" \
    --output "$t/x.safetensors" 2>"$t/err" && fail "diffusers and kohya names merged without a model"
grep -q 'differently' "$t/err" || fail "$(cat "$t/err")"
"$bin/dit-lora-merge" --lora "$adapter:0.5" --lora "$adapter:0.5" --rank 4 --format kohya \
    --output "$t/one.safetensors" 2>"$t/err" || fail "LoRA merge: $(cat "$t/err")"
grep -q 'ranks 40 in all' "$t/err" || fail "$(cat "$t/err")"
rc=0; "$bin/dit-sample" --model-path "$base" --lora "$DIT_TESTS/fixtures/lora/kohya.safetensors" $text --prompt x \
    -o "$t/bad" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'kohya module lora_unet_blocks_2_' "$t/err" || fail "a LoRA of another model: exit $rc, $(cat "$t/err")"
rc=0; "$bin/dit-sample" --model-path "$base" --lora "$DIT_TESTS/fixtures/torch_pt/hostile/os_system.pt" $text \
    --prompt x -o "$t/bad" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q "system" "$t/err" || fail "a hostile pickle: exit $rc, $(cat "$t/err")"
# The class-conditional DiT: targets in diffusers' names, the adapter
# written in them (its model directories are diffusers'), q, k and v one
# fused layer inside; continuing from the file and sampling with it.
"$bin/dit-index" --class-from-dir "$img" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 16 2>/dev/null |
    "$bin/dit-precompute" -o "$t/cdata" 2>/dev/null || fail "making the class shard set"
dit="--model DiT-S/4 --depth 2 --hidden-size 32 --num-heads 4 --train-batch-size 2 --threads 2 --learning-rate 1e-3"
"$bin/dit-train" --data-path "$t/cdata" $dit --max-steps 2 --ckpt-every 2 --output-dir "$t/dbase" 2>/dev/null ||
    fail "DiT base"
dbase="$t/dbase/checkpoint-0000002/transformer"
"$bin/dit-train" --data-path "$t/cdata" $dit --pretrained-model-path "$dbase" --use-lora --train-only-lora \
    --lora-rank 2 --lora-target-modules to_q,to_k,to_v,to_out.0 --max-steps 2 --ckpt-every 2 --output-dir "$t/dl" \
    2>"$t/err" || fail "DiT LoRA: $(cat "$t/err")"
grep -q 'LoRA: 4 modules' "$t/err" || fail "DiT LoRA line: $(cat "$t/err")"
dl="$t/dl/checkpoint-0000002/pytorch_lora_weights.safetensors"
"$bin/dit-inspect" "$dl" 2>&1 | grep -q 'transformer.transformer_blocks.1.attn1.to_v.lora_B.weight' ||
    fail "the DiT's adapter is not in diffusers' names: $("$bin/dit-inspect" "$dl" 2>&1)"
"$bin/dit-train" --data-path "$t/cdata" $dit --pretrained-model-path "$dbase" --use-lora --train-only-lora \
    --lora-checkpoint "$dl" --max-steps 2 --ckpt-every 2 --output-dir "$t/dl2" 2>"$t/err" ||
    fail "DiT --lora-checkpoint: $(cat "$t/err")"
grep -q 'LoRA: 4 modules' "$t/err" || fail "the DiT adapter did not come back fused: $(cat "$t/err")"
"$bin/dit-sample" --model-path "$dbase" --lora "$dl" --class-labels 1 --num-inference-steps 2 --threads 2 \
    -o "$t/ds" 2>"$t/err" || fail "DiT dit-sample --lora: $(cat "$t/err")"
rc=0; "$bin/dit-train" --data-path "$t/cdata" $dit --pretrained-model-path "$dbase" --use-lora \
    --lora-target-modules to_q --max-steps 1 --output-dir "$t/dl3" 2>"$t/err" || rc=$?
[ "$rc" != 0 ] && grep -q 'select all of to_q, to_k, to_v, or qkv' "$t/err" ||
    fail "to_q alone on the fused qkv: exit $rc, $(cat "$t/err")"
exit 0
