#!/bin/sh
# Images per second for decode + resize + crop of 1024-pixel JPEGs into the
# buckets of --resolution 256 and 512: dit-precompute (which also encodes and
# writes the shard set) next to Pillow doing decode + resize + crop with the
# same geometry in one Python process.
# Usage: bench/precompute_bench.sh [IMAGES]  (after `make bench`; needs python3 with
# Pillow and numpy to make the images and run the reference).
set -eu
n=${1:-200}
work=${BENCH_DIR:-/tmp/dit-precompute-bench}
bin=$(pwd)/bin
rm -rf "$work" && mkdir -p "$work/img"
python3 - "$work/img" "$n" <<'PY'
import sys, numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    w, h = [(1024, 768), (768, 1024), (1024, 1024), (1024, 576)][i % 4]
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (w + h))], -1)
    noise = rng.integers(-40, 40, (h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    Image.fromarray(img).save(f"{out}/img{i:04d}.jpg", quality=90)
PY
cat >"$work/pillow.py" <<'PY'
import csv, sys, time
from PIL import Image, ImageOps
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
t = time.time()
for r in rows:
    with Image.open(r["source"]) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        rw, rh = int(r["resize_width"]), int(r["resize_height"])
        left, top = int(r["crop_left"]), int(r["crop_top"])
        bw, bh = (int(v) for v in r["bucket"].split("x"))
        im.resize((rw, rh), Image.BICUBIC).crop((left, top, left + bw, top + bh)).tobytes()
dt = time.time() - t
print(f"{len(rows) / dt:.1f}")
PY
"$bin/dit-index" "$work/img" 2>/dev/null >"$work/index.tsv"
rate() { # rate COMMAND...: images per second of a dit-precompute run
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "scale=1; $n / ($end - $start)" | bc
}
dr=build/release/bench/decode_resize
echo "| bucket resolution | decode+resize+crop, DCT scaling, all cores | the same, full decode, 1 thread | Pillow, 1 process | dit-precompute end to end (+ encode f32, write shards), all cores |"
echo "|---|---|---|---|---|"
for res in 256 512; do
    "$bin/dit-bucket" --resolution "$res" <"$work/index.tsv" 2>/dev/null >"$work/b$res.tsv"
    a=$("$dr" "$work/b$res.tsv" "$(nproc)")
    b=$("$dr" "$work/b$res.tsv" 1 exact)
    p=$(python3 "$work/pillow.py" "$work/b$res.tsv")
    e=$(rate "$bin/dit-precompute" --fast-decode -o "$work/s$res" "$work/b$res.tsv")
    echo "| $res | $a img/s | $b img/s | $p img/s | $e img/s |"
done
