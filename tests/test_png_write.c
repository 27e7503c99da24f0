/* PNG writing: round trips through the project's decoder, text chunks read
 * back with libspng, grid layout, bad input, atomic files. */
#include "tests/harness.h"
#include "image/decode.h"
#include "image/png_write.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"

#include <dirent.h>
#include <spng.h>
#include <stdlib.h>

/* Pixels that differ everywhere, so a misplaced row or channel shows. */
static uint8_t *pattern(int w, int h, int channels, unsigned salt)
{
    uint8_t *p = malloc((size_t)w * h * channels);
    for (int i = 0; i < w * h * channels; i++)
        p[i] = (uint8_t)(i * 37u + salt * 101u + (unsigned)(i / 7) * 13u);
    return p;
}

/* Decodes png with image_decode and checks its RGB equals want. */
static void check_decodes_to(const void *png, size_t size, const uint8_t *want, int w, int h)
{
    struct image_rgb img;
    CHECK_INT(image_decode(png, size, "t.png", NULL, 0, 0, &img, NULL), 0);
    CHECK_INT(img.width, w);
    CHECK_INT(img.height, h);
    if (img.pixels && img.width == w && img.height == h)
        CHECK(memcmp(img.pixels, want, (size_t)w * h * 3) == 0);
    image_rgb_free(&img);
}

/* The text chunks of png as libspng reads them: n in *n, each key, type and
 * value (NUL-terminated copies) in the arrays given. */
static int read_texts(const void *png, size_t size, int max, char keys[][80], int *types, char **values)
{
    spng_ctx *ctx = spng_ctx_new(0);
    uint32_t n = 0;
    struct spng_text t[16];
    int rc = -1;
    if (spng_set_png_buffer(ctx, png, size) != 0)
        goto done;
    int e = spng_get_text(ctx, NULL, &n);
    if (e == SPNG_ECHUNKAVAIL) {
        rc = 0;
        goto done;
    }
    if (e != 0 || (int)n > max || n > 16 || spng_get_text(ctx, t, &n) != 0)
        goto done;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(keys[i], t[i].keyword, 80);
        types[i] = t[i].type;
        values[i] = strndup(t[i].text, t[i].length);
    }
    rc = (int)n;
done:
    spng_ctx_free(ctx);
    return rc;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The chunk types of png in file order, as "IHDR tEXt IDAT IEND ". */
static void chunk_types(const uint8_t *png, size_t size, char *out, size_t cap)
{
    size_t pos = 8, used = 0;
    out[0] = '\0';
    while (pos + 12 <= size && used + 6 < cap) {
        uint32_t len = be32(png + pos);
        memcpy(out + used, png + pos + 4, 4);
        out[used + 4] = ' ';
        used += 5;
        out[used] = '\0';
        pos += 12 + (size_t)len;
    }
}

TEST(rgb_round_trip_with_parameters)
{
    int w = 7, h = 5;
    uint8_t *rgb = pattern(w, h, 3, 1);
    struct png_text text[] = {{"parameters", "a red disc\nSteps: 50, Sampler: DDPM, CFG scale: 4.0, Seed: 3"}};
    void *png = NULL;
    size_t size = 0;
    CHECK_INT(png_encode_rgb8(rgb, w, h, text, 1, &png, &size), 0);
    CHECK(size > 8 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    check_decodes_to(png, size, rgb, w, h);

    char keys[16][80], *values[16] = {0};
    int types[16];
    CHECK_INT(read_texts(png, size, 16, keys, types, values), 1);
    CHECK_STR(keys[0], "parameters");
    CHECK_INT(types[0], SPNG_TEXT);
    CHECK_STR(values[0], text[0].value);
    free(values[0]);

    /* Text first, so readers that stop at the image data still see it. */
    char types_seen[256];
    chunk_types(png, size, types_seen, sizeof types_seen);
    CHECK_STR(types_seen, "IHDR tEXt IDAT IEND ");

    /* The same input encodes to the same bytes (the demo data relies on it). */
    void *again = NULL;
    size_t again_size = 0;
    CHECK_INT(png_encode_rgb8(rgb, w, h, text, 1, &again, &again_size), 0);
    CHECK(again_size == size && memcmp(again, png, size) == 0);
    free(again);
    free(png);
    free(rgb);
}

TEST(gray_round_trip_and_no_text)
{
    int w = 9, h = 4;
    uint8_t *gray = pattern(w, h, 1, 2);
    uint8_t *want = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h; i++)
        want[3 * i] = want[3 * i + 1] = want[3 * i + 2] = gray[i];
    void *png = NULL;
    size_t size = 0;
    CHECK_INT(png_encode_gray8(gray, w, h, NULL, 0, &png, &size), 0);
    CHECK(size > 25 && ((uint8_t *)png)[25] == 0); /* IHDR colour type: gray */
    check_decodes_to(png, size, want, w, h);
    char types_seen[256];
    chunk_types(png, size, types_seen, sizeof types_seen);
    CHECK_STR(types_seen, "IHDR IDAT IEND ");
    free(png);
    free(want);
    free(gray);
}

TEST(one_pixel_and_wide_images)
{
    const int sizes[][2] = {{1, 1}, {300, 1}, {1, 200}, {61, 33}};
    for (int k = 0; k < 4; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        uint8_t *rgb = pattern(w, h, 3, (unsigned)k);
        void *png = NULL;
        size_t size = 0;
        CHECK_INT(png_encode_rgb8(rgb, w, h, NULL, 0, &png, &size), 0);
        check_decodes_to(png, size, rgb, w, h);
        free(png);
        free(rgb);
    }
}

TEST(text_latin1_goes_to_text_other_utf8_to_itxt)
{
    uint8_t rgb[3] = {1, 2, 3};
    struct png_text text[] = {
        {"parameters", "caf\xc3\xa9 au lait"},          /* Latin-1: tEXt, transcoded */
        {"prompt", "\xe7\x8c\xab, a cat \xe2\x80\x94 1girl"}, /* CJK and a dash: iTXt */
        {"Gr\xc3\xb6\xc3\x9f" "e", "tab\there"},        /* a Latin-1 key; a TAB: iTXt */
        {"negative", ""},                               /* empty is allowed */
    };
    void *png = NULL;
    size_t size = 0;
    CHECK_INT(png_encode_rgb8(rgb, 1, 1, text, 4, &png, &size), 0);
    char keys[16][80], *values[16] = {0};
    int types[16];
    CHECK_INT(read_texts(png, size, 16, keys, types, values), 4);
    CHECK_STR(keys[0], "parameters");
    CHECK_INT(types[0], SPNG_TEXT);
    CHECK_STR(values[0], "caf\xe9 au lait");
    CHECK_STR(keys[1], "prompt");
    CHECK_INT(types[1], SPNG_ITXT);
    CHECK_STR(values[1], text[1].value);
    CHECK_STR(keys[2], "Gr\xf6\xdf" "e");
    CHECK_INT(types[2], SPNG_ITXT);
    CHECK_STR(values[2], "tab\there");
    CHECK_STR(keys[3], "negative");
    CHECK_INT(types[3], SPNG_TEXT);
    CHECK_STR(values[3], "");
    for (int i = 0; i < 4; i++)
        free(values[i]);
    char types_seen[256];
    chunk_types(png, size, types_seen, sizeof types_seen);
    CHECK_STR(types_seen, "IHDR tEXt iTXt iTXt tEXt IDAT IEND ");
    free(png);
}

TEST(bad_text_is_an_error)
{
    uint8_t rgb[3] = {0};
    char long_key[81];
    memset(long_key, 'k', 80);
    long_key[80] = '\0';
    const struct {
        struct png_text t;
        const char *msg;
    } cases[] = {
        {{"", "x"}, "text key '': not a PNG keyword"},
        {{long_key, "x"}, "not a PNG keyword"},
        {{" lead", "x"}, "text key ' lead'"},
        {{"trail ", "x"}, "text key 'trail '"},
        {{"two  spaces", "x"}, "text key 'two  spaces'"},
        {{"tab\tkey", "x"}, "text key 'tab\tkey'"},
        {{"\xe7\x8c\xab", "x"}, "not a PNG keyword"},
        {{"bad\xff", "x"}, "text key 0: invalid UTF-8 at byte 3"},
        {{"k", "ok\xc3("}, "text 'k': invalid UTF-8 at byte 2"},
        {{NULL, "x"}, "text chunk 0: key is NULL"},
        {{"k", NULL}, "text chunk 0: value is NULL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        void *png = (void *)1;
        size_t size = 7;
        err_clear();
        CHECK_INT(png_encode_rgb8(rgb, 1, 1, &cases[i].t, 1, &png, &size), -1);
        CHECK(png == NULL && size == 0);
        CHECK_CONTAINS(err_get(), "PNG: ");
        CHECK_CONTAINS(err_get(), cases[i].msg);
    }
    /* 79 characters is the longest keyword. */
    long_key[79] = '\0';
    struct png_text ok = {long_key, "x"};
    void *png = NULL;
    size_t size = 0;
    CHECK_INT(png_encode_rgb8(rgb, 1, 1, &ok, 1, &png, &size), 0);
    free(png);
}

TEST(bad_sizes_are_errors)
{
    uint8_t rgb[12] = {0};
    const int sizes[][2] = {{0, 1}, {1, 0}, {-1, 4}, {4, -3}, {0, 0}};
    for (int k = 0; k < 5; k++) {
        void *png = (void *)1;
        size_t size = 7;
        CHECK_INT(png_encode_rgb8(rgb, sizes[k][0], sizes[k][1], NULL, 0, &png, &size), -1);
        CHECK(png == NULL && size == 0);
        CHECK_CONTAINS(err_get(), "PNG: bad image size");
        CHECK_INT(png_encode_gray8(rgb, sizes[k][0], sizes[k][1], NULL, 0, &png, &size), -1);
    }
    void *png = NULL;
    size_t size = 0;
    CHECK_INT(png_encode_rgb8(NULL, 2, 2, NULL, 0, &png, &size), -1);
    CHECK_CONTAINS(err_get(), "PNG: no pixels");
    CHECK_INT(png_encode_rgb8(rgb, 2, 2, NULL, -1, &png, &size), -1);
    CHECK_INT(png_encode_rgb8(rgb, 2, 2, NULL, 1, &png, &size), -1);
    CHECK_CONTAINS(err_get(), "bad text chunk count");
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}

TEST(write_is_atomic)
{
    const char *path = test_tmp_path("sample.png");
    int w = 6, h = 3;
    uint8_t *rgb = pattern(w, h, 3, 5);
    struct png_text text = {"parameters", "seed 3, class 207"};
    CHECK_INT(png_write_rgb8(path, rgb, w, h, &text, 1), 0);
    size_t size = 0;
    char *data = test_read_file(path, &size);
    CHECK(data != NULL);
    check_decodes_to(data, size, rgb, w, h);
    void *png = NULL;
    size_t png_size = 0;
    CHECK_INT(png_encode_rgb8(rgb, w, h, &text, 1, &png, &png_size), 0);
    CHECK(png_size == size && memcmp(png, data, size) == 0);
    free(png);
    free(data);

    /* A failed write leaves the old file whole and no temporary behind. */
    test_write_file(path, "old", 3);
    CHECK_INT(png_write_rgb8(path, rgb, 0, h, NULL, 0), -1);
    CHECK_CONTAINS(err_get(), "sample.png: bad image size 0x3");
    struct png_text bad = {"", "x"};
    CHECK_INT(png_write_rgb8(path, rgb, w, h, &bad, 1), -1);
    CHECK_CONTAINS(err_get(), "sample.png: text key ''");
    data = test_read_file(path, NULL);
    CHECK_STR(data, "old");
    free(data);
    CHECK_INT(count_entries(test_tmpdir()), 1);

    /* A good write replaces it. */
    uint8_t *gray = pattern(w, h, 1, 6);
    CHECK_INT(png_write_gray8(path, gray, w, h, NULL, 0), 0);
    data = test_read_file(path, &size);
    struct image_rgb img;
    CHECK_INT(image_decode(data, size, path, NULL, 0, 0, &img, NULL), 0);
    CHECK(img.pixels && img.pixels[3 * 4 + 1] == gray[4]);
    image_rgb_free(&img);
    free(data);
    CHECK_INT(count_entries(test_tmpdir()), 1);
    free(gray);

    CHECK_INT(png_write_rgb8(test_tmp_path("no/such/dir/x.png"), rgb, w, h, NULL, 0), -1);
    CHECK_CONTAINS(err_get(), "no/such/dir/x.png");
    free(rgb);
}

TEST(grid_layout)
{
    enum { W = 3, H = 2, N = 5 };
    uint8_t *imgs[N];
    const uint8_t *cells[N];
    for (int k = 0; k < N; k++) {
        imgs[k] = pattern(W, H, 3, (unsigned)k + 10);
        cells[k] = imgs[k];
    }
    cells[1] = NULL; /* left as background */
    const uint8_t bg[3] = {7, 8, 9};
    uint8_t *out = NULL;
    int ow = 0, oh = 0;
    CHECK_INT(image_grid_rgb8(cells, N, W, H, 3, 1, bg, &out, &ow, &oh), 0);
    CHECK_INT(ow, 3 * W + 2);
    CHECK_INT(oh, 2 * H + 1);
    for (int y = 0; y < oh && out; y++)
        for (int x = 0; x < ow; x++) {
            const uint8_t *px = out + 3 * ((size_t)y * ow + x);
            int col = x / (W + 1), row = y / (H + 1), cx = x % (W + 1), cy = y % (H + 1);
            int k = row * 3 + col;
            const uint8_t *want = bg;
            if (cx < W && cy < H && k < N && cells[k])
                want = cells[k] + 3 * (cy * W + cx);
            if (memcmp(px, want, 3) != 0) {
                test_fail(__FILE__, __LINE__, "pixel (%d, %d) of cell %d wrong", x, y, k);
                y = oh;
                break;
            }
        }
    free(out);

    /* More columns than images: one row, as wide as the images. */
    CHECK_INT(image_grid_rgb8(cells, 2, W, H, 8, 2, NULL, &out, &ow, &oh), 0);
    CHECK_INT(ow, 2 * W + 2);
    CHECK_INT(oh, H);
    CHECK(out && memcmp(out, imgs[0], 3) == 0);
    CHECK(out && out[3 * (W + 1)] == 0); /* padding: black without bg */
    free(out);

    /* One column, no padding: the images stacked. */
    CHECK_INT(image_grid_rgb8((const uint8_t *const *)imgs, 2, W, H, 1, 0, bg, &out, &ow, &oh), 0);
    CHECK_INT(ow, W);
    CHECK_INT(oh, 2 * H);
    CHECK(out && memcmp(out, imgs[0], W * H * 3) == 0 && memcmp(out + W * H * 3, imgs[1], W * H * 3) == 0);
    free(out);

    /* The grid is a PNG away from being a contact sheet. */
    CHECK_INT(image_grid_rgb8(cells, N, W, H, 2, 1, bg, &out, &ow, &oh), 0);
    CHECK_INT(png_write_rgb8(test_tmp_path("grid.png"), out, ow, oh, NULL, 0), 0);
    free(out);

    const int bad[][5] = {{0, W, H, 3, 1}, {N, 0, H, 3, 1}, {N, W, 0, 3, 1}, {N, W, H, 0, 1}, {N, W, H, 3, -1}};
    for (int i = 0; i < 5; i++) {
        out = (uint8_t *)1;
        CHECK_INT(image_grid_rgb8(cells, bad[i][0], bad[i][1], bad[i][2], bad[i][3], bad[i][4], bg, &out, &ow,
                                  &oh),
                  -1);
        CHECK(out == NULL);
        CHECK_CONTAINS(err_get(), "image grid: bad layout");
    }
    CHECK_INT(image_grid_rgb8(cells, 3, 1 << 30, 1, 3, 0, bg, &out, &ow, &oh), -1);
    CHECK_CONTAINS(err_get(), "too large");
    CHECK_INT(image_grid_rgb8(cells, 2, 1 << 30, 1, 2, 1 << 30, bg, &out, &ow, &oh), -1);
    CHECK_CONTAINS(err_get(), "too large");
    for (int k = 0; k < N; k++)
        free(imgs[k]);
}
