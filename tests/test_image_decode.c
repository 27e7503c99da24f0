/* full image decoding against Pillow's pixels (tests/reference/make_decode_goldens.py) */
#include "tests/harness.h"
#include "image/decode.h"
#include "data/precompute.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#define GOLDENS "fixtures/decode/goldens.safetensors"

/* Largest |decoded - Pillow| allowed per format, as measured. JPEG:
 * libjpeg-turbo 2.1.5 here and the 3.x bundled with Pillow 13 run the same
 * islow IDCT, fancy upsampling and color conversion: measured difference 0 on
 * every fixture (4:2:0, 4:2:2, 4:4:4, RGB, gray, progressive, CMYK, YCCK).
 * Lossy WebP: libwebp 1.2.4 here and Pillow's 1.6.0 decode VP8 and convert
 * YUV to RGB identically: measured 0. PNG and lossless WebP are exact by
 * construction. So all are held to equality; a library upgrade that moves
 * a value shows up here first (raise the tolerance to what it measures). */
#define TOL_JPEG 0
#define TOL_WEBP_LOSSY 0

static const uint8_t BG[3] = {40, 90, 200}; /* the script's BG */

/* A fixture in a buffer of exactly its size, so ASan sees any read past it. */
static unsigned char *load_exact(const char *rel, size_t *size)
{
    char *raw = test_read_file(test_source_path(rel), size);
    if (!raw) {
        test_fail(__FILE__, __LINE__, "cannot read %s", rel);
        return NULL;
    }
    unsigned char *exact = malloc(*size ? *size : 1);
    memcpy(exact, raw, *size);
    free(raw);
    return exact;
}

static struct st_file *goldens(void)
{
    struct st_file *f = st_open(test_source_path(GOLDENS));
    if (!f)
        test_fail(__FILE__, __LINE__, "%s", err_get());
    return f;
}

/* Max |a - b| between a decoded image and a golden [h, w, 3] tensor; -1
 * (and a test failure) when the shapes differ. */
static int max_diff(const struct image_rgb *img, const struct st_tensor *t, const char *what)
{
    if (!t) {
        test_fail(__FILE__, __LINE__, "%s: no golden", what);
        return -1;
    }
    if (t->dtype != ST_U8 || t->ndim != 3 || t->shape[2] != 3 || t->shape[0] != img->height ||
        t->shape[1] != img->width) {
        test_fail(__FILE__, __LINE__, "%s: decoded %dx%d, golden %lldx%lld", what, img->width, img->height,
                  (long long)(t->ndim == 3 ? t->shape[1] : -1), (long long)t->shape[0]);
        return -1;
    }
    const uint8_t *g = t->data;
    int worst = 0;
    for (size_t i = 0; i < t->nelem; i++) {
        int d = abs((int)img->pixels[i] - (int)g[i]);
        if (d > worst)
            worst = d;
    }
    return worst;
}

static int tolerance_for(const char *name)
{
    if (!strncmp(name, "jpeg", 4))
        return TOL_JPEG;
    if (!strncmp(name, "webp_lossy", 10))
        return TOL_WEBP_LOSSY;
    return 0;
}

/* Decodes dir/NAME for every golden "prefix/NAME" and compares. */
static void check_set(const char *prefix, const char *dir, const uint8_t bg[3])
{
    struct st_file *g = goldens();
    if (!g)
        return;
    size_t plen = strlen(prefix);
    int seen = 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        const char *tname = g->tensors[i].name;
        if (strncmp(tname, prefix, plen) != 0)
            continue;
        const char *file = tname + plen;
        char rel[512];
        snprintf(rel, sizeof rel, "%s/%s", dir, file);
        size_t n;
        unsigned char *data = load_exact(rel, &n);
        if (!data)
            continue;
        struct image_rgb img;
        int scale = 0;
        if (image_decode(data, n, file, bg, 0, 0, &img, &scale) != 0) {
            test_fail(__FILE__, __LINE__, "%s: %s", rel, err_get());
        } else {
            CHECK_INT(scale, 1);
            int d = max_diff(&img, &g->tensors[i], rel);
            if (d > tolerance_for(file))
                test_fail(__FILE__, __LINE__, "%s: max difference %d from Pillow (tolerance %d)", rel, d,
                          tolerance_for(file));
        }
        image_rgb_free(&img);
        free(data);
        seen++;
    }
    if (seen == 0)
        test_fail(__FILE__, __LINE__, "no goldens named %s*", prefix);
    st_close(g);
}

TEST(good_images_match_pillow)
{
    check_set("good/", "fixtures/images/good", NULL);
}

TEST(extra_images_match_pillow)
{
    check_set("extra/", "fixtures/decode", NULL);
}

TEST(alpha_onto_other_background)
{
    check_set("bg/good/", "fixtures/images/good", BG);
    check_set("bg/extra/", "fixtures/decode", BG);
}

/* The fixtures in good/ all have goldens, so a new fixture cannot go untested. */
TEST(every_good_fixture_has_a_golden)
{
    struct st_file *g = goldens();
    DIR *d = opendir(test_source_path("fixtures/images/good"));
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while (g && d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char tname[512];
        snprintf(tname, sizeof tname, "good/%s", e->d_name);
        if (!st_find(g, tname))
            test_fail(__FILE__, __LINE__, "no golden for good/%s", e->d_name);
        n++;
    }
    CHECK(n >= 20);
    if (d)
        closedir(d);
    st_close(g);
}

TEST(white_is_the_default_background)
{
    size_t n;
    unsigned char *data = load_exact("fixtures/images/good/png_rgba_30x18.png", &n);
    static const uint8_t white[3] = {255, 255, 255};
    struct image_rgb a, b;
    CHECK_INT(image_decode(data, n, NULL, NULL, 0, 0, &a, NULL), 0);
    CHECK_INT(image_decode(data, n, "x", white, 0, 0, &b, NULL), 0);
    CHECK(a.pixels && b.pixels && !memcmp(a.pixels, b.pixels, (size_t)a.width * a.height * 3));
    image_rgb_free(&a);
    image_rgb_free(&b);
    free(data);
}

/* ---- orientation ---------------------------------------------------------- */

static struct image_rgb copy_of(const struct st_tensor *t)
{
    struct image_rgb img = {(int)t->shape[1], (int)t->shape[0], malloc(t->nbytes)};
    memcpy(img.pixels, t->data, t->nbytes);
    return img;
}

TEST(orientation_matches_exif_transpose)
{
    struct st_file *g = goldens();
    const struct st_tensor *src = g ? st_find(g, "orient/src") : NULL;
    CHECK(src != NULL);
    for (int o = 1; src && o <= 8; o++) {
        char name[32];
        snprintf(name, sizeof name, "orient/%d", o);
        struct image_rgb img = copy_of(src);
        CHECK_INT(image_rgb_orient(&img, o), 0);
        int d = max_diff(&img, st_find(g, name), name);
        if (d != 0)
            test_fail(__FILE__, __LINE__, "orientation %d differs from Pillow by %d", o, d);
        image_rgb_free(&img);
    }
    st_close(g);
}

TEST(orientation_out_of_range_is_refused)
{
    uint8_t px[6] = {1, 2, 3, 4, 5, 6};
    struct image_rgb img = {2, 1, malloc(6)};
    memcpy(img.pixels, px, 6);
    CHECK_INT(image_rgb_orient(&img, 0), -1);
    CHECK_CONTAINS(err_get(), "orientation 0");
    CHECK_INT(image_rgb_orient(&img, 9), -1);
    CHECK_INT(img.width, 2);
    CHECK_INT(img.height, 1);
    CHECK(!memcmp(img.pixels, px, 6));
    image_rgb_free(&img);
    CHECK(img.pixels == NULL);
    image_rgb_free(NULL);
}

TEST(flip_mirrors_rows)
{
    struct st_file *g = goldens();
    const struct st_tensor *src = g ? st_find(g, "orient/src") : NULL;
    CHECK(src != NULL);
    if (src) {
        struct image_rgb img = copy_of(src);
        image_rgb_flip(&img);
        CHECK_INT(max_diff(&img, st_find(g, "orient/2"), "flip"), 0); /* orientation 2 is the mirror */
        image_rgb_flip(&img);
        CHECK_INT(max_diff(&img, src, "flip twice"), 0);
        image_rgb_free(&img);
    }
    /* Widths 1 and 2: the middle pixel stays, a pair swaps. */
    uint8_t one[3] = {7, 8, 9};
    struct image_rgb col = {1, 1, one};
    image_rgb_flip(&col);
    CHECK(one[0] == 7 && one[1] == 8 && one[2] == 9);
    uint8_t two[6] = {1, 2, 3, 4, 5, 6};
    struct image_rgb pair = {2, 1, two};
    image_rgb_flip(&pair);
    CHECK(two[0] == 4 && two[2] == 6 && two[3] == 1 && two[5] == 3);
    st_close(g);
}

/* ---- failures ------------------------------------------------------------- */

TEST(bad_files_fail_with_their_name)
{
    DIR *d = opendir(test_source_path("fixtures/images/bad"));
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        /* Header-valid bombs: decoding them would allocate tens of GB; the
         * caller refuses them by their probed size before decoding. */
        if (strstr(e->d_name, "bomb") || strstr(e->d_name, "2147483647x2147483647"))
            continue;
        char rel[512];
        snprintf(rel, sizeof rel, "fixtures/images/bad/%s", e->d_name);
        size_t size;
        unsigned char *data = load_exact(rel, &size);
        struct image_rgb img = {1, 1, NULL};
        int scale = 5;
        err_clear();
        if (image_decode(data, size, e->d_name, NULL, 0, 0, &img, &scale) == 0) {
            test_fail(__FILE__, __LINE__, "%s decoded", rel);
            image_rgb_free(&img);
        } else {
            CHECK_CONTAINS(err_get(), e->d_name);
            CHECK(img.pixels == NULL && img.width == 0 && img.height == 0);
            CHECK_INT(scale, 1);
        }
        free(data);
        n++;
    }
    CHECK(n >= 13);
    if (d)
        closedir(d);
}

/* Every prefix of a good file either fails with its name or decodes to the
 * full file's pixels: never a crash, never made-up pixels. */
static void check_truncations(const char *rel, int expect_all_fail)
{
    size_t size;
    unsigned char *data = load_exact(rel, &size);
    struct image_rgb full;
    if (!data || image_decode(data, size, rel, NULL, 0, 0, &full, NULL) != 0) {
        test_fail(__FILE__, __LINE__, "%s: %s", rel, err_get());
        free(data);
        return;
    }
    int decoded = 0;
    for (size_t n = 0; n < size; n++) {
        unsigned char *cut = malloc(n ? n : 1);
        memcpy(cut, data, n);
        struct image_rgb img;
        err_clear();
        if (image_decode(cut, n, "cut.img", NULL, 0, 0, &img, NULL) == 0) {
            decoded++;
            if (expect_all_fail)
                test_fail(__FILE__, __LINE__, "%s cut to %zu of %zu bytes decoded", rel, n, size);
            if (img.width != full.width || img.height != full.height ||
                memcmp(img.pixels, full.pixels, (size_t)full.width * full.height * 3) != 0)
                test_fail(__FILE__, __LINE__, "%s cut to %zu of %zu bytes decoded to other pixels", rel, n,
                          size);
            image_rgb_free(&img);
        } else if (!strstr(err_get(), "cut.img")) {
            test_fail(__FILE__, __LINE__, "%s cut to %zu: message \"%s\"", rel, n, err_get());
        }
        free(cut);
    }
    /* Only a cut in the last few bytes (trailing chunks, the EOI) may decode. */
    if (decoded > 16)
        test_fail(__FILE__, __LINE__, "%s: %d truncations decoded", rel, decoded);
    image_rgb_free(&full);
    free(data);
}

TEST(truncated_jpeg_fails)
{
    check_truncations("fixtures/images/good/jpeg_baseline_24x16.jpg", 0);
    check_truncations("fixtures/images/good/jpeg_progressive_32x24.jpg", 0);
    check_truncations("fixtures/images/good/jpeg_cmyk_18x12.jpg", 0);
}

TEST(truncated_png_fails)
{
    check_truncations("fixtures/images/good/png_rgba_30x18.png", 0);
    check_truncations("fixtures/images/good/png_interlaced_34x10.png", 0);
}

TEST(truncated_webp_fails)
{
    check_truncations("fixtures/images/good/webp_lossy_alpha_25x15.webp", 1);
    check_truncations("fixtures/images/good/webp_lossless_alpha_21x29.webp", 1);
}

/* A marker inside the entropy-coded data: libjpeg warns and fills the rest
 * in; that must be an error too. */
TEST(jpeg_scan_cut_by_a_marker_fails)
{
    size_t size;
    unsigned char *data = load_exact("fixtures/decode/jpeg_baseline_96x64.jpg", &size);
    /* The scan starts after the SOS segment; put an EOI in its middle. */
    size_t sos = 0;
    for (size_t i = 2; data && i + 3 < size; i++)
        if (data[i] == 0xFF && data[i + 1] == 0xDA) {
            sos = i + 2 + ((size_t)data[i + 2] << 8 | data[i + 3]);
            break;
        }
    CHECK(sos > 0 && sos + 100 < size);
    if (sos > 0 && sos + 100 < size) {
        size_t mid = sos + (size - sos) / 2;
        if (data[mid - 1] == 0xFF)
            mid++;
        data[mid] = 0xFF;
        data[mid + 1] = 0xD9;
        struct image_rgb img;
        CHECK_INT(image_decode(data, size, "marker.jpg", NULL, 0, 0, &img, NULL), -1);
        CHECK_CONTAINS(err_get(), "marker.jpg: truncated JPEG");
        image_rgb_free(&img);
    }
    free(data);
}

/* ---- DCT scaling ---------------------------------------------------------- */

/* Pillow's draft() is libjpeg's DCT scaling with the same islow IDCT and
 * fancy upsampling, and the same choice of scale (the largest of 8, 4, 2
 * with scale * min <= size), so the scaled pixels are compared exactly too
 * (measured: identical at 1/2, 1/4, 1/8). */
TEST(jpeg_dct_scaling)
{
    size_t size;
    unsigned char *data = load_exact("fixtures/decode/jpeg_baseline_96x64.jpg", &size);
    struct st_file *g = goldens();
    static const struct { int min_w, min_h, scale, w, h; } cases[] = {
        {24, 16, 4, 24, 16}, {48, 32, 2, 48, 32}, {12, 8, 8, 12, 8},  {13, 8, 4, 24, 16},
        {12, 9, 4, 24, 16},  {49, 32, 1, 96, 64}, {96, 64, 1, 96, 64}, {0, 0, 1, 96, 64},
        {24, 0, 1, 96, 64},  {1, 1, 8, 12, 8},    {200, 1, 1, 96, 64},
    };
    for (size_t i = 0; data && g && i < sizeof cases / sizeof cases[0]; i++) {
        struct image_rgb img;
        int scale = 0;
        if (image_decode(data, size, "big.jpg", NULL, cases[i].min_w, cases[i].min_h, &img, &scale) != 0) {
            test_fail(__FILE__, __LINE__, "%s", err_get());
            continue;
        }
        CHECK_INT(scale, cases[i].scale);
        CHECK_INT(img.width, cases[i].w);
        CHECK_INT(img.height, cases[i].h);
        char name[32];
        snprintf(name, sizeof name, "draft/%d", scale);
        int d = scale == 1 ? 0 : max_diff(&img, st_find(g, name), name);
        if (d != 0)
            test_fail(__FILE__, __LINE__, "min %dx%d: differs from Pillow's draft() by %d", cases[i].min_w,
                      cases[i].min_h, d);
        image_rgb_free(&img);
    }
    st_close(g);
    free(data);
}

/* Minimum sizes are of the displayed image; the decoded size is displayed too. */
TEST(dct_scaling_with_orientation_and_other_formats)
{
    size_t size;
    unsigned char *data = load_exact("fixtures/images/good/jpeg_exif_orient6_24x16.jpg", &size);
    struct image_rgb img;
    int scale = 0;
    CHECK_INT(image_decode(data, size, "o6.jpg", NULL, 8, 12, &img, &scale), 0);
    CHECK_INT(scale, 2);
    CHECK_INT(img.width, 8);
    CHECK_INT(img.height, 12);
    image_rgb_free(&img);
    CHECK_INT(image_decode(data, size, "o6.jpg", NULL, 12, 8, &img, &scale), 0);
    CHECK_INT(scale, 1); /* 2 * 12 > 16, the displayed width */
    CHECK_INT(img.width, 16);
    CHECK_INT(img.height, 24);
    image_rgb_free(&img);
    free(data);

    data = load_exact("fixtures/images/good/png_rgb8_33x17.png", &size);
    CHECK_INT(image_decode(data, size, "p.png", NULL, 4, 2, &img, &scale), 0);
    CHECK_INT(scale, 1);
    CHECK_INT(img.width, 33);
    image_rgb_free(&img);
    free(data);
}

/* ---- a photograph through dit-precompute's image step --------------------- */

/* tests/reference/make_photo_goldens.py: a photo-like 360x140 JPEG with fine
 * texture, resized to 82x32 and cropped to 64x32 at (9, 0) (what dit-bucket
 * --resolution 48 gives it). precompute's default must give Pillow's
 * Image.open().convert("RGB").resize(BICUBIC) pixels; fast_decode (DCT
 * scaling, here 1/4) gives Pillow's draft() pixels, which differ from those
 * by more than the 1/255 mean a default may differ. */
static double photo_mean_diff(int fast, const char *golden)
{
    struct precompute_config c;
    precompute_config_init(&c);
    if (fast)
        c.fast_decode = 1;
    const struct precompute_geometry g = {360, 140, 64, 32, 82, 32, 9, 0, 0};
    size_t size, gsize;
    unsigned char *data = load_exact("fixtures/decode/photo_360x140.jpg", &size);
    unsigned char *gdata = load_exact(golden, &gsize);
    struct image_rgb want = {0};
    uint8_t crop[64 * 32 * 3];
    double mean = -1;
    if (data && gdata && precompute_image(&c, data, size, "photo.jpg", &g, crop) == PRECOMPUTE_KEPT &&
        image_decode(gdata, gsize, golden, NULL, 0, 0, &want, NULL) == 0 && want.width == 64 && want.height == 32) {
        long sum = 0;
        for (size_t i = 0; i < sizeof crop; i++)
            sum += abs((int)crop[i] - (int)want.pixels[i]);
        mean = (double)sum / sizeof crop;
    } else {
        test_fail(__FILE__, __LINE__, "%s: %s", golden, err_get());
    }
    image_rgb_free(&want);
    free(data);
    free(gdata);
    return mean;
}

TEST(photo_default_decode_is_pillows_and_fast_decode_is_drafts)
{
    double full = photo_mean_diff(0, "fixtures/decode/photo_full_64x32.png");
    if (full < 0 || full > 1.0)
        test_fail(__FILE__, __LINE__, "default decode: mean %.3f/255 from Pillow's (at most 1)", full);
    double draft = photo_mean_diff(1, "fixtures/decode/photo_draft_64x32.png");
    if (draft < 0 || draft > 1.0)
        test_fail(__FILE__, __LINE__, "fast decode: mean %.3f/255 from Pillow's draft() (at most 1)", draft);
    /* The fixture is only a check if the fast path visibly differs
     * (measured 1.885/255 mean, 26 at most). */
    double fast = photo_mean_diff(1, "fixtures/decode/photo_full_64x32.png");
    if (fast < 1.5)
        test_fail(__FILE__, __LINE__, "fast decode: mean %.3f/255 from the full decode, expected about 1.9", fast);
    printf("  photo: default %.3f/255 from Pillow, fast %.3f/255 from draft() and %.3f/255 from Pillow\n", full,
           draft, fast);
}

/* The DCT scale the fast path takes for the photo: 1/4, the largest s with
 * s * 82 <= 360 and s * 32 <= 140 (Pillow's draft() rule). */
TEST(photo_fast_decode_scale)
{
    size_t size;
    unsigned char *data = load_exact("fixtures/decode/photo_360x140.jpg", &size);
    struct image_rgb img = {0};
    int scale = 0;
    CHECK_INT(image_decode(data, size, "photo.jpg", NULL, 82, 32, &img, &scale), 0);
    CHECK_INT(scale, 4);
    CHECK_INT(img.width, 90);
    CHECK_INT(img.height, 35);
    image_rgb_free(&img);
    free(data);
}
