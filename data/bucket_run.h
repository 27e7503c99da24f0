/* Bucketing as one call: every record of a manifest gets a resolution
 * bucket, a resize size and a crop box (dit-bucket(1); the choosing is
 * data/bucket.h), the histogram is printed, and buckets smaller than a batch
 * are warned about or merged into the nearest full one.
 *
 * dit-bucket is this call behind its options; dit-train can run it between
 * index_run and precompute_run on raw data. */
#ifndef DIT_DATA_BUCKET_RUN_H
#define DIT_DATA_BUCKET_RUN_H

#include "data/bucket.h"
#include "data/stage.h"

#include <stddef.h>
#include <stdint.h>

struct bucket_run_config {
    const char *input;   /* a manifest with width and height columns, or "-" (standard input) */
    const char *output;  /* the manifest with the bucket columns, or "-" */
    const char *rejects; /* NULL, or the rejected records with a reject_reason column */
    const char *stats;   /* NULL, or the bucket histogram as TSV ("-": standard output) */
    struct bucket_config buckets;
    uint64_t batch_size; /* 0: no batch; else warn about (or merge) buckets smaller than it */
    int merge_small;     /* move small buckets' records to the nearest full bucket; needs batch_size */
    int strict;          /* any rejected record fails the run */
};

struct bucket_run_summary {
    uint64_t read, bucketed, merged, rejected;
    size_t n_buckets; /* buckets with records, after merging */
};

/* The defaults of dit-bucket(1): input and output "-", step 16,
 * resolution 256, aspect 0.5 to 2.0, centered crops, seed 0. */
void bucket_run_config_init(struct bucket_run_config *c);

/* Reads the input (twice with merge_small: first to count the buckets; an
 * input that is not a regular file is copied to $TMPDIR first), writes the
 * output, rejects and stats, and logs the histogram, the small-bucket
 * warnings and the summary. On STAGE_FAILED (strict, with rejections) the
 * output is not written, the rejects and stats are. STAGE_BAD_CONFIG: the
 * bucket configuration is refused by bucket_set_init, merge_small without
 * batch_size, or two outputs on one file or both on standard output.
 * summary (NULL allowed) gets the counts when the run got to the end. */
int bucket_run(const struct bucket_run_config *c, struct bucket_run_summary *summary);

#endif
