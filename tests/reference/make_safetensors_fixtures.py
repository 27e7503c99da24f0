#!/usr/bin/env python3
"""Writes the safetensors fixtures under tests/fixtures/safetensors/.

Run from the repository root (the outputs are committed, CI needs no Python):

    pip install safetensors numpy ml_dtypes huggingface_hub
    python3 tests/reference/make_safetensors_fixtures.py

Outputs (deterministic: fixed seeds and fixed bytes; a rerun leaves
`git status` clean):

  python_fixture.safetensors      written by the safetensors package (numpy
                                  frontend): F32, F16, BF16 (ml_dtypes), I64,
                                  U8, BOOL, ranks 0..3, an empty tensor,
                                  __metadata__ with two entries
  python_fixture.expected.tsv     name, dtype, shape, sum, first element
  sharded/                        model.safetensors.index.json and two shards,
                                  split by huggingface_hub's splitter and
                                  indexed as transformers' save_pretrained does
  sharded.expected.tsv            the same columns plus the shard file
  bad/*.safetensors               malformed files, made by hand (struct +
                                  json); tests/test_safetensors.c pairs each
                                  with the reason the reader must give
  good/*.safetensors              unusual but valid files

The script also feeds every bad/ file to the safetensors package and checks
that it refuses it too, except where noted in STRICTER (the C reader follows
the written spec where the Rust crate is lenient), and every good/ file, which
it must accept.

To check that a file written by the C writer loads in the Python package:

    python3 tests/reference/make_safetensors_fixtures.py --check FILE...
"""

import json
import os
import struct
import sys

import ml_dtypes
import numpy as np
import safetensors
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "safetensors")


def fmt(x):
    return repr(float(x)) if not float(x).is_integer() or abs(x) >= 1e16 else "%d" % int(x)


def tsv_row(name, arr, dtype_name, extra=()):
    flat = np.asarray(arr).reshape(-1)
    vals = flat.astype(np.float64)
    total = float(np.sum(vals)) if flat.size else 0.0
    first = fmt(vals[0]) if flat.size else "-"
    shape = "[" + ",".join(str(d) for d in arr.shape) + "]"
    return "\t".join([name, dtype_name, shape, fmt(total), first, *extra]) + "\n"


DTYPE_NAMES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
    np.dtype(np.int64): "I64",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}

TSV_HEADER = "name\tdtype\tshape\tsum\tfirst\n"


def make_python_fixture():
    rng = np.random.default_rng(20240601)
    tensors = {
        "f32.matrix": rng.standard_normal((3, 4)).astype(np.float32),
        "f16.vector": rng.standard_normal(5).astype(np.float16),
        "bf16.cube": rng.standard_normal((2, 3, 2)).astype(np.float32).astype(ml_dtypes.bfloat16),
        "i64.scalar": np.array(-1234567890123, dtype=np.int64),
        "u8.image": rng.integers(0, 256, size=(2, 2, 3), dtype=np.uint8),
        "bool.mask": rng.random(7) > 0.5,
        "f32.empty": np.zeros((0, 3), dtype=np.float32),
    }
    meta = {"format": "pt", "producer": "make_safetensors_fixtures.py"}
    path = os.path.join(OUT, "python_fixture.safetensors")
    save_file(tensors, path, metadata=meta)
    os.chmod(path, 0o644)  # the package creates 0600 files
    with open(os.path.join(OUT, "python_fixture.expected.tsv"), "w") as f:
        f.write(TSV_HEADER)
        for name in sorted(tensors):
            f.write(tsv_row(name, tensors[name], DTYPE_NAMES[tensors[name].dtype]))
    check_file(path, quiet=True)


def make_sharded_fixture():
    from huggingface_hub.serialization import split_state_dict_into_shards_factory

    rng = np.random.default_rng(7)
    state = {  # module order, as a state_dict lists them
        "embed.weight": rng.standard_normal((4, 6)).astype(np.float32),
        "blocks.0.attn.weight": rng.standard_normal((6, 6)).astype(np.float16),
        "blocks.0.attn.bias": rng.standard_normal(6).astype(np.float32),
        "blocks.1.mlp.weight": rng.standard_normal((6, 4)).astype(np.float32),
        "final.scale": rng.standard_normal(()).astype(np.float32).reshape(()),
    }
    split = split_state_dict_into_shards_factory(
        state,
        get_storage_size=lambda t: t.nbytes,
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=200,
    )
    assert split.is_sharded and len(split.filename_to_tensors) == 2, split.filename_to_tensors
    d = os.path.join(OUT, "sharded")
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        os.remove(os.path.join(d, name))
    for filename, names in split.filename_to_tensors.items():
        save_file({k: state[k] for k in names}, os.path.join(d, filename), metadata={"format": "pt"})
        os.chmod(os.path.join(d, filename), 0o644)
    # transformers' save_pretrained: the splitter's metadata and the map,
    # indent=2, sorted keys, a final newline.
    index = {"metadata": {**split.metadata}, "weight_map": split.tensor_to_filename}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    with open(os.path.join(OUT, "sharded.expected.tsv"), "w") as f:
        f.write(TSV_HEADER.rstrip("\n") + "\tfile\n")
        for name in sorted(state):
            f.write(tsv_row(name, state[name], DTYPE_NAMES[state[name].dtype],
                            (split.tensor_to_filename[name],)))


def st_bytes(header, data=b"", pad=True):
    """A safetensors file from a header (dict or raw bytes) and a data section."""
    if isinstance(header, bytes):
        h = header
    else:
        h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def t(dtype, shape, begin, end, **extra):
    entry = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    entry.update(extra)
    return entry


A24 = t("F32", [2, 3], 0, 24)
VALID = st_bytes({"a": A24, "b": t("F32", [4], 24, 40)}, bytes(range(40)))

BAD = {
    "empty": b"",
    "short": b"\x10\x00\x00\x00\x00",
    "header_past_file": struct.pack("<Q", 120) + b'{"a":{"dtype":"F32","shape":[2,3],"data_off',
    "header_plus_prefix": struct.pack("<Q", 16) + b"{}          ",
    "header_huge": struct.pack("<Q", 1 << 62) + b"{}      ",
    "empty_header": struct.pack("<Q", 0) + b"\x00" * 8,
    "truncated_data": VALID[:-10],
    "bad_utf8": st_bytes(b'{"caf\xe9":' + json.dumps(A24).encode() + b"}", bytes(24)),
    "overlong_utf8": st_bytes(b'{"a\xc0\xaf":' + json.dumps(A24).encode() + b"}", bytes(24)),
    "surrogate_utf8": st_bytes(b'{"a\xed\xa0\x80":' + json.dumps(A24).encode() + b"}", bytes(24)),
    "not_object": st_bytes(b"[1,2]"),
    "invalid_json": st_bytes(b'{"a":{"dtype":"F32",'),
    "trailing_garbage": st_bytes(b"{} x"),
    "nul_padding": st_bytes(b"{}\x00\x00\x00\x00\x00\x00", pad=False),
    "duplicate_names": st_bytes(
        b'{"a":' + json.dumps(A24).encode() + b',"a":' + json.dumps(t("F32", [6], 24, 48)).encode() + b"}",
        bytes(48)),
    "entry_not_object": st_bytes({"a": [1, 2]}),
    "missing_dtype": st_bytes({"a": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
    "unknown_dtype": st_bytes({"a": t("F33", [2, 3], 0, 24)}, bytes(24)),
    "shape_missing": st_bytes({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, bytes(8)),
    "shape_float": st_bytes({"a": t("U8", [2.0, 3], 0, 6)}, bytes(6)),
    "negative_shape": st_bytes({"a": t("F32", [2, -3], 0, 24)}, bytes(24)),
    "rank_too_big": st_bytes({"a": t("U8", [1] * 9, 0, 1)}, bytes(1)),
    "shape_overflow": st_bytes({"a": t("U8", [1 << 32, 1 << 32, 16], 0, 0)}),
    "shape_mismatch": st_bytes({"a": t("F32", [2, 3], 0, 20)}, bytes(20)),
    "offsets_bad": st_bytes({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0]}}, bytes(2)),
    "offset_too_big": st_bytes(b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,99999999999999999999]}}', bytes(2)),
    "begin_after_end": st_bytes({"a": t("F32", [2, 3], 24, 0)}, bytes(24)),
    "out_of_bounds": st_bytes({"a": t("U8", [8], 0, 8), "b": t("U8", [4088], 8, 4096)}, bytes(16)),
    "overlap": st_bytes({"a": t("F32", [6], 0, 24), "b": t("F32", [6], 16, 40)}, bytes(40)),
    "overlap_alias": st_bytes({"a": t("F32", [6], 0, 24), "b": t("F32", [6], 0, 24)}, bytes(24)),
    "gap": st_bytes({"a": t("F32", [6], 0, 24), "b": t("F32", [6], 32, 56)}, bytes(56)),
    "gap_start": st_bytes({"a": t("F32", [2], 8, 16)}, bytes(16)),
    "trailing_bytes": st_bytes({"a": t("F32", [2], 0, 8)}, bytes(16)),
    "metadata_non_string": st_bytes({"__metadata__": {"format": "pt", "step": 1}, "a": t("U8", [2], 0, 2)}, b"xy"),
    "metadata_not_object": st_bytes({"__metadata__": "pt", "a": t("U8", [2], 0, 2)}, b"xy"),
}

# Refused by the C reader but accepted by the safetensors package, on purpose.
STRICTER = {
    "rank_too_big": "ST_MAX_DIMS (8) is this project's limit, not the format's",
}

GOOD = {
    # "{}" and nothing else: no tensors.
    "no_tensors": (st_bytes({}), 0),
    # Whitespace other than spaces after the object.
    "newline_padding": (st_bytes(b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}\n\t\r ', b"xy",
                                 pad=False), 1),
    # Empty tensors sharing offsets with their neighbours, a rank-0 tensor,
    # unknown fields in an entry, a null __metadata__.
    "zero_size_and_scalar": (st_bytes({
        "__metadata__": None,
        "a": t("F32", [2], 0, 8),
        "e1": t("F16", [0, 4], 8, 8),
        "s": t("F64", [], 8, 16, extra_field="ignored"),
        "e2": t("U8", [3, 0], 16, 16),
        "e0": t("U8", [0], 0, 0),
    }, struct.pack("<2fd", 1.5, -2.0, 3.25)), 5),
}


def make_unaligned():
    """A header left unpadded: the data section starts at an odd offset."""
    header = b'{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'
    assert len(header) % 8 != 0
    return struct.pack("<Q", len(header)) + header + struct.pack("<3f", 1.0, 2.0, 3.0)


GOOD["unaligned"] = (make_unaligned(), 1)


def python_rejects(data):
    try:
        safetensors.deserialize(data)
    except Exception:
        return True
    return False


def make_corpus():
    for sub in ("bad", "good"):
        d = os.path.join(OUT, sub)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            os.remove(os.path.join(d, name))
    for name, data in sorted(BAD.items()):
        with open(os.path.join(OUT, "bad", name + ".safetensors"), "wb") as f:
            f.write(data)
        if name not in STRICTER and not python_rejects(data):
            sys.exit("the safetensors package accepts bad/%s" % name)
    for name, (data, n) in sorted(GOOD.items()):
        with open(os.path.join(OUT, "good", name + ".safetensors"), "wb") as f:
            f.write(data)
        got = safetensors.deserialize(data)
        if len(got) != n:
            sys.exit("good/%s: the safetensors package sees %d tensors, not %d" % (name, len(got), n))


def check_file(path, quiet=False):
    """Loads every tensor with the safetensors package; raises on any problem."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    tensors = safetensors.deserialize(data)
    meta = header.get("__metadata__")
    if not quiet:
        print("%s: %d tensors, header %d bytes, metadata %s" % (path, len(tensors), n, meta))
        for name, info in tensors:
            print("  %s %s %s %d bytes" % (name, info["dtype"], info["shape"], len(info["data"])))
    return tensors


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        for path in sys.argv[2:]:
            check_file(path)
        return
    os.makedirs(OUT, exist_ok=True)
    make_python_fixture()
    make_sharded_fixture()
    make_corpus()
    print("wrote fixtures under %s" % os.path.normpath(OUT))


if __name__ == "__main__":
    main()
