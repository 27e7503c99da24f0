#!/usr/bin/env python3
"""Writes the photo-like JPEG fixture and its Pillow goldens under
tests/fixtures/decode/, for the check that dit-precompute decodes JPEGs as
Pillow does by default (tests/test_image_decode.c, tests/tools/precompute.sh).

Run from the repository root (the outputs are committed, CI needs no Python):

    apt-get install -y python3-pil python3-numpy
    /usr/bin/python3 tests/reference/make_photo_goldens.py

No real photograph is available offline, so the fixture is made to behave
like one where it matters: DCT scaling (libjpeg's scale_num/scale_denom,
Pillow's draft()) throws away the high frequencies before the resize filter
sees them, which is harmless on smooth synthetic images and visible on
photographs with fine texture. The image is a sky gradient over a horizon,
1/f ("pink") noise for clouds and ground, hard-edged shapes (a building, a
pole) and fine grass-like texture and grain, all from numpy with a fixed
seed. The defect was found on a 720x281 photograph bucketed to 64 pixels;
the fixture is half that size (10 KB) with the same ratio of image to
bucket, so the fast path takes the same 1/4 DCT scale.

  photo_360x140.jpg       quality 75, 4:2:0, baseline (Pillow's encoder)

The geometry is what `dit-bucket --resolution 48` gives that image (bucket
64x32; tests/tools/precompute.sh checks it), repeated in
tests/test_image_decode.c:

  RESIZE = (82, 32), crop box (left 9, top 0, 64x32)

Goldens (RGB PNG, 64x32):

  photo_full_64x32.png    Image.open(f).convert("RGB")
                            .resize(RESIZE, Image.BICUBIC).crop(box):
                          what a Python training script gets, and what
                          dit-precompute must give by default
  photo_draft_64x32.png   the same after im.draft("RGB", RESIZE): libjpeg's
                          DCT scaling (here 1/4), what --fast-decode claims
                          to give

The script prints the mean absolute difference between the two, the error
--fast-decode trades for speed on this image (documented in
dit-precompute(1); Pillow 9.4.0, Debian 12's python3-pil, with the system
libjpeg-turbo 2.1.5: mean 1.885/255, 26 at most).
"""

import io
import os

import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "decode")
W, H = 360, 140
RESIZE = (82, 32)
LEFT, TOP, BW, BH = 9, 0, 64, 32


def pink(rng, h, w, power):
    """Noise with a 1/f^power spectrum, scaled to [-1, 1]."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spectrum = (rng.standard_normal((h, fx.shape[1])) + 1j * rng.standard_normal((h, fx.shape[1]))) / f**power
    spectrum[0, 0] = 0
    n = np.fft.irfft2(spectrum, s=(h, w))
    return n / np.abs(n).max()


def photo(w, h, grain, grass_amp):
    rng = np.random.default_rng(20261202)
    y = np.arange(h, dtype=np.float64)[:, None] * np.ones((1, w))
    x = np.ones((h, 1)) * np.arange(w, dtype=np.float64)[None, :]
    horizon = 0.53 * h + 0.043 * h * np.sin(x / (0.135 * w)) + 0.02 * h * pink(rng, 1, w, 1.2)
    sky = y < horizon
    img = np.zeros((h, w, 3))
    # Sky: a gradient with soft clouds.
    t = y / h
    clouds = np.clip(pink(rng, h, w, 1.6) * 1.8, 0, 1)
    for c, (top, bottom) in enumerate([(70, 170), (120, 200), (200, 235)]):
        img[..., c] = np.where(sky, top + (bottom - top) * t + 90 * clouds, 0)
    # Ground: earth and grass, textured at every scale down to single pixels.
    ground = pink(rng, h, w, 1.0)
    grass = rng.standard_normal((h, w))
    blades = np.sin(x * 2.9 + 3 * pink(rng, h, w, 0.8)) * np.cos(y * 1.7)
    base = np.stack([70 + 40 * ground, 100 + 50 * ground, 40 + 25 * ground], -1)
    base += (grass_amp * grass + 22 * blades)[..., None] * np.array([0.8, 1.0, 0.6])
    img = np.where(sky[..., None], img, base)
    # A building with windows, and a pole: hard edges.
    bx0, bx1, by0 = int(0.6 * w), int(0.78 * w), int(0.25 * h)
    building = (x >= bx0) & (x < bx1) & (y >= by0) & (y < horizon + 0.07 * h)
    wall = 150 + 30 * pink(rng, h, w, 1.3)
    img[building] = np.stack([wall, wall * 0.9, wall * 0.8], -1)[building]
    windows = building & (((x - bx0) % 14) < 7) & (((y - by0) % 16) < 8) & (y < horizon)
    img[windows] = [35, 45, 60]
    pole = (np.abs(x - 0.35 * w) < 2) & (y > 0.14 * h) & (y < horizon + 0.1 * h)
    img[pole] = [20, 20, 20]
    img += grain * rng.standard_normal((h, w, 3))  # sensor grain
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def pipeline(jpeg, draft):
    im = Image.open(io.BytesIO(jpeg))
    if draft:
        im.draft("RGB", RESIZE)
    im = im.convert("RGB").resize(RESIZE, Image.BICUBIC)
    return im.crop((LEFT, TOP, LEFT + BW, TOP + BH))


def save_png(im, name):
    path = os.path.join(OUT, name)
    im.save(path, optimize=True)
    print("wrote", path)


def main():
    os.makedirs(OUT, exist_ok=True)
    buf = io.BytesIO()
    photo(W, H, grain=2.0, grass_amp=10.0).save(buf, "JPEG", quality=75, subsampling="4:2:0")
    jpeg = buf.getvalue()
    path = os.path.join(OUT, "photo_360x140.jpg")
    with open(path, "wb") as f:
        f.write(jpeg)
    print("wrote", path, len(jpeg), "bytes")
    full, draft = pipeline(jpeg, False), pipeline(jpeg, True)
    save_png(full, "photo_full_64x32.png")
    save_png(draft, "photo_draft_64x32.png")
    d = np.abs(np.asarray(full, np.int32) - np.asarray(draft, np.int32))
    print("Pillow %s: draft vs full decode: mean %.3f/255, max %d" % (PIL.__version__, d.mean(), d.max()))


if __name__ == "__main__":
    main()
