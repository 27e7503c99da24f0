# examples/make_shapes, the demo's data generator: one folder per class, N
# images and captions each, images dit-index accepts at the size asked for,
# the same bytes for the same seed, others for another seed. Runs under
# sh -eu with DIT_BIN, DIT_TESTS, DIT_EXAMPLES and DIT_TMP set by the test
# runner (the Makefile's test rule).
shapes="${DIT_EXAMPLES:?DIT_EXAMPLES is not set: run through make test}/make_shapes"
index="$DIT_BIN/dit-index"
inspect="$DIT_BIN/dit-inspect"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }
col() { # col NAME FILE: the values of column NAME, without the header
    awk -F '\t' -v n="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == n) c = i; next } { print $c }' "$2"
}

"$shapes" --help | grep -q -- '--per-class' || fail "--help"
for bad in "-k 3" "-k 9" "-n 0" "--size 8" ""; do
    rc=0; "$shapes" $bad $([ -n "$bad" ] && echo "$t/bad") 2>/dev/null || rc=$?
    [ "$rc" = 2 ] || fail "'$bad': exit $rc, want 2"
done
[ ! -e "$t/bad" ] || fail "a usage error created the output folder"

# Five classes of three: the folders, the names, a caption beside each image.
"$shapes" -k 5 -n 3 -s 7 "$t/a" 2>"$t/err" || fail "exit $?: $(cat "$t/err")"
[ "$(ls "$t/a" | tr '\n' ' ')" = "blue_square green_triangle red_disc white_cross yellow_bar " ] ||
    fail "class folders: $(ls "$t/a")"
for d in "$t/a"/*; do
    c=$(basename "$d")
    [ "$(ls "$d" | tr '\n' ' ')" = "${c}_0000.png ${c}_0000.txt ${c}_0001.png ${c}_0001.txt ${c}_0002.png ${c}_0002.txt " ] ||
        fail "$c: $(ls "$d")"
done
grep -q '^an\{0,1\} .*red disc \(at the \(top\|bottom\)\( left\| right\)\{0,1\}\|on the \(left\|right\)\|in the middle\) on a \(dark\|gray\|light\) background$' \
    "$t/a/red_disc/red_disc_0001.txt" ||
    fail "caption: $(cat "$t/a/red_disc/red_disc_0001.txt")"

# dit-index reads every image as a 32x32 PNG and labels by folder.
"$index" --class-from-dir --classes-out "$t/classes.txt" -o "$t/a.tsv" "$t/a" 2>"$t/err" ||
    fail "dit-index: $(cat "$t/err")"
grep -q '15 records read, 15 kept, 0 rejected' "$t/err" || fail "dit-index summary: $(cat "$t/err")"
[ "$(col width "$t/a.tsv" | sort -u)" = 32 ] || fail "widths: $(col width "$t/a.tsv" | sort -u)"
[ "$(col height "$t/a.tsv" | sort -u)" = 32 ] || fail "heights"
[ "$(col format "$t/a.tsv" | sort -u)" = png ] || fail "formats"
[ "$(col label "$t/a.tsv" | tr '\n' ' ')" = "0 0 0 1 1 1 2 2 2 3 3 3 4 4 4 " ] || fail "labels: $(col label "$t/a.tsv")"
printf 'blue_square\ngreen_triangle\nred_disc\nwhite_cross\nyellow_bar\n' | cmp -s - "$t/classes.txt" ||
    fail "classes: $(cat "$t/classes.txt")"
[ "$(col caption "$t/a.tsv" | grep -c ' background$')" = 15 ] || fail "captions: $(col caption "$t/a.tsv")"
"$inspect" --verify "$t/a.tsv" >/dev/null 2>&1 || fail "the manifest does not verify"

# The same seed gives the same bytes; a rerun over the folder changes nothing
# and leaves no temporary files.
"$shapes" -q -k 5 -n 3 -s 7 "$t/b"
diff -r "$t/a" "$t/b" >/dev/null || fail "same seed, different files: $(diff -r "$t/a" "$t/b")"
"$shapes" -q -k 5 -n 3 -s 7 "$t/b"
diff -r "$t/a" "$t/b" >/dev/null || fail "a rerun changed the files"
[ "$(find "$t/b" -type f | wc -l)" = 30 ] || fail "stray files: $(find "$t/b" -type f)"

# Another seed: every image differs.
"$shapes" -q -k 5 -n 3 -s 8 "$t/c"
same=0
for f in "$t/a"/*/*.png; do
    if cmp -s "$f" "$t/c/${f#"$t/a/"}"; then same=$((same + 1)); fi
done
[ "$same" = 0 ] || fail "seed 8 repeats $same images of seed 7"

# All eight classes, another size; images within a class differ.
"$shapes" -q -k 8 -n 2 --size 48 "$t/d"
[ "$(ls "$t/d" | wc -l)" = 8 ] || fail "-k 8: $(ls "$t/d")"
"$index" --class-from-dir -o "$t/d.tsv" "$t/d" 2>"$t/err" || fail "dit-index -k 8: $(cat "$t/err")"
grep -q '16 records read, 16 kept, 0 rejected' "$t/err" || fail "-k 8 summary: $(cat "$t/err")"
[ "$(col width "$t/d.tsv" | sort -u)" = 48 ] || fail "--size 48: $(col width "$t/d.tsv" | sort -u)"
[ "$(col hash "$t/d.tsv" | sort -u | wc -l)" = 16 ] || fail "repeated images"
