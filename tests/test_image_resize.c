/* Pillow-exact resizing against the goldens of tests/reference/make_resize_goldens.py */
#include "tests/harness.h"
#include "image/resize.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"
#include "libcommon/json.h"

#include <limits.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>

#define RESIZE_DIR "fixtures/resize/"

/* ---- the synthetic sources (make_resize_goldens.py source(), integer for integer) ---- */

static uint32_t mix32(uint32_t v)
{
    v ^= v >> 16;
    v *= 0x7FEB352Du;
    v ^= v >> 15;
    v *= 0x846CA68Bu;
    v ^= v >> 16;
    return v;
}

static int max1(int v)
{
    return v > 1 ? v : 1;
}

static uint8_t *resize_test_source(int w, int h, uint32_t seed)
{
    uint8_t *img = malloc((size_t)w * h * 3);
    int m = w < h ? w : h;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            long r = (long)x * 255 / max1(w - 1), g = (long)y * 255 / max1(h - 1);
            long b = (long)(x + 2 * y) * 255 / max1(w - 1 + 2 * (h - 1));
            long px[3] = {r, g, b};
            if (x >= w / 5 && x < w / 5 + w / 4 && y >= h / 4 && y < h / 4 + h / 3) {
                px[0] = 255 - r;
                px[1] = 32;
                px[2] = 240;
            }
            long dx = 4L * x - 3L * w, dy = 4L * y - 2L * h;
            if (dx * dx + dy * dy < (long)m * m) {
                px[0] = 250;
                px[1] = 200 - g / 2;
                px[2] = 16;
            }
            if (x >= w / 2 && x < w / 2 + w / 6 && y >= 2 * h / 3 && y < 2 * h / 3 + h / 5) {
                long v = ((x / 2 + y / 2) % 2 == 1) ? 255 : 0;
                px[0] = px[1] = px[2] = v;
            }
            if (x == w / 3)
                px[0] = px[1] = px[2] = 255;
            if (y == h / 2)
                px[0] = px[1] = px[2] = 0;
            uint8_t *o = img + ((size_t)y * w + x) * 3;
            for (int c = 0; c < 3; c++) {
                if (x >= 7 * w / 8 && y < h / 8) {
                    uint32_t v = ((uint32_t)x * 73856093u) ^ ((uint32_t)y * 19349663u) ^
                                 ((uint32_t)c * 83492791u) ^ (seed * 2654435761u);
                    px[c] = mix32(v) & 255;
                }
                o[c] = (uint8_t)px[c];
            }
        }
    }
    return img;
}

/* ---- goldens ------------------------------------------------------------------------ */

/* A PNG fixture decoded to RGB8; NULL (and a test failure) when unreadable. */
static uint8_t *read_png(const char *rel, int *w, int *h)
{
    size_t size;
    char *data = test_read_file(test_source_path(rel), &size);
    if (!data) {
        test_fail(__FILE__, __LINE__, "cannot read %s", rel);
        return NULL;
    }
    spng_ctx *ctx = spng_ctx_new(0);
    struct spng_ihdr ihdr;
    size_t out_size = 0;
    uint8_t *out = NULL;
    if (ctx && spng_set_png_buffer(ctx, data, size) == 0 && spng_get_ihdr(ctx, &ihdr) == 0 &&
        spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &out_size) == 0) {
        out = malloc(out_size);
        if (spng_decode_image(ctx, out, out_size, SPNG_FMT_RGB8, 0) != 0) {
            free(out);
            out = NULL;
        } else {
            *w = (int)ihdr.width;
            *h = (int)ihdr.height;
        }
    }
    spng_ctx_free(ctx);
    free(data);
    if (!out)
        test_fail(__FILE__, __LINE__, "cannot decode %s", rel);
    return out;
}

static int int_at(json_t *arr, size_t i)
{
    return (int)json_integer_value(json_array_get(arr, i));
}

struct tally {
    int cases, exact, digests;
    long long pixels, sum_diff;
    int max_diff;
    double worst_mean;
};

/* Compares out[w x h] with the case's golden (the whole output, or a sample
 * on the stride grid plus the xxh3-128 of the whole output). */
static void compare_golden(json_t *c, const uint8_t *out, int w, int h, struct tally *t)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    json_t *stride = json_object_get(c, "stride");
    int sx = int_at(stride, 0), sy = int_at(stride, 1);
    char rel[256];
    snprintf(rel, sizeof rel, RESIZE_DIR "%s.png", name);
    int gw = 0, gh = 0;
    uint8_t *g = read_png(rel, &gw, &gh);
    if (!g)
        return;
    CHECK_INT(gw, (w + sx - 1) / sx);
    CHECK_INT(gh, (h + sy - 1) / sy);
    int max = 0;
    long long sum = 0, n = 0;
    for (int y = 0; y < gh && y * sy < h; y++) {
        for (int x = 0; x < gw && x * sx < w; x++) {
            for (int ch = 0; ch < 3; ch++) {
                int d = abs((int)out[((size_t)y * sy * w + (size_t)x * sx) * 3 + ch] -
                            (int)g[((size_t)y * gw + x) * 3 + ch]);
                max = d > max ? d : max;
                sum += d;
                n++;
            }
        }
    }
    free(g);
    double mean = n ? (double)sum / (double)n : 0.0;
    int digest_ok = 1;
    const char *hex = json_string_value(json_object_get(c, "xxh128"));
    if (hex) {
        struct hash128 want, got = hash_buffer(out, (size_t)w * h * 3);
        CHECK_INT(hash_parse_hex(hex, &want), 0);
        digest_ok = hash_equal(want, got);
        t->digests++;
    }
    /* The bound, then the exact parity this implementation reaches. */
    if (max > 3 || mean > 1.0)
        test_fail(__FILE__, __LINE__, "%s: beyond the bound: max diff %d, mean %.4f", name, max,
                  mean);
    if (max != 0 || !digest_ok)
        test_fail(__FILE__, __LINE__, "%s: not exact: max diff %d, mean %.4f over %lld values%s",
                  name, max, mean, n, digest_ok ? "" : ", whole-output digest differs");
    t->cases++;
    t->exact += max == 0 && digest_ok;
    t->pixels += n;
    t->sum_diff += sum;
    t->max_diff = max > t->max_diff ? max : t->max_diff;
    t->worst_mean = mean > t->worst_mean ? mean : t->worst_mean;
}

static json_t *load_cases(void)
{
    json_t *doc = json_read_file(test_source_path(RESIZE_DIR "cases.json"));
    if (!doc)
        test_fail(__FILE__, __LINE__, "%s", err_get());
    return doc;
}

/* Runs every case of one op ("resize", "resize_crop", "adm") and reports. */
static void run_goldens(const char *op)
{
    json_t *doc = load_cases();
    if (!doc)
        return;
    struct tally t = {0};
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(doc, "cases"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "op")), op) != 0)
            continue;
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *src_spec = json_object_get(c, "src");
        int sw = int_at(src_spec, 0), sh = int_at(src_spec, 1);
        uint8_t *src = resize_test_source(sw, sh, (uint32_t)int_at(src_spec, 2));
        enum resize_filter f;
        CHECK_INT(resize_filter_parse(json_string_value(json_object_get(c, "filter")), &f), 0);
        json_t *outsz = json_object_get(c, "out");
        int ow = int_at(outsz, 0), oh = int_at(outsz, 1);
        uint8_t *out = malloc((size_t)ow * oh * 3);
        json_t *size = json_object_get(c, "size");
        json_t *box = json_object_get(c, "box");
        int rc = -1;
        if (!strcmp(op, "resize") && box) {
            double b[4];
            for (int k = 0; k < 4; k++)
                b[k] = json_number_value(json_array_get(box, k));
            rc = image_resize_box_rgb8(src, sw, sh, b, out, ow, oh, f);
        } else if (!strcmp(op, "resize")) {
            CHECK_INT(int_at(size, 0), ow);
            CHECK_INT(int_at(size, 1), oh);
            rc = image_resize_rgb8(src, sw, sh, out, ow, oh, f);
        } else if (!strcmp(op, "resize_crop")) {
            json_t *crop = json_object_get(c, "crop");
            CHECK_INT(int_at(crop, 2), ow);
            CHECK_INT(int_at(crop, 3), oh);
            rc = image_resize_crop(src, sw, sh, f, int_at(size, 0), int_at(size, 1),
                                   int_at(crop, 0), int_at(crop, 1), ow, oh, out);
        } else {
            int n = (int)json_integer_value(json_object_get(c, "n"));
            CHECK_INT(ow, n);
            CHECK_INT(oh, n);
            struct resize_adm_plan p;
            CHECK_INT(image_center_crop_adm_plan(sw, sh, n, &p), 0);
            json_t *adm = json_object_get(c, "adm");
            CHECK_INT(p.halvings, json_integer_value(json_object_get(adm, "halvings")));
            CHECK_INT(p.half_width, int_at(json_object_get(adm, "half"), 0));
            CHECK_INT(p.half_height, int_at(json_object_get(adm, "half"), 1));
            CHECK_INT(p.resize_width, int_at(json_object_get(adm, "resize"), 0));
            CHECK_INT(p.resize_height, int_at(json_object_get(adm, "resize"), 1));
            CHECK_INT(p.crop_left, int_at(json_object_get(adm, "crop"), 0));
            CHECK_INT(p.crop_top, int_at(json_object_get(adm, "crop"), 1));
            rc = image_center_crop_adm(src, sw, sh, out, n);
        }
        if (rc != 0)
            test_fail(__FILE__, __LINE__, "%s: %s", name, err_get());
        else
            compare_golden(c, out, ow, oh, &t);
        free(out);
        free(src);
    }
    printf("    %s goldens (Pillow %s): %d cases, %d exact (%d by whole-output digest); %lld "
           "values compared, max diff %d, mean %.4f (worst case mean %.4f)\n",
           op, json_string_value(json_object_get(doc, "pillow")), t.cases, t.exact, t.digests,
           t.pixels, t.max_diff, t.pixels ? (double)t.sum_diff / (double)t.pixels : 0.0,
           t.worst_mean);
    CHECK(t.cases > 0);
    json_decref(doc);
}

TEST(resize_matches_pillow_goldens)
{
    run_goldens("resize");
}

TEST(resize_crop_matches_pillow_resize_then_crop)
{
    run_goldens("resize_crop");
}

TEST(center_crop_adm_matches_guided_diffusion_recipe)
{
    run_goldens("adm");
}

/* ---- behaviour -------------------------------------------------------------------------- */

TEST(resize_filter_names_round_trip)
{
    static const char *const names[] = {"nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"};
    for (int i = 0; i < 6; i++) {
        enum resize_filter f;
        CHECK_INT(resize_filter_parse(names[i], &f), 0);
        CHECK_INT(f, i);
        CHECK_STR(resize_filter_name(f), names[i]);
    }
    enum resize_filter f = RESIZE_NEAREST;
    CHECK_INT(resize_filter_parse("BiCubic", &f), 0);
    CHECK_INT(f, RESIZE_BICUBIC);
    CHECK_INT(resize_filter_parse("antialias", &f), 0);
    CHECK_INT(f, RESIZE_LANCZOS);
    CHECK_INT(resize_filter_parse("cubicish", &f), -1);
    CHECK_CONTAINS(err_get(), "unknown resize filter 'cubicish'");
    CHECK_INT(f, RESIZE_LANCZOS);
    CHECK_STR(resize_filter_name((enum resize_filter)42), "?");
}

TEST(resize_rejects_bad_arguments)
{
    uint8_t src[4 * 3 * 3] = {0}, dst[64 * 3];
    CHECK_INT(image_resize_rgb8(src, 4, 3, dst, 0, 2, RESIZE_BICUBIC), -1);
    CHECK_CONTAINS(err_get(), "resize 4x3 -> 0x2");
    CHECK_INT(image_resize_rgb8(src, 4, 3, dst, 2, RESIZE_MAX_SIDE + 1, RESIZE_BICUBIC), -1);
    CHECK_INT(image_resize_rgb8(src, -4, 3, dst, 2, 2, RESIZE_BICUBIC), -1);
    CHECK_INT(image_resize_rgb8(src, 4, 3, dst, 2, 2, (enum resize_filter)9), -1);
    CHECK_CONTAINS(err_get(), "unknown filter 9");
    CHECK_INT(image_resize_crop(src, 4, 3, RESIZE_BICUBIC, 8, 6, 5, 0, 4, 4, dst), -1);
    CHECK_CONTAINS(err_get(), "crop 4x4 at (5, 0) is not inside the resized image");
    CHECK_INT(image_resize_crop(src, 4, 3, RESIZE_BICUBIC, 8, 6, -1, 0, 4, 4, dst), -1);
    CHECK_INT(image_resize_crop(src, 4, 3, RESIZE_BICUBIC, 8, 6, 0, 0, 0, 4, dst), -1);
    CHECK_INT(image_resize_crop(src, 4, 3, RESIZE_BICUBIC, 8, 6, 0, 0, 8, 6, dst), 0);
    const double outside[4] = {0, 0, 4.5, 3}, reversed[4] = {3, 0, 1, 3}, nan_box[4] = {0, 0, NAN, 3};
    CHECK_INT(image_resize_box_rgb8(src, 4, 3, outside, dst, 2, 2, RESIZE_BICUBIC), -1);
    CHECK_CONTAINS(err_get(), "is not inside the image or is empty");
    CHECK_INT(image_resize_box_rgb8(src, 4, 3, reversed, dst, 2, 2, RESIZE_BICUBIC), -1);
    CHECK_INT(image_resize_box_rgb8(src, 4, 3, nan_box, dst, 2, 2, RESIZE_BICUBIC), -1);
    CHECK_CONTAINS(err_get(), "not a number");
    struct resize_adm_plan p;
    CHECK_INT(image_center_crop_adm_plan(4, 3, 0, &p), -1);
    CHECK_CONTAINS(err_get(), "center crop 4x3 to 0");
    CHECK_INT(image_center_crop_adm(src, 0, 3, dst, 2), -1);
    /* A sliver made square: the long side would pass the limit. */
    CHECK_INT(image_center_crop_adm_plan(RESIZE_MAX_SIDE, 1, 256, &p), -1);
    CHECK_CONTAINS(err_get(), "is larger than");
    CHECK_INT((long long)resize_scratch_size(0, 1, 1, 1), 0);
}

/* A tiny deterministic generator for sizes and crops. */
static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

TEST(resize_crop_equals_full_resize_then_crop)
{
    uint32_t s = 12345;
    for (int iter = 0; iter < 60; iter++) {
        int sw = 1 + (int)(lcg(&s) % 90), sh = 1 + (int)(lcg(&s) % 70);
        int rw = 1 + (int)(lcg(&s) % 120), rh = 1 + (int)(lcg(&s) % 120);
        if (iter % 5 == 0)
            rw = sw; /* one axis only */
        if (iter % 7 == 0)
            rh = sh;
        enum resize_filter f = (enum resize_filter)(iter % 6);
        int cw = 1 + (int)(lcg(&s) % rw), ch = 1 + (int)(lcg(&s) % rh);
        int left = (int)(lcg(&s) % (rw - cw + 1)), top = (int)(lcg(&s) % (rh - ch + 1));
        uint8_t *src = resize_test_source(sw, sh, (uint32_t)iter);
        uint8_t *full = malloc((size_t)rw * rh * 3), *crop = malloc((size_t)cw * ch * 3);
        CHECK_INT(image_resize_rgb8(src, sw, sh, full, rw, rh, f), 0);
        CHECK_INT(image_resize_crop(src, sw, sh, f, rw, rh, left, top, cw, ch, crop), 0);
        int same = 1;
        for (int y = 0; y < ch; y++)
            same &= !memcmp(crop + (size_t)y * cw * 3, full + ((size_t)(top + y) * rw + left) * 3,
                            (size_t)cw * 3);
        if (!same)
            test_fail(__FILE__, __LINE__, "%dx%d -> %dx%d %s, crop %dx%d at (%d, %d) differs", sw,
                      sh, rw, rh, resize_filter_name(f), cw, ch, left, top);
        free(src);
        free(full);
        free(crop);
    }
}

TEST(resize_scratch_is_enough_and_reusable)
{
    /* Exactly resize_scratch_size bytes, so ASan sees any use past the end; the
     * widest kernels (Lanczos, strong reduction) and the box argument too. */
    static const int cases[][4] = {{640, 427, 7, 5}, {97, 61, 194, 122}, {1, 1, 4, 3},
                                   {300, 2, 1, 1},   {2, 300, 2, 7},     {33, 50, 33, 20}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int sw = cases[i][0], sh = cases[i][1], dw = cases[i][2], dh = cases[i][3];
        uint8_t *src = resize_test_source(sw, sh, 9);
        uint8_t *a = malloc((size_t)dw * dh * 3), *b = malloc((size_t)dw * dh * 3);
        void *scratch = malloc(resize_scratch_size(sw, sh, dw, dh));
        for (int f = 0; f < 6; f++) {
            CHECK_INT(image_resize_rgb8(src, sw, sh, a, dw, dh, (enum resize_filter)f), 0);
            CHECK_INT(image_resize_rgb8_scratch(src, sw, sh, b, dw, dh, (enum resize_filter)f,
                                                scratch),
                      0);
            CHECK(!memcmp(a, b, (size_t)dw * dh * 3));
            CHECK_INT(image_resize_crop_scratch(src, sw, sh, (enum resize_filter)f, dw, dh, 0, 0,
                                                dw, dh, b, scratch),
                      0);
            CHECK(!memcmp(a, b, (size_t)dw * dh * 3));
        }
        free(scratch);
        free(src);
        free(a);
        free(b);
    }
}

TEST(resize_same_size_is_a_copy_and_box_crop_is_a_crop)
{
    uint8_t *src = resize_test_source(37, 23, 1);
    uint8_t out[37 * 23 * 3];
    for (int f = 0; f < 6; f++) {
        CHECK_INT(image_resize_rgb8(src, 37, 23, out, 37, 23, (enum resize_filter)f), 0);
        CHECK(!memcmp(out, src, sizeof out));
    }
    /* An integer box of the output's size: Pillow crops. */
    const double box[4] = {5, 4, 25, 14};
    CHECK_INT(image_resize_box_rgb8(src, 37, 23, box, out, 20, 10, RESIZE_LANCZOS), 0);
    for (int y = 0; y < 10; y++)
        CHECK(!memcmp(out + (size_t)y * 20 * 3, src + ((size_t)(4 + y) * 37 + 5) * 3, 20 * 3));
    free(src);
}

TEST(resize_constant_image_stays_constant)
{
    /* Weights sum to one in fixed point up to rounding: a flat image stays flat
     * through every filter, up and down (a check independent of Pillow). */
    uint8_t src[40 * 30 * 3];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 255 : 77);
    uint8_t out[97 * 61 * 3];
    static const int sizes[][2] = {{97, 61}, {13, 7}, {40, 61}, {1, 1}};
    for (int f = 0; f < 6; f++) {
        for (int s = 0; s < 4; s++) {
            int w = sizes[s][0], h = sizes[s][1];
            CHECK_INT(image_resize_rgb8(src, 40, 30, out, w, h, (enum resize_filter)f), 0);
            int flat = 1;
            for (int i = 0; i < w * h; i++)
                flat &= out[3 * i] == 0 && out[3 * i + 1] == 255 && out[3 * i + 2] == 77;
            if (!flat)
                test_fail(__FILE__, __LINE__, "%s to %dx%d is not flat",
                          resize_filter_name((enum resize_filter)f), w, h);
        }
    }
}

TEST(resize_parallel_rows_give_the_same_bytes)
{
    /* 1200 x 900 output: over the default threshold, so OpenMP splits its rows. */
    int sw = 500, sh = 400, dw = 1200, dh = 900;
    uint8_t *src = resize_test_source(sw, sh, 3);
    uint8_t *a = malloc((size_t)dw * dh * 3), *b = malloc((size_t)dw * dh * 3);
    CHECK_INT(image_resize_rgb8(src, sw, sh, a, dw, dh, RESIZE_BICUBIC), 0);
    image_resize_set_parallel_threshold(LONG_MAX);
    CHECK_INT(image_resize_rgb8(src, sw, sh, b, dw, dh, RESIZE_BICUBIC), 0);
    image_resize_set_parallel_threshold(0);
    CHECK(!memcmp(a, b, (size_t)dw * dh * 3));
    /* And the other way: everything parallel, a small output. */
    image_resize_set_parallel_threshold(1);
    CHECK_INT(image_resize_crop(src, sw, sh, RESIZE_LANCZOS, 123, 99, 10, 20, 100, 70, b), 0);
    image_resize_set_parallel_threshold(0);
    CHECK_INT(image_resize_crop(src, sw, sh, RESIZE_LANCZOS, 123, 99, 10, 20, 100, 70, a), 0);
    CHECK(!memcmp(a, b, (size_t)100 * 70 * 3));
    free(src);
    free(a);
    free(b);
}

TEST(center_crop_adm_equals_its_steps)
{
    /* The recipe by hand with the public calls: halve with BOX, resize, crop. */
    static const int cases[][3] = {{700, 300, 64}, {300, 700, 64}, {257, 1031, 32}, {64, 64, 64},
                                   {10, 7, 16}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int w = cases[i][0], h = cases[i][1], n = cases[i][2];
        uint8_t *cur = resize_test_source(w, h, (uint32_t)i);
        while ((w < h ? w : h) >= 2 * n) {
            uint8_t *half = malloc((size_t)(w / 2) * (h / 2) * 3);
            CHECK_INT(image_resize_rgb8(cur, w, h, half, w / 2, h / 2, RESIZE_BOX), 0);
            free(cur);
            cur = half;
            w /= 2;
            h /= 2;
        }
        struct resize_adm_plan p;
        CHECK_INT(image_center_crop_adm_plan(cases[i][0], cases[i][1], n, &p), 0);
        CHECK_INT(p.half_width, w);
        CHECK_INT(p.half_height, h);
        CHECK((p.resize_width == n && p.resize_height >= n) ||
              (p.resize_height == n && p.resize_width >= n));
        uint8_t *want = malloc((size_t)n * n * 3), *got = malloc((size_t)n * n * 3);
        CHECK_INT(image_resize_crop(cur, w, h, RESIZE_BICUBIC, p.resize_width, p.resize_height,
                                    p.crop_left, p.crop_top, n, n, want),
                  0);
        uint8_t *src = resize_test_source(cases[i][0], cases[i][1], (uint32_t)i);
        CHECK_INT(image_center_crop_adm(src, cases[i][0], cases[i][1], got, n), 0);
        CHECK(!memcmp(want, got, (size_t)n * n * 3));
        free(src);
        free(cur);
        free(want);
        free(got);
    }
}

TEST(center_crop_adm_rounds_half_to_even)
{
    struct resize_adm_plan p;
    /* 43 * 48 / 32 = 64.5 -> 64 and 45 * 48 / 32 = 67.5 -> 68, as Python's round. */
    CHECK_INT(image_center_crop_adm_plan(43, 32, 48, &p), 0);
    CHECK_INT(p.resize_width, 64);
    CHECK_INT(p.resize_height, 48);
    CHECK_INT(p.crop_left, 8);
    CHECK_INT(image_center_crop_adm_plan(32, 45, 48, &p), 0);
    CHECK_INT(p.resize_width, 48);
    CHECK_INT(p.resize_height, 68);
    CHECK_INT(p.crop_top, 10);
    /* 4000 x 3000 to 256: 3000 -> 1500 -> 750 -> 375, then 500 x 375 -> 341 x 256. */
    CHECK_INT(image_center_crop_adm_plan(4000, 3000, 256, &p), 0);
    CHECK_INT(p.halvings, 3);
    CHECK_INT(p.half_width, 500);
    CHECK_INT(p.half_height, 375);
    CHECK_INT(p.resize_width, 341);
    CHECK_INT(p.resize_height, 256);
    CHECK_INT(p.crop_left, 42);
    CHECK_INT(p.crop_top, 0);
}
