/* PyTorch torch.save files holding a state dict, read without executing
 * anything: a restricted unpickler.
 *
 * The file (torch >= 1.6, the zip format) is a zip archive of STORED
 * members under one top folder whose name varies with the writer
 * ("archive/", "lora_weights/", the file's stem):
 *   TOP/data.pkl        the object, pickled (protocol 2 by default)
 *   TOP/data/<key>      the raw bytes of each storage, little-endian
 *   TOP/byteorder       "little" (absent in files of old writers: little)
 *   TOP/version, TOP/.format_version, TOP/.storage_alignment,
 *   TOP/.data/serialization_id   not needed here
 * Deflated members are accepted too. The central directory is required
 * (a cut file is refused, not read up to the cut), every member must be
 * a regular file and appear once, and member sizes are bounded by what
 * the file can hold (deflate's 1032:1 at most) and 64 GiB in all.
 *
 * A pickle is a program for a stack machine, and Python's unpickler calls
 * whatever global (module.name) it is told to: a .pt file from elsewhere
 * can run code. This reader implements the opcodes torch.save emits
 * (protocol 2, and the framing, MEMOIZE and STACK_GLOBAL of protocol 4) on
 * plain values (None, bool, int64, float, str, tuple, list, dict) and
 * resolves only these globals, never calling anything:
 *   collections.OrderedDict           a state dict's own type, and the empty
 *                                     backward-hooks argument of every tensor;
 *                                     read as a plain dict. Its BUILD (the
 *                                     _metadata attribute) is ignored.
 *   torch._utils._rebuild_tensor_v2   (storage, offset, size, stride,
 *                                     requires_grad, hooks[, metadata]): a
 *                                     tensor of the storage's dtype
 *   torch._utils._rebuild_tensor_v3   the same with a dtype argument after
 *                                     the hooks, which torch 2 writes for
 *                                     dtypes without a legacy storage class
 *                                     (uint16/32/64, float8)
 *   torch._utils._rebuild_parameter   (tensor, requires_grad, hooks): an
 *                                     nn.Parameter, taken as its tensor
 *   torch.FloatStorage HalfStorage BFloat16Storage DoubleStorage LongStorage
 *     IntStorage ShortStorage CharStorage ByteStorage BoolStorage
 *                                     the legacy storage classes torch 2
 *                                     still names in each persistent id
 *   torch.storage.UntypedStorage      the storage of _rebuild_tensor_v3
 *   torch.float32 float16 bfloat16 float64 int64 int32 int16 int8 uint8 bool
 *     uint16 uint32 uint64 float8_e4m3fn float8_e5m2
 *                                     dtype arguments (and plain values)
 * A storage is the persistent id ('storage', <storage class>, key,
 * location, numel) (BINPERSID); numel counts elements of the class (bytes
 * for UntypedStorage) and TOP/data/<key> must hold exactly that many. Any
 * other global (posix.system, builtins.eval, torch._utils._rebuild_qtensor,
 * numpy's, a TorchScript module's) is refused by name, and so is any other
 * opcode, REDUCE or NEWOBJ on anything but these, non-empty hooks, and a
 * tensor view (offset, size, stride) reaching outside its storage. The
 * stack, the MARK depth, the memo and the object count are bounded, so a
 * hostile pickle costs memory in proportion to its size at most; the
 * flattening is bounded in depth (64), key length (64 KiB) and steps (a
 * dict that holds itself, or lists shared 2^40 ways, are refused), and the
 * output in bytes: 8 times the storages' (+16 MiB), as tied weights or an
 * expanded view may repeat data, and 64 GiB in all.
 *
 * Tensors are copied out contiguous (a transposed view, an expanded one);
 * views of one storage each get their own copy. Output dtypes: F32, F16,
 * BF16, F64, I64, I32, I16, I8, U8, BOOL, U16, U32, U64, F8_E4M3, F8_E5M2.
 * Complex, quantized and sparse tensors are refused (their globals are). */
#ifndef DIT_TORCH_PT_H
#define DIT_TORCH_PT_H

#include <stddef.h>

/* Reads a torch.save file holding a state dict and gives its tensors as a
 * safetensors file in memory (*bytes malloc'd, *size) for st_open_buffer
 * (libcommon/safetensors.h). The top object must be a dict; nested dicts
 * are flattened with "." between keys ({"state_dict": {"a.weight": T}}
 * gives "state_dict.a.weight"; callers strip known prefixes); int keys are
 * written in decimal; a list or tuple holding tensors is flattened with
 * its indices as keys. Non-tensor leaves (ints, floats, strings, None,
 * dtypes, lists and tuples without a tensor) are skipped silently, each
 * counted in *skipped when skipped != NULL. A name given twice (a key set
 * twice, "a.b" next to {"a": {"b"}}) is refused.
 * -1 with err_set("PATH: reason") naming the member, the pickle offset or
 * the key where there is one. */
int torch_pt_read(const char *path, void **bytes, size_t *size, int *skipped);
/* The same on a file's bytes already in memory (fuzzing, tests); name
 * stands for the path in messages. */
int torch_pt_read_buffer(const char *name, const void *data, size_t len, void **bytes, size_t *size,
                         int *skipped);

#endif
