/* formats/bucket: the invariants of bucket choice, resize and crop on
 * thousands of sizes; --no-upscale; random crops; the ADM recipe; parsing;
 * the histogram and the merge plan. */
#include "tests/harness.h"
#include "data/bucket.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* A deterministic stream of test sizes (splitmix64). */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Mostly photo-like sizes, some tiny, some very long or tall. */
static void random_size(uint64_t *s, int *w, int *h)
{
    uint64_t r = mix(s);
    switch (r % 8) {
    case 0:
        *w = 1 + (int)(mix(s) % 64);
        *h = 1 + (int)(mix(s) % 64);
        break;
    case 1:
        *w = 1 + (int)(mix(s) % 20000);
        *h = 1 + (int)(mix(s) % 200);
        break;
    case 2:
        *w = 1 + (int)(mix(s) % 200);
        *h = 1 + (int)(mix(s) % 20000);
        break;
    default:
        *w = 16 + (int)(mix(s) % 6000);
        *h = 16 + (int)(mix(s) % 6000);
    }
}

static struct bucket_config default_config(void)
{
    return (struct bucket_config){.step = 16, .resolution = 256, .min_aspect = 0.5, .max_aspect = 2.0};
}

static int64_t area(struct bucket_size b)
{
    return (int64_t)b.width * b.height;
}

/* The resize covers the bucket, one side exactly, the other rounded from
 * the image's aspect; the crop lies inside the resized image. */
static void check_placement(int w, int h, const struct bucket_assignment *a, int centered)
{
    int64_t W = w, H = h, bw = a->bucket.width, bh = a->bucket.height;
    int64_t rw = a->resize_width, rh = a->resize_height;
    CHECK(rw >= bw && rh >= bh);
    int width_exact = rw == bw && llabs(2 * (rh * W - H * rw)) <= W;
    int height_exact = rh == bh && llabs(2 * (rw * H - W * rh)) <= H;
    if (!width_exact && !height_exact)
        test_fail(__FILE__, __LINE__, "%dx%d in %" PRId64 "x%" PRId64 ": resize %" PRId64 "x%" PRId64
                  " does not keep the aspect", w, h, bw, bh, rw, rh);
    CHECK(a->crop_left >= 0 && a->crop_left + bw <= rw);
    CHECK(a->crop_top >= 0 && a->crop_top + bh <= rh);
    if (centered) {
        CHECK_INT(a->crop_left, (rw - bw) / 2);
        CHECK_INT(a->crop_top, (rh - bh) / 2);
    }
    CHECK_INT(a->method, BUCKET_FIT);
}

/* No candidate is strictly nearer in log aspect, nor equally near and
 * preferred by the tie-break (larger area, then smaller width). */
static void check_nearest(const struct bucket_set *s, int w, int h, struct bucket_size got,
                          int64_t max_area)
{
    double d = bucket_aspect_distance(got, w, h);
    for (size_t i = 0; i < s->n; i++) {
        struct bucket_size c = s->sizes[i];
        if (area(c) > max_area || (c.width == got.width && c.height == got.height))
            continue;
        double dc = bucket_aspect_distance(c, w, h);
        int better = dc < d || (dc == d && (area(c) > area(got) ||
                                            (area(c) == area(got) && c.width < got.width)));
        if (better)
            test_fail(__FILE__, __LINE__, "%dx%d: got %dx%d (distance %.9g), %dx%d is nearer (%.9g)",
                      w, h, got.width, got.height, d, c.width, c.height, dc);
    }
}

static void check_invariants(const struct bucket_config *c, int n)
{
    struct bucket_set s;
    CHECK_INT(bucket_set_init(&s, c), 0);
    uint64_t seed = 42;
    int64_t limit = (int64_t)c->resolution * c->resolution;
    for (int i = 0; i < n; i++) {
        int w, h;
        random_size(&seed, &w, &h);
        struct bucket_assignment a;
        if (bucket_assign(&s, w, h, "k", &a) != 0) {
            test_fail(__FILE__, __LINE__, "%dx%d rejected: %s", w, h, err_get());
            continue;
        }
        CHECK_INT(a.bucket.width % c->step, 0);
        CHECK_INT(a.bucket.height % c->step, 0);
        CHECK(a.bucket.width > 0 && a.bucket.height > 0);
        CHECK(area(a.bucket) <= limit);
        CHECK((double)a.bucket.width >= c->min_aspect * a.bucket.height);
        CHECK((double)a.bucket.width <= c->max_aspect * a.bucket.height);
        check_nearest(&s, w, h, a.bucket, INT64_MAX);
        check_placement(w, h, &a, 1);
    }
    bucket_set_free(&s);
}

TEST(bucket_invariants_default)
{
    struct bucket_config c = default_config();
    check_invariants(&c, 5000);
}

TEST(bucket_invariants_other_settings)
{
    struct bucket_config c = {.step = 32, .resolution = 512, .min_aspect = 0.25, .max_aspect = 4.0};
    check_invariants(&c, 3000);
    c = (struct bucket_config){.step = 8, .resolution = 1024, .min_aspect = 1.0 / 3, .max_aspect = 3.0};
    check_invariants(&c, 3000);
    c = (struct bucket_config){.step = 64, .resolution = 200, .min_aspect = 0.5, .max_aspect = 2.0};
    check_invariants(&c, 1000);
}

TEST(bucket_candidates_are_maximal_and_closed_under_transpose)
{
    struct bucket_config c = default_config();
    struct bucket_set s;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    CHECK(s.n >= 5);
    int has_square = 0;
    for (size_t i = 0; i < s.n; i++) {
        struct bucket_size b = s.sizes[i];
        /* Neither side can grow by a step. */
        CHECK((int64_t)(b.width + 16) * b.height > 65536);
        CHECK((int64_t)b.width * (b.height + 16) > 65536);
        has_square |= b.width == 256 && b.height == 256;
        int found = 0;
        for (size_t j = 0; j < s.n; j++)
            found |= s.sizes[j].width == b.height && s.sizes[j].height == b.width;
        CHECK(found);
        if (i)
            CHECK((int64_t)s.sizes[i - 1].width * b.height < (int64_t)b.width * s.sizes[i - 1].height);
    }
    CHECK(has_square);
    bucket_set_free(&s);
}

TEST(bucket_known_choices)
{
    struct bucket_config c = default_config();
    struct bucket_set s;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    struct bucket_assignment a;
    CHECK_INT(bucket_assign(&s, 1024, 1024, "k", &a), 0);
    CHECK_INT(a.bucket.width, 256);
    CHECK_INT(a.bucket.height, 256);
    CHECK_INT(a.resize_width, 256);
    CHECK_INT(a.resize_height, 256);
    /* 4:3 (1.333) lies between 288x224 (1.286) and 304x208 (1.462);
     * 288x224 is the nearer in log aspect. */
    CHECK_INT(bucket_assign(&s, 500, 375, "k", &a), 0);
    CHECK_INT(a.bucket.width, 288);
    CHECK_INT(a.bucket.height, 224);
    /* 224 / 375 * 500 = 298.67: resize 299x224, crop (299 - 288) / 2 = 5. */
    CHECK_INT(a.resize_width, 299);
    CHECK_INT(a.resize_height, 224);
    CHECK_INT(a.crop_left, 5);
    CHECK_INT(a.crop_top, 0);
    /* Portrait gets the transpose. */
    CHECK_INT(bucket_assign(&s, 375, 500, "k", &a), 0);
    CHECK_INT(a.bucket.width, 224);
    CHECK_INT(a.bucket.height, 288);
    CHECK_INT(a.crop_top, 5);
    /* Beyond the aspect limit: the most extreme bucket allowed. */
    CHECK_INT(bucket_assign(&s, 10000, 100, "k", &a), 0);
    CHECK_INT(a.bucket.width, 336);
    CHECK_INT(a.bucket.height, 192);
    CHECK_INT(a.resize_width, 19200);
    CHECK_INT(a.resize_height, 192);
    /* A small image is upscaled to cover the bucket. */
    CHECK_INT(bucket_assign(&s, 20, 20, "k", &a), 0);
    CHECK_INT(a.bucket.width, 256);
    CHECK_INT(a.resize_width, 256);
    bucket_set_free(&s);
}

TEST(bucket_ties)
{
    /* A square image between a bucket and its transpose: equal distance and
     * area, so the smaller width wins. */
    struct bucket_size list[] = {{32, 16}, {16, 32}};
    struct bucket_config c = default_config();
    c.list = list;
    c.n_list = 2;
    struct bucket_set s;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    struct bucket_assignment a;
    CHECK_INT(bucket_assign(&s, 100, 100, "k", &a), 0);
    CHECK_INT(a.bucket.width, 16);
    CHECK_INT(a.bucket.height, 32);
    bucket_set_free(&s);
    /* Same aspect, different areas: the larger wins. */
    struct bucket_size same[] = {{64, 64}, {256, 256}, {128, 128}};
    c.list = same;
    c.n_list = 3;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    CHECK_INT(bucket_assign(&s, 30, 31, "k", &a), 0);
    CHECK_INT(a.bucket.width, 256);
    bucket_set_free(&s);
    CHECK_INT(bucket_nearest(same, 3, (const unsigned char[]){1, 0, 1}, 5, 5), 2);
    CHECK_INT(bucket_nearest(same, 3, (const unsigned char[]){0, 0, 0}, 5, 5), -1);
}

TEST(bucket_explicit_list)
{
    struct bucket_size list[] = {{512, 512}, {640, 384}, {384, 640}, {768, 320}};
    struct bucket_config c = default_config();
    c.step = 64;
    c.list = list;
    c.n_list = 4;
    struct bucket_set s;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    CHECK_INT(s.n, 4);
    uint64_t seed = 7;
    for (int i = 0; i < 2000; i++) {
        int w, h;
        random_size(&seed, &w, &h);
        struct bucket_assignment a;
        CHECK_INT(bucket_assign(&s, w, h, "k", &a), 0);
        int in_list = 0;
        for (int k = 0; k < 4; k++)
            in_list |= a.bucket.width == list[k].width && a.bucket.height == list[k].height;
        CHECK(in_list);
        check_nearest(&s, w, h, a.bucket, INT64_MAX);
        check_placement(w, h, &a, 1);
    }
    bucket_set_free(&s);
    /* A size that is not a multiple of the step. */
    struct bucket_size bad[] = {{512, 500}};
    c.list = bad;
    c.n_list = 1;
    CHECK_INT(bucket_set_init(&s, &c), -1);
    CHECK_CONTAINS(err_get(), "512x500");
}

TEST(bucket_no_upscale)
{
    struct bucket_config c = default_config();
    c.no_upscale = 1;
    struct bucket_set s;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    uint64_t seed = 99;
    int fallbacks = 0, rejected = 0;
    for (int i = 0; i < 5000; i++) {
        int w, h;
        random_size(&seed, &w, &h);
        struct bucket_assignment a;
        if (bucket_assign(&s, w, h, "k", &a) != 0) {
            /* Only images without room for one step, or for a bucket of
             * allowed aspect, are refused. */
            int small = w < 16 || h < 16;
            if (small)
                CHECK_CONTAINS(err_get(), "smaller than one step");
            else
                CHECK_CONTAINS(err_get(), "no bucket");
            rejected++;
            continue;
        }
        CHECK(area(a.bucket) <= (int64_t)w * h);
        CHECK(area(a.bucket) <= 65536);
        CHECK_INT(a.bucket.width % 16, 0);
        CHECK_INT(a.bucket.height % 16, 0);
        CHECK((double)a.bucket.width >= 0.5 * a.bucket.height);
        CHECK((double)a.bucket.width <= 2.0 * a.bucket.height);
        int candidate = 0;
        for (size_t k = 0; k < s.n; k++)
            candidate |= s.sizes[k].width == a.bucket.width && s.sizes[k].height == a.bucket.height;
        if (candidate) {
            check_nearest(&s, w, h, a.bucket, (int64_t)w * h);
        } else {
            /* The fallback: inside the image, and no candidate was small enough. */
            fallbacks++;
            CHECK(a.bucket.width <= w && a.bucket.height <= h);
            for (size_t k = 0; k < s.n; k++)
                CHECK(area(s.sizes[k]) > (int64_t)w * h);
        }
        check_placement(w, h, &a, 1);
    }
    CHECK(fallbacks > 100);
    CHECK(rejected > 10);
    struct bucket_assignment a;
    /* 100x40: 96x32 fits but is 3:1; the largest of aspect at most 2 is 64x32. */
    CHECK_INT(bucket_assign(&s, 100, 40, "k", &a), 0);
    CHECK_INT(a.bucket.width, 64);
    CHECK_INT(a.bucket.height, 32);
    CHECK_INT(bucket_assign(&s, 200, 150, "k", &a), 0);
    CHECK_INT(a.bucket.width, 192);
    CHECK_INT(a.bucket.height, 144);
    CHECK_INT(a.resize_width, 192);
    CHECK_INT(a.resize_height, 144);
    CHECK_INT(bucket_assign(&s, 15, 300, "k", &a), -1);
    CHECK_CONTAINS(err_get(), "smaller than one step");
    /* 20x300: only 16 wide, so at most 32 tall by the aspect bound. */
    CHECK_INT(bucket_assign(&s, 20, 300, "k", &a), 0);
    CHECK_INT(a.bucket.width, 16);
    CHECK_INT(a.bucket.height, 32);
    bucket_set_free(&s);
}

TEST(bucket_random_crop_is_deterministic_and_order_free)
{
    struct bucket_config c = default_config();
    c.random_crop = 1;
    c.seed = 1234;
    struct bucket_set s, s2, other;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    CHECK_INT(bucket_set_init(&s2, &c), 0);
    c.seed = 1235;
    CHECK_INT(bucket_set_init(&other, &c), 0);
    enum { N = 500 };
    static struct bucket_assignment fwd[N];
    char key[32];
    int sizes[N][2], differ = 0, off_center = 0;
    uint64_t seed = 5;
    for (int i = 0; i < N; i++)
        random_size(&seed, &sizes[i][0], &sizes[i][1]);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "img_%04d", i);
        CHECK_INT(bucket_assign(&s, sizes[i][0], sizes[i][1], key, &fwd[i]), 0);
        check_placement(sizes[i][0], sizes[i][1], &fwd[i], 0);
        off_center |= fwd[i].crop_left != (fwd[i].resize_width - fwd[i].bucket.width) / 2;
    }
    /* The other way round, in another set: the same crops. */
    for (int i = N - 1; i >= 0; i--) {
        snprintf(key, sizeof key, "img_%04d", i);
        struct bucket_assignment a, b;
        CHECK_INT(bucket_assign(&s2, sizes[i][0], sizes[i][1], key, &a), 0);
        CHECK_INT(a.crop_left, fwd[i].crop_left);
        CHECK_INT(a.crop_top, fwd[i].crop_top);
        CHECK_INT(a.resize_width, fwd[i].resize_width);
        CHECK_INT(bucket_assign(&other, sizes[i][0], sizes[i][1], key, &b), 0);
        differ += b.crop_left != a.crop_left || b.crop_top != a.crop_top;
    }
    CHECK(off_center);
    CHECK(differ > N / 4);
    bucket_set_free(&s);
    bucket_set_free(&s2);
    bucket_set_free(&other);
}

TEST(bucket_key_index_is_first_hex_digits)
{
    const char *key = "n01440764/n01440764_10026.JPEG";
    char hex[33];
    hash_hex(hash_buffer(key, strlen(key)), hex);
    char want[9];
    snprintf(want, sizeof want, "%08llx", (unsigned long long)bucket_key_index(key));
    hex[8] = '\0';
    CHECK_STR(want, hex);
}

/* Sizes checked against Pillow's center_crop_arr (guided-diffusion) on
 * blank images; the first one by hand in the comment below. */
TEST(bucket_adm_sizes)
{
    static const int cases[][7] = {
        /* 500x375, N=256: 375 < 512 so no halving; scale 256/375 gives
         * 341.33 -> 341 by 256; crop left (341 - 256) // 2 = 42. */
        {500, 375, 256, 341, 256, 42, 0},
        /* 35 * 1.5 = 52.5: Python rounds half to even. */
        {35, 32, 48, 52, 48, 2, 0},
        /* 767 >= 512: halved to 511x383, then 511 * 256/383 = 341.56 -> 342. */
        {1023, 767, 256, 342, 256, 43, 0},
        /* Halved twice: 1024x768, 512x384. */
        {2048, 1536, 256, 341, 256, 42, 0},
        {1024, 768, 512, 683, 512, 85, 0},
        /* Upscaled: 60 -> 256. */
        {100, 60, 256, 427, 256, 85, 0},
        {4000, 3000, 256, 341, 256, 42, 0},
        {513, 1025, 256, 256, 512, 0, 128},
        /* 256 * 256/255 = 257.004 -> 257. */
        {255, 256, 256, 256, 257, 0, 0},
        {256, 256, 256, 256, 256, 0, 0},
        {512, 512, 256, 256, 256, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *k = cases[i];
        struct bucket_assignment a;
        bucket_adm(k[0], k[1], k[2], &a);
        CHECK_INT(a.bucket.width, k[2]);
        CHECK_INT(a.bucket.height, k[2]);
        CHECK_INT(a.resize_width, k[3]);
        CHECK_INT(a.resize_height, k[4]);
        CHECK_INT(a.crop_left, k[5]);
        CHECK_INT(a.crop_top, k[6]);
        CHECK_INT(a.method, BUCKET_ADM);
    }
    /* Through a set: every record gets NxN. */
    struct bucket_config c = default_config();
    c.center_crop_size = 256;
    struct bucket_set s;
    CHECK_INT(bucket_set_init(&s, &c), 0);
    uint64_t seed = 11;
    for (int i = 0; i < 2000; i++) {
        int w, h;
        random_size(&seed, &w, &h);
        struct bucket_assignment a;
        CHECK_INT(bucket_assign(&s, w, h, "k", &a), 0);
        CHECK_INT(a.bucket.width, 256);
        CHECK_INT(a.bucket.height, 256);
        CHECK_INT((a.resize_width < a.resize_height ? a.resize_width : a.resize_height), 256);
        CHECK(a.crop_left + 256 <= a.resize_width && a.crop_top + 256 <= a.resize_height);
    }
    bucket_set_free(&s);
}

TEST(bucket_config_errors)
{
    struct bucket_set s;
    struct bucket_config c = default_config();
    c.step = 0;
    CHECK_INT(bucket_set_init(&s, &c), -1);
    CHECK_CONTAINS(err_get(), "--step");
    c = default_config();
    c.min_aspect = 2;
    c.max_aspect = 1;
    CHECK_INT(bucket_set_init(&s, &c), -1);
    CHECK_CONTAINS(err_get(), "--max-aspect");
    c = default_config();
    c.min_aspect = 0;
    CHECK_INT(bucket_set_init(&s, &c), -1);
    CHECK_CONTAINS(err_get(), "--min-aspect");
    c = default_config();
    c.resolution = 8;
    CHECK_INT(bucket_set_init(&s, &c), -1);
    CHECK_CONTAINS(err_get(), "no bucket");
    c = default_config();
    c.center_crop_size = 100;
    CHECK_INT(bucket_set_init(&s, &c), -1);
    CHECK_CONTAINS(err_get(), "--center-crop-size 100");
    c = default_config();
    c.resolution = 0;
    CHECK_INT(bucket_set_init(&s, &c), -1);
    CHECK_CONTAINS(err_get(), "--resolution");
}

TEST(bucket_parse)
{
    struct bucket_size b;
    CHECK_INT(bucket_parse_size("512x384", &b), 0);
    CHECK_INT(b.width, 512);
    CHECK_INT(b.height, 384);
    const char *bad[] = {"", "512", "512x", "x384", "512X384", "-512x384", "512x384x2", "0x16",
                         "16x0", "512 x384", "99999999x16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (bucket_parse_size(bad[i], &b) != -1)
            test_fail(__FILE__, __LINE__, "'%s' parsed", bad[i]);
    }
    struct bucket_size *list;
    size_t n;
    CHECK_INT(bucket_parse_list("512x512,640x384,384x640", 64, &list, &n), 0);
    CHECK_INT(n, 3);
    CHECK_INT(list[1].width, 640);
    CHECK_INT(list[2].height, 640);
    free(list);
    CHECK_INT(bucket_parse_list("512x512,500x500", 16, &list, &n), -1);
    CHECK_CONTAINS(err_get(), "'500x500': the sides must be multiples of --step 16");
    CHECK_INT(bucket_parse_list("512x512,,256x256", 16, &list, &n), -1);
    CHECK_INT(bucket_parse_list("512x512,512x512", 16, &list, &n), -1);
    CHECK_CONTAINS(err_get(), "twice");
}

TEST(bucket_hist_and_merge_plan)
{
    struct bucket_hist h = {0};
    CHECK_INT(bucket_hist_add(&h, (struct bucket_size){288, 224}, 10), 0);
    CHECK_INT(bucket_hist_add(&h, (struct bucket_size){256, 256}, 50), 0);
    CHECK_INT(bucket_hist_add(&h, (struct bucket_size){224, 288}, 2), 0);
    CHECK_INT(bucket_hist_add(&h, (struct bucket_size){336, 192}, 3), 0);
    CHECK_INT(bucket_hist_add(&h, (struct bucket_size){192, 336}, 0), 0);
    CHECK_INT(bucket_hist_add(&h, (struct bucket_size){288, 224}, 5), 0);
    CHECK_INT(bucket_hist_total(&h), 70);
    bucket_hist_sort(&h);
    CHECK_INT(h.n, 4); /* the empty bucket is dropped */
    CHECK_INT(h.entries[0].size.width, 224);
    CHECK_INT(h.entries[1].size.width, 256);
    CHECK_INT(h.entries[2].size.width, 288);
    CHECK_INT(h.entries[2].count, 15);
    CHECK_INT(h.entries[3].size.width, 336);
    CHECK_INT(bucket_hist_find(&h, (struct bucket_size){336, 192}), 3);
    CHECK_INT(bucket_hist_find(&h, (struct bucket_size){192, 336}), -1);
    long target[4];
    /* Batch 8: 224x288 (0.78) goes to 256x256; 336x192 (1.75) to 288x224. */
    CHECK_INT(bucket_merge_plan(&h, 8, target), 2);
    CHECK_INT(target[0], 1);
    CHECK_INT(target[1], -1);
    CHECK_INT(target[2], -1);
    CHECK_INT(target[3], 2);
    /* No bucket has a batch: nothing moves. */
    CHECK_INT(bucket_merge_plan(&h, 100, target), 0);
    for (int i = 0; i < 4; i++)
        CHECK_INT(target[i], -1);
    bucket_hist_free(&h);
}
