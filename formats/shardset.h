/* The shard set: ready tensors for training (dit-shard(5)).
 *
 * A directory with manifest.tsv (every input column plus shard, bucket,
 * fields, data_xxh3, cache_key) and safetensors shards whose tensors are
 * named KEY/FIELD, one bucket per shard. */
#ifndef DIT_SHARDSET_H
#define DIT_SHARDSET_H

#include "libcommon/hash.h"
#include "libcommon/safetensors.h"

#include <stddef.h>
#include <stdint.h>

#define SHARDSET_FORMAT "dit-shard"
#define SHARDSET_FORMAT_VERSION "1"
#define SHARDSET_MANIFEST "manifest.tsv"
#define SHARDSET_MAX_FIELDS 8

/* The columns a shard manifest adds to the input manifest's. */
extern const char *const shardset_columns[5]; /* shard, bucket, fields, data_xxh3, cache_key */

struct shardset_record {
    char **values; /* every column of the shard manifest, in column order */
    char *key;     /* the pointers below alias values[] */
    char *shard;  /* file name inside the directory */
    char *bucket; /* "WxH" */
    int width, height;
    size_t nfields;
    char *fields[SHARDSET_MAX_FIELDS];
    struct hash128 data_xxh3;
    struct hash128 cache_key;
    uint64_t line; /* in manifest.tsv */
};

struct shardset {
    char *dir;
    size_t ncols;
    char **columns;                  /* of manifest.tsv */
    size_t n_records;
    struct shardset_record *records; /* manifest order */
    size_t n_shards;
    char **shard_names;              /* sorted */
    struct st_file **shards;         /* opened on first use */
};

/* Reads DIR/manifest.tsv. Shards are opened on first use. NULL with
 * err_set() on a missing or malformed manifest. */
struct shardset *shardset_open(const char *dir);
void shardset_close(struct shardset *s);

/* The shard holding record i, opened (and checked to be a dit-shard file)
 * on first use. NULL with err_set(). */
const struct st_file *shardset_shard(struct shardset *s, size_t record);
/* Tensor KEY/FIELD of record i; NULL with err_set() when absent. */
const struct st_tensor *shardset_tensor(struct shardset *s, size_t record, const char *field);

/* Checks everything dit-shard(5) lists, each problem passed to report.
 * Returns the number of problems. */
long shardset_verify(struct shardset *s, void (*report)(void *ctx, const char *problem), void *ctx);

/* Hash of a record's data: the raw bytes of its tensors in `fields` order. */
int shardset_record_hash(struct shardset *s, size_t record, struct hash128 *out);

/* Parses "WxH" into positive integers; -1 when malformed. */
int shardset_parse_bucket(const char *bucket, int *width, int *height);

/* ---- writing ---------------------------------------------------------- */

struct shardset_meta {
    const char *producer;   /* "dit-precompute 0.1.0" */
    const char *encoder;    /* encoder identity, e.g. "pixel" */
    const char *preprocess; /* canonical JSON of the preprocessing parameters */
};

struct shard_tensor {
    const char *field; /* "latent" */
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;  /* copied by shardset_writer_add */
};

struct shardset_writer;

/* Creates dir if needed. columns are the input manifest's (they must include
 * key); the shard columns are appended, replacing input columns of the same
 * names. Shards are flushed when a bucket's pending bytes reach shard_bytes. */
struct shardset_writer *shardset_writer_open(const char *dir, size_t ncols,
                                             const char *const *columns,
                                             const struct shardset_meta *meta,
                                             uint64_t shard_bytes);
/* Adds one record: its input fields, bucket ("WxH"), cache key and tensors.
 * The tensors are copied. */
int shardset_writer_add(struct shardset_writer *w, const char *const *in_fields,
                        const char *bucket, struct hash128 cache_key, size_t ntensors,
                        const struct shard_tensor *tensors);
/* Adds a record whose tensors already sit in an existing shard of the
 * directory (a cache hit): only its manifest row is written. */
int shardset_writer_add_existing(struct shardset_writer *w, const char *const *in_fields,
                                 const char *bucket, const char *shard, const char *fields,
                                 struct hash128 data_xxh3, struct hash128 cache_key);
/* Flushes every pending shard, then writes manifest.tsv atomically. Frees w. */
int shardset_writer_commit(struct shardset_writer *w);
/* Frees w; shards already renamed into place stay (they are immutable and
 * harmless), manifest.tsv is left as it was. */
void shardset_writer_abort(struct shardset_writer *w);

#endif
