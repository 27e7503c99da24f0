# dit-index on the image fixtures: the folder, list, CSV and archive forms
# agree; every rejection reason is reported, counted and kept out.
index="$DIT_BIN/dit-index"
inspect="$DIT_BIN/dit-inspect"
img="$DIT_TESTS/fixtures/images"
fx="$DIT_TESTS/fixtures/index"
t="$DIT_TMP"
fail() { echo "FAILED: $*" >&2; exit 1; }
col() { # col NAME FILE: the values of column NAME, without the header
    awk -F '\t' -v n="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == n) c = i; next } { print $c }' "$2"
}

"$index" --help | grep -q -- '--class-from-dir' || fail "--help"
rc=0; "$index" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "no INPUT: exit $rc"

# Folders, with classes in sorted name order as ImageFolder numbers them.
"$index" --class-from-dir --classes-out "$t/classes.txt" -o "$t/dir.tsv" "$img/classes" 2>"$t/err"
[ "$(tail -n +2 "$t/dir.tsv" | wc -l)" = 6 ] || fail "folder: $(cat "$t/dir.tsv")"
printf 'cat\ndog\nzebra\n' | cmp -s - "$t/classes.txt" || fail "classes-out: $(cat "$t/classes.txt")"
[ "$(col key "$t/dir.tsv" | tr '\n' ' ')" = "cat/cat_01 cat/cat_02 dog/dog_01 dog/dog_02 zebra/zebra_01 zebra/zebra_02 " ] ||
    fail "folder keys: $(col key "$t/dir.tsv")"
[ "$(col label "$t/dir.tsv" | tr '\n' ' ')" = "0 0 1 1 2 2 " ] || fail "labels"
[ "$(col caption "$t/dir.tsv" | head -n 1)" = "a tabby cat asleep on a red sofa" ] || fail "sidecar caption"
[ "$(col caption "$t/dir.tsv" | sed -n 2p)" = "cat 02" ] || fail "stem caption: $(col caption "$t/dir.tsv" | sed -n 2p)"
grep -q '6 records read, 6 kept, 0 rejected' "$t/err" || fail "summary: $(cat "$t/err")"
grep -q '3 other files' "$t/err" || fail "sidecar files not counted: $(cat "$t/err")"
"$inspect" --verify "$t/dir.tsv" >/dev/null || fail "folder manifest does not verify"

# Without classes: the list form (from find) and the folder form agree.
"$index" -o "$t/plain.tsv" "$img/classes" 2>/dev/null
(cd "$img/classes" && find . -name '*.jpg' -o -name '*.png' -o -name '*.webp' | sed 's|^\./||' | sort | "$index" -) >"$t/list.tsv" 2>/dev/null
cmp -s "$t/plain.tsv" "$t/list.tsv" || fail "list form differs: $(diff "$t/plain.tsv" "$t/list.tsv")"

# The CSV form of the same images and captions gives the same records.
{
    printf '\357\273\277image_path,caption\r\n'
    tail -n +2 "$t/plain.tsv" | awk -F '\t' -v root="$(cd "$img/classes" && pwd -P)/" '{
        p = $2; sub(root, "", p); c = $3; gsub(/"/, "\"\"", c); printf "%s,\"%s\"\r\n", p, c }'
} >"$t/same.csv"
"$index" --base-image-dir "$img/classes" "$t/same.csv" >"$t/csv.tsv" 2>/dev/null
cmp -s "$t/plain.tsv" "$t/csv.tsv" || fail "CSV form differs: $(diff "$t/plain.tsv" "$t/csv.tsv")"

# The archive forms: tar, tar.gz and zip of the same tree; only the source
# (ARCHIVE!/MEMBER) and the json column differ.
(cd "$img/classes" && tar cf "$t/classes.tar" $(find . -type f | sort) && tar czf "$t/classes.tar.gz" $(find . -type f | sort))
for a in "$t/classes.tar" "$t/classes.tar.gz" "$fx/classes.zip"; do
    "$index" "$a" >"$t/ar.tsv" 2>"$t/err" || fail "$a: $(cat "$t/err")"
    cut -f 1,3-8 "$t/ar.tsv" >"$t/ar.cut"
    cut -f 1,3-8 "$t/plain.tsv" | cmp -s - "$t/ar.cut" || fail "$a differs: $(cut -f 1,3-8 "$t/plain.tsv" | diff - "$t/ar.cut")"
    col source "$t/ar.tsv" | head -n 1 | grep -q '!/cat/cat_01.jpg$' || fail "$a: archive source"
done

# The CSV fixture: RFC 4180 quoting, CRLF, a BOM, a carried column.
"$index" "$img/captions.csv" >"$t/c.tsv" 2>"$t/err" || fail "captions.csv: $(cat "$t/err")"
[ "$(tail -n +2 "$t/c.tsv" | wc -l)" = 5 ] || fail "captions.csv records"
head -n 1 "$t/c.tsv" | grep -q 'license$' || fail "license column not carried: $(head -n 1 "$t/c.tsv")"
grep -q 'A red disc, a blue bar and a gradient' "$t/c.tsv" || fail "embedded comma"
grep -q 'The sign said "stop" and we did' "$t/c.tsv" || fail "embedded quote"
grep -q 'first line\\nsecond line' "$t/c.tsv" || fail "embedded newline"
[ "$(col width "$t/c.tsv" | tail -n 1)x$(col height "$t/c.tsv" | tail -n 1)" = 16x24 ] || fail "EXIF orientation not applied"

# Every rejection reason, with the file and the reason, counted, kept out.
"$index" --rejects "$t/rej.tsv" "$img/bad" >"$t/bad.tsv" 2>"$t/err" || fail "bad folder exit"
[ "$(tail -n +2 "$t/bad.tsv" | wc -l)" = 0 ] || fail "a bad image was kept: $(cat "$t/bad.tsv")"
for reason in 'empty' 'unsupported format' 'truncated or corrupt header' 'too many pixels'; do
    col reject_reason "$t/rej.tsv" | grep -qx "$reason" || fail "no '$reason' rejection"
done
grep -q 'png_bomb_100000x100000.png.*above --max-pixels' "$t/err" || fail "bomb message"
n_bad=$(find "$img/bad" -type f | wc -l)
[ "$(tail -n +2 "$t/rej.tsv" | wc -l)" = "$n_bad" ] || fail "rejects: $(tail -n +2 "$t/rej.tsv" | wc -l) of $n_bad"
grep -q "$n_bad records read, 0 kept, $n_bad rejected" "$t/err" || fail "summary: $(tail -n 2 "$t/err")"
printf '%s\n' "$img/bad/png_bomb_100000x100000.png" | "$index" --max-pixels 0 - 2>/dev/null | grep -q '	100000	100000	png	' ||
    fail "--max-pixels 0 still rejects"

# CSV problems: missing file, no image path, duplicate key, escaping paths, not a file.
mkdir -p "$t/base/sub"
cp "$img/good/png_rgb8_33x17.png" "$t/base/a.png"
printf 'image_path,caption\nmissing.png,x\n,no path\na.png,first\na.png,again\n../a.png,up\n/etc/hostname,abs\nsub,a folder\n' >"$t/bad.csv"
rc=0; "$index" --base-image-dir "$t/base" "$t/bad.csv" >"$t/o.tsv" 2>"$t/err" || rc=$?
[ "$rc" = 0 ] || fail "bad CSV exit $rc"
grep -q "bad.csv:2: missing file" "$t/err" || fail "missing file: $(cat "$t/err")"
grep -q "bad.csv:3: no value in column 'image_path'" "$t/err" || fail "no image"
grep -q "bad.csv:5: duplicate key 'a'" "$t/err" || fail "duplicate key"
grep -q "bad.csv:6: ../a.png is outside the base directory" "$t/err" || fail "dotdot"
grep -q "bad.csv:7: /etc/hostname is outside" "$t/err" || fail "absolute"
grep -q "bad.csv:8: .*not a regular file" "$t/err" || fail "folder as image"
grep -q '7 records read, 1 kept, 6 rejected' "$t/err" || fail "CSV summary: $(tail -n 1 "$t/err")"
rc=0; "$index" --strict --base-image-dir "$t/base" -o "$t/strict.tsv" "$t/bad.csv" 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "--strict exit $rc"
[ ! -e "$t/strict.tsv" ] || fail "--strict left an output"
"$index" --allow-outside --base-image-dir "$t/base/sub" "$t/bad.csv" 2>"$t/err" >/dev/null
grep -q 'outside' "$t/err" && fail "--allow-outside still rejects"
printf 'path,caption\nx.png,y\n' >"$t/nocol.csv"
rc=0; "$index" "$t/nocol.csv" >/dev/null 2>"$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q "no column 'image_path'" "$t/err" || fail "missing image column"
"$index" --image_column path --base-image-dir "$t/base" "$t/nocol.csv" >/dev/null 2>"$t/err" || fail "--image_column"

# Archives: a member escaping the root, and an archive that cannot be read.
"$index" "$fx/evil.zip" >"$t/e.tsv" 2>"$t/err"
[ "$(col key "$t/e.tsv")" = "ok/sample" ] || fail "evil.zip good sample"
[ "$(col caption "$t/e.tsv")" = "a good sample" ] || fail "zip .txt caption"
grep -q 'evil.zip!/../escape.png: member name escapes' "$t/err" || fail "zip escape: $(cat "$t/err")"
head -c 3000 /dev/urandom >"$t/broken.tar"
"$index" "$t/broken.tar" "$img/classes" >"$t/b.tsv" 2>"$t/err" || true
grep -q 'broken.tar: .*' "$t/err" && grep -q 'unreadable archive' "$t/err" || fail "broken archive: $(cat "$t/err")"
[ "$(tail -n +2 "$t/b.tsv" | wc -l)" = 6 ] || fail "other inputs lost after a broken archive"

# Archive members that are not regular files are never read, and each is
# named with its archive, member and reason, and counted, like '..' members.
"$index" --rejects "$t/sp.rej" "$fx/special.tar" >"$t/sp.tsv" 2>"$t/err" || fail "special.tar exit"
[ "$(col key "$t/sp.tsv")" = "dir/good" ] || fail "special.tar good sample: $(cat "$t/sp.tsv")"
[ "$(col caption "$t/sp.tsv")" = "good" ] || fail "a symbolic-link caption was read"
for m in 'dir/good.txt: member is a symbolic link (to /etc/hostname)' 'link.jpg: member is a symbolic link (to /etc/passwd)' \
    'hard.png: member is a hard link (to dir/good.png)' 'tty.jpg: member is a character device' \
    'disk.png: member is a block device' 'pipe.webp: member is a FIFO' 'folder.jpg: member is a directory'; do
    grep -qF "special.tar!/$m, not a regular file" "$t/err" || fail "special.tar: no '$m': $(cat "$t/err")"
done
grep -q '8 records read, 1 kept, 7 rejected (7 unreadable)' "$t/err" || fail "special.tar summary: $(tail -n 1 "$t/err")"
[ "$(col reject_reason "$t/sp.rej" | sort -u)" = unreadable ] || fail "special.tar rejects: $(cat "$t/sp.rej")"
[ "$(tail -n +2 "$t/sp.rej" | wc -l)" = 7 ] || fail "special.tar: $(tail -n +2 "$t/sp.rej" | wc -l) rejects of 7"
mkdir -p "$t/ln/tree"
cp "$img/good/png_rgb8_33x17.png" "$t/ln/tree/a.png"
ln -s /etc/passwd "$t/ln/tree/link.jpg"
(cd "$t/ln/tree" && tar cf "$t/ln.tar" a.png link.jpg)
"$index" "$t/ln.tar" >"$t/ln.tsv" 2>"$t/err" || fail "ln.tar exit"
[ "$(col key "$t/ln.tsv")" = a ] || fail "ln.tar: $(cat "$t/ln.tsv")"
grep -q 'ln.tar!/link.jpg: member is a symbolic link (to /etc/passwd), not a regular file' "$t/err" || fail "ln.tar: $(cat "$t/err")"
grep -q '2 records read, 1 kept, 1 rejected (1 unreadable)' "$t/err" || fail "ln.tar summary: $(tail -n 1 "$t/err")"
rc=0; "$index" --strict -o "$t/ln-strict.tsv" "$t/ln.tar" 2>/dev/null || rc=$?
[ "$rc" = 1 ] && [ ! -e "$t/ln-strict.tsv" ] || fail "--strict with a symbolic-link member: exit $rc"
(cd "$t/ln" && tar cf "$t/tree.tar" tree) # its directory entries are the tree, not members
"$index" "$t/tree.tar" 2>"$t/err" >/dev/null || fail "tree.tar exit"
grep -q '2 records read, 1 kept, 1 rejected (1 unreadable)' "$t/err" || fail "tree.tar: $(cat "$t/err")"

# Threads do not change the output.
"$index" -j 1 "$img/good" >"$t/j1.tsv" 2>/dev/null
"$index" -j 4 "$img/good" >"$t/j4.tsv" 2>/dev/null
cmp -s "$t/j1.tsv" "$t/j4.tsv" || fail "--jobs changes the output"
echo "index: all checks passed"
