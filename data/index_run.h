/* Indexing as one call: any image collection (CSV files, folders, tar/zip
 * archives, lists of paths) becomes a clean manifest (dit-index(1),
 * dit-manifest(5)); bad input is named, counted and kept out.
 *
 * dit-index is this call behind its options; dit-train can run it on raw
 * data the same way, then bucket_run and precompute_run. */
#ifndef DIT_DATA_INDEX_RUN_H
#define DIT_DATA_INDEX_RUN_H

#include "data/index.h"
#include "data/stage.h"

#include <stddef.h>
#include <stdint.h>

/* Pillow's DecompressionBombError threshold: twice MAX_IMAGE_PIXELS. */
#define INDEX_DEFAULT_MAX_PIXELS 178956970ULL

struct index_config {
    const char *const *inputs; /* the operands, read in order (see index_open) */
    size_t n_inputs;
    struct index_options read; /* how CSV files, folders and archives are read */
    const char *output;        /* the manifest: a path, or "-" for standard output */
    const char *rejects;       /* NULL, or a manifest of the rejected records and reasons */
    const char *classes_out;   /* NULL, or the class names (read.class_from_dir), one a line by id */
    uint64_t max_pixels;       /* images above it are rejected; 0: no limit */
    int jobs;                  /* threads that read, hash and probe; 0: one per CPU */
    int strict;                /* any rejection fails the run */
};

struct index_summary {
    uint64_t read, kept, rejected;
    uint64_t by_reason[INDEX_REJECT_COUNT];
    uint64_t other_files; /* captions, labels, metadata, non-images passed over */
};

/* The defaults of dit-index(1): output "-", the CSV columns image_path and
 * caption, sidecar captions ".txt", max_pixels INDEX_DEFAULT_MAX_PIXELS,
 * jobs 0; no inputs. */
void index_config_init(struct index_config *c);

/* Reads every input, writes the manifest (columns: key, source, caption,
 * label, width, height, format, hash, then json when an archive is read,
 * then the CSV columns carried through) and the rejects, and logs the
 * summary. An input that cannot be opened (a CSV without the image column)
 * is an error; one that breaks part-way keeps the records before the break
 * and fails the run. On STAGE_FAILED a manifest file is not written (one on
 * standard output is, being already out), the rejects are, classes_out is
 * not. STAGE_BAD_CONFIG: caption extension without a dot, or class options
 * that no folder input can satisfy. summary (NULL allowed) gets the counts
 * when the run got to the end. */
int index_run(const struct index_config *c, struct index_summary *summary);

#endif
