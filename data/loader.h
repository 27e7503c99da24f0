/* Batches for training from a shard set (dit-shard(5)).
 *
 * A batch never mixes buckets. The order is deterministic per (seed, epoch):
 * records are shuffled within each bucket, cut into batches, and the batches
 * of all buckets shuffled together; a bucket's last batch may be short. A
 * background thread prepares the next batch (fp32 copies out of the mmapped
 * shards) while the current one trains. The position is (epoch, batch), so
 * a resumed run continues with exactly the batches it would have had.
 *
 * A batch carries the fields the configuration names (latent; latent, text
 * and text_mask for a text-to-image model), aligned per record. A record
 * whose shard holds FIELD_flip for a requested field gets one flip draw per
 * (seed, epoch, record), and a flipped record takes FIELD_flip for every
 * requested field that has one (a caption's text has none). */
#ifndef DIT_LOADER_H
#define DIT_LOADER_H

#include "formats/shardset.h"

#include <stdint.h>

/* A record holds at most SHARDSET_MAX_FIELDS tensors. */
#define LOADER_MAX_FIELDS SHARDSET_MAX_FIELDS
#define LOADER_MAX_DIMS 4

struct loader_config {
    int batch_size;
    uint64_t seed;
    const char *label_column;  /* NULL: no labels */
    const char *const *fields; /* NULL-terminated field names; NULL means {"latent", NULL} */
};

struct loader_field {
    const char *name;
    int ndim;
    int64_t shape[LOADER_MAX_DIMS]; /* of one sample, this batch's bucket */
    int64_t per_sample;             /* elements of one sample */
    /* [n, shape...] in fp32, converted from F32, BF16, F16, BOOL and the
     * integer dtypes (integers above 2^24 round to the nearest float). */
    float *data;
};

struct loader_batch {
    int n;                       /* samples in this batch */
    int nfields;
    struct loader_field *fields; /* in config order; fields[0] is the one loader_shape describes */
    int32_t *labels;             /* [n], when a label column is configured */
    uint64_t *records;           /* [n] record index in the shard manifest */
    uint8_t *flipped;            /* [n] 1 when the mirrored encodings were taken */
    int64_t epoch, index;        /* where this batch stands */
};

struct loader;

/* Plans the batches of s (which must stay open). -1/NULL with err_set():
 * an empty set, missing or bad labels, a record without a requested field
 * (or with one in a dtype that does not convert), records of one bucket
 * whose shapes of a field differ, a first field that is not C x H x W. Every
 * shard is opened here, so a bad record fails the start, not the run. */
struct loader *loader_open(struct shardset *s, const struct loader_config *cfg);
void loader_close(struct loader *l);

int64_t loader_batches_per_epoch(const struct loader *l);
/* The largest class label of the records; -1 without a label column. */
int loader_max_label(const struct loader *l);
size_t loader_records(const struct loader *l);
/* The shape of the first field in the largest bucket's records (channels,
 * height, width). */
void loader_shape(const struct loader *l, int *channels, int *height, int *width);
/* The shape of the first field in the bucket whose samples are largest
 * (most height x width): what a model taking several sizes plans for. */
void loader_max_shape(const struct loader *l, int *channels, int *height, int *width);
/* Buckets, and the shape of bucket i's first field (with its name, "WxH"). */
size_t loader_buckets(const struct loader *l);
const char *loader_bucket_shape(const struct loader *l, size_t i, int *channels, int *height, int *width);
/* Every distinct shape of the first field must be this one for a fixed-size
 * model: returns the number of buckets whose first field is not channels x
 * height x width. */
int loader_count_mismatched(const struct loader *l, int channels, int height, int width, char *first,
                            size_t first_size);

/* Positions the loader so that the next batch is (epoch, index). */
int loader_seek(struct loader *l, int64_t epoch, int64_t index);
/* The next batch (valid until the next call); moves into the next epoch at
 * the end of one. -1 with err_set() on a shard that cannot be read. */
int loader_next(struct loader *l, const struct loader_batch **out);

/* The field of b named name; NULL when the loader was not asked for it. */
const struct loader_field *loader_batch_field(const struct loader_batch *b, const char *name);

#endif
