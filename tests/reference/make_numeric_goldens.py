#!/usr/bin/env python3
"""Goldens for libcommon's half-precision conversions, hashing and RNG streams.

Run from the repository root (pip install numpy ml_dtypes xxhash):

    python3 tests/reference/make_numeric_goldens.py

It rewrites the files below; they are committed, so the C tests need no Python.

tests/fixtures/numeric/half_rounding.bin
    Records of 8 bytes, little-endian: float32 bits (u32), what numpy's
    float32 -> float16 cast gives (u16), what ml_dtypes' float32 -> bfloat16
    cast gives (u16). Both libraries round to nearest even; the inputs stress
    ties, near-ties, subnormals, the overflow threshold, infinities and NaNs.

tests/fixtures/numeric/xxh3_128.txt
    XXH3-128 (seed 0) from the python `xxhash` package, as the canonical
    big-endian hex that `xxh128sum` prints. Lines:
        string HEX TEXT    the bytes of TEXT (rest of the line, may be empty)
        pattern HEX LEN    LEN bytes with byte i = (i * 31 + 7) mod 256
    The lengths cover each of XXH3's size classes.

tests/fixtures/numeric/philox_streams.txt
    Values of rng streams from an independent Python model of the mapping
    documented in libcommon/philox.h, so the stream layout cannot change
    unnoticed. Lines:
        u32 SEED PURPOSE STEP SAMPLE OFFSET V...     hex words
        uniform SEED PURPOSE STEP SAMPLE OFFSET V... float32 bits, hex
        normal SEED PURPOSE STEP SAMPLE OFFSET V...  decimal, 9 significant digits
"""

import math
import os
import struct
import sys

import ml_dtypes
import numpy as np
import xxhash

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "numeric")


# ---- half precision -------------------------------------------------------

def f32(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def half_inputs():
    vals = []
    # Every f16 value's neighbourhood: exact, the tie above it, one ulp
    # either side of the tie. A sample of f16 patterns keeps the file small.
    for h in list(range(0, 0x400, 37)) + list(range(0x3ff, 0x7c00, 127)) + [0x3ff, 0x400, 0x7bfe, 0x7bff]:
        lo = np.array([h], dtype=np.uint16).view(np.float16)[0].astype(np.float32)
        hi = np.array([h + 1], dtype=np.uint16).view(np.float16)[0].astype(np.float32)
        mid = (np.float64(lo) + np.float64(hi)) / 2  # exact in float32 for finite f16
        mb = int(np.array([mid], dtype=np.float32).view(np.uint32)[0])
        for b in (int(np.array([lo]).view(np.uint32)[0]), mb - 1, mb, mb + 1):
            vals.append(b)
    # bf16 ties: low half exactly 0x8000, with even and odd kept bits, and neighbours.
    for hi16 in list(range(0, 0x7f80, 0x1f3)) + [0x007f, 0x0080, 0x7f7e, 0x7f7f]:
        for low in (0x0000, 0x7fff, 0x8000, 0x8001, 0xffff):
            vals.append((hi16 << 16) | low)
    # float32 subnormals, the smallest f16 subnormals and the f16 underflow edge.
    for b in (1, 2, 3, 0x7fff, 0x8000, 0x400000, 0x7fffff, 0x800000, 0x800001):
        vals.append(b)
    for e in range(-27, -13):
        for m in (1.0, 1.25, 1.5, 1.75, 1.0 + 2.0**-23, 2.0 - 2.0**-23):
            vals.append(int(np.array([np.float32(m * 2.0**e)]).view(np.uint32)[0]))
    # Overflow edges.
    for x in (65504.0, 65504.0 + 2**-10, 65519.0, 65519.99, 65520.0, 65520.01, 65535.0, 65536.0, 1e5, 3.0e38):
        vals.append(int(np.array([np.float32(x)]).view(np.uint32)[0]))
    for b in (0x7f7fffff, 0x7f7f7fff, 0x7f7f8000, 0x7f7f8001, 0x7f7effff, 0x7f7f0000):
        vals.append(b)
    # Zeros, infinities, quiet and signalling NaNs with payloads.
    vals += [0x00000000, 0x7f800000, 0x7fc00000, 0x7f800001, 0x7fbfffff, 0x7fffffff,
             0x7fc00001, 0x7fa00000, 0x7f802000, 0x7f801fff]
    # Deterministic pseudo-random bit patterns and ordinary magnitudes.
    rng = np.random.Generator(np.random.PCG64(20240607))
    vals += [int(v) for v in rng.integers(0, 2**31, size=400, dtype=np.uint64)]
    vals += [int(v) for v in rng.normal(0, 3, size=300).astype(np.float32).view(np.uint32)]
    # Both signs of everything.
    vals = vals + [v ^ 0x80000000 for v in vals]
    out, seen = [], set()
    for v in vals:
        v &= 0xffffffff
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def write_half():
    bits = np.array(half_inputs(), dtype=np.uint32)
    x = bits.view(np.float32)
    with np.errstate(all="ignore"):
        h16 = x.astype(np.float16).view(np.uint16)
        b16 = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    rec = np.zeros(len(bits), dtype=[("f", "<u4"), ("h", "<u2"), ("b", "<u2")])
    rec["f"], rec["h"], rec["b"] = bits, h16, b16
    path = os.path.join(OUT, "half_rounding.bin")
    with open(path, "wb") as f:
        f.write(rec.tobytes())
    print(f"{path}: {len(bits)} values")


# ---- xxh3 -----------------------------------------------------------------

STRINGS = ["", "a", "abc", "dit", "message digest", "0123456789abcdef",
           "The quick brown fox jumps over the lazy dog",
           "The quick brown fox jumps over the lazy dog."]
PATTERN_LENGTHS = [1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1000, 1024, 4096, 100003]


def pattern(n):
    return bytes((i * 31 + 7) & 0xff for i in range(n))


def write_hash():
    path = os.path.join(OUT, "xxh3_128.txt")
    with open(path, "w") as f:
        for s in STRINGS:
            f.write(f"string {xxhash.xxh3_128_hexdigest(s.encode())} {s}\n")
        for n in PATTERN_LENGTHS:
            f.write(f"pattern {xxhash.xxh3_128_hexdigest(pattern(n))} {n}\n")
    print(f"{path}: {len(STRINGS) + len(PATTERN_LENGTHS)} hashes")


# ---- philox streams ---------------------------------------------------------

M = 0xffffffff


def philox4x32_10(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0 = (k0 + 0x9E3779B9) & M
            k1 = (k1 + 0xBB67AE85) & M
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & M, (p0 >> 32) ^ c3 ^ k1, p0 & M)
    return [c0, c1, c2, c3]


def stream_block(seed, purpose, step, sample, block):
    key = (seed & M, (seed >> 32) & M)
    return philox4x32_10((block & M, sample & M, step & M, purpose & M), key)


def stream_u32(st, offset, n):
    return [stream_block(*st, (offset + i) // 4)[(offset + i) % 4] for i in range(n)]


def stream_uniform(st, offset, n):
    # 23 bits at cell centres: (k + 0.5) / 2^23, exact in float32.
    return [np.float32(((w >> 9) + 0.5) * 2.0**-23) for w in stream_u32(st, offset, n)]


def stream_normal(st, offset, n):
    out = []
    for i in range(offset, offset + n):
        w = stream_block(*st, i // 2)
        a = ((w[0] << 32) | w[1]) >> 12
        b = ((w[2] << 32) | w[3]) >> 12
        u1 = (a + 0.5) * 2.0**-52
        u2 = (b + 0.5) * 2.0**-52
        r = math.sqrt(-2.0 * math.log(u1))
        t = 2.0 * math.pi * u2
        out.append(np.float32(r * (math.cos(t) if i % 2 == 0 else math.sin(t))))
    return out


STREAMS = [
    (0, 1, 0, 0),
    (42, 2, 7, 3),
    (0x0123456789abcdef, 7, 123456, 99999),
    (0xffffffffffffffff, 8, 0xffffffff, 0xffffffff),
]


def write_philox():
    path = os.path.join(OUT, "philox_streams.txt")
    with open(path, "w") as f:
        for st in STREAMS:
            head = " ".join(str(v) for v in st)
            for off, n in ((0, 9), (1001, 5)):
                f.write(f"u32 {head} {off} " + " ".join(f"{v:08x}" for v in stream_u32(st, off, n)) + "\n")
                f.write(f"uniform {head} {off} " + " ".join(
                    f"{int(np.array([v]).view(np.uint32)[0]):08x}" for v in stream_uniform(st, off, n)) + "\n")
                f.write(f"normal {head} {off} " + " ".join(f"{float(v):.9g}" for v in stream_normal(st, off, n)) + "\n")
    print(f"{path}: {len(STREAMS)} streams")


def main():
    # The published Random123 known answer, so the model above is right.
    if philox4x32_10((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0)) != \
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]:
        sys.exit("philox model does not match the Random123 known answer")
    os.makedirs(OUT, exist_ok=True)
    write_half()
    write_hash()
    write_philox()


if __name__ == "__main__":
    main()
