/* safetensors files: reader, writer and the sharded (index.json) form.
 *
 * The format (huggingface/safetensors): an 8-byte little-endian header
 * length N, N bytes of UTF-8 JSON object naming each tensor's dtype, shape
 * and [begin, end) data_offsets (relative to the data section), then the
 * data section. "__metadata__" is an optional string-to-string map.
 *
 * The reader maps the file read-only and checks everything the format
 * requires before returning, so a caller may use every st_tensor without
 * further checks: data points at exactly nbytes readable bytes. The tensors
 * tile the data section with no gap or overlap, as the reference Rust crate
 * requires. Data is little-endian. This writer aligns every tensor to its
 * element size (as the Python package does), but files from other writers
 * need not be aligned: copy such data (memcpy) rather than cast the pointer.
 * The header must begin with '{' as the spec says (the Rust crate would also
 * take leading whitespace); trailing whitespace is padding. A mapped file
 * must not be truncated while open (SIGBUS): shards are immutable by design.
 *
 * Errors follow libcommon/error.h: NULL or -1 with err_get() naming the file,
 * the tensor where there is one, and the reason. */
#ifndef DIT_SAFETENSORS_H
#define DIT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16, ST_U32, ST_I32,
                ST_F32, ST_U64, ST_I64, ST_F64, ST_F8_E4M3, ST_F8_E5M2, ST_DTYPE_COUNT };

/* "F32", "BF16", "F8_E4M3", ... as in the safetensors spec; "?" out of range. */
const char *st_dtype_name(enum st_dtype dt);
/* 0, or -1 for an unknown name (no err_set: the caller knows the context). */
int st_dtype_parse(const char *name, enum st_dtype *out);
/* Bytes per element; 0 out of range. */
size_t st_dtype_size(enum st_dtype dt);

/* Header length limit of the reference implementation. */
#define ST_MAX_HEADER_SIZE 100000000ULL
#define ST_MAX_DIMS 8

struct st_tensor {
    const char *name;
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t nelem;     /* product of shape (1 for rank 0) */
    uint64_t offset;    /* begin, relative to the start of the data section */
    uint64_t nbytes;
    const void *data;   /* points into the read-only mapping */
};

struct st_meta { const char *key, *value; };

struct st_file {
    char *path;
    uint64_t file_size, header_size;     /* header_size: the 8-byte little-endian length */
    size_t n_tensors; struct st_tensor *tensors;   /* sorted by name (strcmp) */
    size_t n_meta; struct st_meta *meta;           /* sorted by key */
    /* the mapping and the parsed header live in a private extension */
};

/* mmap + full validation; NULL with err_set("PATH: reason"). */
struct st_file *st_open(const char *path);
/* The same checks on bytes already in memory (an archive member, standard
 * input). data is referenced, not copied: it must outlive the st_file.
 * name stands for the path in messages and in f->path. */
struct st_file *st_open_buffer(const char *name, const void *data, size_t size);
void st_close(struct st_file *f);            /* NULL allowed */
/* bsearch; NULL if absent. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);
/* Gives the pages of t's data back to the kernel once the caller has read
 * them (copied or hashed): a reader that converts a large file tensor by
 * tensor then holds about its own copy, not that and the whole mapped file
 * (a mapped page read stays resident until unmapped). t->data may still be
 * read afterwards; its pages come back from the file. */
void st_tensor_release(const struct st_tensor *t);
/* "[2, 3]": a shape as the weight readers' messages print it. */
void st_shape_text(char *buf, size_t size, int ndim, const int64_t *shape);
/* NULL if absent. */
const char *st_meta_get(const struct st_file *f, const char *key);
/* t's elements as fp32 into out[t->nelem]: F32 copied, BF16, F16 and
 * F8_E4M3 widened exactly. -1 (without err_set) for any other dtype. */
int st_tensor_to_f32(const struct st_tensor *t, float *out);

struct st_writer;
struct st_writer *st_writer_new(void);       /* NULL only when out of memory */
/* data is referenced, not copied, until st_writer_write; name and shape are
 * copied. -1 + err_set on a duplicate name, bad rank, a negative dimension,
 * an unknown dtype, a name that is not UTF-8 or is "__metadata__", a size
 * that overflows, or NULL data for a non-empty tensor. */
int st_writer_add(struct st_writer *w, const char *name, enum st_dtype dt, int ndim,
                  const int64_t *shape, const void *data);
/* __metadata__ entry; replaces an existing key. */
int st_writer_meta(struct st_writer *w, const char *key, const char *value);
/* atomic: temp name, fsync, rename (libcommon/atomic_file.h). The header is
 * padded with spaces so the data section starts at a multiple of 8; tensors
 * are laid out in layout order: element size descending, then name (the
 * Python package's order), so each is aligned to its element size. The
 * writer stays usable afterwards. */
int st_writer_write(struct st_writer *w, const char *path);
/* The file st_writer_write would write, laid out alike, as a malloc'd
 * buffer (*bytes, *size) for st_open_buffer; -1 + err_set ("(buffer): ...")
 * when out of memory. The writer stays usable afterwards. */
int st_writer_to_buffer(struct st_writer *w, void **bytes, size_t *size);
void st_writer_free(struct st_writer *w);

/* Introspection and partial writes (st_write_sharded is built on these). */
size_t st_writer_count(const struct st_writer *w);
/* Sum of nbytes over all tensors added so far. */
uint64_t st_writer_total_bytes(const struct st_writer *w);
/* The i-th tensor in layout order, i < st_writer_count(); data is the caller's
 * buffer and offset is where st_writer_write places it. The pointer stays
 * valid until the next st_writer_add or st_writer_free. */
const struct st_tensor *st_writer_tensor(struct st_writer *w, size_t i);
/* Writes only tensors [first, first + count) of the layout order, with all
 * metadata, as st_writer_write does. */
int st_writer_write_range(struct st_writer *w, const char *path, size_t first, size_t count);

/* The sharded form: BASE.safetensors.index.json with {"metadata": {"total_size": N}, "weight_map": {tensor: file}}. */
struct st_set {
    char *path;                 /* what was opened */
    size_t n_files; struct st_file **files;
    size_t n_tensors;           /* over all files */
    /* the merged name index lives in a private extension */
};
/* path: a .safetensors file (a set of one file) or an index .json (every referenced file opened and checked:
   each tensor of weight_map exists in the named file; files listed are within the index's directory;
   a tensor present in two files is an error; a tensor in a file but not in the weight_map is an error).
   A path ending in ".json" is taken as an index, anything else as a safetensors file. */
struct st_set *st_set_open(const char *path);
void st_set_close(struct st_set *s);        /* NULL allowed */
/* i-th tensor over the whole set in name order, with the file it lives in (file_out may be NULL). NULL if i >= n_tensors. */
const struct st_tensor *st_set_tensor(const struct st_set *s, size_t i, const struct st_file **file_out);
const struct st_tensor *st_set_find(const struct st_set *s, const char *name, const struct st_file **file_out);
/* Writes the writer's tensors under dir: BASE.safetensors when the total fits in max_shard_bytes (0 = no limit), else
   BASE-00001-of-0000N.safetensors ... plus BASE.safetensors.index.json (names as transformers/diffusers write them). Atomic per file.
   Shards take consecutive runs of the layout order, each holding at most max_shard_bytes of tensor data unless a single tensor
   is larger (it then gets a shard of its own); every shard carries the writer's metadata; the index is written last. */
int st_write_sharded(struct st_writer *w, const char *dir, const char *base, uint64_t max_shard_bytes);
/* How many shards st_write_sharded would write for the writer's tensors under that limit (1: one file, no index). */
size_t st_shard_count(struct st_writer *w, uint64_t max_shard_bytes);

#endif
