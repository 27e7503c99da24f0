#!/bin/sh
# dit-index throughput next to the Python equivalent (csv + Pillow header
# read + xxhash), on generated data:
#   - a CSV of ROWS rows (default 1,000,000) over 1,000 distinct small images,
#     each row with its own key;
#   - a folder of FILES small images (default 100,000).
# Usage: bench/index_bench.sh [ROWS [FILES]]   (run from the repository root,
# after `make`; needs python3 with pillow and xxhash for the reference).
# Prints a Markdown table row per case, for bench/RESULTS.md.
set -eu
rows=${1:-1000000}
files=${2:-100000}
work=${BENCH_DIR:-/tmp/dit-index-bench}
bin=$(pwd)/bin
rm -rf "$work" && mkdir -p "$work/img" "$work/folder"
src=tests/fixtures/images/good

# 1,000 images: copies of the fixtures under distinct names.
i=0
for n in $(seq 0 39); do
    for f in "$src"/*; do
        [ "$i" -lt 1000 ] || break
        ext=${f##*.}
        cp "$f" "$work/img/i$i.$ext"
        i=$((i + 1))
    done
done
ls "$work/img" >"$work/names.txt"
awk -v rows="$rows" 'NR == FNR { names[n++] = $0; next } END {
    print "key,image_path,caption"
    for (r = 0; r < rows; r++) printf "row%07d,%s,caption %d\n", r, names[r % n], r
}' "$work/names.txt" /dev/null >"$work/rows.csv"
# The folder: FILES copies spread over sub-folders of 1,000.
awk -v files="$files" -v src="$work/img" -v dst="$work/folder" '{ names[n++] = $0 } END {
    for (j = 0; j < files; j++) {
        d = int(j / 1000); f = names[j % n]; ext = f; sub(/.*\./, "", ext)
        if (j % 1000 == 0) print "mkdir -p " dst "/d" d
        print "cp " src "/" f " " dst "/d" d "/f" j "." ext
    }
}' "$work/names.txt" | sh

cat >"$work/ref.py" <<'PY'
import csv, os, sys, time
import xxhash
from PIL import Image
def probe(path):
    with open(path, "rb") as f:
        data = f.read()
    h = xxhash.xxh3_128_hexdigest(data)
    with Image.open(path) as im:
        w, hgt = im.size
    return w, hgt, h
mode, target = sys.argv[1], sys.argv[2]
t = time.time(); n = 0
if mode == "csv":
    base = os.path.dirname(target)
    with open(target, newline="") as f:
        for row in csv.DictReader(f):
            probe(os.path.join(base, "img", row["image_path"])); n += 1
else:
    for d, _, fs in os.walk(target):
        for x in sorted(fs):
            probe(os.path.join(d, x)); n += 1
dt = time.time() - t
print(f"{n} {dt:.2f}")
PY

run() { # run COMMAND...: prints the seconds it took
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "$(echo "$end - $start" | bc)"
}
t_csv=$(run "$bin/dit-index" --base-image-dir "$work/img" -o "$work/out.tsv" "$work/rows.csv")
n_csv=$(($(wc -l <"$work/out.tsv") - 1))
t_dir=$(run "$bin/dit-index" -o "$work/out2.tsv" "$work/folder")
n_dir=$(($(wc -l <"$work/out2.tsv") - 1))
ref_csv=$(python3 "$work/ref.py" csv "$work/rows.csv")
ref_dir=$(python3 "$work/ref.py" dir "$work/folder")
rate() { echo "scale=0; $1 / $2" | bc; }
echo "| CSV, $rows rows | $n_csv | ${t_csv}s | $(rate "$n_csv" "$t_csv")/s | ${ref_csv#* }s | $(rate "${ref_csv% *}" "${ref_csv#* }")/s |"
echo "| folder, $files images | $n_dir | ${t_dir}s | $(rate "$n_dir" "$t_dir")/s | ${ref_dir#* }s | $(rate "${ref_dir% *}" "${ref_dir#* }")/s |"
