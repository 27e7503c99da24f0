/* Pillow-exact resampling of 8-bit RGB (see image_resize.h).
 *
 * The arithmetic follows Pillow's libImaging (Resample.c for the convolution
 * filters, Geometry.c's ImagingScaleAffine for NEAREST, _imaging.c's _resize for
 * the choice between them), step for step wherever the order of floating-point
 * operations or the rounding decides a byte: float box coordinates, the double
 * coefficients and their normalisation, the conversion to 22-bit fixed point,
 * the clip of the first pass before the second, the order of the passes.
 * Each output pixel depends on its own coefficients only, so a crop computes
 * just its own rows and columns (and the first pass just the lines they read)
 * and still gets the bytes of the full resize. Integer sums are
 * exact, so their order is free: the vertical pass accumulates a whole row at a
 * time, which vectorises, where Pillow walks down each column. */
#include "image/resize.h"

#include "libcommon/error.h"

#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* 8 bits of result, 2 bits of headroom for negative lobes and sums above 1. */
#define PRECISION_BITS (32 - 8 - 2)
#define HALF_UNIT (1 << (PRECISION_BITS - 1))

/* ---- the kernels, as Pillow writes them ------------------------------------ */

static double box_kernel(double x)
{
    return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
}

static double bilinear_kernel(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double hamming_kernel(double x)
{
    if (x < 0.0)
        x = -x;
    if (x == 0.0)
        return 1.0;
    if (x >= 1.0)
        return 0.0;
    x = x * M_PI;
    /* The float constants are Pillow's: they change the last bits. */
    return sin(x) / x * (0.54f + 0.46f * cos(x));
}

static double bicubic_kernel(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos_kernel(double x)
{
    /* Half-open like Pillow's: -3 is inside, 3 is not. */
    if (-3.0 <= x && x < 3.0)
        return sinc(x) * sinc(x / 3);
    return 0.0;
}

struct kernel {
    double (*fn)(double);
    double support;
};

static const struct kernel kernels[] = {
    [RESIZE_NEAREST] = {NULL, 0.0},
    [RESIZE_BOX] = {box_kernel, 0.5},
    [RESIZE_BILINEAR] = {bilinear_kernel, 1.0},
    [RESIZE_HAMMING] = {hamming_kernel, 1.0},
    [RESIZE_BICUBIC] = {bicubic_kernel, 2.0},
    [RESIZE_LANCZOS] = {lanczos_kernel, 3.0},
};

static const char *const filter_names[] = {
    [RESIZE_NEAREST] = "nearest", [RESIZE_BOX] = "box",         [RESIZE_BILINEAR] = "bilinear",
    [RESIZE_HAMMING] = "hamming", [RESIZE_BICUBIC] = "bicubic", [RESIZE_LANCZOS] = "lanczos",
};

#define N_FILTERS ((int)(sizeof filter_names / sizeof filter_names[0]))

int resize_filter_parse(const char *name, enum resize_filter *out)
{
    for (int i = 0; name && i < N_FILTERS; i++) {
        if (strcasecmp(name, filter_names[i]) == 0) {
            *out = (enum resize_filter)i;
            return 0;
        }
    }
    if (name && strcasecmp(name, "antialias") == 0) {
        *out = RESIZE_LANCZOS;
        return 0;
    }
    err_set("unknown resize filter '%s' (expected nearest, box, bilinear, hamming, bicubic or lanczos)",
            name ? name : "");
    return -1;
}

const char *resize_filter_name(enum resize_filter f)
{
    return ((int)f >= 0 && (int)f < N_FILTERS) ? filter_names[f] : "?";
}

/* ---- parallelism -------------------------------------------------------------- */

static atomic_long parallel_min_pixels = RESIZE_PARALLEL_MIN_PIXELS;

void image_resize_set_parallel_threshold(long pixels)
{
    atomic_store(&parallel_min_pixels, pixels > 0 ? pixels : RESIZE_PARALLEL_MIN_PIXELS);
}

static int want_parallel(int w, int h)
{
    return (long long)w * h >= (long long)atomic_load(&parallel_min_pixels);
}

/* ---- coefficients ---------------------------------------------------------------- */

/* One axis of Pillow's precompute_coeffs: in0 and in1 are the source region on
 * this axis (floats, as Pillow keeps them), out_size the resized length. */
struct axis {
    const struct kernel *kernel;
    int in_size;
    double in0, scale, support, inv_filterscale;
    int ksize; /* room for coefficients per output */
};

static void axis_init(struct axis *a, const struct kernel *kn, int in_size, float in0, float in1,
                      int out_size)
{
    /* The region's length is a float difference, as in Pillow. */
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    a->kernel = kn;
    a->in_size = in_size;
    a->in0 = in0;
    a->scale = scale;
    a->support = kn->support * filterscale;
    a->inv_filterscale = 1.0 / filterscale;
    a->ksize = (int)ceil(a->support) * 2 + 1;
}

/* Coefficients of outputs first .. first + n - 1 in 22-bit fixed point:
 * bounds[2i] is the first input, bounds[2i + 1] the number of inputs, and
 * k[i * ksize ..] their weights. tmp holds ksize doubles. */
static void axis_coeffs(const struct axis *a, int first, int n, int *bounds, int32_t *k, double *tmp)
{
    for (int i = 0; i < n; i++) {
        int xx = first + i;
        double center = a->in0 + (xx + 0.5) * a->scale;
        double ww = 0.0;
        int xmin = (int)(center - a->support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + a->support + 0.5);
        if (xmax > a->in_size)
            xmax = a->in_size;
        xmax -= xmin;
        if (xmax < 0)
            xmax = 0;
        for (int x = 0; x < xmax; x++) {
            double w = a->kernel->fn((x + xmin - center + 0.5) * a->inv_filterscale);
            tmp[x] = w;
            ww += w;
        }
        if (ww != 0.0)
            for (int x = 0; x < xmax; x++)
                tmp[x] /= ww;
        int32_t *kx = k + (size_t)i * a->ksize;
        for (int x = 0; x < xmax; x++)
            kx[x] = tmp[x] < 0 ? (int32_t)(-0.5 + tmp[x] * (1 << PRECISION_BITS))
                               : (int32_t)(0.5 + tmp[x] * (1 << PRECISION_BITS));
        for (int x = xmax; x < a->ksize; x++)
            kx[x] = 0;
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = xmax;
    }
}

/* ---- the two passes ------------------------------------------------------------- */

static inline uint8_t clip8(int32_t v)
{
    v >>= PRECISION_BITS; /* arithmetic shift, as Pillow's table lookup assumes */
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* rows x n pixels: out row y, pixel i = sum over the taps of in row y. */
static void pass_horizontal(const uint8_t *in, size_t in_stride, int rows, uint8_t *out,
                            size_t out_stride, int n, int ksize, const int *bounds,
                            const int32_t *kk, int parallel)
{
#pragma omp parallel for schedule(static) if (parallel)
    for (int y = 0; y < rows; y++) {
        const uint8_t *line = in + (size_t)y * in_stride;
        uint8_t *o = out + (size_t)y * out_stride;
        for (int i = 0; i < n; i++) {
            const uint8_t *p = line + (size_t)bounds[2 * i] * 3;
            const int32_t *k = kk + (size_t)i * ksize;
            int count = bounds[2 * i + 1];
            int32_t s0 = HALF_UNIT, s1 = HALF_UNIT, s2 = HALF_UNIT;
            for (int x = 0; x < count; x++) {
                s0 += p[3 * x + 0] * k[x];
                s1 += p[3 * x + 1] * k[x];
                s2 += p[3 * x + 2] * k[x];
            }
            o[3 * i + 0] = clip8(s0);
            o[3 * i + 1] = clip8(s1);
            o[3 * i + 2] = clip8(s2);
        }
    }
}

/* Columns are done in chunks so the accumulators stay on the stack. */
#define VCHUNK 768

/* n output rows of width3 bytes: out row i = sum over the taps of in rows. */
static void pass_vertical(const uint8_t *in, size_t in_stride, uint8_t *out, size_t out_stride,
                          int width3, int n, int ksize, const int *bounds, const int32_t *kk,
                          int parallel)
{
#pragma omp parallel for schedule(static) if (parallel)
    for (int i = 0; i < n; i++) {
        int32_t acc[VCHUNK];
        const int32_t *k = kk + (size_t)i * ksize;
        const uint8_t *base = in + (size_t)bounds[2 * i] * in_stride;
        int count = bounds[2 * i + 1];
        uint8_t *o = out + (size_t)i * out_stride;
        for (int c0 = 0; c0 < width3; c0 += VCHUNK) {
            int m = width3 - c0 < VCHUNK ? width3 - c0 : VCHUNK;
            for (int j = 0; j < m; j++)
                acc[j] = HALF_UNIT;
            for (int y = 0; y < count; y++) {
                const uint8_t *row = base + (size_t)y * in_stride + c0;
                int32_t w = k[y];
                for (int j = 0; j < m; j++)
                    acc[j] += row[j] * w;
            }
            for (int j = 0; j < m; j++)
                o[c0 + j] = clip8(acc[j]);
        }
    }
}

/* ---- scratch ---------------------------------------------------------------------- */

#define SCRATCH_ALIGN 64

static size_t align_up(size_t n)
{
    return (n + SCRATCH_ALIGN - 1) & ~(size_t)(SCRATCH_ALIGN - 1);
}

/* An upper bound on ksize for any filter and box: Lanczos's support 3 is the widest. */
static size_t ksize_bound(int in, int out)
{
    long long c = (3LL * in + out - 1) / out; /* ceil(3 in / out) */
    if (c < 3)
        c = 3;
    return (size_t)(2 * (c + 1) + 1); /* + 1: the double rounding of the support */
}

static int sizes_ok(int sw, int sh, int dw, int dh)
{
    return sw >= 1 && sh >= 1 && dw >= 1 && dh >= 1 && sw <= RESIZE_MAX_SIDE &&
           sh <= RESIZE_MAX_SIDE && dw <= RESIZE_MAX_SIDE && dh <= RESIZE_MAX_SIDE;
}

size_t resize_scratch_size(int sw, int sh, int dw, int dh)
{
    if (!sizes_ok(sw, sh, dw, dh))
        return 0;
    size_t kh = ksize_bound(sw, dw), kv = ksize_bound(sh, dh);
    return align_up((size_t)dw * kh * sizeof(int32_t)) + align_up((size_t)dw * 2 * sizeof(int)) +
           align_up((size_t)dh * kv * sizeof(int32_t)) + align_up((size_t)dh * 2 * sizeof(int)) +
           align_up((kh > kv ? kh : kv) * sizeof(double)) +
           align_up(((size_t)dw * sh > (size_t)sw * dh ? (size_t)dw * sh : (size_t)sw * dh) * 3) +
           SCRATCH_ALIGN;
}

/* Hands out aligned pieces of one block. */
struct carve {
    unsigned char *p;
};

static void *carve_take(struct carve *c, size_t bytes)
{
    void *r = c->p;
    c->p += align_up(bytes);
    return r;
}

/* ---- the resampler ------------------------------------------------------------------- */

static void copy_region(const uint8_t *src, int sw, int x0, int y0, int cw, int ch, uint8_t *dst)
{
    for (int y = 0; y < ch; y++)
        memcpy(dst + (size_t)y * cw * 3, src + ((size_t)(y0 + y) * sw + x0) * 3, (size_t)cw * 3);
}

/* Pillow's COORD: truncation, with every negative position outside. */
static int coord(double v)
{
    return v < 0.0 ? -1 : (int)v;
}

/* ImagingScaleAffine with fill: each position advances by repeated addition. */
static void resample_nearest(const uint8_t *src, int sw, int sh, const float box[4], int dw, int dh,
                             int cx, int cy, int cw, int ch, uint8_t *dst, int *xtab)
{
    double a0 = (double)(box[2] - box[0]) / dw;
    double a4 = (double)(box[3] - box[1]) / dh;
    double xo = (double)box[0] + a0 * 0.5;
    double yo = (double)box[1] + a4 * 0.5;
    for (int x = 0; x < cx + cw; x++) {
        if (x >= cx) {
            int xin = coord(xo);
            xtab[x - cx] = (xin >= 0 && xin < sw) ? xin : -1;
        }
        xo += a0;
    }
    for (int y = 0; y < cy + ch; y++) {
        if (y >= cy) {
            int yi = coord(yo);
            uint8_t *o = dst + (size_t)(y - cy) * cw * 3;
            if (yi >= 0 && yi < sh) {
                const uint8_t *row = src + (size_t)yi * sw * 3;
                for (int i = 0; i < cw; i++) {
                    if (xtab[i] >= 0)
                        memcpy(o + 3 * i, row + (size_t)xtab[i] * 3, 3);
                    else
                        memset(o + 3 * i, 0, 3);
                }
            } else {
                memset(o, 0, (size_t)cw * 3);
            }
        }
        yo += a4;
    }
}

/* PIL.Image.resize((dw, dh), f, box) cropped to (cx, cy, cw, ch): the sizes,
 * box and crop are already checked; scratch holds resize_scratch_size(sw, sh,
 * dw, dh) bytes. */
static void resample(const uint8_t *src, int sw, int sh, const float box[4], enum resize_filter f,
                     int dw, int dh, int cx, int cy, int cw, int ch, uint8_t *dst, void *scratch)
{
    /* _resize: an integer box of the output's size is a crop. */
    if (box[0] - (int)box[0] == 0 && box[2] - box[0] == dw && box[1] - (int)box[1] == 0 &&
        box[3] - box[1] == dh) {
        copy_region(src, sw, (int)box[0] + cx, (int)box[1] + cy, cw, ch, dst);
        return;
    }
    struct carve c = {(unsigned char *)(((uintptr_t)scratch + SCRATCH_ALIGN - 1) &
                                        ~(uintptr_t)(SCRATCH_ALIGN - 1))};
    if (f == RESIZE_NEAREST) {
        int *xtab = carve_take(&c, (size_t)cw * sizeof(int));
        resample_nearest(src, sw, sh, box, dw, dh, cx, cy, cw, ch, dst, xtab);
        return;
    }

    const struct kernel *kn = &kernels[f];
    int need_h = dw != sw || box[0] != 0 || box[2] != dw;
    int need_v = dh != sh || box[1] != 0 || box[3] != dh;
    /* Pillow 13 runs the vertical pass first when the height loses more than
     * twice as many pixels as the width (whatever the box); the order shows in
     * the bytes, since the first pass is clipped to 8 bits. Found by probing
     * Pillow 13.0 on thousands of random sizes and boxes: no exception. */
    int horizontal_first = !(dh < sh && (long long)sh - dh > 2LL * ((long long)sw - dw));
    int parallel = want_parallel(cw, ch);
    struct axis ah, av;
    axis_init(&ah, kn, sw, box[0], box[2], dw);
    axis_init(&av, kn, sh, box[1], box[3], dh);
    int32_t *kh = carve_take(&c, (size_t)cw * ah.ksize * sizeof(int32_t));
    int *bh = carve_take(&c, (size_t)cw * 2 * sizeof(int));
    int32_t *kv = carve_take(&c, (size_t)ch * av.ksize * sizeof(int32_t));
    int *bv = carve_take(&c, (size_t)ch * 2 * sizeof(int));
    double *tmp = carve_take(&c, (size_t)(ah.ksize > av.ksize ? ah.ksize : av.ksize) * sizeof(double));
    if (need_h)
        axis_coeffs(&ah, cx, cw, bh, kh, tmp);
    if (need_v)
        axis_coeffs(&av, cy, ch, bv, kv, tmp);

    if (!need_h && !need_v) { /* unreachable: the crop test above catches it */
        copy_region(src, sw, cx, cy, cw, ch, dst);
        return;
    }
    if (!need_v) {
        /* Rows map one to one: the crop's rows go through the horizontal pass. */
        pass_horizontal(src + (size_t)cy * sw * 3, (size_t)sw * 3, ch, dst, (size_t)cw * 3, cw,
                        ah.ksize, bh, kh, parallel);
        return;
    }
    if (!need_h) {
        /* Columns map one to one: the crop's columns come straight from the source. */
        pass_vertical(src + (size_t)cx * 3, (size_t)sw * 3, dst, (size_t)cw * 3, cw * 3, ch,
                      av.ksize, bv, kv, parallel);
        return;
    }
    if (horizontal_first) {
        /* Only the source rows the output rows read go through the first pass. */
        int first = bv[0], last = bv[2 * (ch - 1)] + bv[2 * (ch - 1) + 1];
        for (int i = 0; i < ch; i++)
            bv[2 * i] -= first;
        int rows = last > first ? last - first : 1;
        uint8_t *mid = carve_take(&c, (size_t)cw * rows * 3);
        pass_horizontal(src + (size_t)first * sw * 3, (size_t)sw * 3, last - first, mid,
                        (size_t)cw * 3, cw, ah.ksize, bh, kh, parallel);
        pass_vertical(mid, (size_t)cw * 3, dst, (size_t)cw * 3, cw * 3, ch, av.ksize, bv, kv,
                      parallel);
    } else {
        /* Only the source columns the output columns read go through the first pass. */
        int first = bh[0], last = bh[2 * (cw - 1)] + bh[2 * (cw - 1) + 1];
        for (int i = 0; i < cw; i++)
            bh[2 * i] -= first;
        int cols = last > first ? last - first : 1;
        uint8_t *mid = carve_take(&c, (size_t)cols * ch * 3);
        pass_vertical(src + (size_t)first * 3, (size_t)sw * 3, mid, (size_t)cols * 3,
                      (last - first) * 3, ch, av.ksize, bv, kv, parallel);
        pass_horizontal(mid, (size_t)cols * 3, ch, dst, (size_t)cw * 3, cw, ah.ksize, bh, kh,
                        parallel);
    }
}

/* ---- the public entry points ------------------------------------------------------------ */

static int check_common(const uint8_t *src, int sw, int sh, const uint8_t *dst, int dw, int dh,
                        enum resize_filter f)
{
    if (!sizes_ok(sw, sh, dw, dh)) {
        err_set("resize %dx%d -> %dx%d: sizes must be 1 to %d", sw, sh, dw, dh, RESIZE_MAX_SIDE);
        return -1;
    }
    if ((int)f < 0 || (int)f >= N_FILTERS) {
        err_set("resize %dx%d -> %dx%d: unknown filter %d", sw, sh, dw, dh, (int)f);
        return -1;
    }
    if (!src || !dst) {
        err_set("resize %dx%d -> %dx%d: no pixels", sw, sh, dw, dh);
        return -1;
    }
    return 0;
}

/* Runs resample with the caller's scratch or a block of our own. */
static int run(const uint8_t *src, int sw, int sh, const float box[4], enum resize_filter f, int dw,
               int dh, int cx, int cy, int cw, int ch, uint8_t *dst, void *scratch)
{
    void *own = NULL;
    if (!scratch) {
        own = malloc(resize_scratch_size(sw, sh, dw, dh));
        if (!own) {
            err_set("resize %dx%d -> %dx%d: out of memory", sw, sh, dw, dh);
            return -1;
        }
        scratch = own;
    }
    resample(src, sw, sh, box, f, dw, dh, cx, cy, cw, ch, dst, scratch);
    free(own);
    return 0;
}

int image_resize_rgb8_scratch(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                              enum resize_filter f, void *scratch)
{
    if (check_common(src, sw, sh, dst, dw, dh, f) != 0)
        return -1;
    const float box[4] = {0.0f, 0.0f, (float)sw, (float)sh};
    return run(src, sw, sh, box, f, dw, dh, 0, 0, dw, dh, dst, scratch);
}

int image_resize_rgb8(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                      enum resize_filter f)
{
    return image_resize_rgb8_scratch(src, sw, sh, dst, dw, dh, f, NULL);
}

int image_resize_box_rgb8(const uint8_t *src, int sw, int sh, const double box[4], uint8_t *dst,
                          int dw, int dh, enum resize_filter f)
{
    if (check_common(src, sw, sh, dst, dw, dh, f) != 0)
        return -1;
    float b[4];
    for (int i = 0; i < 4; i++) {
        if (!isfinite(box[i])) {
            err_set("resize %dx%d -> %dx%d: box value %d is not a number", sw, sh, dw, dh, i);
            return -1;
        }
        b[i] = (float)box[i];
    }
    /* _resize's checks, in float like Pillow's. */
    if (b[0] < 0 || b[1] < 0 || b[2] > sw || b[3] > sh || b[2] - b[0] < 0 || b[3] - b[1] < 0) {
        err_set("resize %dx%d -> %dx%d: box (%g, %g, %g, %g) is not inside the image or is empty",
                sw, sh, dw, dh, box[0], box[1], box[2], box[3]);
        return -1;
    }
    return run(src, sw, sh, b, f, dw, dh, 0, 0, dw, dh, dst, NULL);
}

int image_resize_crop_scratch(const uint8_t *src, int sw, int sh, enum resize_filter f, int rw,
                              int rh, int left, int top, int cw, int ch, uint8_t *dst,
                              void *scratch)
{
    if (check_common(src, sw, sh, dst, rw, rh, f) != 0)
        return -1;
    if (left < 0 || top < 0 || cw < 1 || ch < 1 || cw > rw - left || ch > rh - top) {
        err_set("resize %dx%d -> %dx%d: crop %dx%d at (%d, %d) is not inside the resized image",
                sw, sh, rw, rh, cw, ch, left, top);
        return -1;
    }
    const float box[4] = {0.0f, 0.0f, (float)sw, (float)sh};
    return run(src, sw, sh, box, f, rw, rh, left, top, cw, ch, dst, scratch);
}

int image_resize_crop(const uint8_t *src, int sw, int sh, enum resize_filter f, int rw, int rh,
                      int left, int top, int cw, int ch, uint8_t *dst)
{
    return image_resize_crop_scratch(src, sw, sh, f, rw, rh, left, top, cw, ch, dst, NULL);
}

/* ---- the ADM recipe ----------------------------------------------------------------------- */

int image_center_crop_adm_plan(int sw, int sh, int n, struct resize_adm_plan *p)
{
    if (sw < 1 || sh < 1 || sw > RESIZE_MAX_SIDE || sh > RESIZE_MAX_SIDE || n < 1 ||
        n > RESIZE_MAX_SIDE) {
        err_set("center crop %dx%d to %d: sizes must be 1 to %d", sw, sh, n, RESIZE_MAX_SIDE);
        return -1;
    }
    int w = sw, h = sh, k = 0;
    while ((w < h ? w : h) >= 2LL * n) {
        w /= 2;
        h /= 2;
        k++;
    }
    double scale = (double)n / (double)(w < h ? w : h);
    /* Python's round() of a float: to nearest, ties to even; so is nearbyint
     * in the default rounding mode. */
    double rw = nearbyint((double)w * scale), rh = nearbyint((double)h * scale);
    if (rw > RESIZE_MAX_SIDE || rh > RESIZE_MAX_SIDE) {
        err_set("center crop %dx%d to %d: the resize to %.0fx%.0f is larger than %d", sw, sh, n, rw,
                rh, RESIZE_MAX_SIDE);
        return -1;
    }
    p->halvings = k;
    p->half_width = w;
    p->half_height = h;
    p->resize_width = (int)rw;
    p->resize_height = (int)rh;
    p->crop_left = (p->resize_width - n) / 2;
    p->crop_top = (p->resize_height - n) / 2;
    return 0;
}

int image_center_crop_adm(const uint8_t *src, int sw, int sh, uint8_t *dst, int n)
{
    struct resize_adm_plan p;
    if (image_center_crop_adm_plan(sw, sh, n, &p) != 0)
        return -1;
    if (!src || !dst) {
        err_set("center crop %dx%d to %d: no pixels", sw, sh, n);
        return -1;
    }
    /* One scratch for every step, and two images to halve between. */
    size_t need = resize_scratch_size(p.half_width, p.half_height, p.resize_width, p.resize_height);
    size_t half_bytes[2] = {0, 0};
    int w = sw, h = sh;
    for (int i = 0; i < p.halvings; i++) {
        size_t s = resize_scratch_size(w, h, w / 2, h / 2);
        need = s > need ? s : need;
        if (i < 2)
            half_bytes[i] = (size_t)(w / 2) * (h / 2) * 3;
        w /= 2;
        h /= 2;
    }
    void *scratch = malloc(need);
    uint8_t *half[2] = {half_bytes[0] ? malloc(half_bytes[0]) : NULL,
                        half_bytes[1] ? malloc(half_bytes[1]) : NULL};
    if (!scratch || (half_bytes[0] && !half[0]) || (half_bytes[1] && !half[1])) {
        free(scratch);
        free(half[0]);
        free(half[1]);
        err_set("center crop %dx%d to %d: out of memory", sw, sh, n);
        return -1;
    }
    const uint8_t *cur = src;
    w = sw;
    h = sh;
    for (int i = 0; i < p.halvings; i++) {
        /* Each halving is smaller than the one two steps before, so two buffers do. */
        uint8_t *out = half[i & 1];
        const float box[4] = {0.0f, 0.0f, (float)w, (float)h};
        resample(cur, w, h, box, RESIZE_BOX, w / 2, h / 2, 0, 0, w / 2, h / 2, out, scratch);
        cur = out;
        w /= 2;
        h /= 2;
    }
    const float box[4] = {0.0f, 0.0f, (float)w, (float)h};
    resample(cur, w, h, box, RESIZE_BICUBIC, p.resize_width, p.resize_height, p.crop_left,
             p.crop_top, n, n, dst, scratch);
    free(scratch);
    free(half[0]);
    free(half[1]);
    return 0;
}
