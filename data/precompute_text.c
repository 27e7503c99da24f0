/* Caption embeddings for precompute_run, each distinct caption encoded
 * once (data/precompute_text.h). */
#include "data/precompute_text.h"
#include "libcommon/error.h"
#include "libcommon/half.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Captions per encoder call: T5-XXL's 8 x 512 x 4096 f32 outputs are 64 MiB. */
#define TEXT_BATCH 8

struct text_entry {
    struct hash128 hash;
    void *emb, *mask; /* NULL: an empty slot */
};

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct hash128 precompute_caption_hash(const char *caption)
{
    return hash_buffer(caption, strlen(caption));
}

int precompute_text_init(struct precompute_text *t, const struct text_encoder *enc, enum st_dtype dtype,
                         size_t budget)
{
    memset(t, 0, sizeof *t);
    if (dtype != ST_F32 && dtype != ST_BF16 && dtype != ST_F16) {
        err_set("text embeddings: dtype %s is not f32, bf16 or f16", st_dtype_name(dtype));
        return -1;
    }
    t->enc = enc;
    t->dtype = dtype;
    t->emb_bytes = text_encoder_embedding_elems(enc) * st_dtype_size(dtype);
    t->mask_bytes = (size_t)enc->max_length * st_dtype_size(dtype);
    t->budget = budget;
    return 0;
}

void precompute_text_free(struct precompute_text *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        free(t->entries[i].emb);
        free(t->entries[i].mask);
    }
    free(t->entries);
    memset(t, 0, sizeof *t);
}

static struct text_entry *slot_of(const struct precompute_text *t, struct hash128 h)
{
    if (!t->cap)
        return NULL;
    size_t i = (size_t)h.lo & (t->cap - 1);
    while (t->entries[i].emb && !hash_equal(t->entries[i].hash, h))
        i = (i + 1) & (t->cap - 1);
    return &t->entries[i];
}

static const struct text_entry *cache_find(const struct precompute_text *t, struct hash128 h)
{
    const struct text_entry *e = slot_of(t, h);
    return e && e->emb ? e : NULL;
}

/* Keeps a copy while the budget lasts; a full cache only stops caching. */
static void cache_keep(struct precompute_text *t, struct hash128 h, const void *emb, const void *mask)
{
    if (t->cached_bytes + t->emb_bytes + t->mask_bytes > t->budget)
        return;
    if (2 * (t->n + 1) > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        struct text_entry *old = t->entries, *grown = calloc(cap, sizeof *grown);
        if (!grown)
            return;
        size_t old_cap = t->cap;
        t->entries = grown, t->cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].emb)
                *slot_of(t, old[i].hash) = old[i];
        free(old);
    }
    struct text_entry *e = slot_of(t, h);
    void *ce = malloc(t->emb_bytes), *cm = malloc(t->mask_bytes);
    if (!ce || !cm) {
        free(ce);
        free(cm);
        return;
    }
    memcpy(ce, emb, t->emb_bytes);
    memcpy(cm, mask, t->mask_bytes);
    *e = (struct text_entry){h, ce, cm};
    t->n++;
    t->cached_bytes += t->emb_bytes + t->mask_bytes;
}

static void store(enum st_dtype dt, const float *src, void *dst, size_t n)
{
    if (dt == ST_F32)
        memcpy(dst, src, n * sizeof *src);
    else if (dt == ST_BF16)
        f32_to_bf16_array(src, dst, n);
    else
        f32_to_f16_array(src, dst, n);
}

/* Runs captions[0..n) (n <= TEXT_BATCH) through the encoder into malloc'd
 * stored tensors emb[i], mask[i]. */
static int encode_group(struct precompute_text *t, const char *const *captions, int n, void **emb, void **mask)
{
    const size_t L = (size_t)t->enc->max_length, per = text_encoder_embedding_elems(t->enc);
    float *e = malloc((size_t)n * per * sizeof *e), *mf = malloc(L * sizeof *mf);
    uint8_t *m = malloc((size_t)n * L), cut[TEXT_BATCH] = {0};
    int rc = e && mf && m ? 0 : -1;
    if (rc)
        err_set("out of memory for %d text embeddings", n);
    double t0 = seconds_now();
    if (rc == 0)
        rc = text_encoder_encode(t->enc, captions, n, e, m, cut);
    t->seconds += seconds_now() - t0;
    for (int i = 0; rc == 0 && i < n; i++) {
        emb[i] = malloc(t->emb_bytes);
        mask[i] = malloc(t->mask_bytes);
        if (!emb[i] || !mask[i]) {
            err_set("out of memory for a text embedding");
            for (int j = 0; j <= i; j++)
                free(emb[j]), free(mask[j]);
            rc = -1;
            break;
        }
        store(t->dtype, e + (size_t)i * per, emb[i], per);
        for (size_t j = 0; j < L; j++)
            mf[j] = m[(size_t)i * L + j] ? 1.0f : 0.0f;
        store(t->dtype, mf, mask[i], L);
        t->truncated += cut[i] != 0;
    }
    if (rc == 0)
        t->encoded += (uint64_t)n;
    free(e);
    free(mf);
    free(m);
    return rc;
}

/* *emb, *mask = malloc'd copies of one caption's stored tensors. */
static int copy_pair(const struct precompute_text *t, const void *emb, const void *mask, void **emb_out,
                     void **mask_out)
{
    *emb_out = malloc(t->emb_bytes);
    *mask_out = malloc(t->mask_bytes);
    if (!*emb_out || !*mask_out) {
        err_set("out of memory for a text embedding");
        return -1;
    }
    memcpy(*emb_out, emb, t->emb_bytes);
    memcpy(*mask_out, mask, t->mask_bytes);
    return 0;
}

int precompute_text_encode(struct precompute_text *t, const char *const *captions, size_t n, void **emb,
                           void **mask)
{
    struct hash128 *h = malloc((n ? n : 1) * sizeof *h);
    size_t *first = malloc((n ? n : 1) * sizeof *first); /* the index whose encoding caption i takes */
    if (!h || !first) {
        free(h);
        free(first);
        err_set("out of memory");
        return -1;
    }
    memset(emb, 0, n * sizeof *emb);
    memset(mask, 0, n * sizeof *mask);
    int rc = 0;
    const char *group[TEXT_BATCH];
    size_t where[TEXT_BATCH], ng = 0;
    for (size_t i = 0; i <= n && rc == 0; i++) {
        if (i < n) {
            h[i] = precompute_caption_hash(captions[i]);
            first[i] = i;
            for (size_t j = 0; j < i; j++)
                if (hash_equal(h[j], h[i]) && strcmp(captions[j], captions[i]) == 0) {
                    first[i] = first[j];
                    break;
                }
            const struct text_entry *hit = first[i] == i ? cache_find(t, h[i]) : NULL;
            if (hit) {
                if ((rc = copy_pair(t, hit->emb, hit->mask, &emb[i], &mask[i])) != 0)
                    break;
            } else if (first[i] == i) {
                group[ng] = captions[i];
                where[ng++] = i;
            }
        }
        if (ng == TEXT_BATCH || (i == n && ng)) {
            void *ge[TEXT_BATCH], *gm[TEXT_BATCH];
            rc = encode_group(t, group, (int)ng, ge, gm);
            for (size_t g = 0; rc == 0 && g < ng; g++) {
                emb[where[g]] = ge[g], mask[where[g]] = gm[g];
                cache_keep(t, h[where[g]], ge[g], gm[g]);
            }
            ng = 0;
        }
    }
    /* The repeats take copies of their first occurrence's tensors. */
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (first[i] != i)
            rc = copy_pair(t, emb[first[i]], mask[first[i]], &emb[i], &mask[i]);
    }
    if (rc == 0)
        t->captions += n;
    else
        for (size_t i = 0; i < n; i++) {
            free(emb[i]), free(mask[i]);
            emb[i] = mask[i] = NULL;
        }
    free(h);
    free(first);
    return rc;
}
