#!/usr/bin/env python3
"""Writes the resize goldens under tests/fixtures/resize/.

Run from the repository root (the outputs are committed, CI needs no Python):

    pip install pillow==13.0.0 numpy xxhash
    python3 tests/reference/make_resize_goldens.py

Made with Pillow 13.0.0, numpy 2.4.6, xxhash 4.1.0 (Python 3.11). Pillow 13
changed the pass order of resize (vertical first when the height loses more than
twice as many pixels as the width), so older Pillows give other bytes for the
cases marked "vertical pass first" below.

What it checks: formats/image_resize.c against Pillow's Image.resize on "RGB"
images (NEAREST, BOX, BILINEAR, HAMMING, BICUBIC, LANCZOS, with and without the
box argument, reducing_gap left at its default None), Image.resize followed by
Image.crop, and the ADM center_crop_arr recipe that DiT's train.py copies from
guided-diffusion's image_datasets.py (written again below from its definition).

Sources are not stored: each is drawn from integers only by source() below,
which tests/test_image_resize.c implements again (resize_test_source), so both
sides see the same bytes. A source is named "WxHsSEED".

Outputs, under tests/fixtures/resize/:

  cases.json   {"pillow": VERSION, "cases": [CASE, ...]}, one CASE a line:
                 {"name": NAME, "op": "resize" | "resize_crop" | "adm",
                  "src": [w, h, seed], "filter": Pillow filter name in lower case,
                  "size": [w, h]          (resize, resize_crop: the resize size),
                  "box": [l, t, r, b]     (resize only, optional: Pillow's box),
                  "crop": [l, t, w, h]    (resize_crop: the crop of the resized image),
                  "n": N                  (adm: the square side),
                  "adm": {"halvings": k, "half": [w, h], "resize": [w, h],
                          "crop": [l, t]} (adm: the sizes the recipe went through),
                  "out": [w, h]           (the output size),
                  "stride": [sx, sy]      (NAME.png holds out[::sy, ::sx]),
                  "xxh128": HEX}          (only when sampled: XXH3-128 of the whole
                                           output, rows of RGB bytes, as xxh128sum)
  NAME.png     Pillow's output, 8-bit RGB PNG: the whole output when it has at most
               2048 pixels (stride [1, 1]), else a sample of at most 24 x 24 pixels
               on the stride grid, to keep the fixtures small; the digest then
               covers every byte.

The sources are mostly smooth gradients, hard-edged shapes, one-pixel lines and
a two-pixel checker, with noise confined to one corner patch, so the PNGs stay
small while every resampling path still meets edges (ringing, clipping) and noise.
A rerun with the same Pillow leaves the pixels unchanged (the PNG bytes may differ
with another zlib).
"""

import json
import os
import sys

import numpy as np
import PIL
import xxhash
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "resize")

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
ALL = list(FILTERS)


# ---- the synthetic sources ----------------------------------------------------

M32 = np.uint64(0xFFFFFFFF)


def mix32(v):
    """A 32-bit integer hash (xorshift-multiply), on uint64 arrays kept to 32 bits."""
    v = v & M32
    v ^= v >> np.uint64(16)
    v = (v * np.uint64(0x7FEB352D)) & M32
    v ^= v >> np.uint64(15)
    v = (v * np.uint64(0x846CA68B)) & M32
    v ^= v >> np.uint64(16)
    return v


def source(w, h, seed):
    """uint8 array (h, w, 3). Integer arithmetic only, so C can draw it bit for bit.

    Background: r = 255x/(w-1), g = 255y/(h-1), b = 255(x+2y)/(w-1+2(h-1)), floor
    divisions. Then, later items painted over earlier ones:
      rectangle  x in [w/5, w/5 + w/4), y in [h/4, h/4 + h/3): (255 - r, 32, 240)
      disc       (4x - 3w)^2 + (4y - 2h)^2 < (min(w, h))^2: (250, 200 - g/2, 16)
      checker    x in [w/2, w/2 + w/6), y in [2h/3, 2h/3 + h/5), ((x/2 + y/2) odd):
                 (255, 255, 255), else (0, 0, 0)
      lines      column x = w/3: (255, 255, 255); row y = h/2: (0, 0, 0)
      noise      x >= 7w/8 and y < h/8: channel c = mix32(x*73856093 ^ y*19349663
                 ^ c*83492791 ^ seed*2654435761) & 255 (products mod 2^32)
    where every "/" is an integer floor division and max(., 1) guards a zero divisor.
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255) // max(w - 1, 1)
    g = (y * 255) // max(h - 1, 1)
    b = ((x + 2 * y) * 255) // max(w - 1 + 2 * (h - 1), 1)
    img = np.stack([r, g, b], axis=-1)

    rect = (x >= w // 5) & (x < w // 5 + w // 4) & (y >= h // 4) & (y < h // 4 + h // 3)
    img[rect] = np.stack([255 - r, np.full_like(r, 32), np.full_like(r, 240)], axis=-1)[rect]

    disc = (4 * x - 3 * w) ** 2 + (4 * y - 2 * h) ** 2 < min(w, h) ** 2
    img[disc] = np.stack([np.full_like(g, 250), 200 - g // 2, np.full_like(g, 16)], axis=-1)[disc]

    chk = (x >= w // 2) & (x < w // 2 + w // 6) & (y >= 2 * h // 3) & (y < 2 * h // 3 + h // 5)
    odd = ((x // 2 + y // 2) % 2) == 1
    img[chk & odd] = 255
    img[chk & ~odd] = 0

    img[x == w // 3] = 255
    img[y == h // 2] = 0

    noise = (x >= 7 * w // 8) & (y < h // 8)
    ux, uy = x.astype(np.uint64), y.astype(np.uint64)
    for c in range(3):
        v = ((ux * np.uint64(73856093)) & M32) ^ ((uy * np.uint64(19349663)) & M32)
        v ^= np.uint64((c * 83492791) & 0xFFFFFFFF)
        v ^= np.uint64((seed * 2654435761) & 0xFFFFFFFF)
        n = (mix32(v) & np.uint64(255)).astype(np.int64)
        img[..., c][noise] = n[noise]

    assert img.min() >= 0 and img.max() <= 255
    return img.astype(np.uint8)


def source_image(spec):
    w, h, seed = spec
    return Image.fromarray(source(w, h, seed), "RGB")


# ---- the ADM recipe ------------------------------------------------------------

def center_crop_arr(pil_image, image_size):
    """guided-diffusion image_datasets.py center_crop_arr (DiT's train.py copies it),
    written again from its definition; returns the array and the sizes it went through."""
    halvings = 0
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
        halvings += 1
    half = pil_image.size

    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size),
                                 resample=Image.BICUBIC)

    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    info = {"halvings": halvings, "half": list(half), "resize": list(pil_image.size),
            "crop": [crop_x, crop_y]}
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size], info


# ---- the cases -----------------------------------------------------------------

S97 = (97, 61, 1)
S256 = (256, 171, 2)
S33 = (33, 50, 3)
S640 = (640, 427, 4)
S1 = (1, 1, 5)
S9 = (9, 2, 6)
S43 = (43, 32, 7)
S29 = (29, 19, 8)
S13 = (13, 3, 9)

RESIZES = [
    # (source, (w, h), filters)
    (S97, (48, 30), ALL),                       # / 2 (odd source: not exactly 2)
    (S97, (26, 16), ["bicubic", "lanczos", "box"]),  # / 3.7
    (S97, (32, 32), ["bicubic", "lanczos"]),    # to a square, non-uniform
    (S97, (194, 122), ["bicubic"]),             # x 2 (large: sampled)
    (S29, (58, 38), ALL),                       # x 2
    (S29, (41, 27), ["bicubic", "lanczos", "hamming"]),  # odd upscale
    (S97, (97, 40), ["bicubic", "box", "nearest"]),  # vertical pass only
    (S97, (60, 61), ["bicubic", "lanczos", "nearest"]),  # horizontal pass only
    (S97, (150, 20), ["bicubic", "lanczos"]),   # up in x, down in y: vertical pass first
    (S97, (100, 60), ["bicubic"]),              # barely up in x, barely down in y: same
    (S33, (40, 20), ["hamming"]),               # up in x, down in y
    (S33, (47, 73), ["bicubic"]),               # odd upscale, portrait
    (S33, (12, 50), ["hamming"]),               # horizontal only, / 2.75
    (S256, (128, 85), ["box"]),                 # / 2 across, / 2.01 down (large: sampled)
    (S256, (69, 46), ALL),                      # / 3.7
    (S640, (256, 256), ["bicubic", "lanczos"]),  # non-uniform down (large: sampled)
    (S640, (173, 115), ["bicubic"]),            # / 3.7 (large: sampled)
    (S640, (64, 43), ["bilinear", "hamming"]),  # / 10
    (S640, (32, 32), ALL),                      # / 20 and / 13.3: wide kernels
    (S640, (7, 5), ["bicubic", "lanczos", "box"]),  # / 91: very wide kernels
    (S1, (4, 3), ["bicubic", "nearest"]),       # a single pixel
    (S9, (2, 9), ["bicubic", "lanczos", "bilinear", "nearest"]),  # tiny, both ways
    (S9, (9, 1), ["box"]),                      # to one row
    (S13, (6, 3), ["box"]),                     # 13 -> 6: Pillow's BOX skips source pixel 6
]

BOXES = [
    # (source, (w, h), box, filters): Pillow's box argument (a float region)
    (S97, (40, 30), (10.5, 3.25, 80.0, 55.75), ["bicubic", "lanczos", "nearest"]),
    (S97, (97, 61), (0.0, 0.0, 96.5, 61.0), ["bicubic"]),   # same size, fractional box
    (S256, (64, 64), (30.0, 20.0, 158.0, 148.0), ["box"]),  # integer box, / 2
    (S33, (50, 40), (1.0, 2.0, 21.0, 42.0), ["lanczos"]),   # integer box, upscale
    (S97, (30, 20), (7.0, 9.0, 37.0, 29.0), ["bicubic"]),   # box size = size: a plain crop
    (S97, (40, 20), (10.5, 3.25, 40.0, 55.75), ["bicubic"]),  # up in x, down in y
]

CROPS = [
    # (source, resize (w, h), filter, crop (left, top, w, h)): resize then crop
    (S256, (100, 67), "bicubic", (10, 5, 48, 32)),
    (S97, (150, 94), "lanczos", (40, 20, 40, 40)),
    (S640, (96, 64), "bicubic", (16, 0, 64, 64)),             # landscape "fit"
    (S640, (64, 96), "bicubic", (0, 16, 64, 64)),             # portrait "fit"
    (S33, (33, 70), "bicubic", (0, 3, 33, 40)),               # vertical pass only
    (S97, (40, 25), "nearest", (3, 4, 30, 20)),
    (S97, (120, 40), "bicubic", (30, 5, 48, 30)),             # vertical pass first
    (S97, (97, 61), "bicubic", (5, 6, 50, 40)),               # no resize: a plain crop
]

ADMS = [
    # (source, N)
    (S640, 32),   # three halvings
    (S640, 64),   # two halvings
    (S97, 32),    # no halving, down
    (S97, 64),    # no halving, up
    (S43, 48),    # 43 * 1.5 = 64.5: Python's round gives 64 (half to even)
    (S33, 32),    # the short side is the width
    (S256, 32),   # two halvings, then 64x42 -> bicubic
]

# Outputs up to this many pixels are stored whole; larger ones as a sample on a
# grid of at most SAMPLE x SAMPLE pixels (every case also carries the xxh3-128 of
# its whole output, which the test requires to match).
WHOLE = 2048
SAMPLE = 24


def spec_name(spec):
    return f"{spec[0]}x{spec[1]}s{spec[2]}"


def save(img_or_arr, name):
    """Writes the golden of one output; returns the case fields that describe it."""
    arr = np.array(img_or_arr) if isinstance(img_or_arr, Image.Image) else img_or_arr
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    h, w = arr.shape[:2]
    fields = {"out": [w, h]}
    if w * h <= WHOLE:
        stride = [1, 1]
    else:
        stride = [-(-w // SAMPLE), -(-h // SAMPLE)]
        fields["xxh128"] = xxhash.xxh3_128_hexdigest(np.ascontiguousarray(arr).tobytes())
    stored = np.ascontiguousarray(arr[::stride[1], ::stride[0]])
    path = os.path.join(ROOT, name + ".png")
    Image.fromarray(stored, "RGB").save(path, "PNG", optimize=True)
    back = np.array(Image.open(path))
    assert np.array_equal(back, stored), path
    fields["stride"] = stride
    return fields


def main():
    os.makedirs(ROOT, exist_ok=True)
    for f in os.listdir(ROOT):
        if f.endswith(".png"):
            os.remove(os.path.join(ROOT, f))
    cases = []
    for spec, size, filters in RESIZES:
        src = source_image(spec)
        for f in filters:
            name = f"resize_{spec_name(spec)}_{size[0]}x{size[1]}_{f}"
            case = {"name": name, "op": "resize", "src": list(spec), "filter": f,
                    "size": list(size)}
            case.update(save(src.resize(size, FILTERS[f]), name))
            cases.append(case)
    for spec, size, box, filters in BOXES:
        src = source_image(spec)
        for f in filters:
            name = f"box_{spec_name(spec)}_{size[0]}x{size[1]}_{f}"
            case = {"name": name, "op": "resize", "src": list(spec), "filter": f,
                    "size": list(size), "box": list(box)}
            case.update(save(src.resize(size, FILTERS[f], box=box), name))
            cases.append(case)
    for spec, size, f, crop in CROPS:
        src = source_image(spec)
        l, t, cw, ch = crop
        name = f"crop_{spec_name(spec)}_{size[0]}x{size[1]}_{l}_{t}_{cw}x{ch}_{f}"
        case = {"name": name, "op": "resize_crop", "src": list(spec), "filter": f,
                "size": list(size), "crop": list(crop)}
        case.update(save(src.resize(size, FILTERS[f]).crop((l, t, l + cw, t + ch)), name))
        cases.append(case)
    for spec, n in ADMS:
        arr, info = center_crop_arr(source_image(spec), n)
        assert arr.shape == (n, n, 3)
        name = f"adm_{spec_name(spec)}_{n}"
        case = {"name": name, "op": "adm", "src": list(spec), "filter": "bicubic",
                "n": n, "adm": info}
        case.update(save(np.ascontiguousarray(arr), name))
        cases.append(case)

    # One case a line: small, and a regenerated file diffs line by line.
    with open(os.path.join(ROOT, "cases.json"), "w") as fp:
        fp.write('{"pillow": %s, "cases": [\n' % json.dumps(PIL.__version__))
        fp.write(",\n".join(json.dumps(c, sort_keys=True) for c in cases))
        fp.write("\n]}\n")
    total = sum(os.path.getsize(os.path.join(ROOT, c["name"] + ".png")) for c in cases)
    print(f"wrote {len(cases)} goldens ({total} bytes of PNG) and cases.json under {ROOT}",
          file=sys.stderr)
    for c in cases:
        print(os.path.join("tests/fixtures/resize", c["name"] + ".png"))
    print("tests/fixtures/resize/cases.json")


if __name__ == "__main__":
    main()
