# dit-bucket on manifests made here: no record lost, columns carried
# through, rejections, --strict, --merge-small, --stats, pipelines, random
# crops, the ADM recipe, usage errors. Runs under sh -eu with DIT_BIN,
# DIT_TESTS and DIT_TMP set by the test runner.
bucket="$DIT_BIN/dit-bucket"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }
tab="$(printf '\t')"
# The value of column $2 in the record whose key is $3, in manifest $1.
field() {
    awk -F '\t' -v c="$2" -v k="$3" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $col["key"] == k { print $col[c] }' "$1"
}
records() { echo $(($(wc -l <"$1") - 1)); }

"$bucket" --help | grep -q -- '--merge-small' || fail "--help lacks --merge-small"
"$bucket" --version | grep -q '^dit-bucket [0-9]' || fail "--version"

# Twelve records: two with bad sizes; an escaped TAB in a caption; a column
# of the user's own before and after the sizes.
{
    printf 'key\tsource\tcaption\twidth\theight\tmine\n'
    printf 'a\ta.jpg\tone\\ttab\t500\t375\tx1\n'
    printf 'b\tb.jpg\ttwo\t375\t500\tx2\n'
    printf 'c\tc.jpg\t\t1024\t1024\tx3\n'
    printf 'bad\td.jpg\tfour\tabc\t100\tx4\n'
    printf 'e\te.jpg\tfive\t1920\t1080\t\n'
    printf 'f\tf.jpg\tsix\t640\t\tx6\n'
    printf 'g\tg.jpg\tseven\t800\t800\tx7\n'
    printf 'h\th.jpg\teight\t1000\t1000\tx8\n'
    printf 'i\ti.jpg\tnine\t20\t300\tx9\n'
    printf 'j\tj.jpg\tten\t512\t512\tx10\n'
    printf 'k\tk.jpg\televen\t300\t300\tx11\n'
    printf 'l\tl.jpg\ttwelve\t12\t12\tx12\n'
} >"$t/in.tsv"

"$bucket" "$t/in.tsv" --rejects "$t/rej.tsv" >"$t/out.tsv" 2>"$t/err" || fail "exit $?: $(cat "$t/err")"
[ "$(head -n 1 "$t/out.tsv")" = "key${tab}source${tab}caption${tab}width${tab}height${tab}mine${tab}bucket${tab}resize_width${tab}resize_height${tab}crop_left${tab}crop_top${tab}resize_method" ] ||
    fail "output header: $(head -n 1 "$t/out.tsv")"
[ "$(records "$t/out.tsv")" = 10 ] || fail "$(records "$t/out.tsv") records out, want 10"
[ "$(records "$t/rej.tsv")" = 2 ] || fail "$(records "$t/rej.tsv") rejects, want 2"
[ $(($(records "$t/out.tsv") + $(records "$t/rej.tsv"))) = "$(records "$t/in.tsv")" ] || fail "records lost"
grep -q "in.tsv:5: key 'bad': width 'abc' is not a positive integer" "$t/err" || fail "bad width: $(cat "$t/err")"
grep -q "in.tsv:7: key 'f': no height" "$t/err" || fail "missing height: $(cat "$t/err")"
grep -q '12 records read: 10 bucketed, 2 rejected (1 bad width, 1 bad height); 5 buckets' "$t/err" ||
    fail "summary: $(cat "$t/err")"
grep -q '256x256 *6 *60.0% *1.000' "$t/err" || fail "histogram: $(cat "$t/err")"
# The input columns come through unchanged, in order.
cut -f 1-6 "$t/out.tsv" >"$t/carried"
grep -v -e '^bad' -e '^f' "$t/in.tsv" >"$t/want"
cmp -s "$t/carried" "$t/want" || fail "columns not carried through: $(diff "$t/want" "$t/carried")"
[ "$(field "$t/out.tsv" caption a)" = 'one\ttab' ] || fail "escaped caption"
[ "$(field "$t/out.tsv" bucket a)" = 288x224 ] || fail "a: bucket $(field "$t/out.tsv" bucket a)"
[ "$(field "$t/out.tsv" resize_width a)" = 299 ] || fail "a: resize_width"
[ "$(field "$t/out.tsv" crop_left a)" = 5 ] || fail "a: crop_left"
[ "$(field "$t/out.tsv" bucket b)" = 224x288 ] || fail "b: bucket"
[ "$(field "$t/out.tsv" resize_method c)" = fit ] || fail "c: resize_method"
# The rejects: the input columns plus the reason.
[ "$(head -n 1 "$t/rej.tsv")" = "$(head -n 1 "$t/in.tsv")${tab}reject_reason" ] || fail "rejects header"
[ "$(field "$t/rej.tsv" reject_reason bad)" = "width 'abc' is not a positive integer" ] || fail "reject_reason"
[ "$(field "$t/rej.tsv" mine bad)" = x4 ] || fail "rejects carry the columns"

# Standard input and output give the same bytes.
"$bucket" -q <"$t/in.tsv" >"$t/piped.tsv" 2>/dev/null
cmp -s "$t/piped.tsv" "$t/out.tsv" || fail "stdin/stdout differs from FILE"
"$bucket" -q - <"$t/in.tsv" 2>"$t/err" >/dev/null
grep -q "(stdin):5: key 'bad'" "$t/err" && fail "-q printed a warning"
"$bucket" <"$t/in.tsv" 2>"$t/err" >/dev/null
grep -q "(stdin):5: key 'bad'" "$t/err" || fail "stdin is not named in messages: $(cat "$t/err")"
# -o writes the same.
"$bucket" -q -o "$t/o.tsv" "$t/in.tsv" 2>/dev/null
cmp -s "$t/o.tsv" "$t/out.tsv" || fail "-o"

# --strict: exit 1, no -o output, the rejects still written.
rc=0; "$bucket" --strict -o "$t/strict.tsv" --rejects "$t/srej.tsv" "$t/in.tsv" 2>"$t/err" || rc=$?
[ "$rc" = 1 ] || fail "--strict: exit $rc"
[ ! -e "$t/strict.tsv" ] || fail "--strict wrote the output"
[ "$(records "$t/srej.tsv")" = 2 ] || fail "--strict rejects"
grep -q "error: .*in.tsv:5: key 'bad'" "$t/err" || fail "--strict reports as errors"
grep -v -e '^bad' -e '^f' "$t/in.tsv" | "$bucket" --strict >/dev/null 2>&1 || fail "--strict on good input"

# Re-bucketing replaces the columns in place.
"$bucket" -q --resolution 512 "$t/out.tsv" >"$t/again.tsv"
[ "$(head -n 1 "$t/again.tsv")" = "$(head -n 1 "$t/out.tsv")" ] || fail "re-bucketing changed the header"
[ "$(field "$t/again.tsv" bucket c)" = 512x512 ] || fail "re-bucketing at 512"
[ "$(records "$t/again.tsv")" = 10 ] || fail "re-bucketing lost records"

# Underscore spellings; the aspect bounds.
"$bucket" -q --min_aspect 1 --max_aspect 1 "$t/in.tsv" 2>/dev/null | cut -f 7 | sort -u >"$t/b"
[ "$(cat "$t/b" | tr '\n' ' ')" = '256x256 bucket ' ] || fail "--min_aspect/--max_aspect: $(cat "$t/b")"

# --stats: the histogram as TSV.
"$bucket" -q --stats "$t/stats.tsv" "$t/in.tsv" >/dev/null 2>&1
[ "$(head -n 1 "$t/stats.tsv")" = "bucket${tab}width${tab}height${tab}aspect${tab}count${tab}share" ] ||
    fail "stats header"
grep -q "^256x256${tab}256${tab}256${tab}1.000000${tab}6${tab}0.600000$" "$t/stats.tsv" || fail "stats row: $(cat "$t/stats.tsv")"
[ "$(awk -F '\t' 'NR > 1 { n += $5 } END { print n }' "$t/stats.tsv")" = 10 ] || fail "stats total"
"$bucket" -q --stats - -o "$t/o2.tsv" "$t/in.tsv" 2>/dev/null | grep -q '^bucket' || fail "--stats -"

# --batch-size: warnings; --merge-small moves small buckets, also from a pipe.
"$bucket" --batch-size 3 "$t/in.tsv" 2>"$t/err" >/dev/null
grep -q 'warning: bucket 288x224 has 1 record, fewer than a batch of 3: they train as short batches' "$t/err" ||
    fail "--batch-size warning: $(cat "$t/err")"
"$bucket" --batch-size 3 --merge-small --rejects "$t/mrej.tsv" <"$t/in.tsv" >"$t/merged.tsv" 2>"$t/err"
grep -q 'bucket 288x224 has 1 record, fewer than a batch of 3: merged into 256x256' "$t/err" ||
    fail "--merge-small warning: $(cat "$t/err")"
grep -q '10 bucketed (4 merged)' "$t/err" || fail "--merge-small summary: $(cat "$t/err")"
[ "$(cut -f 7 "$t/merged.tsv" | sort -u | tr '\n' ' ')" = "256x256 bucket " ] || fail "not merged"
[ "$(records "$t/merged.tsv")" = 10 ] || fail "--merge-small lost records"
[ "$(records "$t/mrej.tsv")" = 2 ] || fail "--merge-small rejects"
# The resize and crop follow the new bucket.
[ "$(field "$t/merged.tsv" resize_width a)" = 341 ] || fail "merged resize"
[ "$(field "$t/merged.tsv" crop_left a)" = 42 ] || fail "merged crop"
"$bucket" --batch-size 50 --merge-small "$t/in.tsv" 2>"$t/err" >/dev/null
grep -q 'no bucket has a full batch of 50 records: --merge-small merged nothing' "$t/err" || fail "no full batch"
rc=0; "$bucket" --merge-small "$t/in.tsv" 2>/dev/null >/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--merge-small without --batch-size: exit $rc"

# --no-upscale: the 12x12 image has no room for one step.
"$bucket" --no-upscale --rejects "$t/nrej.tsv" "$t/in.tsv" >"$t/nu.tsv" 2>"$t/err"
grep -q "in.tsv:13: key 'l': 12x12 is smaller than one step (16x16)" "$t/err" || fail "no-upscale: $(cat "$t/err")"
[ $(($(records "$t/nu.tsv") + $(records "$t/nrej.tsv"))) = 12 ] || fail "--no-upscale lost records"
[ "$(field "$t/nu.tsv" bucket k)" = 256x256 ] ||
    fail "k under --no-upscale: $(field "$t/nu.tsv" bucket k)"
awk -F '\t' 'NR > 1 { split($7, b, "x"); if (b[1] * b[2] > $4 * $5) exit 1 }' "$t/nu.tsv" || fail "--no-upscale upscaled"

# --buckets: exactly these; a bad one is a usage error.
"$bucket" -q --buckets 256x256,320x192,192x320 "$t/in.tsv" | cut -f 7 | sort -u | tr '\n' ' ' >"$t/b"
[ "$(cat "$t/b")" = "192x320 256x256 320x192 bucket " ] || fail "--buckets: $(cat "$t/b")"
rc=0; "$bucket" --buckets 256x250 "$t/in.tsv" 2>"$t/err" >/dev/null || rc=$?
[ "$rc" = 2 ] && grep -q "256x250" "$t/err" || fail "--buckets 256x250: exit $rc"

# --center-crop-size: the ADM recipe.
"$bucket" -q --center-crop-size 256 "$t/in.tsv" >"$t/adm.tsv"
[ "$(field "$t/adm.tsv" bucket a)" = 256x256 ] || fail "adm bucket"
[ "$(field "$t/adm.tsv" resize_width a)" = 341 ] || fail "adm resize"
[ "$(field "$t/adm.tsv" crop_left a)" = 42 ] || fail "adm crop"
[ "$(field "$t/adm.tsv" resize_method a)" = adm ] || fail "adm method"
rc=0; "$bucket" --center-crop-size 256 --buckets 256x256 "$t/in.tsv" 2>/dev/null >/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--center-crop-size with --buckets: exit $rc"

# --random-crop: the same for a seed whatever the order of the records.
"$bucket" -q --random-crop --seed 7 "$t/in.tsv" | sort >"$t/r1"
{ head -n 1 "$t/in.tsv"; tail -n +2 "$t/in.tsv" | sort -r; } | "$bucket" -q --random-crop --seed 7 | sort >"$t/r2"
cmp -s "$t/r1" "$t/r2" || fail "random crops depend on the order"
"$bucket" -q --random-crop --seed 8 "$t/in.tsv" | sort >"$t/r3"
cmp -s "$t/r1" "$t/r3" && fail "random crops do not depend on the seed"

# Input problems: a duplicate key, a manifest without sizes, a missing file.
{ cat "$t/in.tsv"; printf 'a\tz.jpg\tdup\t10\t10\tx\n'; } >"$t/dup.tsv"
"$bucket" "$t/dup.tsv" 2>"$t/err" >"$t/o.tsv"
grep -q "dup.tsv:14: duplicate key 'a'" "$t/err" || fail "duplicate key: $(cat "$t/err")"
grep -q '13 records read: 10 bucketed, 3 rejected (1 unreadable, 1 bad width, 1 bad height)' "$t/err" ||
    fail "duplicate summary: $(cat "$t/err")"
printf 'key\tcaption\na\tx\n' >"$t/nosize.tsv"
rc=0; "$bucket" "$t/nosize.tsv" 2>"$t/err" >/dev/null || rc=$?
[ "$rc" = 1 ] && grep -q "nosize.tsv:1: no 'width' column" "$t/err" || fail "no width column: exit $rc"
rc=0; "$bucket" "$t/nope.tsv" 2>"$t/err" >/dev/null || rc=$?
[ "$rc" = 1 ] && grep -q 'nope.tsv' "$t/err" || fail "missing file: exit $rc"
rc=0; "$bucket" "$t/in.tsv" "$t/in.tsv" 2>/dev/null >/dev/null || rc=$?
[ "$rc" = 2 ] || fail "two operands: exit $rc"
echo "bucket: all checks passed"
