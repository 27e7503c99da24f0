#include "data/bucket.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"
#include "libcommon/philox.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Generated buckets come from a loop over widths whose length grows with the
 * resolution; this keeps it short and every area far inside int64_t. */
#define BUCKET_MAX_RESOLUTION 65536

double bucket_aspect_distance(struct bucket_size b, double width, double height)
{
    /* Differences of logs rather than the log of a quotient: a bucket and its
     * transpose are then exactly equally far from a square image, so the
     * tie-break, not rounding, decides between them. */
    return fabs((log((double)b.width) - log((double)b.height)) - (log(width) - log(height)));
}

/* Whether candidate c at distance d beats the best so far. */
static int nearer(struct bucket_size c, double d, struct bucket_size best, double best_d)
{
    if (d != best_d)
        return d < best_d;
    int64_t area = (int64_t)c.width * c.height, best_area = (int64_t)best.width * best.height;
    if (area != best_area)
        return area > best_area;
    return c.width < best.width;
}

long bucket_nearest(const struct bucket_size *sizes, size_t n, const unsigned char *eligible,
                    double width, double height)
{
    long best = -1;
    double best_d = 0;
    for (size_t i = 0; i < n; i++) {
        if (eligible && !eligible[i])
            continue;
        double d = bucket_aspect_distance(sizes[i], width, height);
        if (best < 0 || nearer(sizes[i], d, sizes[best], best_d)) {
            best = (long)i;
            best_d = d;
        }
    }
    return best;
}

/* bucket_nearest over the candidates whose area is at most max_area. */
static long nearest_within(const struct bucket_set *s, int64_t max_area, double width, double height)
{
    long best = -1;
    double best_d = 0;
    for (size_t i = 0; i < s->n; i++) {
        if ((int64_t)s->sizes[i].width * s->sizes[i].height > max_area)
            continue;
        double d = bucket_aspect_distance(s->sizes[i], width, height);
        if (best < 0 || nearer(s->sizes[i], d, s->sizes[best], best_d)) {
            best = (long)i;
            best_d = d;
        }
    }
    return best;
}

static int aspect_ok(int64_t w, int64_t h, double min_aspect, double max_aspect)
{
    return (double)w >= min_aspect * (double)h && (double)w <= max_aspect * (double)h;
}

static int cmp_aspect(const struct bucket_size *a, const struct bucket_size *b)
{
    int64_t l = (int64_t)a->width * b->height, r = (int64_t)b->width * a->height;
    if (l != r)
        return l < r ? -1 : 1;
    int64_t aa = (int64_t)a->width * a->height, ab = (int64_t)b->width * b->height;
    if (aa != ab)
        return aa < ab ? -1 : 1;
    return (a->width > b->width) - (a->width < b->width);
}

static int cmp_size(const void *a, const void *b)
{
    return cmp_aspect(a, b);
}

static int push_size(struct bucket_size **v, size_t *n, size_t *cap, struct bucket_size b)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 32;
        struct bucket_size *p = realloc(*v, c * sizeof *p);
        if (!p)
            return -1;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = b;
    return 0;
}

/* The largest buckets of area <= resolution^2: neither side can grow by a
 * step without passing the area, so the set is closed under transposition
 * and a portrait image gets the transpose of its landscape twin's bucket. */
static int generate(struct bucket_set *s)
{
    const struct bucket_config *c = &s->config;
    int64_t step = c->step, area = (int64_t)c->resolution * c->resolution;
    /* A candidate's width lies within sqrt(area * min_aspect) - step and
     * sqrt(area * max_aspect): the loop visits only that range. */
    double lo = floor(sqrt((double)area * c->min_aspect)) - 2.0 * (double)step;
    double hi = ceil(sqrt((double)area * c->max_aspect)) + (double)step;
    if (hi > BUCKET_MAX_SIDE)
        hi = BUCKET_MAX_SIDE;
    int64_t w = lo < (double)step ? step : (int64_t)(lo / (double)step) * step;
    size_t cap = 0;
    for (; (double)w <= hi; w += step) {
        int64_t h = area / w / step * step;
        if (h < step)
            break;
        if ((w + step) * h <= area || h > BUCKET_MAX_SIDE)
            continue;
        if (!aspect_ok(w, h, c->min_aspect, c->max_aspect))
            continue;
        if (push_size(&s->sizes, &s->n, &cap, (struct bucket_size){(int)w, (int)h}) != 0) {
            err_set("out of memory");
            return -1;
        }
    }
    if (s->n == 0) {
        err_set("no bucket has sides that are multiples of --step %d, an area of at most "
                "--resolution %d squared and an aspect within %g..%g",
                c->step, c->resolution, c->min_aspect, c->max_aspect);
        return -1;
    }
    return 0;
}

int bucket_set_init(struct bucket_set *s, const struct bucket_config *c)
{
    memset(s, 0, sizeof *s);
    if (c->step < 1 || c->step > BUCKET_MAX_SIDE) {
        err_set("--step %d: must be between 1 and %d", c->step, BUCKET_MAX_SIDE);
        return -1;
    }
    if (!(c->min_aspect > 0) || !isfinite(c->min_aspect)) {
        err_set("--min-aspect %g: must be a positive number", c->min_aspect);
        return -1;
    }
    if (!(c->max_aspect >= c->min_aspect) || !isfinite(c->max_aspect)) {
        err_set("--max-aspect %g: must be a number of at least --min-aspect %g", c->max_aspect,
                c->min_aspect);
        return -1;
    }
    s->config = *c;
    s->config.list = NULL;
    if (c->center_crop_size) {
        int n = c->center_crop_size;
        if (n < 1 || n > BUCKET_MAX_SIDE || n % c->step) {
            err_set("--center-crop-size %d: must be a positive multiple of --step %d", n, c->step);
            return -1;
        }
        s->sizes = malloc(sizeof *s->sizes);
        if (!s->sizes) {
            err_set("out of memory");
            return -1;
        }
        s->sizes[0] = (struct bucket_size){n, n};
        s->n = 1;
        return 0;
    }
    if (c->list) {
        if (c->n_list == 0) {
            err_set("--buckets: the list is empty");
            return -1;
        }
        s->sizes = malloc(c->n_list * sizeof *s->sizes);
        if (!s->sizes) {
            err_set("out of memory");
            return -1;
        }
        for (size_t i = 0; i < c->n_list; i++) {
            struct bucket_size b = c->list[i];
            if (b.width < 1 || b.height < 1 || b.width > BUCKET_MAX_SIDE || b.height > BUCKET_MAX_SIDE ||
                b.width % c->step || b.height % c->step) {
                err_set("--buckets: %dx%d: the sides must be positive multiples of --step %d", b.width,
                        b.height, c->step);
                bucket_set_free(s);
                return -1;
            }
            s->sizes[i] = b;
        }
        s->n = c->n_list;
    } else {
        if (c->resolution < 1 || c->resolution > BUCKET_MAX_RESOLUTION) {
            err_set("--resolution %d: must be between 1 and %d", c->resolution, BUCKET_MAX_RESOLUTION);
            return -1;
        }
        if (generate(s) != 0) {
            bucket_set_free(s);
            return -1;
        }
    }
    qsort(s->sizes, s->n, sizeof *s->sizes, cmp_size);
    return 0;
}

void bucket_set_free(struct bucket_set *s)
{
    free(s->sizes);
    s->sizes = NULL;
    s->n = 0;
}

uint64_t bucket_key_index(const char *key)
{
    return hash_buffer(key, strlen(key)).hi >> 32;
}

void bucket_place(const struct bucket_set *s, int width, int height, struct bucket_size b,
                  const char *key, struct bucket_assignment *out)
{
    int64_t W = width, H = height, bw = b.width, bh = b.height, rw, rh;
    /* Integer arithmetic, rounding halves up: the sizes are exact and the
     * same on every machine. bw/W >= bh/H means the width decides. */
    if (bw * H >= bh * W) {
        rw = bw;
        rh = (2 * H * bw + W) / (2 * W);
    } else {
        rh = bh;
        rw = (2 * W * bh + H) / (2 * H);
    }
    if (rw < bw)
        rw = bw;
    if (rh < bh)
        rh = bh;
    out->bucket = b;
    out->resize_width = rw;
    out->resize_height = rh;
    out->method = BUCKET_FIT;
    if (s->config.random_crop) {
        struct rng_stream st = rng_stream(s->config.seed, RNG_CROP, 0, bucket_key_index(key));
        out->crop_left = (int64_t)rng_below(&st, 0, (uint64_t)(rw - bw + 1));
        out->crop_top = (int64_t)rng_below(&st, 1, (uint64_t)(rh - bh + 1));
    } else {
        out->crop_left = (rw - bw) / 2;
        out->crop_top = (rh - bh) / 2;
    }
}

void bucket_adm(int width, int height, int n, struct bucket_assignment *out)
{
    int64_t w = width, h = height;
    /* Pillow's image.resize((x // 2 for x in size), BOX), repeated. */
    while ((w < h ? w : h) >= 2 * (int64_t)n) {
        w /= 2;
        h /= 2;
    }
    /* Python's round(x * scale) in double: halves go to even, as nearbyint
     * does in the default rounding mode. */
    double scale = (double)n / (double)(w < h ? w : h);
    out->bucket = (struct bucket_size){n, n};
    out->resize_width = (int64_t)nearbyint((double)w * scale);
    out->resize_height = (int64_t)nearbyint((double)h * scale);
    out->crop_left = (out->resize_width - n) / 2;
    out->crop_top = (out->resize_height - n) / 2;
    out->method = BUCKET_ADM;
}

/* --no-upscale when no candidate is small enough: the largest bucket of
 * step multiples and allowed aspect that fits inside the image. */
static int fit_inside(const struct bucket_config *c, int64_t W, int64_t H, struct bucket_size *out)
{
    int64_t step = c->step;
    if (W < step || H < step) {
        err_set("%" PRId64 "x%" PRId64 " is smaller than one step (%dx%d)", W, H, c->step, c->step);
        return -1;
    }
    int64_t max_w = W / step * step;
    /* The bucket's width is at most W and at least min_aspect * height. */
    double h_limit = (double)W / c->min_aspect;
    int64_t max_h = H / step * step;
    if ((double)max_h > h_limit)
        max_h = (int64_t)(h_limit / (double)step) * step;
    struct bucket_size best = {0, 0};
    double best_d = 0;
    for (int64_t bh = step; bh <= max_h; bh += step) {
        double wl = floor(c->max_aspect * (double)bh / (double)step) * (double)step;
        int64_t bw = wl < (double)max_w ? (int64_t)wl : max_w;
        if (bw < step || !aspect_ok(bw, bh, c->min_aspect, c->max_aspect))
            continue;
        struct bucket_size b = {(int)bw, (int)bh};
        double d = bucket_aspect_distance(b, (double)W, (double)H);
        int64_t area = bw * bh, best_area = (int64_t)best.width * best.height;
        if (best.width == 0 || area > best_area || (area == best_area && nearer(b, d, best, best_d))) {
            best = b;
            best_d = d;
        }
    }
    if (best.width == 0) {
        err_set("no bucket with an aspect within %g..%g fits inside %" PRId64 "x%" PRId64,
                c->min_aspect, c->max_aspect, W, H);
        return -1;
    }
    *out = best;
    return 0;
}

int bucket_assign(const struct bucket_set *s, int width, int height, const char *key,
                  struct bucket_assignment *out)
{
    const struct bucket_config *c = &s->config;
    if (c->center_crop_size) {
        bucket_adm(width, height, c->center_crop_size, out);
        return 0;
    }
    int64_t max_area = c->no_upscale ? (int64_t)width * height : INT64_MAX;
    long i = nearest_within(s, max_area, width, height);
    struct bucket_size b;
    if (i >= 0) {
        b = s->sizes[i];
    } else if (fit_inside(c, width, height, &b) != 0) {
        return -1;
    }
    bucket_place(s, width, height, b, key, out);
    return 0;
}

int bucket_parse_size(const char *text, struct bucket_size *out)
{
    long v[2] = {0, 0};
    const char *p = text;
    for (int k = 0; k < 2; k++) {
        if (*p < '0' || *p > '9')
            goto bad;
        while (*p >= '0' && *p <= '9') {
            v[k] = v[k] * 10 + (*p - '0');
            if (v[k] > BUCKET_MAX_SIDE) {
                err_set("'%s': a side is larger than %d", text, BUCKET_MAX_SIDE);
                return -1;
            }
            p++;
        }
        if (k == 0 && *p++ != 'x')
            goto bad;
    }
    if (*p)
        goto bad;
    if (v[0] == 0 || v[1] == 0) {
        err_set("'%s': a side is zero", text);
        return -1;
    }
    out->width = (int)v[0];
    out->height = (int)v[1];
    return 0;
bad:
    err_set("'%s' is not a size WxH", text);
    return -1;
}

int bucket_parse_list(const char *text, int step, struct bucket_size **out, size_t *n)
{
    struct bucket_size *v = NULL;
    size_t count = 0, cap = 0;
    char *copy = strdup(text);
    if (!copy) {
        err_set("out of memory");
        return -1;
    }
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma)
            *comma = '\0';
        struct bucket_size b;
        if (bucket_parse_size(item, &b) != 0)
            goto fail;
        if (step > 0 && (b.width % step || b.height % step)) {
            err_set("'%s': the sides must be multiples of --step %d", item, step);
            goto fail;
        }
        for (size_t i = 0; i < count; i++)
            if (v[i].width == b.width && v[i].height == b.height) {
                err_set("'%s' appears twice", item);
                goto fail;
            }
        if (push_size(&v, &count, &cap, b) != 0) {
            err_set("out of memory");
            goto fail;
        }
        if (!comma)
            break;
        item = comma + 1;
    }
    free(copy);
    *out = v;
    *n = count;
    return 0;
fail:
    free(copy);
    free(v);
    return -1;
}

long bucket_hist_find(const struct bucket_hist *h, struct bucket_size b)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->entries[i].size.width == b.width && h->entries[i].size.height == b.height)
            return (long)i;
    return -1;
}

int bucket_hist_add(struct bucket_hist *h, struct bucket_size b, uint64_t count)
{
    long i = bucket_hist_find(h, b);
    if (i >= 0) {
        h->entries[i].count += count;
        return 0;
    }
    if (h->n == h->cap) {
        size_t c = h->cap ? h->cap * 2 : 16;
        struct bucket_count *p = realloc(h->entries, c * sizeof *p);
        if (!p) {
            err_set("out of memory");
            return -1;
        }
        h->entries = p;
        h->cap = c;
    }
    h->entries[h->n++] = (struct bucket_count){b, count};
    return 0;
}

uint64_t bucket_hist_total(const struct bucket_hist *h)
{
    uint64_t t = 0;
    for (size_t i = 0; i < h->n; i++)
        t += h->entries[i].count;
    return t;
}

static int cmp_count(const void *a, const void *b)
{
    return cmp_aspect(&((const struct bucket_count *)a)->size, &((const struct bucket_count *)b)->size);
}

void bucket_hist_sort(struct bucket_hist *h)
{
    size_t k = 0;
    for (size_t i = 0; i < h->n; i++)
        if (h->entries[i].count)
            h->entries[k++] = h->entries[i];
    h->n = k;
    if (h->n)
        qsort(h->entries, h->n, sizeof *h->entries, cmp_count);
}

void bucket_hist_free(struct bucket_hist *h)
{
    free(h->entries);
    memset(h, 0, sizeof *h);
}

long bucket_merge_plan(const struct bucket_hist *h, uint64_t batch, long *target)
{
    if (h->n == 0)
        return 0;
    struct bucket_size *sizes = malloc(h->n * sizeof *sizes);
    unsigned char *big = malloc(h->n);
    if (!sizes || !big) {
        free(sizes);
        free(big);
        err_set("out of memory");
        return -1;
    }
    long n_big = 0;
    for (size_t i = 0; i < h->n; i++) {
        sizes[i] = h->entries[i].size;
        big[i] = h->entries[i].count >= batch;
        n_big += big[i];
    }
    for (size_t i = 0; i < h->n; i++)
        target[i] = big[i] || n_big == 0
                        ? -1
                        : bucket_nearest(sizes, h->n, big, sizes[i].width, sizes[i].height);
    free(sizes);
    free(big);
    return n_big;
}
