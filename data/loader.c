#include "data/loader.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/philox.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shape one field has in every record of a bucket. */
struct fshape {
    int ndim;
    int64_t shape[LOADER_MAX_DIMS];
    size_t per_sample;
};

struct lbucket {
    char *name;
    size_t *recs; /* record indices, manifest order */
    size_t n;
    struct fshape f[LOADER_MAX_FIELDS]; /* per requested field, from its first record */
};

struct planned {
    uint32_t bucket;
    size_t start, len; /* into the epoch's shuffled order of that bucket */
};

struct loader {
    struct shardset *s;
    struct loader_config cfg; /* cfg.fields is not kept: names[] is */
    size_t nf;
    char *names[LOADER_MAX_FIELDS]; /* the requested fields */
    char *alts[LOADER_MAX_FIELDS];  /* names[k] + "_flip" */
    size_t max_elems[LOADER_MAX_FIELDS];
    struct lbucket *b;
    size_t nb;
    int32_t *labels;    /* per record */
    uint8_t *flip_mask; /* per record: bit k when it holds alts[k] */
    int64_t per_epoch;
    /* Planned by the worker thread only. */
    int64_t plan_epoch;
    size_t **order;   /* per bucket: its records shuffled for plan_epoch */
    struct planned *batches;
    /* Handed out next. */
    int64_t epoch, index;
    struct loader_batch buf[2];
    /* The worker. */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending, done, quit, rc, slot;
    int64_t job_epoch, job_index;
    char err[1024];
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct lbucket *)a)->name, ((const struct lbucket *)b)->name);
}

/* Fisher-Yates from the Philox stream of (seed, shuffle, epoch, what). */
static void shuffle(size_t *a, size_t n, uint64_t seed, int64_t epoch, uint64_t what)
{
    struct rng_stream rs = rng_stream(seed, RNG_SHUFFLE, (uint64_t)epoch, what);
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(&rs, i, i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static void plan(struct loader *l, int64_t epoch)
{
    if (l->plan_epoch == epoch)
        return;
    const int B = l->cfg.batch_size;
    size_t k = 0;
    for (size_t i = 0; i < l->nb; i++) {
        memcpy(l->order[i], l->b[i].recs, l->b[i].n * sizeof(size_t));
        shuffle(l->order[i], l->b[i].n, l->cfg.seed, epoch, i);
        for (size_t start = 0; start < l->b[i].n; start += (size_t)B)
            l->batches[k++] = (struct planned){(uint32_t)i, start,
                                               l->b[i].n - start < (size_t)B ? l->b[i].n - start : (size_t)B};
    }
    /* The order of the batches, across buckets. */
    size_t *idx = malloc(k * sizeof *idx);
    struct planned *tmp = malloc(k * sizeof *tmp);
    if (idx && tmp) {
        for (size_t i = 0; i < k; i++)
            idx[i] = i;
        shuffle(idx, k, l->cfg.seed, epoch, UINT32_MAX);
        for (size_t i = 0; i < k; i++)
            tmp[i] = l->batches[idx[i]];
        memcpy(l->batches, tmp, k * sizeof *tmp);
    }
    free(idx);
    free(tmp);
    l->plan_epoch = epoch;
}

static int dtype_converts(enum st_dtype dt)
{
    switch (dt) {
    case ST_F32: case ST_BF16: case ST_F16: case ST_BOOL:
    case ST_U8: case ST_I8: case ST_U16: case ST_I16: case ST_U32: case ST_I32: case ST_U64: case ST_I64:
        return 1;
    default:
        return 0;
    }
}

/* Element i of a little-endian tensor of C type T, read without assuming
 * the shard aligned it. */
#define CONVERT(T)                                                                                         \
    for (size_t i = 0; i < n; i++) {                                                                      \
        T v;                                                                                               \
        memcpy(&v, src + i * sizeof v, sizeof v);                                                          \
        dst[i] = (float)v;                                                                                 \
    }                                                                                                      \
    break

/* t's elements as fp32 into dst; the caller checked the dtype and shape. */
static void convert(const struct st_tensor *t, float *dst)
{
    const char *src = t->data;
    const size_t n = (size_t)t->nelem;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case ST_BF16:
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
        break;
    case ST_BOOL:
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i] != 0;
        break;
    case ST_U8: CONVERT(uint8_t);
    case ST_I8: CONVERT(int8_t);
    case ST_U16: CONVERT(uint16_t);
    case ST_I16: CONVERT(int16_t);
    case ST_U32: CONVERT(uint32_t);
    case ST_I32: CONVERT(int32_t);
    case ST_U64: CONVERT(uint64_t);
    case ST_I64: CONVERT(int64_t);
    default:
        break;
    }
}
#undef CONVERT

static void format_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static int same_shape(const struct st_tensor *t, const struct fshape *f)
{
    if (t->ndim != f->ndim)
        return 0;
    for (int d = 0; d < f->ndim; d++)
        if (t->shape[d] != f->shape[d])
            return 0;
    return 1;
}

/* Tensor `field` of record r, checked against the shape its bucket holds. */
static const struct st_tensor *record_tensor(const struct loader *l, size_t r, const char *field,
                                             const struct lbucket *bk, const struct fshape *f)
{
    const struct st_tensor *t = shardset_tensor(l->s, r, field);
    if (!t)
        return NULL;
    const struct shardset_record *rec = &l->s->records[r];
    if (!dtype_converts(t->dtype)) {
        err_set("%s: record '%s': %s is %s, which the loader does not convert to fp32", l->s->dir, rec->key,
                field, st_dtype_name(t->dtype));
        return NULL;
    }
    if (!same_shape(t, f)) {
        char have[128], want[128];
        format_shape(have, sizeof have, t->ndim, t->shape);
        format_shape(want, sizeof want, f->ndim, f->shape);
        err_set("%s: record '%s': %s is %s, but bucket %s holds %s (its first record, '%s')", l->s->dir, rec->key,
                field, have, bk->name, want, l->s->records[bk->recs[0]].key);
        return NULL;
    }
    return t;
}

/* Fills buf[slot] with batch (epoch, index); on the worker thread. */
static int fill(struct loader *l, int slot, int64_t epoch, int64_t index)
{
    plan(l, epoch);
    const struct planned *p = &l->batches[index];
    const struct lbucket *bk = &l->b[p->bucket];
    struct loader_batch *out = &l->buf[slot];
    out->n = (int)p->len;
    out->epoch = epoch, out->index = index;
    for (size_t k = 0; k < l->nf; k++) {
        struct loader_field *f = &out->fields[k];
        f->ndim = bk->f[k].ndim;
        memcpy(f->shape, bk->f[k].shape, sizeof f->shape);
        f->per_sample = (int64_t)bk->f[k].per_sample;
    }
    for (size_t i = 0; i < p->len; i++) {
        size_t r = l->order[p->bucket][p->start + i];
        int flip = 0;
        /* One draw per record, and only for a record with an alternative:
         * the draws do not depend on the batch size or the other records. */
        if (l->flip_mask[r]) {
            struct rng_stream rs = rng_stream(l->cfg.seed, RNG_FLIP, (uint64_t)epoch, r);
            uint32_t u;
            rng_u32(&rs, 0, 1, &u);
            flip = (int)(u & 1);
        }
        for (size_t k = 0; k < l->nf; k++) {
            const char *name = flip && (l->flip_mask[r] >> k & 1) ? l->alts[k] : l->names[k];
            const struct st_tensor *t = record_tensor(l, r, name, bk, &bk->f[k]);
            if (!t)
                return -1;
            convert(t, out->fields[k].data + i * bk->f[k].per_sample);
        }
        out->records[i] = r;
        out->flipped[i] = (uint8_t)flip;
        if (out->labels)
            out->labels[i] = l->labels[r];
    }
    return 0;
}

static void *worker(void *arg)
{
    struct loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->pending && !l->quit)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->quit)
            break;
        int slot = l->slot;
        int64_t e = l->job_epoch, i = l->job_index;
        pthread_mutex_unlock(&l->mu);
        err_clear();
        int rc = fill(l, slot, e, i);
        pthread_mutex_lock(&l->mu);
        l->rc = rc;
        if (rc)
            snprintf(l->err, sizeof l->err, "%s", err_get());
        l->pending = 0;
        l->done = 1;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void request(struct loader *l, int slot, int64_t epoch, int64_t index)
{
    pthread_mutex_lock(&l->mu);
    l->slot = slot;
    l->job_epoch = epoch;
    l->job_index = index;
    l->done = 0;
    l->pending = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static int wait_done(struct loader *l)
{
    pthread_mutex_lock(&l->mu);
    while (!l->done)
        pthread_cond_wait(&l->cv, &l->mu);
    int rc = l->rc;
    if (rc)
        err_set("%s", l->err);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

static int parse_label(const char *s, int32_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < 0 || v > INT32_MAX)
        return -1;
    *out = (int32_t)v;
    return 0;
}

/* Copies the requested field names (and their _flip names) into l. */
static int take_fields(struct loader *l, const char *const *fields)
{
    static const char *const latent_only[] = {"latent", NULL};
    if (!fields)
        fields = latent_only;
    for (size_t k = 0; fields[k]; k++) {
        if (k == LOADER_MAX_FIELDS) {
            err_set("%s: more than %d fields asked of the loader", l->s->dir, LOADER_MAX_FIELDS);
            return -1;
        }
        if (!*fields[k]) {
            err_set("%s: an empty field name asked of the loader", l->s->dir);
            return -1;
        }
        for (size_t j = 0; j < k; j++)
            if (strcmp(fields[j], fields[k]) == 0) {
                err_set("%s: field %s asked of the loader twice", l->s->dir, fields[k]);
                return -1;
            }
        size_t len = strlen(fields[k]);
        l->names[k] = malloc(len + 1);
        l->alts[k] = malloc(len + sizeof "_flip");
        l->nf = k + 1;
        if (!l->names[k] || !l->alts[k]) {
            err_set("%s: out of memory", l->s->dir);
            return -1;
        }
        memcpy(l->names[k], fields[k], len + 1);
        snprintf(l->alts[k], len + sizeof "_flip", "%s_flip", fields[k]);
    }
    if (l->nf == 0) {
        err_set("%s: no fields asked of the loader", l->s->dir);
        return -1;
    }
    return 0;
}

/* Every requested field of record r is listed in the manifest; notes which
 * have a _flip alternative. */
static int scan_record(struct loader *l, size_t r)
{
    const struct shardset_record *rec = &l->s->records[r];
    for (size_t k = 0; k < l->nf; k++) {
        int has = 0, alt = 0;
        for (size_t f = 0; f < rec->nfields; f++) {
            has |= strcmp(rec->fields[f], l->names[k]) == 0;
            alt |= strcmp(rec->fields[f], l->alts[k]) == 0;
        }
        if (!has) {
            err_set("%s/%s:%llu: key '%s' has no %s field", l->s->dir, SHARDSET_MANIFEST,
                    (unsigned long long)rec->line, rec->key, l->names[k]);
            return -1;
        }
        l->flip_mask[r] |= (uint8_t)(alt << k);
    }
    return 0;
}

/* The shapes of bucket i's fields, from its first record; then every record
 * of the bucket (and its _flip alternatives) checked against them. */
static int shape_bucket(struct loader *l, struct lbucket *bk)
{
    const size_t r0 = bk->recs[0];
    for (size_t k = 0; k < l->nf; k++) {
        const struct st_tensor *t = shardset_tensor(l->s, r0, l->names[k]);
        if (!t)
            return -1;
        if (k == 0 && t->ndim != 3) {
            err_set("%s: %s is not a C x H x W latent", l->s->dir, t->name);
            return -1;
        }
        if (t->ndim > LOADER_MAX_DIMS) {
            err_set("%s: %s has %d dimensions; the loader takes at most %d", l->s->dir, t->name, t->ndim,
                    LOADER_MAX_DIMS);
            return -1;
        }
        struct fshape *f = &bk->f[k];
        f->ndim = t->ndim;
        memcpy(f->shape, t->shape, (size_t)t->ndim * sizeof *t->shape);
        f->per_sample = (size_t)t->nelem;
        l->max_elems[k] = f->per_sample > l->max_elems[k] ? f->per_sample : l->max_elems[k];
    }
    for (size_t i = 0; i < bk->n; i++)
        for (size_t k = 0; k < l->nf; k++) {
            size_t r = bk->recs[i];
            if (!record_tensor(l, r, l->names[k], bk, &bk->f[k]) ||
                ((l->flip_mask[r] >> k & 1) && !record_tensor(l, r, l->alts[k], bk, &bk->f[k])))
                return -1;
        }
    return 0;
}

static int alloc_batch(struct loader *l, struct loader_batch *b)
{
    const size_t B = (size_t)l->cfg.batch_size;
    b->nfields = (int)l->nf;
    b->fields = calloc(l->nf, sizeof *b->fields);
    b->records = malloc(B * sizeof *b->records);
    b->flipped = malloc(B);
    b->labels = l->cfg.label_column ? malloc(B * sizeof *b->labels) : NULL;
    if (!b->fields || !b->records || !b->flipped || (l->cfg.label_column && !b->labels))
        return -1;
    for (size_t k = 0; k < l->nf; k++) {
        b->fields[k].name = l->names[k];
        /* At least one element: a field of empty samples still has a buffer. */
        size_t n = l->max_elems[k] ? l->max_elems[k] * B : 1;
        if (!(b->fields[k].data = malloc(n * sizeof(float))))
            return -1;
    }
    return 0;
}

struct loader *loader_open(struct shardset *s, const struct loader_config *cfg)
{
    if (s->n_records == 0) {
        err_set("%s: the shard set has no records", s->dir);
        return NULL;
    }
    if (cfg->batch_size <= 0) {
        err_set("batch size %d is not positive", cfg->batch_size);
        return NULL;
    }
    struct loader *l = calloc(1, sizeof *l);
    if (!l)
        goto oom;
    l->s = s;
    l->cfg = *cfg;
    l->cfg.fields = NULL;
    l->plan_epoch = -1;
    l->slot = -1;
    if (take_fields(l, cfg->fields) != 0)
        goto fail;
    l->labels = calloc(s->n_records, sizeof *l->labels);
    l->flip_mask = calloc(s->n_records, 1);
    l->b = calloc(s->n_records, sizeof *l->b);
    if (!l->labels || !l->flip_mask || !l->b)
        goto oom;
    int label_col = -1;
    if (cfg->label_column) {
        for (size_t c = 0; c < s->ncols; c++)
            if (strcmp(s->columns[c], cfg->label_column) == 0)
                label_col = (int)c;
        if (label_col < 0) {
            err_set("%s: no '%s' column: class-conditional training needs labels "
                    "(dit-index --class-from-dir, or a label column in the CSV)", s->dir, cfg->label_column);
            goto fail;
        }
    }
    /* Buckets, in sorted name order. */
    for (size_t r = 0; r < s->n_records; r++) {
        const struct shardset_record *rec = &s->records[r];
        if (label_col >= 0 && parse_label(rec->values[label_col], &l->labels[r]) != 0) {
            err_set("%s/%s:%llu: key '%s': label '%s' is not a class id", s->dir, SHARDSET_MANIFEST,
                    (unsigned long long)rec->line, rec->key, rec->values[label_col]);
            goto fail;
        }
        if (scan_record(l, r) != 0)
            goto fail;
        size_t i = 0;
        while (i < l->nb && strcmp(l->b[i].name, rec->bucket) != 0)
            i++;
        if (i == l->nb) {
            l->b[l->nb].name = rec->bucket;
            l->b[l->nb].recs = malloc(s->n_records * sizeof(size_t));
            if (!l->b[l->nb].recs)
                goto oom;
            l->nb++;
        }
        l->b[i].recs[l->b[i].n++] = r;
    }
    qsort(l->b, l->nb, sizeof *l->b, cmp_name);
    l->order = calloc(l->nb, sizeof *l->order);
    if (!l->order)
        goto oom;
    for (size_t i = 0; i < l->nb; i++) {
        if (shape_bucket(l, &l->b[i]) != 0)
            goto fail;
        l->per_epoch += (int64_t)((l->b[i].n + (size_t)cfg->batch_size - 1) / (size_t)cfg->batch_size);
        if (!(l->order[i] = malloc(l->b[i].n * sizeof(size_t))))
            goto oom;
    }
    l->batches = calloc((size_t)l->per_epoch, sizeof *l->batches);
    if (!l->batches)
        goto oom;
    for (int k = 0; k < 2; k++)
        if (alloc_batch(l, &l->buf[k]) != 0)
            goto oom;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->done = 1;
    if (pthread_create(&l->thread, NULL, worker, l) != 0) {
        err_set("cannot start the data loader thread");
        l->thread = 0;
        goto fail;
    }
    return l;
oom:
    err_set("%s: out of memory planning the batches", s->dir);
fail:
    loader_close(l);
    return NULL;
}

void loader_close(struct loader *l)
{
    if (!l)
        return;
    if (l->thread) {
        wait_done(l);
        pthread_mutex_lock(&l->mu);
        l->quit = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    for (size_t i = 0; l->b && i < l->nb; i++) {
        free(l->b[i].recs);
        if (l->order)
            free(l->order[i]);
    }
    free(l->b);
    free(l->order);
    free(l->batches);
    free(l->labels);
    free(l->flip_mask);
    for (int k = 0; k < 2; k++) {
        for (int f = 0; l->buf[k].fields && f < l->buf[k].nfields; f++)
            free(l->buf[k].fields[f].data);
        free(l->buf[k].fields);
        free(l->buf[k].records);
        free(l->buf[k].flipped);
        free(l->buf[k].labels);
    }
    for (size_t k = 0; k < l->nf; k++) {
        free(l->names[k]);
        free(l->alts[k]);
    }
    free(l);
}

int64_t loader_batches_per_epoch(const struct loader *l)
{
    return l->per_epoch;
}

int loader_max_label(const struct loader *l)
{
    int max = -1;
    for (size_t r = 0; l->cfg.label_column && r < l->s->n_records; r++)
        max = l->labels[r] > max ? l->labels[r] : max;
    return max;
}

size_t loader_records(const struct loader *l)
{
    return l->s->n_records;
}

void loader_shape(const struct loader *l, int *c, int *h, int *w)
{
    size_t best = 0;
    for (size_t i = 1; i < l->nb; i++)
        if (l->b[i].n > l->b[best].n)
            best = i;
    const int64_t *sh = l->b[best].f[0].shape;
    *c = (int)sh[0], *h = (int)sh[1], *w = (int)sh[2];
}

void loader_max_shape(const struct loader *l, int *c, int *h, int *w)
{
    size_t best = 0;
    for (size_t i = 1; i < l->nb; i++) {
        const int64_t *a = l->b[i].f[0].shape, *b = l->b[best].f[0].shape;
        if (a[1] * a[2] > b[1] * b[2])
            best = i;
    }
    const int64_t *sh = l->b[best].f[0].shape;
    *c = (int)sh[0], *h = (int)sh[1], *w = (int)sh[2];
}

size_t loader_buckets(const struct loader *l)
{
    return l->nb;
}

const char *loader_bucket_shape(const struct loader *l, size_t i, int *c, int *h, int *w)
{
    const int64_t *sh = l->b[i].f[0].shape;
    *c = (int)sh[0], *h = (int)sh[1], *w = (int)sh[2];
    return l->b[i].name;
}

int loader_count_mismatched(const struct loader *l, int c, int h, int w, char *first, size_t first_size)
{
    int n = 0;
    for (size_t i = 0; i < l->nb; i++) {
        const int64_t *sh = l->b[i].f[0].shape;
        if (sh[0] != c || sh[1] != h || sh[2] != w) {
            if (n++ == 0 && first)
                snprintf(first, first_size, "bucket %s (%zu records) has %lldx%lldx%lld %ss", l->b[i].name,
                         l->b[i].n, (long long)sh[0], (long long)sh[1], (long long)sh[2], l->names[0]);
        }
    }
    return n;
}

int loader_seek(struct loader *l, int64_t epoch, int64_t index)
{
    if (epoch < 0 || index < 0 || index >= l->per_epoch) {
        err_set("data position epoch %lld, batch %lld is outside the %lld batches of an epoch",
                (long long)epoch, (long long)index, (long long)l->per_epoch);
        return -1;
    }
    wait_done(l); /* a prefetch of another position is thrown away */
    l->epoch = epoch;
    l->index = index;
    l->slot = -1;
    return 0;
}

int loader_next(struct loader *l, const struct loader_batch **out)
{
    /* Is the batch we want the one being (or already) prefetched? */
    pthread_mutex_lock(&l->mu);
    int have = l->slot >= 0 && (l->pending || l->done) && l->job_epoch == l->epoch && l->job_index == l->index;
    int slot = l->slot;
    pthread_mutex_unlock(&l->mu);
    if (!have) {
        wait_done(l);
        slot = 0;
        request(l, slot, l->epoch, l->index);
    }
    if (wait_done(l) != 0)
        return -1;
    *out = &l->buf[slot];
    if (++l->index == l->per_epoch) {
        l->index = 0;
        l->epoch++;
    }
    request(l, 1 - slot, l->epoch, l->index);
    return 0;
}

const struct loader_field *loader_batch_field(const struct loader_batch *b, const char *name)
{
    for (int k = 0; k < b->nfields; k++)
        if (strcmp(b->fields[k].name, name) == 0)
            return &b->fields[k];
    return NULL;
}
