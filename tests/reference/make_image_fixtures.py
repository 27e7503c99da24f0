#!/usr/bin/env python3
"""Writes the image fixtures under tests/fixtures/images/.

Run from the repository root (the outputs are committed, CI needs no Python):

    pip install pillow numpy
    python3 tests/reference/make_image_fixtures.py

Every picture is the same deterministic synthetic scene (gradients, a disc, a
bar and a checker patch, no random numbers) drawn at the file's own size, so
the files tell each other apart by size and later resize tests against Pillow
see real structure. A rerun with the same Pillow leaves `git status` clean.

Outputs (the WxH in a name is the STORED size, before EXIF orientation):

  good/        valid images: JPEG baseline, progressive, grayscale, CMYK,
               EXIF orientation 2..8 and an invalid orientation (9, which
               Pillow's exif_transpose ignores, so it counts as 1); PNG 8-bit
               RGB, 16-bit RGB, palette (4-bit), palette with tRNS, RGBA,
               gray, 16-bit gray, 1-bit gray, gray+alpha, interlaced, EXIF
               orientation 6 in an eXIf chunk; WebP lossy, lossy with alpha
               (VP8X + ALPH), lossless with alpha.
  bad/         files the probe must refuse, and two it must accept whose
               point is their declared size (png_bomb_100000x100000.png and
               png_ihdr_max_2147483647x2147483647.png: an IHDR and nothing
               after it, for the --max-pixels guard; see expected.tsv).
  classes/     {cat,dog,zebra}/ with two images each in mixed formats; the
               first image of each class has a sidecar caption NAME.txt
               (UTF-8, one line, ending in a newline).
  captions.csv RFC 4180 with a UTF-8 BOM and CRLF line ends; columns
               image_path,caption,license; paths are relative to
               tests/fixtures/images/; captions hold an embedded comma, an
               embedded quote (""), an embedded LF newline and non-ASCII text.
  expected.tsv one line per image file under good/, bad/ and classes/, tab
               separated, '#' lines are comments. Two shapes:
                 file format stored_width stored_height orientation width
                   height channels bit_depth has_alpha
                 file error
               where error is image_probe_error_name(): "empty", "unsupported
               format", "truncated or corrupt header".

How the columns of a success row are found, from the written file only:
  format, stored_width, stored_height   Image.open(): format and size
  orientation    getexif()[0x0112] when it is 1..8 (what ImageOps.exif_transpose
                 acts on), else 1
  width, height  the size after ImageOps.exif_transpose (swapped for 5..8)
  channels       from Pillow's mode: 1/L/I;16* 1, LA 2, RGB/P 3, RGBA/CMYK 4
                 (a palette counts as its RGB entries)
  bit_depth      16 when the PNG IHDR says 16, else 8 (sub-byte PNG depths
                 decode to 8)
  has_alpha      mode has A, or a tRNS chunk (info["transparency"])

The probe reads WebP EXIF not at all (see formats/image_probe.h), so no WebP
fixture carries an orientation.
"""

import csv
import io
import os
import shutil
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images")

ERR_EMPTY = "empty"
ERR_UNSUPPORTED = "unsupported format"
ERR_CORRUPT = "truncated or corrupt header"


# ---- the synthetic scene ----------------------------------------------------

def scene(w, h, variant=0):
    """An RGB uint8 picture: gradients, a disc, a bar and a checker patch."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u = x / max(w - 1, 1)
    v = y / max(h - 1, 1)
    r = 255 * u
    g = 255 * v
    b = 255 * (1 - (u + v) / 2)
    img = np.stack([r, g, b], axis=-1)
    # Shapes shift with the variant, so class images differ from each other.
    cx, cy = w * (0.35 + 0.1 * variant), h * 0.45
    rad = 0.3 * min(w, h)
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= rad ** 2
    img[disc] = [(230 - 40 * variant) % 256, 40, (60 + 70 * variant) % 256]
    bar = (x >= 0.7 * w) & (x < 0.85 * w) & (y >= 0.15 * h) & (y < 0.9 * h)
    img[bar] = [20, 20 + 60 * variant % 200, 200]
    chk = (x < 0.25 * w) & (y >= 0.6 * h) & (((x.astype(int) + y.astype(int)) % 2) == 0)
    img[chk] = [255, 255, 255]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def rgb(w, h, variant=0):
    return Image.fromarray(scene(w, h, variant), "RGB")


def alpha_ramp(w, h):
    """An alpha plane: opaque left, transparent right, with a fully clear hole."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.rint(255 * (1 - x / max(w - 1, 1))).astype(np.uint8)
    a[(y < h // 3) & (x < w // 3)] = 0
    return Image.fromarray(a, "L")


# ---- writers ----------------------------------------------------------------

def encode(img, fmt, **params):
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def exif_bytes(orientation):
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_ihdr(w, h, depth, color_type):
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))


def png_adam7(w, h):
    """An Adam7-interlaced 8-bit RGB PNG; Pillow writes no interlaced PNG."""
    px = scene(w, h)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
              (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = px[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    return (PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
            + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def png_rgb16(w, h):
    """A 16-bit RGB PNG; Pillow cannot write 48-bit RGB, so it is built here."""
    px = scene(w, h).astype(np.uint16) * 257
    # Fill the low bytes too, so the 16 bits carry more than the 8-bit scene.
    y, x = np.mgrid[0:h, 0:w]
    px[..., 0] += ((x * 37 + y * 11) % 251).astype(np.uint16) * (px[..., 0] < 65000)
    rows = b"".join(b"\x00" + px[i].astype(">u2").tobytes() for i in range(h))
    return (PNG_SIG + png_ihdr(w, h, 16, 2) + png_chunk(b"IDAT", zlib.compress(rows, 9))
            + png_chunk(b"IEND", b""))


# ---- the fixture list -------------------------------------------------------

def good_files():
    f = {}
    f["jpeg_baseline_24x16.jpg"] = encode(rgb(24, 16), "JPEG", quality=85)
    f["jpeg_progressive_32x24.jpg"] = encode(rgb(32, 24), "JPEG", quality=85, progressive=True)
    f["jpeg_gray_20x14.jpg"] = encode(rgb(20, 14).convert("L"), "JPEG", quality=85)
    f["jpeg_cmyk_18x12.jpg"] = encode(rgb(18, 12).convert("CMYK"), "JPEG", quality=85)
    # Orientation o on stored sizes that differ per file; 5..8 display transposed.
    sizes = {2: (26, 10), 3: (27, 11), 4: (28, 12), 5: (29, 13), 6: (24, 16), 7: (30, 14),
             8: (31, 15), 9: (25, 9)}
    for o, (w, h) in sizes.items():
        name = f"jpeg_exif_orient{o}_{w}x{h}.jpg" if o <= 8 else f"jpeg_exif_orient9_invalid_{w}x{h}.jpg"
        # orient6 shares 24x16 with the baseline on purpose: same picture,
        # different display size.
        f[name] = encode(rgb(w, h), "JPEG", quality=85, exif=exif_bytes(o))

    f["png_rgb8_33x17.png"] = encode(rgb(33, 17), "PNG", optimize=False)
    f["png_rgb16_17x33.png"] = png_rgb16(17, 33)
    pal = rgb(28, 20).quantize(colors=12, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    f["png_palette4bit_28x20.png"] = encode(pal, "PNG")
    pal256 = rgb(23, 21).quantize(colors=40, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    f["png_palette_trns_23x21.png"] = encode(pal256, "PNG", transparency=0)
    rgba = rgb(30, 18)
    rgba.putalpha(alpha_ramp(30, 18))
    f["png_rgba_30x18.png"] = encode(rgba, "PNG")
    f["png_gray_22x26.png"] = encode(rgb(22, 26).convert("L"), "PNG")
    g16 = (scene(16, 24)[..., 1].astype(np.uint16) * 257)
    f["png_gray16_16x24.png"] = encode(Image.fromarray(g16), "PNG")
    f["png_gray1bit_35x9.png"] = encode(rgb(35, 9).convert("L").point(lambda p: 255 if p > 110 else 0).convert("1"), "PNG")
    la = rgb(19, 23).convert("L")
    la.putalpha(alpha_ramp(19, 23))
    f["png_gray_alpha_19x23.png"] = encode(la, "PNG")
    # Adam7: the probe must not care, the decoder later must.
    f["png_interlaced_34x10.png"] = png_adam7(34, 10)
    f["png_exif_orient6_36x12.png"] = encode(rgb(36, 12), "PNG", exif=exif_bytes(6))

    f["webp_lossy_36x20.webp"] = encode(rgb(36, 20), "WEBP", quality=80, method=4)
    wa = rgb(25, 15)
    wa.putalpha(alpha_ramp(25, 15))
    f["webp_lossy_alpha_25x15.webp"] = encode(wa, "WEBP", quality=80, method=4)
    wl = rgb(21, 29)
    wl.putalpha(alpha_ramp(21, 29))
    f["webp_lossless_alpha_21x29.webp"] = encode(wl, "WEBP", lossless=True, method=4)
    return f


def bad_files(good):
    """name -> (bytes, error or None); None: the probe must accept it."""
    b = {}
    b["empty.jpg"] = (b"", ERR_EMPTY)
    base_jpg = good["jpeg_baseline_24x16.jpg"]
    base_png = good["png_rgb8_33x17.png"]
    b["jpeg_truncated_20bytes.jpg"] = (base_jpg[:20], ERR_CORRUPT)
    b["png_truncated_in_ihdr.png"] = (base_png[:20], ERR_CORRUPT)
    crc = bytearray(base_png)
    crc[29] ^= 0x5A  # first byte of the IHDR CRC
    b["png_bad_ihdr_crc.png"] = (bytes(crc), ERR_CORRUPT)
    # FF 02 is no JPEG marker: libjpeg and Pillow both refuse it.
    b["jpeg_garbage_after_soi.jpg"] = (base_jpg[:2] + b"\xff\x02garbage!" + bytes(range(0x20, 0x60))
                                      + base_jpg[2:], ERR_CORRUPT)
    sof = bytearray(base_jpg)
    i = sof.find(b"\xff\xc0")
    sof[i + 1] = 0xC3  # the lossless process, which libjpeg-turbo 2.x cannot decode
    b["jpeg_lossless_sof3_24x16.jpg"] = (bytes(sof), ERR_UNSUPPORTED)
    b["webp_truncated_16bytes.webp"] = (good["webp_lossy_36x20.webp"][:16], ERR_CORRUPT)
    vp8 = bytearray(good["webp_lossy_36x20.webp"])
    i = vp8.find(b"\x9d\x01\x2a")  # the VP8 key frame start code
    vp8[i] = 0x00
    b["webp_bad_vp8_start_code.webp"] = (bytes(vp8), ERR_CORRUPT)

    b["gif_24x16.gif"] = (encode(rgb(24, 16).convert("P"), "GIF"), ERR_UNSUPPORTED)
    b["bmp_24x16.bmp"] = (encode(rgb(24, 16), "BMP"), ERR_UNSUPPORTED)
    b["tiff_24x16.tif"] = (encode(rgb(24, 16), "TIFF"), ERR_UNSUPPORTED)
    b["text_named.jpg"] = (b"This is a text file, not a JPEG.\n", ERR_UNSUPPORTED)
    frames = [rgb(20, 12, v) for v in range(3)]
    b["webp_animated_20x12.webp"] = (encode(frames[0], "WEBP", save_all=True,
                                            append_images=frames[1:], duration=100, loop=0,
                                            lossless=True), ERR_UNSUPPORTED)

    b["png_bomb_100000x100000.png"] = (PNG_SIG + png_ihdr(100000, 100000, 8, 2), None)
    # Gray+alpha: libspng refuses rows over 4 GiB, which RGB(A) this wide has.
    b["png_ihdr_max_2147483647x2147483647.png"] = (PNG_SIG + png_ihdr(2**31 - 1, 2**31 - 1, 8, 4), None)
    # PNG limits each dimension to 2^31 - 1.
    b["png_ihdr_width_2147483648.png"] = (PNG_SIG + png_ihdr(2**31, 16, 8, 2), ERR_CORRUPT)
    b["png_ihdr_zero_width.png"] = (PNG_SIG + png_ihdr(0, 16, 8, 2), ERR_CORRUPT)
    return b


def class_files():
    out = {}
    plan = {
        "cat": [("cat_01.jpg", 40, 30, "JPEG"), ("cat_02.png", 30, 40, "PNG")],
        "dog": [("dog_01.webp", 38, 26, "WEBP"), ("dog_02.jpg", 26, 38, "JPEG")],
        "zebra": [("zebra_01.png", 42, 28, "PNG"), ("zebra_02.webp", 28, 42, "WEBP")],
    }
    captions = {"cat": "a tabby cat asleep on a red sofa\n",
                "dog": "a dog catching a frisbee, mid-air\n",
                "zebra": "zebras at a waterhole — dusk\n"}
    for variant, (cls, items) in enumerate(plan.items()):
        for k, (name, w, h, fmt) in enumerate(items):
            params = {"quality": 85} if fmt in ("JPEG", "WEBP") else {}
            out[f"{cls}/{name}"] = encode(rgb(w, h, variant), fmt, **params)
            if k == 0:
                out[f"{cls}/{os.path.splitext(name)[0]}.txt"] = captions[cls].encode("utf-8")
    return out


# ---- Pillow's view ----------------------------------------------------------

def channels_of(mode):
    return {"1": 1, "L": 1, "I;16": 1, "I;16B": 1, "I": 1, "LA": 2, "RGB": 3, "P": 3,
            "RGBA": 4, "CMYK": 4}[mode]


def pillow_row(rel, data):
    im = Image.open(io.BytesIO(data))
    fmt = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}[im.format]
    sw, sh = im.size
    o = im.getexif().get(0x0112, 1)
    if o not in range(1, 9):
        o = 1
    if o == 1:
        w, h = sw, sh
    else:
        im.load()
        w, h = ImageOps.exif_transpose(im).size
    depth = 8
    if fmt == "png":
        depth = 16 if data[24] == 16 else 8
    alpha = int("A" in im.mode or "transparency" in im.info)
    return [rel, fmt, sw, sh, o, w, h, channels_of(im.mode), depth, alpha]


def header_row(rel, data):
    """Rows for the IHDR-only files, which Pillow refuses as decompression bombs."""
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    ch = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[ctype]
    return [rel, "png", w, h, 1, w, h, ch, 16 if depth == 16 else 8, int(ctype in (4, 6))]


def pillow_refuses(data):
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception:
        return True
    return False


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    for sub in ("good", "bad", "classes"):
        shutil.rmtree(os.path.join(ROOT, sub), ignore_errors=True)
    rows = []
    good = good_files()
    for name, data in sorted(good.items()):
        write(os.path.join(ROOT, "good", name), data)
        rows.append(pillow_row("good/" + name, data))
    for name, (data, err) in sorted(bad_files(good).items()):
        write(os.path.join(ROOT, "bad", name), data)
        if err is None:
            rows.append(header_row("bad/" + name, data))
        else:
            rows.append(["bad/" + name, err])
            # Corrupt files must be corrupt for Pillow as well; the
            # unsupported ones (GIF, BMP, TIFF, animation) Pillow may read.
            if err != ERR_UNSUPPORTED and not pillow_refuses(data):
                sys.exit(f"Pillow accepts bad/{name}, which is labelled {err!r}")
    for name, data in sorted(class_files().items()):
        write(os.path.join(ROOT, "classes", name), data)
        if not name.endswith(".txt"):
            rows.append(pillow_row("classes/" + name, data))

    with open(os.path.join(ROOT, "expected.tsv"), "w", newline="\n") as f:
        f.write("# written by tests/reference/make_image_fixtures.py; paths relative to this folder\n")
        f.write("# file\tformat\tstored_width\tstored_height\torientation\twidth\theight\tchannels\tbit_depth\thas_alpha\n")
        f.write("# file\terror\n")
        for r in rows:
            f.write("\t".join(str(c) for c in r) + "\n")

    captions = [
        ("good/jpeg_baseline_24x16.jpg", "A red disc, a blue bar and a gradient", "CC0-1.0"),
        ("good/png_rgb8_33x17.png", 'The sign said "stop" and we did', "CC-BY-4.0"),
        ("good/webp_lossy_36x20.webp", "first line\nsecond line", "CC-BY-SA-4.0"),
        ("good/png_gray_22x26.png", "café crème, naïve façade — ünïcödé", "CC0-1.0"),
        ("good/jpeg_exif_orient6_24x16.jpg", "rotated by EXIF", "CC-BY-4.0"),
    ]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(["image_path", "caption", "license"])
    for row in captions:
        w.writerow(row)
    with open(os.path.join(ROOT, "captions.csv"), "wb") as f:
        f.write(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))

    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(ROOT) for n in ns)
    print(f"{len(rows)} images, {total} bytes under {os.path.relpath(ROOT)}")


if __name__ == "__main__":
    main()
