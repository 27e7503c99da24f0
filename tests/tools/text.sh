# Captions through the whole data pipeline with a tiny random T5 v1.1
# encoder (tests/fixtures/t5/deep) and the test tokenizer: a CSV with
# repeated captions -> dit-index -> dit-bucket -> dit-precompute
# --text-encoder: every record gets text and text_mask, each distinct
# caption is encoded once, a rerun reuses everything, a changed caption
# re-encodes its record only, and bad input is named.
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
    echo "cat/cat_02.png,a tabby cat asleep on a red sofa"
    echo "dog/dog_01.webp,a dog in the snow"
    echo "dog/dog_02.jpg,\"a dog, running\""
    echo "zebra/zebra_01.png,a tabby cat asleep on a red sofa"
    echo "zebra/zebra_02.webp,"
} >"$t/img/train.csv"
ls "$t/img"/*/* >/dev/null || fail "fixture images"
"$bin/dit-index" "$t/img/train.csv" 2>"$t/err" | "$bin/dit-bucket" --center-crop-size 16 2>/dev/null >"$t/b.tsv" ||
    fail "index | bucket: $(cat "$t/err")"
[ "$(tail -n +2 "$t/b.tsv" | wc -l)" = 6 ] || fail "bucketed: $(cat "$t/b.tsv") $(cat "$t/err")"
text="--text-encoder $t5 --tokenizer $tok --max-sequence-length 12"
"$bin/dit-precompute" $text -o "$t/s" "$t/b.tsv" 2>"$t/err" || fail "precompute: $(cat "$t/err")"
grep -q '6 captions: 4 distinct encoded' "$t/err" || fail "captions summary: $(cat "$t/err")"
grep -q 'text encoder .* MiB' "$t/err" || fail "no memory line: $(cat "$t/err")"
"$bin/dit-inspect" --verify "$t/s" >/dev/null 2>&1 || fail "verify: $("$bin/dit-inspect" --verify "$t/s" 2>&1)"
"$bin/dit-inspect" "$t/s" >"$t/inspect" 2>&1
grep -q 'text .*BF16 *\[12, 16\]' "$t/inspect" || fail "text shape: $(cat "$t/inspect")"
grep -q 'text_mask .*BF16 *\[12\]' "$t/inspect" || fail "text_mask shape: $(cat "$t/inspect")"
grep -q 't5/1' "$t/inspect" || fail "no T5 identity: $(cat "$t/inspect")"

# Again: nothing encoded. One caption changed: that record alone.
"$bin/dit-precompute" $text -o "$t/s" "$t/b.tsv" 2>"$t/err" || fail "rerun"
grep -q '0 encoded, 6 reused' "$t/err" || fail "rerun summary: $(cat "$t/err")"
sed 's/a dog in the snow/a dog in the rain/' "$t/b.tsv" >"$t/b2.tsv"
"$bin/dit-precompute" $text -o "$t/s" "$t/b2.tsv" 2>"$t/err" || fail "changed caption"
grep -q '1 encoded, 5 reused' "$t/err" || fail "changed caption summary: $(cat "$t/err")"

# The F-Lite options: layer -2 through the final norm, with the mask; f32.
"$bin/dit-precompute" $text --text-layer -2 --text-final-norm --text-attention-mask --text-dtype f32 \
    -o "$t/f" "$t/b.tsv" 2>"$t/err" || fail "layer options: $(cat "$t/err")"
"$bin/dit-inspect" "$t/f" 2>&1 | grep -q 'text .*F32 *\[12, 16\]' || fail "f32 text"

# Bad input: a missing encoder, a missing tokenizer, a vocabulary larger
# than the encoder's table, no caption column, text options without an encoder.
rc=0; "$bin/dit-precompute" --text-encoder "$t/nope" --tokenizer "$tok" -o "$t/x" "$t/b.tsv" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q 'nope' "$t/err" || fail "missing encoder: exit $rc, $(cat "$t/err")"
rc=0; "$bin/dit-precompute" --text-encoder "$t5" --tokenizer "$t/nope" -o "$t/x" "$t/b.tsv" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] && grep -q 'nope' "$t/err" || fail "missing tokenizer: exit $rc, $(cat "$t/err")"
rc=0; "$bin/dit-precompute" --text-encoder "$DIT_TESTS/fixtures/t5/small" --tokenizer "$tok" -o "$t/x" "$t/b.tsv" \
    2>"$t/err" || rc=$?
[ "$rc" != 0 ] && grep -q '808' "$t/err" && grep -q '200' "$t/err" || fail "vocab mismatch: exit $rc, $(cat "$t/err")"
rc=0; "$bin/dit-precompute" $text --caption-column prompt -o "$t/x" "$t/b.tsv" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q "no 'prompt' column" "$t/err" || fail "caption column: exit $rc, $(cat "$t/err")"
rc=0; "$bin/dit-precompute" --text-layer -8 -o "$t/x" "$t/b.tsv" 2>"$t/err" || rc=$?
[ "$rc" = 2 ] || fail "--text-layer alone: exit $rc"
[ -e "$t/x/manifest.tsv" ] && fail "a failed run wrote a manifest"
echo "text: all checks passed"
