# dit-train and dit-sample with --device cuda, end to end (under `make
# test-cuda-emu` the tools are linked with the emulated backend): the same
# losses as the CPU in f32 and close to them in bf16; checkpoints that
# resume bitwise on the device; samples during training; dit-sample from a
# checkpoint giving the CPU's latents.
bin="$DIT_BIN"
img="$DIT_TESTS/../fixtures/images"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

"$bin/dit-index" --class-from-dir "$img/classes" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 16 2>/dev/null |
    "$bin/dit-precompute" -o "$t/data" 2>/dev/null || fail "making the shard set"
small="--model DiT-S/4 --depth 1 --hidden-size 32 --num-heads 2 --train_batch_size 4 --learning-rate 1e-3 --threads 2"
train() { "$bin/dit-train" --data-path "$t/data" $small --max-steps 4 --log-every 1 --ckpt-every 2 "$@"; }
losses() { sed 's/.*"loss": *\([^,]*\),.*"step": *\([0-9]*\).*/\2 \1/' "$1"; }
# close A B TOL: the logged losses of two runs agree to TOL relative.
close() {
    losses "$1" >"$t/la"
    losses "$2" >"$t/lb"
    paste "$t/la" "$t/lb" | awk -v tol="$3" '
        { n++; d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > tol * $2) bad = 1 }
        END { exit !(n == 4 && !bad) }' || fail "losses differ beyond $3: $(paste "$t/la" "$t/lb")"
}

train --device cpu --output-dir "$t/cpu" 2>"$t/err" || fail "cpu training: $(cat "$t/err")"
train --device cuda --mixed-precision no --output-dir "$t/f32" 2>"$t/err" || fail "cuda f32 training: $(cat "$t/err")"
grep -q 'allocated on the cuda' "$t/err" || fail "no memory report: $(cat "$t/err")"
close "$t/cpu/metrics.jsonl" "$t/f32/metrics.jsonl" 1e-4

# bf16 by default on a GPU; samples from the EMA on the device at step 4.
train --device cuda --output-dir "$t/bf16" --sample-every 4 --sample-steps 3 2>"$t/err" ||
    fail "cuda bf16 training: $(cat "$t/err")"
grep -q '(bf16' "$t/err" || fail "bf16 not reported: $(cat "$t/err")"
close "$t/cpu/metrics.jsonl" "$t/bf16/metrics.jsonl" 3e-2
ls "$t"/bf16/samples/*.png >/dev/null 2>&1 || fail "no samples: $(ls -R "$t/bf16")"
"$bin/dit-inspect" --verify "$t/bf16/checkpoint-0000004" >/dev/null || fail "checkpoint does not verify"

# Resuming on the device from the step-2 checkpoint ends bitwise where the
# uninterrupted run did: the state goes through the host and back exactly,
# and the kernels are deterministic.
mkdir -p "$t/resumed" && cp -r "$t/bf16/checkpoint-0000002" "$t/resumed/"
train --device cuda --output-dir "$t/resumed" --resume latest 2>"$t/err" || fail "resume: $(cat "$t/err")"
for f in transformer/diffusion_pytorch_model.safetensors ema/diffusion_pytorch_model.safetensors \
         training_state.safetensors; do
    cmp -s "$t/bf16/checkpoint-0000004/$f" "$t/resumed/checkpoint-0000004/$f" || fail "$f differs after resume"
done

# fp16 with loss scaling trains and keeps its scale in the checkpoint.
train --device cuda --mixed-precision fp16 --output-dir "$t/f16" 2>"$t/err" || fail "fp16 training: $(cat "$t/err")"
close "$t/cpu/metrics.jsonl" "$t/f16/metrics.jsonl" 3e-2

# dit-sample from the f32 checkpoint: the CPU's latents, in f32 on the device.
ck="$t/f32/checkpoint-0000004"
sample() { "$bin/dit-sample" --model-path "$ck" --class-labels 0,1 --num-sampling-steps 4 --seed 3 "$@"; }
sample --device cpu -o "$t/s_cpu" --latents-out "$t/s_cpu.safetensors" 2>"$t/err" || fail "cpu sample: $(cat "$t/err")"
sample --device cuda --precision fp32 -o "$t/s_gpu" --latents-out "$t/s_gpu.safetensors" 2>"$t/err" ||
    fail "cuda sample: $(cat "$t/err")"
[ "$(ls "$t/s_gpu" | wc -l)" = 2 ] || fail "cuda sample images: $(ls "$t/s_gpu")"
grep -q 'allocated on the cuda, peak' "$t/err" || fail "dit-sample memory report: $(cat "$t/err")"
"$bin/dit-inspect" --stats "$t/s_cpu.safetensors" | grep latents >"$t/st_cpu" || fail "cpu latents"
"$bin/dit-inspect" --stats "$t/s_gpu.safetensors" | grep latents >"$t/st_gpu" || fail "cuda latents"
# "latents F32 [2, 3, 16, 16] min max mean std nan inf": min, max, mean and
# std (fields 7 to 10) within 1e-4 of the std
paste "$t/st_cpu" "$t/st_gpu" | awk '{
        n = NF / 2; s = $10 + 1e-6
        for (i = 7; i <= 10; i++) { d = $i - $(i + n); if (d < 0) d = -d; if (d > 1e-4 * s) bad = 1 }
        if (NF != 24) bad = 1 }
    END { exit !(NR == 1 && !bad) }' || fail "latents differ: $(cat "$t/st_cpu") vs $(cat "$t/st_gpu")"
sample --device cuda -o "$t/s_bf16" 2>"$t/err" || fail "cuda bf16 sample: $(cat "$t/err")"

# A model that does not fit says how big it was and what to change. Only
# the emulator's device memory can be made small (DIT_CUDA_EMU_MEM_MB).
case $bin in */emu-bin)
    # 33 MiB: cuBLASLt's 32 MiB workspace fits, 4.7M parameters do not.
    if DIT_CUDA_EMU_MEM_MB=33 "$bin/dit-train" --data-path "$t/data" --model DiT-S/4 --depth 2 \
           --hidden-size 384 --num-heads 6 --train-batch-size 4 --max-steps 4 --ckpt-every 2 \
           --device cuda --output-dir "$t/oom" 2>"$t/err"; then
        fail "training a 4.7M-parameter model in 33 MiB of device memory succeeded"
    fi
    grep -q 'out of GPU memory' "$t/err" && grep -q 'MiB of bf16 activations for a batch of 4' "$t/err" &&
        grep -q -- '--gradient-checkpointing' "$t/err" || fail "out-of-memory message: $(cat "$t/err")"
    [ ! -e "$t/oom/checkpoint-0000002" ] || fail "a checkpoint after running out of memory" ;;
esac
echo "train_sample: all checks passed"
