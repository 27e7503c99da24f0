# dit-sample: images from a checkpoint with each sampler, PNG parameters, a
# grid, latents; image k of a seed is the same whatever the batch size.
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

"$bin/dit-index" --class-from-dir --classes-out "$t/classes.txt" "$img/classes" 2>/dev/null |
    "$bin/dit-bucket" --center-crop-size 16 2>/dev/null | "$bin/dit-precompute" -o "$t/data" 2>/dev/null || fail "data"
small="--model DiT-S/4 --depth 1 --hidden-size 32 --num-heads 2 --train_batch_size 3 --threads 2"
"$bin/dit-train" --data-path "$t/data" --output-dir "$t/ddpm" $small --max-steps 4 2>/dev/null || fail "train ddpm"
"$bin/dit-train" --data-path "$t/data" --output-dir "$t/flow" $small --max-steps 4 --objective flow 2>/dev/null || fail "train flow"
ck="$t/ddpm/checkpoint-0000004"

"$bin/dit-sample" --model-path "$ck" --class-labels 0,2 --num-per-class 2 --num-sampling-steps 5 --seed 3 \
    --batch-size 4 --grid "$t/grid.png" --latents-out "$t/lat.safetensors" -o "$t/s4" 2>"$t/err" || fail "sample: $(cat "$t/err")"
[ "$(ls "$t/s4" | wc -l)" = 4 ] || fail "image count: $(ls "$t/s4")"
ls "$t/s4" | grep -q '000003-class2.png' || fail "names: $(ls "$t/s4")"
grep -q 'parameters' "$t/s4/000000-class0.png" || fail "no parameters text chunk"
grep -a -q 'seed 3, image 0, sampler ddpm' "$t/s4/000000-class0.png" || fail "parameters text"
[ -s "$t/grid.png" ] || fail "grid"
"$bin/dit-inspect" "$t/lat.safetensors" | grep -q 'latents *F32 *\[4, 3, 16, 16\]' || fail "latents: $("$bin/dit-inspect" "$t/lat.safetensors")"
printf '%s\n' "$t/grid.png" "$t/s4/000000-class0.png" | "$bin/dit-index" - 2>/dev/null | grep -q '	34	34	png	' ||
    fail "grid size (2 x 16 + 2)"

# --decode: the written latents back to images, named by their labels.
"$bin/dit-sample" --decode "$t/lat.safetensors" -o "$t/dec" 2>"$t/err" || fail "decode: $(cat "$t/err")"
[ "$(ls "$t/dec" | wc -l)" = 4 ] && ls "$t/dec" | grep -q '000003-class2.png' || fail "decoded: $(ls "$t/dec")"
"$bin/dit-index" "$t/dec" 2>/dev/null | grep -c '	16	16	png	' | grep -q 4 || fail "decoded sizes"
grep -a -q 'decoded from' "$t/dec/000000-class0.png" || fail "decode parameters"
rc=0; "$bin/dit-sample" --decode "$t/lat.safetensors" --decoder pixel:2 -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'channels' "$t/err" || fail "decode with a wrong decoder: $(cat "$t/err")"
rc=0; "$bin/dit-sample" --decode "$t/lat.safetensors" --model-path "$ck" -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] || fail "--decode with --model-path: exit $rc"

# Image k of seed s does not depend on the batch size.
"$bin/dit-sample" --model-path "$ck" --class-labels 0,2 --num-per-class 2 --num-sampling-steps 5 --seed 3 \
    --batch-size 1 -o "$t/s1" 2>/dev/null || fail "batch 1"
for f in "$t"/s4/*.png; do cmp -s "$f" "$t/s1/$(basename "$f")" || fail "$(basename "$f") differs with batch 1"; done
"$bin/dit-sample" --model-path "$ck" --class-labels 0 --num-sampling-steps 5 --seed 4 -o "$t/s5" 2>/dev/null
cmp -s "$t/s5/000000-class0.png" "$t/s4/000000-class0.png" && fail "another seed gives the same image"

# DDIM, the diffusers reference, class names, no guidance; flow with Euler.
"$bin/dit-sample" --model-path "$ck" --sampler ddim --eta 0.5 --reference diffusers --class-names "$t/classes.txt" \
    --class-labels cat,zebra --cfg-scale 1 --num-sampling-steps 4 -o "$t/d" 2>/dev/null || fail "ddim"
ls "$t/d" | grep -q 'class2' || fail "class names"
"$bin/dit-sample" --model-path "$t/flow/checkpoint-0000004" --class-labels 1 --num-sampling-steps 4 -o "$t/f" \
    2>"$t/err" || fail "flow: $(cat "$t/err")"
grep -a -q 'sampler euler' "$t"/f/*.png || fail "flow sampler"

# Bad input.
rc=0; "$bin/dit-sample" --model-path "$ck" --class-labels 7 -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'class 7 is outside' "$t/err" || fail "bad class: $(cat "$t/err")"
rc=0; "$bin/dit-sample" --model-path "$ck" --sampler euler -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] || fail "euler on a ddpm model: exit $rc"
rc=0; "$bin/dit-sample" --model-path "$ck" --width 64 -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'samples 16x16' "$t/err" || fail "--width: $(cat "$t/err")"
rc=0; "$bin/dit-sample" --model-path "$t/nope" -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" != 0 ] && grep -q 'nope' "$t/err" || fail "missing model"
echo "sample: all checks passed"
