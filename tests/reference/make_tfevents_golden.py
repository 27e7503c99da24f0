#!/usr/bin/env python3
"""TensorBoard event-file goldens for libcommon/tfevents.c, from tensorboard.

    python3 tests/reference/make_tfevents_golden.py [C_EVENT_FILE]

Needs: pip install tensorboard (made with tensorboard 2.21.0, protobuf 7.36.2
with its upb backend).

Writes
  tests/fixtures/tfevents/tiny.png         a 3x2 RGB PNG (standard library zlib)
  tests/fixtures/tfevents/golden.tfevents  EVENTS below, written by tensorboard's
                                           own EventFileWriter
tests/test_tfevents.c writes the same EVENTS with the C writer and compares the
bytes with golden.tfevents, so the two lists must stay equal.

EventFileWriter's first event carries time.time() and
SourceMetadata(writer="tensorboard.summary.writer.event_file_writer"); for a
reproducible file that names the C writer, both are patched while it is
constructed (wall time FIRST_WALL_TIME, writer "dit"), which is what
tfevents_open_path(path, FIRST_WALL_TIME) writes.

The golden is read back with tensorboard's EventAccumulator and checked. With
C_EVENT_FILE (a file the C writer made with EVENTS, e.g. by tfevents_open), that
file is read with EventAccumulator too, its scalars printed and checked.
"""
import os
import shutil
import struct
import sys
import tempfile
import zlib
from unittest import mock

from tensorboard.backend.event_processing import event_accumulator, event_file_loader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import event_file_writer

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "tfevents")

FIRST_WALL_TIME = 1700000000.5
PNG_W, PNG_H = 3, 2
# (kind, tag, step, wall_time, value); value None for the image (tiny.png).
# Step 0 and value 0.0 check proto3 defaults (step left out, a oneof member
# kept); 2**40 a long varint; -3.5 a negative float.
EVENTS = [
    ("scalar", "loss", 0, 1700000001.0, 0.75),
    ("scalar", "loss", 1, 1700000002.25, 0.5),
    ("scalar", "lr", 1, 1700000002.25, 1e-4),
    ("scalar", "loss", 2, 1700000003.5, 0.0),
    ("scalar", "train/grad_norm", 100, 1700000010.125, -3.5),
    ("image", "samples/grid", 100, 1700000010.5, None),
    ("scalar", "loss", 2**40, 1700000100.0, 1e30),
]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def make_png():
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    pixels = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 255, 255)]
    raw = b""
    for y in range(PNG_H):
        raw += b"\x00" + bytes(c for p in pixels[y * PNG_W:(y + 1) * PNG_W] for c in p)
    ihdr = struct.pack(">IIBBBBB", PNG_W, PNG_H, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def write_golden(png, dest):
    real_source_metadata = event_pb2.SourceMetadata
    tmp = tempfile.mkdtemp()
    try:
        with mock.patch.object(event_file_writer.time, "time", return_value=FIRST_WALL_TIME), \
             mock.patch.object(event_file_writer.event_pb2, "SourceMetadata",
                               lambda writer: real_source_metadata(writer="dit")):
            w = event_file_writer.EventFileWriter(tmp)
        for kind, tag, step, wall_time, value in EVENTS:
            if kind == "scalar":
                v = summary_pb2.Summary.Value(tag=tag, simple_value=value)
            else:
                img = summary_pb2.Summary.Image(height=PNG_H, width=PNG_W, colorspace=3,
                                                encoded_image_string=png)
                v = summary_pb2.Summary.Value(tag=tag, image=img)
            w.add_event(event_pb2.Event(wall_time=wall_time, step=step,
                                        summary=summary_pb2.Summary(value=[v])))
        w.close()
        (name,) = os.listdir(tmp)
        assert "tfevents" in name
        shutil.copyfile(os.path.join(tmp, name), dest)
    finally:
        shutil.rmtree(tmp)


def check(path, png, verbose):
    """Reads path as TensorBoard does and compares it with EVENTS."""
    first = next(iter(event_file_loader.EventFileLoader(path).Load()))
    assert first.file_version == "brain.Event:2", first
    acc = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    want_scalars = {}
    for kind, tag, step, wall_time, value in EVENTS:
        if kind == "scalar":
            want_scalars.setdefault(tag, []).append((wall_time, step, f32(value)))
    assert sorted(tags["scalars"]) == sorted(want_scalars), tags
    for tag, want in want_scalars.items():
        got = [(e.wall_time, e.step, e.value) for e in acc.Scalars(tag)]
        if verbose:
            for wall_time, step, value in got:
                print(f"{tag}\t{step}\t{value!r}\t{wall_time!r}")
        assert got == want, (tag, got, want)
    assert tags["images"] == ["samples/grid"], tags
    (img,) = acc.Images("samples/grid")
    assert (img.step, img.width, img.height, img.encoded_image_string) == (100, PNG_W, PNG_H, png), img
    if verbose:
        print(f"samples/grid\t{img.step}\timage {img.width}x{img.height}, {len(img.encoded_image_string)} PNG bytes")


def main():
    os.makedirs(OUT, exist_ok=True)
    png = make_png()
    png_path = os.path.join(OUT, "tiny.png")
    with open(png_path, "wb") as f:
        f.write(png)
    golden = os.path.join(OUT, "golden.tfevents")
    write_golden(png, golden)
    check(golden, png, verbose=False)
    print("wrote", os.path.relpath(png_path), "and", os.path.relpath(golden))
    if len(sys.argv) > 1:
        check(sys.argv[1], png, verbose=True)
        print(sys.argv[1], ": read by EventAccumulator, matches EVENTS")


if __name__ == "__main__":
    main()
