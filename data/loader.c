#include "data/loader.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/philox.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lbucket {
    char *name;
    size_t *recs; /* record indices, manifest order */
    size_t n;
    int c, h, w;  /* latent shape, from its first record */
};

struct planned {
    uint32_t bucket;
    size_t start, len; /* into the epoch's shuffled order of that bucket */
};

struct loader {
    struct shardset *s;
    struct loader_config cfg;
    struct lbucket *b;
    size_t nb;
    int32_t *labels;  /* per record */
    uint8_t *has_flip;
    int64_t per_epoch;
    size_t max_elems;
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

static int copy_tensor(const struct st_tensor *t, float *dst, size_t n)
{
    if (t->nelem != n)
        return -1;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, t->data, n * sizeof(float));
        return 0;
    case ST_BF16:
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, (const char *)t->data + 2 * i, 2);
            dst[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
        return 0;
    default:
        return -1;
    }
}

/* Fills buf[slot] with batch (epoch, index); on the worker thread. */
static int fill(struct loader *l, int slot, int64_t epoch, int64_t index)
{
    plan(l, epoch);
    const struct planned *p = &l->batches[index];
    const struct lbucket *bk = &l->b[p->bucket];
    struct loader_batch *out = &l->buf[slot];
    const size_t chw = (size_t)bk->c * bk->h * bk->w;
    out->n = (int)p->len;
    out->channels = bk->c, out->height = bk->h, out->width = bk->w;
    out->epoch = epoch, out->index = index;
    for (size_t i = 0; i < p->len; i++) {
        size_t r = l->order[p->bucket][p->start + i];
        int flip = 0;
        if (l->has_flip[r]) {
            struct rng_stream rs = rng_stream(l->cfg.seed, RNG_FLIP, (uint64_t)epoch, r);
            uint32_t u;
            rng_u32(&rs, 0, 1, &u);
            flip = (int)(u & 1);
        }
        const struct st_tensor *t = shardset_tensor(l->s, r, flip ? "latent_flip" : "latent");
        if (!t)
            return -1;
        if (copy_tensor(t, out->x + i * chw, chw) != 0) {
            err_set("%s: record '%s': %s is %s with %llu elements; its bucket %s holds %dx%dx%d", l->s->dir,
                    l->s->records[r].key, t->name, st_dtype_name(t->dtype), (unsigned long long)t->nelem,
                    bk->name, bk->c, bk->h, bk->w);
            return -1;
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
    l->plan_epoch = -1;
    l->slot = -1;
    l->labels = calloc(s->n_records, sizeof *l->labels);
    l->has_flip = calloc(s->n_records, 1);
    l->b = calloc(s->n_records, sizeof *l->b);
    if (!l->labels || !l->has_flip || !l->b)
        goto oom;
    int label_col = -1;
    if (cfg->label_column) {
        for (size_t c = 0; c < s->ncols; c++)
            if (strcmp(s->columns[c], cfg->label_column) == 0)
                label_col = (int)c;
        if (label_col < 0) {
            err_set("%s: no '%s' column: class-conditional training needs labels "
                    "(dit-index --class-from-dir, or a label column in the CSV)", s->dir, cfg->label_column);
            loader_close(l);
            return NULL;
        }
    }
    /* Buckets, in sorted name order. */
    for (size_t r = 0; r < s->n_records; r++) {
        const struct shardset_record *rec = &s->records[r];
        if (label_col >= 0 && parse_label(rec->values[label_col], &l->labels[r]) != 0) {
            err_set("%s/%s:%llu: key '%s': label '%s' is not a class id", s->dir, SHARDSET_MANIFEST,
                    (unsigned long long)rec->line, rec->key, rec->values[label_col]);
            loader_close(l);
            return NULL;
        }
        int has_latent = 0;
        for (size_t f = 0; f < rec->nfields; f++) {
            has_latent |= strcmp(rec->fields[f], "latent") == 0;
            l->has_flip[r] |= strcmp(rec->fields[f], "latent_flip") == 0;
        }
        if (!has_latent) {
            err_set("%s/%s:%llu: key '%s' has no latent field", s->dir, SHARDSET_MANIFEST,
                    (unsigned long long)rec->line, rec->key);
            loader_close(l);
            return NULL;
        }
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
        const struct st_tensor *t = shardset_tensor(s, l->b[i].recs[0], "latent");
        if (!t) {
            loader_close(l);
            return NULL;
        }
        if (t->ndim != 3) {
            err_set("%s: %s is not a C x H x W latent", s->dir, t->name);
            loader_close(l);
            return NULL;
        }
        l->b[i].c = (int)t->shape[0], l->b[i].h = (int)t->shape[1], l->b[i].w = (int)t->shape[2];
        size_t elems = (size_t)t->nelem;
        l->max_elems = elems > l->max_elems ? elems : l->max_elems;
        l->per_epoch += (int64_t)((l->b[i].n + (size_t)cfg->batch_size - 1) / (size_t)cfg->batch_size);
        if (!(l->order[i] = malloc(l->b[i].n * sizeof(size_t))))
            goto oom;
    }
    l->batches = calloc((size_t)l->per_epoch, sizeof *l->batches);
    if (!l->batches)
        goto oom;
    for (int k = 0; k < 2; k++) {
        struct loader_batch *b = &l->buf[k];
        b->x = malloc(l->max_elems * (size_t)cfg->batch_size * sizeof(float));
        b->records = malloc((size_t)cfg->batch_size * sizeof *b->records);
        b->flipped = malloc((size_t)cfg->batch_size);
        b->labels = cfg->label_column ? malloc((size_t)cfg->batch_size * sizeof *b->labels) : NULL;
        if (!b->x || !b->records || !b->flipped || (cfg->label_column && !b->labels))
            goto oom;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->done = 1;
    if (pthread_create(&l->thread, NULL, worker, l) != 0) {
        err_set("cannot start the data loader thread");
        l->thread = 0;
        loader_close(l);
        return NULL;
    }
    return l;
oom:
    err_set("%s: out of memory planning the batches", s->dir);
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
    free(l->has_flip);
    for (int k = 0; k < 2; k++) {
        free(l->buf[k].x);
        free(l->buf[k].records);
        free(l->buf[k].flipped);
        free(l->buf[k].labels);
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
    *c = l->b[best].c, *h = l->b[best].h, *w = l->b[best].w;
}

int loader_count_mismatched(const struct loader *l, int c, int h, int w, char *first, size_t first_size)
{
    int n = 0;
    for (size_t i = 0; i < l->nb; i++)
        if (l->b[i].c != c || l->b[i].h != h || l->b[i].w != w) {
            if (n++ == 0 && first)
                snprintf(first, first_size, "bucket %s (%zu records) has %dx%dx%d latents", l->b[i].name,
                         l->b[i].n, l->b[i].c, l->b[i].h, l->b[i].w);
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
