/* Batches for training from a shard set (dit-shard(5)).
 *
 * A batch never mixes buckets. The order is deterministic per (seed, epoch):
 * records are shuffled within each bucket, cut into batches, and the batches
 * of all buckets shuffled together; a bucket's last batch may be short. A
 * background thread prepares the next batch (fp32 copies out of the mmapped
 * shards) while the current one trains. The position is (epoch, batch), so
 * a resumed run continues with exactly the batches it would have had. */
#ifndef DIT_LOADER_H
#define DIT_LOADER_H

#include "formats/shardset.h"

#include <stdint.h>

struct loader_config {
    int batch_size;
    uint64_t seed;
    const char *label_column; /* NULL: no labels */
};

struct loader_batch {
    int n;                      /* samples in this batch */
    int channels, height, width;
    float *x;                   /* [n, channels, height, width] */
    int32_t *labels;            /* [n], when a label column is configured */
    uint64_t *records;          /* [n] record index in the shard manifest */
    uint8_t *flipped;           /* [n] 1 when the mirrored encoding was taken */
    int64_t epoch, index;       /* where this batch stands */
};

struct loader;

/* Plans the batches of s (which must stay open). -1/NULL with err_set():
 * an empty set, missing or bad labels, records of one bucket whose shapes
 * differ. */
struct loader *loader_open(struct shardset *s, const struct loader_config *cfg);
void loader_close(struct loader *l);

int64_t loader_batches_per_epoch(const struct loader *l);
/* The largest class label of the records; -1 without a label column. */
int loader_max_label(const struct loader *l);
size_t loader_records(const struct loader *l);
/* The latent shape of the largest bucket's records (channels, height, width). */
void loader_shape(const struct loader *l, int *channels, int *height, int *width);
/* Every distinct latent shape must be one of these for a fixed-size model:
 * returns the number of buckets whose latents are not channels x height x width. */
int loader_count_mismatched(const struct loader *l, int channels, int height, int width, char *first,
                            size_t first_size);

/* Positions the loader so that the next batch is (epoch, index). */
int loader_seek(struct loader *l, int64_t epoch, int64_t index);
/* The next batch (valid until the next call); moves into the next epoch at
 * the end of one. -1 with err_set() on a shard that cannot be read. */
int loader_next(struct loader *l, const struct loader_batch **out);

#endif
