# The whole pipeline with a tiny random AutoencoderKL (tests/fixtures/vae/sd):
# index -> bucket -> precompute --vae (mean and std, scaled) -> train (drawing
# from the stored distribution) -> sample, decoded by the VAE the checkpoint
# names; a second precompute run reuses every record; kill -9 during
# precompute --vae, then a rerun, gives the records of an uninterrupted run.
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images"
vae="$DIT_TESTS/fixtures/vae/sd"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }

"$bin/dit-index" --class-from-dir "$img/classes" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 16 \
    >"$t/b.tsv" 2>/dev/null || fail "index | bucket"
"$bin/dit-precompute" --vae "$vae" -o "$t/data" "$t/b.tsv" 2>"$t/err" || fail "precompute: $(cat "$t/err")"
"$bin/dit-inspect" "$t/data" >"$t/inspect" 2>&1 || fail "inspect: $(cat "$t/inspect")"
grep -q 'latent_std' "$t/inspect" || fail "no latent_std: $(cat "$t/inspect")"
grep -q 'vae/1' "$t/inspect" || fail "no VAE identity: $(cat "$t/inspect")"
"$bin/dit-precompute" --vae "$vae" -o "$t/data" "$t/b.tsv" 2>"$t/err2" || fail "again: $(cat "$t/err2")"
grep -q '0 encoded' "$t/err2" || fail "the second run encoded again: $(cat "$t/err2")"
"$bin/dit-precompute" --vae "$vae" --latent-mode mean -o "$t/mean" "$t/b.tsv" 2>/dev/null || fail "mean mode"
"$bin/dit-inspect" "$t/mean" 2>&1 | grep -q 'latent_std' && fail "--latent-mode mean stored a std"

small="--model DiT-S/4 --depth 1 --hidden-size 32 --num-heads 2 --train_batch_size 3 --threads 2"
"$bin/dit-train" --data-path "$t/data" --output-dir "$t/run" $small --max-steps 3 2>"$t/err" ||
    fail "train: $(cat "$t/err")"
ck="$t/run/checkpoint-0000003"
grep -q '"vae/1' "$ck/checkpoint.json" || fail "checkpoint encoder: $(cat "$ck/checkpoint.json")"
"$bin/dit-sample" --model-path "$ck" --class-labels 0,1 --num-sampling-steps 3 --latents-out "$t/lat.safetensors" \
    -o "$t/s" 2>"$t/err" || fail "sample: $(cat "$t/err")"
"$bin/dit-index" "$t/s" 2>/dev/null | grep -c '	16	16	png	' | grep -q 2 || fail "decoded images: $(ls "$t/s")"
"$bin/dit-sample" --decode "$t/lat.safetensors" -o "$t/d" 2>"$t/err" || fail "decode: $(cat "$t/err")"
for f in "$t"/s/*.png; do
    [ -s "$t/d/$(basename "$f")" ] || fail "decode did not write $(basename "$f")"
done

# kill -9 while the VAE encodes, then a rerun: the records of an uninterrupted
# run, and no partial shard ever visible. 104 records upscaled to 128 px, one
# or two per shard, so each kill lands while encoding goes on.
records() { awk -F '\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "shard") s = i } { $s = ""; print }' OFS='\t' "$1"; }
mkdir -p "$t/many"
for f in "$img"/good/*.png "$img"/good/*.jpg "$img"/good/*.webp; do
    for k in 0 1 2 3; do cp "$f" "$t/many/${k}_$(basename "$f")"; done
done
"$bin/dit-index" "$t/many" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 128 2>/dev/null >"$t/many.tsv"
run_many() { "$bin/dit-precompute" -j 1 --vae "$vae" --shard-size 0.001 -o "$1" "$t/many.tsv"; }
run_many "$t/ref" 2>/dev/null || fail "reference run"
records "$t/ref/manifest.tsv" >"$t/ref.records"
[ "$(wc -l <"$t/ref.records")" -gt 100 ] || fail "the reference run holds $(wc -l <"$t/ref.records") lines"
mid_run=0
for target in 3 20 50; do
    rm -rf "$t/k"
    "$bin/dit-precompute" -j 1 --vae "$vae" --shard-size 0.001 -o "$t/k" "$t/many.tsv" 2>/dev/null &
    pid=$!
    while kill -0 "$pid" 2>/dev/null && [ "$(ls "$t/k" 2>/dev/null | grep -c '^shard-')" -lt "$target" ]; do :; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -e "$t/k/manifest.tsv" ] || mid_run=$((mid_run + 1))
    for s in "$t"/k/*.safetensors; do
        [ -e "$s" ] || continue
        "$bin/dit-inspect" --verify "$s" >/dev/null 2>&1 || fail "a partial shard is visible after a kill at $target shards: $s"
    done
    run_many "$t/k" 2>"$t/err" || fail "rerun after kill: $(cat "$t/err")"
    "$bin/dit-inspect" --verify "$t/k" >/dev/null || fail "rerun after a kill at $target shards does not verify"
    records "$t/k/manifest.tsv" | cmp -s - "$t/ref.records" || fail "rerun after a kill at $target shards differs"
    ls -a "$t/k" | grep -q '\.tmp\.' && fail "temporary files left after the rerun"
done
echo "kills that landed before the manifest was written: $mid_run of 3"
[ "$mid_run" -ge 1 ] || fail "no kill landed mid-run: the test data is too small for this machine"

# Bad input: a VAE folder that is not one, a VAE whose latents the model does not take.
rc=0; "$bin/dit-precompute" --vae "$t/nope" -o "$t/x" "$t/b.tsv" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q 'nope' "$t/err" || fail "missing VAE: exit $rc, $(cat "$t/err")"
[ -e "$t/x/manifest.tsv" ] && fail "a failed run wrote a manifest"
rc=0; "$bin/dit-sample" --model-path "$ck" --vae "$DIT_TESTS/fixtures/vae/flux" -o "$t/x" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'channels' "$t/err" || fail "16-channel VAE on a 4-channel model: exit $rc, $(cat "$t/err")"
echo "vae: all checks passed"
