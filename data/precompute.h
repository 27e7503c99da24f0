/* Precomputing as one call: the images of a bucketed manifest are read,
 * checked against their indexed hash, decoded, resized and cropped as
 * dit-bucket planned, encoded, and written as a shard set (dit-precompute(1),
 * dit-shard(5)), reusing whatever an earlier run (finished or killed)
 * already encoded with the same parameters.
 *
 * dit-precompute is this call behind its options; dit-train can run it
 * after index_run and bucket_run on raw data, with the encoder it trains
 * on already open. The encoder is used only through models/encoder.h. */
#ifndef DIT_DATA_PRECOMPUTE_H
#define DIT_DATA_PRECOMPUTE_H

#include "data/stage.h"
#include "image/resize.h"
#include "libcommon/safetensors.h"
#include "models/encoder.h"
#include "models/text_encoder.h"

#include <stddef.h>
#include <stdint.h>

/* A stochastic encoder gives z ~ N(mean, std^2). Stored latents are scaled
 * as the denoiser sees them (encoder_scale: (z - shift) * scale; the std by
 * scale), so training needs no encoder:
 *   LATENT_DIST   latent = the scaled mean, latent_std = the scaled std; the
 *                 trainer draws latent + latent_std * eps per (record, epoch),
 *                 as DiT's train.py draws latent_dist.sample() every step
 *   LATENT_MEAN   latent = the scaled mean only (diffusers' mode())
 *   LATENT_SAMPLE latent = one scaled draw, fixed per image (its hash) and
 *                 variant, and no std
 * A deterministic encoder (pixel) stores its latent alone in every mode. */
enum latent_mode { LATENT_DIST = 0, LATENT_MEAN, LATENT_SAMPLE };

/* "dist", "mean", "sample"; -1 for another name. */
int latent_mode_parse(const char *name, enum latent_mode *out);
const char *latent_mode_name(enum latent_mode m);

struct precompute_config {
    const char *input;              /* a manifest made by dit-index | dit-bucket, or "-" */
    const char *output_dir;         /* the shard set, created when missing */
    const char *base_dir;           /* relative sources are under it; NULL: the input's folder */
    const struct encoder *encoder;  /* open; its encode runs on several threads at once */
    enum resize_filter filter;      /* RESIZE_BICUBIC or RESIZE_LANCZOS, as Pillow */
    int flip_both;                  /* also store the mirrored image's encoding (latent_flip) */
    uint8_t background[3];          /* under transparent pixels */
    enum st_dtype dtype;            /* ST_F32, ST_BF16 or ST_F16 */
    uint64_t shard_bytes;           /* a bucket's shard is closed at about this size */
    int fast_decode;                /* JPEGs by DCT scaling (Pillow's draft()), not full size */
    const char *rejects;            /* NULL, or a manifest of the rejected records */
    int jobs;                       /* decode, resize and encode threads; 0: one per CPU */
    int strict;                     /* any rejected record fails the run */
    int prune;                      /* after a good run, delete the shards no longer named */
    enum latent_mode latent_mode;   /* what a stochastic encoder's (the VAE's) output becomes */
    /* Captions: NULL, or open; each record's caption_column becomes text and
     * text_mask (data/precompute_text.h), stored in text_dtype. */
    const struct text_encoder *text_encoder;
    const char *caption_column;     /* "caption", as dit-index writes it */
    enum st_dtype text_dtype;       /* ST_BF16 by default */
    size_t text_cache_bytes;        /* embeddings kept for repeated captions */
};

/* Why a record was kept out; precompute_reject_name() names each. */
enum precompute_reject {
    PRECOMPUTE_KEPT = 0,
    PRECOMPUTE_BAD_ROW,     /* bucket columns missing or malformed */
    PRECOMPUTE_UNREADABLE,  /* the source cannot be read */
    PRECOMPUTE_CHANGED,     /* the bytes no longer hash to the manifest's hash */
    PRECOMPUTE_UNDECODABLE, /* truncated or corrupt image */
    PRECOMPUTE_SIZE,        /* the decoded size disagrees with the manifest */
    PRECOMPUTE_ENCODER,     /* the resize or the encoder failed */
    PRECOMPUTE_REJECT_COUNT,
};

const char *precompute_reject_name(enum precompute_reject r);

struct precompute_summary {
    uint64_t read, encoded, reused, rejected;
    uint64_t captions_encoded, captions_truncated; /* distinct captions run through the text encoder */
    uint64_t by_reason[PRECOMPUTE_REJECT_COUNT];
    uint64_t pruned; /* shards deleted by prune */
};

/* The defaults of dit-precompute(1): input "-", bicubic, no flip, white
 * background, f32, 256 MB shards, full-size decoding, jobs 0; captions
 * from "caption" in bf16 with 256 MB of repeated embeddings kept, once a
 * text encoder is given. output_dir, encoder and text_encoder are left NULL
 * for the caller. */
void precompute_config_init(struct precompute_config *c);

/* Runs the whole stage and logs the reuse found, each rejection and the
 * summary. The shard metadata records the producer, the encoder's identity
 * and the preprocessing identity (filter, flip, background, dtype,
 * dct_scaling = fast_decode, the decoders); a record is reused when its
 * cache key (image hash, encoder identity, preprocessing, geometry) is
 * found in output_dir. On STAGE_FAILED (a manifest line that cannot be
 * parsed, or strict with rejections) manifest.tsv is not written, the
 * shards written stay for the next run, the rejects are written.
 * STAGE_BAD_CONFIG: no encoder or output_dir, a filter or dtype precompute
 * does not write. Sets the resize's parallel threshold for the run
 * (images are resized one per thread) and restores the default after.
 * summary (NULL allowed) gets the counts when the run got to the end. */
int precompute_run(const struct precompute_config *c, struct precompute_summary *summary);

/* Where a record's pixels come from, as dit-bucket wrote it. */
struct precompute_geometry {
    int width, height;                /* the image as indexed (displayed, EXIF applied) */
    int bucket_width, bucket_height;  /* the crop, the encoder's input */
    int resize_width, resize_height;  /* fit: the resize before the crop */
    int crop_left, crop_top;
    int adm;                          /* the ADM recipe (square bucket) instead of fit */
};

/* The image step of one record: decodes data (full size, or with DCT
 * scaling when c->fast_decode and the method is fit), checks the decoded
 * size against the geometry, resizes and crops into
 * rgb[bucket_height][bucket_width][3]. c's filter, background and
 * fast_decode are used. PRECOMPUTE_KEPT, or the reason with err_set()
 * (PRECOMPUTE_UNDECODABLE, PRECOMPUTE_SIZE, PRECOMPUTE_ENCODER). */
enum precompute_reject precompute_image(const struct precompute_config *c, const void *data, size_t size,
                                        const char *name, const struct precompute_geometry *g, uint8_t *rgb);

#endif
