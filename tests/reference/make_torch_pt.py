"""torch.save files for formats/torch_pt.c (tests/test_torch_pt.c), written
by torch itself, and hostile ones written by hand; nothing here ever loads a
hostile file.

Run from the repository root:
    /work/refenv/bin/python tests/reference/make_torch_pt.py

Writes tests/fixtures/torch_pt/:
  lora_weights.pt   a plain dict of float32 tensors as F-Lite's training
                    script saves PEFT's get_peft_model_state_dict (folder
                    "lora_weights/" in the zip): blocks.{0,1}.self_attn.
                    {qkv,proj}.lora_{A,B}.weight and blocks.0.cross_attn.q.
                    lora_{A,B}.weight
  expected_lora_weights.safetensors   the same tensors (safetensors package)
  lora_weights_p4.pt  the same dict saved with pickle_protocol=4
  model.pt          model.state_dict() (an OrderedDict with _metadata) of a
                    tiny module with PEFT's injected names
                    (blocks.0.self_attn.qkv.base_layer.{weight,bias},
                    ...qkv.lora_{A,B}.default.weight), a bf16 norm.weight, an
                    f16 proj.weight, int64 buffer step_count, 0-d f32 buffer
                    scale, bool buffer keep; and added to it: transposed
                    (arange(12).reshape(3,4).t(), strides (1, 4)), shared_a
                    and shared_b (views [2,4] at 0 and [6] at 10 of one
                    arange(20) storage), expanded (a [3,1] tensor expanded to
                    [3,4], stride 0), param (an nn.Parameter: _rebuild_parameter),
                    counts_u16 (uint16: _rebuild_tensor_v3, UntypedStorage)
  expected_model.safetensors   every tensor contiguous, same names
  nested.pt         {"state_dict": {"a.weight", "b.bias"}, "step": 5, "name": "x"}
  expected_nested.safetensors  state_dict.a.weight, state_dict.b.bias
  hostile/          files the reader must refuse (see hostile_files below)
And tests/fuzz/corpus/torch_pickle/*.bin, the seeds of
tests/fuzz/fuzz_torch_pickle.c (the good files' pickles and storage sizes).

torch 2.15.0, safetensors 0.8.0 (the /work/refenv of tests/reference/README.md).
Deterministic: fixed seed, fixed zip dates; rerunning gives the same bytes.
"""
import collections
import io
import os
import struct
import sys
import warnings
import zipfile

import torch
from safetensors.torch import load_file, save_file

OUT = "tests/fixtures/torch_pt"
HOSTILE = os.path.join(OUT, "hostile")


def wrote(path):
    print(path, os.path.getsize(path))


# ------------------------------------------------------------ good files

def lora_weights():
    g = torch.Generator().manual_seed(1)
    d = {}
    for name, (r, c) in [("blocks.0.self_attn.qkv", (24, 8)), ("blocks.0.self_attn.proj", (8, 8)),
                         ("blocks.1.self_attn.qkv", (24, 8)), ("blocks.1.self_attn.proj", (8, 8)),
                         ("blocks.0.cross_attn.q", (8, 8))]:
        d[name + ".lora_A.weight"] = torch.randn(2, c, generator=g)
        d[name + ".lora_B.weight"] = torch.randn(r, 2, generator=g)
    return d


class Qkv(torch.nn.Module):
    """What PEFT's LoraLayer makes of an nn.Linear: the layer under
    base_layer, the adapters under lora_A/lora_B.<adapter name>."""

    def __init__(self):
        super().__init__()
        self.base_layer = torch.nn.Linear(8, 24)
        self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(8, 2, bias=False)})
        self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(2, 24, bias=False)})


class Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = Qkv()


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attn()


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block()])
        self.norm = torch.nn.LayerNorm(8, elementwise_affine=True, bias=False).to(torch.bfloat16)
        self.proj = torch.nn.Linear(8, 4, bias=False).to(torch.float16)
        self.register_buffer("step_count", torch.tensor([3, -7, 2**40], dtype=torch.int64))
        self.register_buffer("scale", torch.tensor(0.5))
        self.register_buffer("keep", torch.tensor([True, False, True]))


def model_state():
    torch.manual_seed(2)
    m = Tiny()
    with torch.no_grad():
        m.norm.weight.copy_(torch.randn(8))
    sd = m.state_dict()
    assert isinstance(sd, collections.OrderedDict)
    sd["transposed"] = torch.arange(12.).reshape(3, 4).t()
    base = torch.arange(20.)
    sd["shared_a"] = base[:8].view(2, 4)
    sd["shared_b"] = base[10:16]
    sd["expanded"] = torch.tensor([[1.], [2.], [3.]]).expand(3, 4)
    sd["param"] = torch.nn.Parameter(torch.randn(3))
    sd["counts_u16"] = torch.tensor([1, 2, 65535], dtype=torch.uint16)
    assert not sd["transposed"].is_contiguous() and sd["transposed"].stride() == (1, 4)
    assert sd["shared_a"].untyped_storage().data_ptr() == sd["shared_b"].untyped_storage().data_ptr()
    return sd


def save_expected(path, tensors):
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, path)
    back = load_file(path)
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v.detach()), k
    wrote(path)


def save_good(name, obj, expected):
    path = os.path.join(OUT, name)
    torch.save(obj, path)
    wrote(path)
    # These files are ours and hold only tensors: loading them checks torch
    # reads back what was meant, with its own restricted unpickler.
    back = torch.load(path, weights_only=True)
    assert sorted(back) == sorted(obj)
    save_expected(os.path.join(OUT, "expected_" + name.replace(".pt", ".safetensors")), expected)


# ------------------------------------------------------- pickles by hand

def op_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def op_int(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)


def op_tuple(items):
    return b"(" + b"".join(items) + b"t"


def pickle_tensor(key, numel, offset, size, stride, storage="FloatStorage"):
    """_rebuild_tensor_v2 of storage key as torch.save writes it."""
    pid = op_tuple([op_str("storage"), b"ctorch\n" + storage.encode() + b"\n", op_str(key), op_str("cpu"),
                    op_int(numel)])
    hooks = b"ccollections\nOrderedDict\n)R"
    args = op_tuple([pid + b"Q", op_int(offset), op_tuple([op_int(n) for n in size]),
                     op_tuple([op_int(n) for n in stride]), b"\x89", hooks])
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def pickle_dict(entries):
    """{key: value pickle} at the top, protocol 2."""
    body = b"".join(op_str(k) + v for k, v in entries)
    return b"\x80\x02}(" + body + b"u."


def write_zip(path, members, compress=zipfile.ZIP_STORED):
    """members: [(name, bytes)] in order; fixed dates, so reruns agree."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name, which one file wants
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = compress
                z.writestr(info, data)
    wrote(path)


def torch_layout(pkl, storages=(("0", bytes(16)),), byteorder=b"little", top="archive"):
    m = [(top + "/data.pkl", pkl), (top + "/byteorder", byteorder)]
    m += [(top + "/data/" + k, v) for k, v in storages]
    return m + [(top + "/version", b"3\n")]


def zip_members(path):
    """A torch file's members, read as bytes (never unpickled)."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


class Reduce:
    """An object whose pickle calls fn(*args) on load: what a malicious .pt
    does. Pickling it calls nothing."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def check_hand_pickles():
    """The hand-made layout is torch's: a benign file built by the same
    helpers loads with torch's weights-only unpickler to what was meant."""
    pkl = pickle_dict([("w", pickle_tensor("0", 4, 1, (3,), (1,)))])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in torch_layout(pkl, storages=(("0", struct.pack("<4f", 1, 2, 3, 4)),)):
            z.writestr(name, data)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    assert torch.equal(back["w"], torch.tensor([2., 3., 4.])), back


def hostile_files():
    os.makedirs(HOSTILE, exist_ok=True)
    h = lambda name: os.path.join(HOSTILE, name)  # noqa: E731
    lora = os.path.join(OUT, "lora_weights.pt")

    # Code execution through REDUCE of a global, as torch.save writes it.
    torch.save({"x": Reduce(os.system, ("echo pwned",))}, h("os_system.pt"), pickle_protocol=2)
    wrote(h("os_system.pt"))
    torch.save({"x": Reduce(eval, ("1+1",))}, h("builtins_eval.pt"), pickle_protocol=2)
    wrote(h("builtins_eval.pt"))
    # Protocol 4: the global comes through STACK_GLOBAL instead.
    torch.save({"x": Reduce(os.system, ("echo pwned",))}, h("os_system_p4.pt"), pickle_protocol=4)
    wrote(h("os_system_p4.pt"))
    # A real tensor type the reader does not take (quantized).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated; still what old files hold
        q = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    torch.save({"q": q}, h("qtensor.pt"))
    wrote(h("qtensor.pt"))
    # The format before torch 1.6: bare pickles, not a zip. Its first two, the
    # magic number and the protocol version, as torch writes them (a whole
    # legacy save names storages by address, so it would differ per run).
    with open(h("legacy.pt"), "wb") as f:
        f.write(b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b".")
        f.write(b"\x80\x02M\xe9\x03.")
    wrote(h("legacy.pt"))

    data = open(lora, "rb").read()
    with open(h("truncated_zip.pt"), "wb") as f:
        f.write(data[: len(data) // 2])
    wrote(h("truncated_zip.pt"))

    members = zip_members(lora)
    cut = [(n, d[: len(d) // 2] if n.endswith("/data.pkl") else d) for n, d in members]
    write_zip(h("truncated_pickle.pt"), cut)
    short = [(n, d[:-4] if n.endswith("/data/0") else d) for n, d in members]
    write_zip(h("storage_size.pt"), short)
    write_zip(h("duplicate_member.pt"), members + [m for m in members if m[0].endswith("/data/1")])
    write_zip(h("no_storage.pt"), [m for m in members if not m[0].endswith("/data/1")])
    big = [(n, b"big" if n.endswith("/byteorder") else d) for n, d in members]
    write_zip(h("big_endian.pt"), big)

    # size (5,) of a 4-element storage; offset 3 with size (2,); a stride past the end.
    write_zip(h("view_size.pt"), torch_layout(pickle_dict([("w", pickle_tensor("0", 4, 0, (5,), (1,)))])))
    write_zip(h("view_offset.pt"), torch_layout(pickle_dict([("w", pickle_tensor("0", 4, 3, (2,), (1,)))])))
    write_zip(h("view_stride.pt"), torch_layout(pickle_dict([("w", pickle_tensor("0", 4, 0, (2, 2), (3, 1)))])))
    # INST (protocol 0's call of module.name): an opcode the reader does not implement.
    write_zip(h("unknown_opcode.pt"), torch_layout(b"\x80\x02}X\x01\x00\x00\x00a(X\x0a\x00\x00\x00echo pwnedios\nsystem\ns."))
    # A memo slot read before it is set.
    write_zip(h("memo_unset.pt"), torch_layout(b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x07s."))
    # Nesting bombs (deflated, so the files stay small).
    n = 100000
    write_zip(h("nest_lists.pt"), torch_layout(b"\x80\x02}X\x01\x00\x00\x00a" + b"]" * n + b"a" * (n - 1) + b"s."),
              zipfile.ZIP_DEFLATED)
    write_zip(h("nest_marks.pt"), torch_layout(b"\x80\x02" + b"(" * n + b"}."), zipfile.ZIP_DEFLATED)
    write_zip(h("nest_stack.pt"), torch_layout(b"\x80\x02" + b"]" * (2 * n) + b"}."), zipfile.ZIP_DEFLATED)
    # {"a": {"a": ...}} 2000 deep with a stack of one item: each level is
    # MARK 'a' <the last dict> DICT, memoized, then TUPLE2 folds it away.
    deep = b"\x80\x02}r\x00\x00\x00\x00"
    for i in range(1, 2001):
        deep += b"(X\x01\x00\x00\x00aj" + struct.pack("<I", i - 1) + b"dr" + struct.pack("<I", i) + b"\x86"
    deep += b"j" + struct.pack("<I", 2000) + b"."
    write_zip(h("nest_dicts.pt"), torch_layout(deep), zipfile.ZIP_DEFLATED)
    # A dict that holds itself.
    write_zip(h("cycle.pt"), torch_layout(b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s."))


def fuzz_seeds():
    """Seeds of tests/fuzz/fuzz_torch_pickle.c from the good files: a byte n,
    n u32 storage sizes (data/0 .. data/n-1), then data.pkl."""
    out = "tests/fuzz/corpus/torch_pickle"
    os.makedirs(out, exist_ok=True)
    for name in ["lora_weights.pt", "lora_weights_p4.pt", "model.pt", "nested.pt"]:
        members = dict(zip_members(os.path.join(OUT, name)))
        top = next(n for n in members if n.endswith("/data.pkl"))[: -len("/data.pkl")]
        n = 0
        while top + "/data/%d" % n in members:
            n += 1
        assert 0 < n <= 16 and not any(m.startswith(top + "/data/%d" % n) for m in members)
        sizes = b"".join(struct.pack("<I", len(members[top + "/data/%d" % i])) for i in range(n))
        path = os.path.join(out, name.replace(".pt", ".bin"))
        with open(path, "wb") as f:
            f.write(bytes([n]) + sizes + members[top + "/data.pkl"])
        wrote(path)


def main():
    if not os.path.isdir("tests/reference"):
        sys.exit("run from the repository root")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    lora = lora_weights()
    save_good("lora_weights.pt", lora, lora)
    # Protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL), as pickle_protocol=4 writes it.
    path = os.path.join(OUT, "lora_weights_p4.pt")
    torch.save(lora, path, pickle_protocol=4)
    wrote(path)
    sd = model_state()
    save_good("model.pt", sd, sd)
    g = torch.Generator().manual_seed(3)
    inner = {"a.weight": torch.randn(2, 3, generator=g), "b.bias": torch.randn(3, generator=g)}
    save_good("nested.pt", {"state_dict": inner, "step": 5, "name": "x"},
              {"state_dict." + k: v for k, v in inner.items()})
    check_hand_pickles()
    hostile_files()
    fuzz_seeds()


if __name__ == "__main__":
    main()
