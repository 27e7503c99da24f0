/* The caption side of precompute_run: each record's caption becomes its
 * text embedding and mask (text [L, D] and text_mask [L] in dit-shard(5))
 * through models/text_encoder.h, each distinct caption encoded once.
 *
 * A run keeps the stored embeddings of the captions it has met, keyed by
 * the xxh3-128 of the caption's bytes, up to a byte budget (a data set with
 * a few hundred class captions keeps them all; one with a caption per
 * image stops caching when the budget is spent and simply encodes each).
 * The encoder identity is fixed for the run, so caption hash x encoder
 * identity is the key the issue asks for; the record's cache key across
 * runs adds the caption hash to the preprocessing identity, which names the
 * text encoder (data/precompute.c). */
#ifndef DIT_DATA_PRECOMPUTE_TEXT_H
#define DIT_DATA_PRECOMPUTE_TEXT_H

#include "libcommon/hash.h"
#include "libcommon/safetensors.h"
#include "models/text_encoder.h"

#include <stddef.h>
#include <stdint.h>

struct text_entry;

struct precompute_text {
    const struct text_encoder *enc;
    enum st_dtype dtype;             /* of both stored tensors */
    size_t emb_bytes, mask_bytes;    /* per caption, as stored */
    struct text_entry *entries;      /* open addressing on the caption hash */
    size_t cap, n, cached_bytes, budget;
    uint64_t captions, encoded, truncated; /* asked for, run through the encoder, cut at max_length */
    double seconds;                  /* spent in the encoder */
};

/* 0, or -1 with err_set(). budget: bytes of embeddings kept for reuse. */
int precompute_text_init(struct precompute_text *t, const struct text_encoder *enc, enum st_dtype dtype,
                         size_t budget);
void precompute_text_free(struct precompute_text *t);

/* The stored embedding and mask of captions[0..n), each a malloc'd copy in
 * t->dtype (emb[i]: emb_bytes, mask[i]: mask_bytes); the captions are
 * valid UTF-8 (the caller checks, to reject the record by name). Captions
 * met before are copied from the cache, repeated ones are encoded once.
 * 0, or -1 with err_set() (then nothing is left allocated). */
int precompute_text_encode(struct precompute_text *t, const char *const *captions, size_t n, void **emb,
                           void **mask);

/* The hash of a caption as the cache and the record's cache key use it. */
struct hash128 precompute_caption_hash(const char *caption);

#endif
