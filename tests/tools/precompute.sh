# dit-precompute: the pipeline end to end, reuse of earlier work, rejection
# of bad records, and kill -9 at several moments followed by a rerun.
bin="$DIT_BIN"
img="$DIT_TESTS/fixtures/images"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }
col() { awk -F '\t' -v n="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == n) c = i; next } { print $c }' "$2"; }
# The shard manifest without the shard column: what must not depend on how
# records were grouped into shards.
records() { awk -F '\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "shard") s = i } { $s = ""; print }' OFS='\t' "$1"; }

"$bin/dit-precompute" --help | grep -q -- '--flip-mode' || fail "--help"
rc=0; "$bin/dit-precompute" </dev/null 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "no -o: exit $rc"

# The pipeline: index, bucket (DiT's ADM crop at 32), precompute, verify.
"$bin/dit-index" --class-from-dir "$img/classes" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 32 2>/dev/null >"$t/train.tsv"
"$bin/dit-precompute" -o "$t/s1" "$t/train.tsv" 2>"$t/err" || fail "precompute: $(cat "$t/err")"
grep -q '6 records read: 6 encoded, 0 reused, 0 rejected' "$t/err" || fail "summary: $(cat "$t/err")"
"$bin/dit-inspect" --verify "$t/s1" >/dev/null || fail "verify"
"$bin/dit-inspect" "$t/s1" | grep -q 'latent .*F32 *\[3, 32, 32\]' || fail "latent shape: $("$bin/dit-inspect" "$t/s1")"
[ "$(col label "$t/s1/manifest.tsv" | tr '\n' ' ')" = "0 0 1 1 2 2 " ] || fail "columns not carried"

# Again: nothing to do, the same manifest.
cp "$t/s1/manifest.tsv" "$t/m1.tsv"
"$bin/dit-precompute" -o "$t/s1" "$t/train.tsv" 2>"$t/err"
grep -q 'read: [1-9][0-9]* encoded' "$t/err" && fail "a rerun encoded again"
grep -q '0 encoded, 6 reused' "$t/err" || fail "rerun summary: $(cat "$t/err")"
cmp -s "$t/m1.tsv" "$t/s1/manifest.tsv" || fail "rerun changed the manifest"

# A grown manifest encodes only the new records; a changed crop box redoes
# exactly that record; a changed parameter redoes everything.
"$bin/dit-index" "$img/good" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 32 2>/dev/null | tail -n +2 >"$t/more"
cat "$t/train.tsv" "$t/more" >"$t/grown.tsv"
n_more=$(wc -l <"$t/more")
"$bin/dit-precompute" -o "$t/s1" "$t/grown.tsv" 2>"$t/err"
grep -q "$n_more encoded, 6 reused" "$t/err" || fail "grown: $(tail -n 1 "$t/err")"
awk -F '\t' 'BEGIN { OFS = "\t" } NR == 1 { for (i = 1; i <= NF; i++) if ($i == "resize_method") m = i }
    NR == 3 { $m = "fit" } { print }' "$t/train.tsv" >"$t/changed.tsv"
"$bin/dit-precompute" -o "$t/s1" "$t/changed.tsv" 2>"$t/err"
grep -q '1 encoded, 5 reused' "$t/err" || fail "one changed record: $(tail -n 1 "$t/err")"
"$bin/dit-precompute" --background 0,0,0 -o "$t/s1" "$t/train.tsv" 2>"$t/err"
grep -q '6 encoded, 0 reused' "$t/err" || fail "changed parameter: $(tail -n 1 "$t/err")"
"$bin/dit-precompute" --prune -o "$t/s1" "$t/train.tsv" 2>"$t/err"
grep -q 'pruned [1-9]' "$t/err" || fail "--prune: $(cat "$t/err")"
"$bin/dit-inspect" --verify "$t/s1" >/dev/null || fail "verify after prune"

# Mirrored encodings: the same values, mirrored, so the same statistics.
"$bin/dit-precompute" --random-flip --dtype bf16 -o "$t/s2" "$t/train.tsv" 2>/dev/null
[ "$(col fields "$t/s2/manifest.tsv" | sort -u)" = "latent,latent_flip" ] || fail "fields with --random-flip"
shard=$(col shard "$t/s2/manifest.tsv" | head -n 1)
key=$(col key "$t/s2/manifest.tsv" | head -n 1)
"$bin/dit-inspect" --stats "$t/s2/$shard" | grep "^ *$key/latent" | awk '{ $1 = ""; print }' | sort -u >"$t/stats"
[ "$(wc -l <"$t/stats")" = 1 ] || fail "flip changes the statistics: $(cat "$t/stats")"
"$bin/dit-inspect" "$t/s2" | grep -q 'BF16' || fail "--dtype bf16"

# JPEGs are decoded at full size by default, as Pillow does (the pixels are
# checked against Pillow in test_image_decode.c); --exact-decode is the
# same run; --fast-decode (DCT scaling) makes other pixels and says so.
mkdir -p "$t/photo"
cp "$DIT_TESTS/fixtures/decode/photo_360x140.jpg" "$t/photo/"
"$bin/dit-index" "$t/photo" 2>/dev/null | "$bin/dit-bucket" --resolution 48 2>/dev/null >"$t/photo.tsv"
[ "$(cut -f 9-14 "$t/photo.tsv" | tail -n 1)" = "64x32	82	32	9	0	fit" ] || fail "photo geometry: $(cut -f 9-14 "$t/photo.tsv")"
"$bin/dit-precompute" -o "$t/p1" "$t/photo.tsv" 2>/dev/null || fail "photo default"
"$bin/dit-precompute" --exact-decode -o "$t/p2" "$t/photo.tsv" 2>/dev/null || fail "photo --exact-decode"
"$bin/dit-precompute" --fast-decode -o "$t/p3" "$t/photo.tsv" 2>/dev/null || fail "photo --fast-decode"
"$bin/dit-inspect" "$t/p1" | grep -q 'preprocess: .*"dct_scaling":false' || fail "default identity: $("$bin/dit-inspect" "$t/p1")"
"$bin/dit-inspect" "$t/p3" | grep -q 'preprocess: .*"dct_scaling":true' || fail "--fast-decode identity"
cmp -s "$t/p1/manifest.tsv" "$t/p2/manifest.tsv" || fail "--exact-decode is not the default"
[ "$(col data_xxh3 "$t/p1/manifest.tsv")" != "$(col data_xxh3 "$t/p3/manifest.tsv")" ] || fail "--fast-decode made the same pixels"
"$bin/dit-precompute" --fast-decode -o "$t/p1" "$t/photo.tsv" 2>"$t/err"
grep -q '1 encoded, 0 reused' "$t/err" || fail "switching to --fast-decode reused: $(tail -n 1 "$t/err")"
rc=0; "$bin/dit-precompute" --fast-decode --exact-decode -o "$t/p4" "$t/photo.tsv" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--fast-decode --exact-decode: exit $rc"

# Bad records: unreadable, changed since indexing, undecodable, wrong size.
mkdir -p "$t/bad"
cp "$img/good/png_rgb8_33x17.png" "$t/bad/a.png"
cp "$img/good/jpeg_baseline_24x16.jpg" "$t/bad/b.jpg"
cp "$img/good/png_rgba_30x18.png" "$t/bad/c.png"
cp "$img/good/webp_lossy_36x20.webp" "$t/bad/d.webp"
cp "$img/good/png_gray_22x26.png" "$t/bad/e.png"
"$bin/dit-index" "$t/bad" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 16 2>/dev/null >"$t/bad.tsv"
rm "$t/bad/a.png"
printf 'x' >>"$t/bad/b.jpg"
head -c 60 "$img/good/png_rgba_30x18.png" >"$t/bad/c.png"
# c is indexed again truncated (its header still probes), so its hash is
# right and only decoding can fail; d gets a width the image does not have.
c_hash=$(printf '%s\n' "$t/bad/c.png" | "$bin/dit-index" - 2>/dev/null | tail -n 1 | cut -f 8)
[ -n "$c_hash" ] || fail "re-indexing the truncated image"
awk -F '\t' -v ch="$c_hash" 'BEGIN { OFS = "\t" } NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "hash") h = i; if ($i == "width") w = i } }
    $1 == "c" { $h = ch } $1 == "d" { $w = 99 } { print }' "$t/bad.tsv" >"$t/bad2.tsv"
"$bin/dit-precompute" --rejects "$t/rej.tsv" -o "$t/s3" "$t/bad2.tsv" 2>"$t/err" || fail "bad records exit"
grep -q "key 'a': .*a.png" "$t/err" || fail "missing file: $(cat "$t/err")"
grep -q "key 'b': .*no longer has the hash" "$t/err" || fail "changed file"
grep -q "key 'c': .*c.png" "$t/err" && ! grep -q "key 'c': .*no longer" "$t/err" || fail "truncated file: $(cat "$t/err")"
grep -q "key 'd': decoded 36x20 .*manifest says 99x20" "$t/err" || fail "size mismatch: $(cat "$t/err")"
grep -q '5 records read: 1 encoded, 0 reused, 4 rejected' "$t/err" || fail "bad summary: $(tail -n 1 "$t/err")"
[ "$(tail -n +2 "$t/rej.tsv" | wc -l)" = 4 ] || fail "rejects file"
rc=0; "$bin/dit-precompute" --strict -o "$t/s4" "$t/bad2.tsv" 2>/dev/null || rc=$?
[ "$rc" = 1 ] && [ ! -e "$t/s4/manifest.tsv" ] || fail "--strict"

# kill -9 at several moments, then a rerun: the result has the records of an
# uninterrupted run. Many shards of one or two records each, and kills timed
# by how many shards have appeared, so they land while the run is working.
mkdir -p "$t/many"
i=0
for f in "$img"/good/*.png "$img"/good/*.jpg "$img"/good/*.webp; do
    for k in 0 1 2 3; do cp "$f" "$t/many/i${i}_$k.${f##*.}"; done
    i=$((i + 1))
done
"$bin/dit-index" "$t/many" 2>/dev/null | "$bin/dit-bucket" --center-crop-size 256 2>/dev/null >"$t/many.tsv"
run_many() { "$bin/dit-precompute" -j 1 --dtype f16 --shard-size 0.3 -o "$1" "$t/many.tsv"; }
run_many "$t/ref" 2>/dev/null || fail "reference run"
records "$t/ref/manifest.tsv" >"$t/ref.records"
mid_run=0
for target in 2 15 35; do
    rm -rf "$t/k"
    # The tool itself in the background, not a subshell running it: kill -9
    # of a subshell would leave the tool writing while the next round
    # removes its directory.
    "$bin/dit-precompute" -j 1 --dtype f16 --shard-size 0.3 -o "$t/k" "$t/many.tsv" 2>/dev/null &
    pid=$!
    while kill -0 "$pid" 2>/dev/null && [ "$(ls "$t/k" 2>/dev/null | grep -c '^shard-')" -lt "$target" ]; do :; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -e "$t/k/manifest.tsv" ] || mid_run=$((mid_run + 1))
    # Only complete shards are visible, whatever the moment.
    for s in "$t"/k/*.safetensors; do
        [ -e "$s" ] || continue
        "$bin/dit-inspect" --verify "$s" >/dev/null 2>&1 || fail "a partial shard is visible after a kill at $target shards: $s"
    done
    run_many "$t/k" 2>"$t/err" || fail "rerun after kill"
    "$bin/dit-inspect" --verify "$t/k" >/dev/null || fail "rerun after a kill at $target shards does not verify"
    records "$t/k/manifest.tsv" | cmp -s - "$t/ref.records" || fail "rerun after a kill at $target shards differs"
    ls -a "$t/k" | grep -q '\.tmp\.' && fail "temporary files left after the rerun"
done
echo "kills that landed before the manifest was written: $mid_run of 3"
[ "$mid_run" -ge 1 ] || fail "no kill landed mid-run: the test data is too small for this machine"
echo "precompute: all checks passed"
