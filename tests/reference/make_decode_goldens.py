#!/usr/bin/env python3
"""Writes the image decoding goldens under tests/fixtures/decode/.

Run from the repository root (the outputs are committed, CI needs no Python):

    pip install pillow numpy safetensors
    python3 tests/reference/make_decode_goldens.py

The reference is the decode a training script does with Pillow:

    im = ImageOps.exif_transpose(Image.open(f))
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, bg + (255,)),
                                   im.convert("RGBA"))
    pixels = np.asarray(im.convert("RGB"))

formats/image_decode.c must give the same pixels (tests/test_image_decode.c).

Inputs: every image in tests/fixtures/images/good/, plus the extra files this
script writes to tests/fixtures/decode/ for cases the probe fixtures lack:

  jpeg_baseline_96x64.jpg   the DCT-scaling input (4:2:0, quality 85)
  jpeg_422_22x14.jpg        4:2:2 chroma (horizontal-only upsampling)
  jpeg_444_22x14.jpg        4:4:4 chroma (no upsampling)
  jpeg_rgb_22x14.jpg        stored as RGB (keep_rgb, Adobe transform 0)
  jpeg_cmyk_20x12.jpg       CMYK with every plane varying, K included (the
                            probe fixture comes from convert("CMYK"), whose
                            K is always 0, so it never tests the K term)
  jpeg_ycck_20x12.jpg       the same file with its Adobe transform flag set
                            to 2: libjpeg then reads the data as YCCK (Pillow
                            writes no YCCK), so both decoders take the
                            YCCK->CMYK path
  png_rgba16_9x7.png        16-bit RGBA: Pillow keeps the high bytes
  png_la16_7x5.png          16-bit gray+alpha: the same
  png_gray16_mixed_8x6.png  16-bit gray with values around 255: Pillow's
                            "I;16" to RGB clips at 255 instead of scaling
  png_gray16_trns_8x4.png   16-bit gray, tRNS 200: a clipped value of 200 is
                            transparent
  png_rgb16_trns_6x4.png    16-bit RGB, tRNS (1,2,3): Pillow compares the high
                            bytes with the tRNS values
  png_gray8_trns_6x4.png    8-bit gray, tRNS
  png_rgb8_trns_6x4.png     8-bit RGB, tRNS
  png_gray1_trns_8x2.png    1-bit gray, tRNS 1 (white is transparent)
  png_gray2_trns_8x2.png    2-bit gray, tRNS 3: Pillow compares the scaled
                            value with 3, so nothing is transparent
  png_gray4_5x3.png         4-bit gray (x17)
  png_palette2bit_trns_4x3.png  2-bit palette with partial alpha entries

Output: tests/fixtures/decode/goldens.safetensors, U8 tensors of shape
[height, width, 3] (as displayed), named:

  good/NAME          images/good/NAME on a white background
  extra/NAME         decode/NAME on a white background (all but the
                     96x64 JPEG, whose full-size decode other JPEGs cover,
                     to keep this file small)
  bg/good/NAME, bg/extra/NAME   the images with alpha on BG = (40, 90, 200)
  orient/src         a synthetic image 5 wide, 3 high (random pixels, seed 0)
  orient/O           orient/src after ImageOps.exif_transpose with EXIF
                     orientation O = 1..8
  draft/S            jpeg_baseline_96x64.jpg through Pillow's
                     draft("RGB", (96 / S, 64 / S)), S = 2, 4, 8: libjpeg's
                     DCT scaling by 1/S (Pillow 13's draft() keeps the
                     default islow IDCT and fancy upsampling, decoderconfig
                     (S, 0), so the C decoder's scaled output must match)

Metadata: one key, "source", naming this script and the Pillow version.
A rerun with the same Pillow and numpy leaves `git status` clean.
"""

import io
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, ImageOps
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "..", "fixtures", "images", "good")
OUT = os.path.join(HERE, "..", "fixtures", "decode")
BG = (40, 90, 200)
WHITE = (255, 255, 255)


def pillow_rgb(data, bg=WHITE):
    """The training script's decode: pixels as displayed, alpha composited on bg."""
    im = Image.open(io.BytesIO(data))
    im = ImageOps.exif_transpose(im)
    alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if alpha:
        im = Image.alpha_composite(Image.new("RGBA", im.size, bg + (255,)), im.convert("RGBA"))
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8)), alpha


# ---- extra fixtures -------------------------------------------------------------

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w, h, depth, color_type, rows, extra=b""):
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
            + extra + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def png16(arr, color_type, extra=b""):
    h, w = arr.shape[:2]
    a = arr.astype(">u2")
    return png(w, h, 16, color_type, [a[y].tobytes() for y in range(h)], extra)


def pack_bits(values, depth):
    """One row of sub-byte samples, most significant bits first."""
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc = (acc << depth) | v
        n += depth
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def scene(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 255 * (1 - (x + y) / max(w + h - 2, 1))
    img = np.stack([r, g, b], axis=-1)
    disc = (x - 0.4 * w) ** 2 + (y - 0.5 * h) ** 2 <= (0.3 * min(w, h)) ** 2
    img[disc] = [220, 40, 60]
    bar = (x >= 0.7 * w) & (x < 0.85 * w) & (y >= 0.15 * h) & (y < 0.9 * h)
    img[bar] = [20, 180, 200]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def extra_files():
    rng = np.random.default_rng(1)
    f = {}
    buf = io.BytesIO()
    Image.fromarray(scene(96, 64), "RGB").save(buf, "JPEG", quality=85)
    f["jpeg_baseline_96x64.jpg"] = buf.getvalue()
    for name, params in (("jpeg_422_22x14.jpg", {"subsampling": 1}), ("jpeg_444_22x14.jpg", {"subsampling": 0}),
                         ("jpeg_rgb_22x14.jpg", {"keep_rgb": True})):
        buf = io.BytesIO()
        Image.fromarray(scene(22, 14), "RGB").save(buf, "JPEG", quality=85, **params)
        f[name] = buf.getvalue()
    y, x = np.mgrid[0:12, 0:20].astype(np.float64)
    planes = [255 * x / 19, 255 * y / 11, 128 + 127 * np.sin(x / 3 + y / 2), 255 * (x + y) / 30]
    cmyk = np.clip(np.rint(np.stack(planes, axis=-1)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(cmyk, "CMYK").save(buf, "JPEG", quality=90)
    f["jpeg_cmyk_20x12.jpg"] = buf.getvalue()
    ycck = bytearray(f["jpeg_cmyk_20x12.jpg"])
    # APP14: FF EE, length, "Adobe", version, flags0, flags1, transform
    i = ycck.find(b"Adobe")
    assert i > 4 and ycck[i - 4:i - 2] == b"\xff\xee" and ycck[i + 11] == 0
    ycck[i + 11] = 2
    f["jpeg_ycck_20x12.jpg"] = bytes(ycck)

    f["png_rgba16_9x7.png"] = png16(rng.integers(0, 65536, (7, 9, 4)), 6)
    f["png_la16_7x5.png"] = png16(rng.integers(0, 65536, (5, 7, 2)), 4)
    mixed = rng.integers(0, 700, (6, 8))
    mixed[0, :4] = [0, 255, 256, 65535]
    f["png_gray16_mixed_8x6.png"] = png16(mixed, 0)
    g = rng.integers(150, 260, (4, 8))
    g[0, :3] = [200, 200, 456]  # 456 clips to 255, not to 200 (456 & 255 = 200)
    f["png_gray16_trns_8x4.png"] = png16(g, 0, chunk(b"tRNS", struct.pack(">H", 200)))
    rgb16 = rng.integers(0, 1024, (4, 6, 3))
    rgb16[0, 0] = [0x0100, 0x0201, 0x03FF]  # high bytes 1, 2, 3: transparent for Pillow
    rgb16[0, 1] = [1, 2, 3]                 # the tRNS value itself: opaque for Pillow
    f["png_rgb16_trns_6x4.png"] = png16(rgb16, 2, chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3)))

    g8 = rng.integers(0, 4, (4, 6)).astype(np.uint8) * 60
    f["png_gray8_trns_6x4.png"] = png(6, 4, 8, 0, [g8[y].tobytes() for y in range(4)],
                                      chunk(b"tRNS", struct.pack(">H", 60)))
    c8 = (rng.integers(0, 3, (4, 6, 3)) * 100).astype(np.uint8)
    c8[1, 2] = [100, 0, 200]
    f["png_rgb8_trns_6x4.png"] = png(6, 4, 8, 2, [c8[y].tobytes() for y in range(4)],
                                     chunk(b"tRNS", struct.pack(">HHH", 100, 0, 200)))
    b1 = rng.integers(0, 2, (2, 8))
    f["png_gray1_trns_8x2.png"] = png(8, 2, 1, 0, [pack_bits(b1[y], 1) for y in range(2)],
                                      chunk(b"tRNS", struct.pack(">H", 1)))
    b2 = np.array([[0, 1, 2, 3, 3, 2, 1, 0], [3, 3, 0, 0, 1, 1, 2, 2]])
    f["png_gray2_trns_8x2.png"] = png(8, 2, 2, 0, [pack_bits(b2[y], 2) for y in range(2)],
                                      chunk(b"tRNS", struct.pack(">H", 3)))
    b4 = np.arange(15).reshape(3, 5)
    f["png_gray4_5x3.png"] = png(5, 3, 4, 0, [pack_bits(b4[y], 4) for y in range(3)])
    p2 = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 3, 3]])
    plte = bytes([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120])
    f["png_palette2bit_trns_4x3.png"] = png(4, 3, 2, 3, [pack_bits(p2[y], 2) for y in range(3)],
                                            chunk(b"PLTE", plte) + chunk(b"tRNS", bytes([0, 128, 200])))
    return f


# ---- goldens ----------------------------------------------------------------------

def orientation_goldens(t):
    src = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    t["orient/src"] = src
    for o in range(1, 9):
        im = Image.fromarray(src, "RGB")
        im.getexif()[0x0112] = o
        out = ImageOps.exif_transpose(im)
        t[f"orient/{o}"] = np.ascontiguousarray(np.asarray(out, dtype=np.uint8))
    # exif_transpose must have acted: 5..8 swap the sides.
    assert t["orient/6"].shape == (5, 3, 3) and not np.array_equal(t["orient/2"], src)


def draft_goldens(t, data):
    for s in (2, 4, 8):
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (96 // s, 64 // s))
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        assert arr.shape == (64 // s, 96 // s, 3) and im.decoderconfig == (s, 0), (arr.shape, im.decoderconfig)
        t[f"draft/{s}"] = np.ascontiguousarray(arr)


def main():
    os.makedirs(OUT, exist_ok=True)
    t = {}
    for name in sorted(os.listdir(IMAGES)):
        with open(os.path.join(IMAGES, name), "rb") as fp:
            data = fp.read()
        t["good/" + name], alpha = pillow_rgb(data)
        if alpha:
            t["bg/good/" + name], _ = pillow_rgb(data, BG)

    extras = extra_files()
    for name, data in sorted(extras.items()):
        with open(os.path.join(OUT, name), "wb") as fp:
            fp.write(data)
        if name == "jpeg_baseline_96x64.jpg":
            continue
        t["extra/" + name], alpha = pillow_rgb(data)
        if alpha:
            t["bg/extra/" + name], _ = pillow_rgb(data, BG)

    orientation_goldens(t)
    draft_goldens(t, extras["jpeg_baseline_96x64.jpg"])

    path = os.path.join(OUT, "goldens.safetensors")
    save_file(t, path, metadata={"source": f"tests/reference/make_decode_goldens.py, Pillow {PIL.__version__}"})
    os.chmod(path, 0o644)  # safetensors creates it private
    back = load_file(path)
    assert sorted(back) == sorted(t) and all(np.array_equal(back[k], t[k]) for k in t)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{len(t)} tensors in {os.path.relpath(path)}; {len(extras)} extra images; "
          f"{total} bytes under {os.path.relpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
