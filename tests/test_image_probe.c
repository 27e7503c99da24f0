/* image header probing against the fixtures of tests/reference/make_image_fixtures.py */
#include "tests/harness.h"
#include "image/probe.h"
#include "libcommon/error.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#define IMAGES "fixtures/images/"

/* A fixture in a buffer of exactly its size, so ASan sees any read past it. */
static unsigned char *load_exact(const char *rel, size_t *size)
{
    char path[512];
    snprintf(path, sizeof path, IMAGES "%s", rel);
    char *raw = test_read_file(test_source_path(path), size);
    if (!raw) {
        test_fail(__FILE__, __LINE__, "cannot read %s", path);
        return NULL;
    }
    unsigned char *exact = malloc(*size ? *size : 1);
    memcpy(exact, raw, *size);
    free(raw);
    return exact;
}

static enum image_probe_error probe_bytes(const unsigned char *src, size_t n, const char *name,
                                          struct image_info *info)
{
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, src, n);
    enum image_probe_error e = image_probe(copy, n, name, info);
    free(copy);
    return e;
}

static enum image_format format_of(const char *s)
{
    if (!strcmp(s, "jpeg"))
        return IMAGE_FORMAT_JPEG;
    if (!strcmp(s, "png"))
        return IMAGE_FORMAT_PNG;
    if (!strcmp(s, "webp"))
        return IMAGE_FORMAT_WEBP;
    return IMAGE_FORMAT_UNKNOWN;
}

static enum image_format format_of_extension(const char *file)
{
    const char *dot = strrchr(file, '.');
    if (!dot)
        return IMAGE_FORMAT_UNKNOWN;
    if (!strcmp(dot, ".jpg"))
        return IMAGE_FORMAT_JPEG;
    return format_of(dot + 1);
}

/* Splits line at tabs in place; returns the number of fields. */
static int split_tabs(char *line, char **field, int max)
{
    int n = 0;
    field[n++] = line;
    for (char *c = line; *c && n < max; c++)
        if (*c == '\t') {
            *c = '\0';
            field[n++] = c + 1;
        }
    return n;
}

struct row {
    char *file;
    int nf;
    char *f[12];
};

/* The data lines of expected.tsv; *n rows. Caller frees *text and the array. */
static struct row *read_expected(char **text, int *n)
{
    *text = test_read_file(test_source_path(IMAGES "expected.tsv"), NULL);
    *n = 0;
    if (!*text) {
        test_fail(__FILE__, __LINE__, "cannot read expected.tsv");
        return NULL;
    }
    struct row *rows = calloc(256, sizeof *rows);
    char *save = NULL;
    for (char *line = strtok_r(*text, "\n", &save); line && *n < 256;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == '\0')
            continue;
        struct row *r = &rows[(*n)++];
        r->nf = split_tabs(line, r->f, 12);
        r->file = r->f[0];
    }
    return rows;
}

static enum image_probe_error error_of(const char *s)
{
    for (int e = IMAGE_ERR_EMPTY; e <= IMAGE_ERR_CORRUPT; e++)
        if (!strcmp(s, image_probe_error_name((enum image_probe_error)e)))
            return (enum image_probe_error)e;
    test_fail(__FILE__, __LINE__, "unknown error name \"%s\" in expected.tsv", s);
    return IMAGE_OK;
}

TEST(names)
{
    CHECK_STR(image_format_name(IMAGE_FORMAT_JPEG), "jpeg");
    CHECK_STR(image_format_name(IMAGE_FORMAT_PNG), "png");
    CHECK_STR(image_format_name(IMAGE_FORMAT_WEBP), "webp");
    CHECK_STR(image_format_name(IMAGE_FORMAT_UNKNOWN), "unknown");
    CHECK_STR(image_probe_error_name(IMAGE_ERR_EMPTY), "empty");
    CHECK_STR(image_probe_error_name(IMAGE_ERR_UNSUPPORTED), "unsupported format");
    CHECK_STR(image_probe_error_name(IMAGE_ERR_CORRUPT), "truncated or corrupt header");
}

TEST(every_expected_row)
{
    char *text;
    int n;
    struct row *rows = read_expected(&text, &n);
    CHECK(n >= 45);
    int ok_rows = 0, err_rows = 0;
    for (int i = 0; i < n; i++) {
        struct row *r = &rows[i];
        size_t size;
        unsigned char *data = load_exact(r->file, &size);
        if (!data)
            continue;
        struct image_info info;
        err_set("stale");
        enum image_probe_error e = image_probe(data, size, r->file, &info);
        if (r->nf == 10) {
            ok_rows++;
            if (e != IMAGE_OK) {
                test_fail(__FILE__, __LINE__, "%s: expected success, got %s", r->file,
                          err_get());
            } else {
                int got[9] = {info.stored_width, info.stored_height, info.orientation, info.width,
                              info.height, info.channels, info.bit_depth, info.has_alpha};
                CHECK_STR(image_format_name(info.format), r->f[1]);
                for (int k = 0; k < 8; k++)
                    if (got[k] != atoi(r->f[2 + k]))
                        test_fail(__FILE__, __LINE__, "%s: column %d is %d, expected %s",
                                  r->file, 2 + k + 1, got[k], r->f[2 + k]);
                CHECK_INT(info.animated, 0);
                /* Only the fixtures that say so are progressive, CMYK or interlaced. */
                CHECK_INT(info.progressive, strstr(r->file, "progressive") != NULL);
                CHECK_INT(info.cmyk, strstr(r->file, "cmyk") != NULL);
                CHECK_INT(info.interlaced, strstr(r->file, "interlaced") != NULL);
            }
        } else if (r->nf == 2) {
            err_rows++;
            enum image_probe_error want = error_of(r->f[1]);
            if (e != want)
                test_fail(__FILE__, __LINE__, "%s: expected \"%s\", got %d (%s)", r->file,
                          r->f[1], (int)e, err_get());
            /* "NAME: reason (detail)" */
            char head[600];
            snprintf(head, sizeof head, "%s: %s (", r->file, r->f[1]);
            CHECK(strncmp(err_get(), head, strlen(head)) == 0);
            if (want == IMAGE_ERR_CORRUPT)
                CHECK_STR(image_format_name(info.format),
                          image_format_name(format_of_extension(r->file)));
            CHECK_INT(info.width, 0);
            CHECK_INT(info.stored_width, 0);
        } else {
            test_fail(__FILE__, __LINE__, "%s: %d fields in expected.tsv", r->file, r->nf);
        }
        free(data);
    }
    CHECK(ok_rows >= 30);
    CHECK(err_rows >= 15);
    free(rows);
    free(text);
}

/* Every image under good/, bad/ and classes/ has its row, so a new fixture
 * cannot go unchecked. */
TEST(expected_tsv_lists_every_fixture)
{
    char *text;
    int n;
    struct row *rows = read_expected(&text, &n);
    const char *dirs[] = {"good", "bad", "classes/cat", "classes/dog", "classes/zebra"};
    int seen = 0;
    for (size_t k = 0; k < sizeof dirs / sizeof dirs[0]; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, IMAGES "%s", dirs[k]);
        DIR *d = opendir(test_source_path(rel));
        CHECK(d != NULL);
        struct dirent *ent;
        while (d && (ent = readdir(d))) {
            if (ent->d_name[0] == '.')
                continue;
            const char *dot = strrchr(ent->d_name, '.');
            if (dot && !strcmp(dot, ".txt"))
                continue; /* sidecar captions */
            char file[512];
            snprintf(file, sizeof file, "%s/%s", dirs[k], ent->d_name);
            int found = 0;
            for (int i = 0; i < n; i++)
                found |= !strcmp(rows[i].file, file);
            if (!found)
                test_fail(__FILE__, __LINE__, "%s has no row in expected.tsv", file);
            seen++;
        }
        if (d)
            closedir(d);
    }
    CHECK_INT(seen, n);
    free(rows);
    free(text);
}

static void check_display(const char *rel, int orientation, int swapped)
{
    size_t size;
    unsigned char *data = load_exact(rel, &size);
    if (!data)
        return;
    struct image_info info;
    CHECK_INT(image_probe(data, size, rel, &info), IMAGE_OK);
    CHECK_INT(info.orientation, orientation);
    CHECK_INT(info.width, swapped ? info.stored_height : info.stored_width);
    CHECK_INT(info.height, swapped ? info.stored_width : info.stored_height);
    CHECK(info.stored_width != info.stored_height);
    free(data);
}

TEST(orientation_swaps_5_to_8)
{
    check_display("good/jpeg_baseline_24x16.jpg", 1, 0);
    check_display("good/jpeg_exif_orient2_26x10.jpg", 2, 0);
    check_display("good/jpeg_exif_orient3_27x11.jpg", 3, 0);
    check_display("good/jpeg_exif_orient4_28x12.jpg", 4, 0);
    check_display("good/jpeg_exif_orient5_29x13.jpg", 5, 1);
    check_display("good/jpeg_exif_orient6_24x16.jpg", 6, 1);
    check_display("good/jpeg_exif_orient7_30x14.jpg", 7, 1);
    check_display("good/jpeg_exif_orient8_31x15.jpg", 8, 1);
    check_display("good/jpeg_exif_orient9_invalid_25x9.jpg", 1, 0);
    check_display("good/png_exif_orient6_36x12.png", 6, 1);
}

static void check_memory(const void *bytes, size_t n, enum image_probe_error want,
                         enum image_format format, const char *detail)
{
    struct image_info info;
    enum image_probe_error e = probe_bytes(bytes, n, "mem/x.bin", &info);
    CHECK_INT(e, want);
    CHECK_INT(info.format, format);
    CHECK_CONTAINS(err_get(), "mem/x.bin: ");
    CHECK_CONTAINS(err_get(), image_probe_error_name(want));
    CHECK_CONTAINS(err_get(), detail);
}

TEST(error_kinds_and_messages_name_the_file)
{
    struct image_info info;
    CHECK_INT(image_probe(NULL, 0, "a/b.jpg", &info), IMAGE_ERR_EMPTY);
    CHECK_STR(err_get(), "a/b.jpg: empty (0 bytes)");
    CHECK_INT(image_probe("x", 0, "shard.tar!/m/0001.png", &info), IMAGE_ERR_EMPTY);
    CHECK_CONTAINS(err_get(), "shard.tar!/m/0001.png: empty");

    check_memory("GIF89a\1\0\1\0", 10, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN, "(GIF)");
    check_memory("II*\0\x08\0\0\0", 8, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN, "(TIFF)");
    check_memory("BM", 2, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN, "(BMP)");
    check_memory("\0\0\0\x1c" "ftypavif", 12, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN, "(AVIF)");
    check_memory("RIFF\x24\0\0\0WAVEfmt ", 16, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN,
                 "(RIFF, not WebP)");
    check_memory("hello, world\n", 13, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN, "(text)");
    check_memory("\x01\x02\x03\xfe", 4, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN,
                 "(signature 01 02 03 fe)");
    check_memory("\xff", 1, IMAGE_ERR_UNSUPPORTED, IMAGE_FORMAT_UNKNOWN, "signature ff");
    /* Cut inside the magic: still the format it began as. */
    check_memory("\xff\xd8", 2, IMAGE_ERR_CORRUPT, IMAGE_FORMAT_JPEG, "(JPEG: ");
    check_memory("\x89PN", 3, IMAGE_ERR_CORRUPT, IMAGE_FORMAT_PNG, "(PNG: ");
    check_memory("\x89PNG\r\n\n\0", 8, IMAGE_ERR_CORRUPT, IMAGE_FORMAT_PNG, "(PNG: ");
    check_memory("RIFF\0\0\0\0WE", 10, IMAGE_ERR_CORRUPT, IMAGE_FORMAT_WEBP, "(WebP: ");

    size_t size;
    unsigned char *anim = load_exact("bad/webp_animated_20x12.webp", &size);
    if (anim) {
        CHECK_INT(image_probe(anim, size, "anim.webp", &info), IMAGE_ERR_UNSUPPORTED);
        CHECK_STR(err_get(), "anim.webp: unsupported format (animated WebP)");
        CHECK_INT(info.format, IMAGE_FORMAT_WEBP);
        CHECK_INT(info.animated, 1);
        free(anim);
    }
    unsigned char *trunc = load_exact("bad/jpeg_truncated_20bytes.jpg", &size);
    if (trunc) {
        CHECK_INT(image_probe(trunc, size, "t.jpg", &info), IMAGE_ERR_CORRUPT);
        CHECK_STR(err_get(), "t.jpg: truncated or corrupt header (JPEG: data ends inside the header)");
        free(trunc);
    }
    unsigned char *sof3 = load_exact("bad/jpeg_lossless_sof3_24x16.jpg", &size);
    if (sof3) {
        CHECK_INT(image_probe(sof3, size, "l.jpg", &info), IMAGE_ERR_UNSUPPORTED);
        CHECK_CONTAINS(err_get(), "l.jpg: unsupported format (JPEG: ");
        CHECK_CONTAINS(err_get(), "SOF type 0xc3");
        free(sof3);
    }
    unsigned char *crc = load_exact("bad/png_bad_ihdr_crc.png", &size);
    if (crc) {
        CHECK_INT(image_probe(crc, size, "c.png", &info), IMAGE_ERR_CORRUPT);
        CHECK_CONTAINS(err_get(), "c.png: truncated or corrupt header (PNG: ");
        CHECK_CONTAINS(err_get(), "checksum");
        free(crc);
    }
}

/* The declared size comes through untouched however large, for dit-index's
 * --max-pixels guard: the probe itself never multiplies. */
TEST(huge_declared_sizes)
{
    size_t size;
    struct image_info info;
    unsigned char *bomb = load_exact("bad/png_bomb_100000x100000.png", &size);
    if (bomb) {
        CHECK_INT(image_probe(bomb, size, "bomb.png", &info), IMAGE_OK);
        CHECK_INT(info.width, 100000);
        CHECK_INT(info.height, 100000);
        free(bomb);
    }
    unsigned char *max = load_exact("bad/png_ihdr_max_2147483647x2147483647.png", &size);
    if (max) {
        CHECK_INT(image_probe(max, size, "max.png", &info), IMAGE_OK);
        CHECK_INT(info.width, 2147483647);
        CHECK_INT(info.height, 2147483647);
        CHECK_INT(info.has_alpha, 1);
        free(max);
    }
}

static const char *const truncation_files[] = {
    "good/jpeg_exif_orient6_24x16.jpg",  "good/jpeg_progressive_32x24.jpg",
    "good/jpeg_cmyk_18x12.jpg",          "good/png_exif_orient6_36x12.png",
    "good/png_palette_trns_23x21.png",   "good/png_rgb16_17x33.png",
    "good/webp_lossy_36x20.webp",        "good/webp_lossy_alpha_25x15.webp",
    "good/webp_lossless_alpha_21x29.webp",
};

/* Every prefix of a good file either probes as the whole file does or fails
 * as truncated; it never succeeds with another size. */
TEST(every_truncation_length)
{
    for (size_t k = 0; k < sizeof truncation_files / sizeof truncation_files[0]; k++) {
        const char *rel = truncation_files[k];
        size_t size;
        unsigned char *data = load_exact(rel, &size);
        if (!data)
            continue;
        struct image_info full, info;
        CHECK_INT(image_probe(data, size, rel, &full), IMAGE_OK);
        int successes = 0;
        for (size_t n = 0; n < size; n++) {
            err_clear();
            enum image_probe_error e = probe_bytes(data, n, rel, &info);
            if (e == IMAGE_OK) {
                successes++;
                if (info.format != full.format || info.stored_width != full.stored_width ||
                    info.stored_height != full.stored_height || info.channels != full.channels ||
                    info.bit_depth != full.bit_depth)
                    test_fail(__FILE__, __LINE__, "%s cut at %zu: %dx%d, whole file %dx%d", rel,
                              n, info.stored_width, info.stored_height, full.stored_width,
                              full.stored_height);
                /* A PNG cut before its eXIf reads as unrotated; the others
                 * have their whole EXIF once the header is complete. */
                if (info.format != IMAGE_FORMAT_PNG)
                    CHECK_INT(info.orientation, full.orientation);
            } else {
                enum image_probe_error want = n == 0  ? IMAGE_ERR_EMPTY
                                              : n < 2 ? IMAGE_ERR_UNSUPPORTED
                                                      : IMAGE_ERR_CORRUPT;
                if (e != want)
                    test_fail(__FILE__, __LINE__, "%s cut at %zu: %s", rel, n, err_get());
                CHECK_CONTAINS(err_get(), rel);
            }
        }
        /* The header is a small part of each file: most prefixes probe. */
        CHECK(successes > 0);
        free(data);
    }
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* Thousands of single-byte corruptions, mostly in the header bytes where
 * the parsers work: no crash, no leak, no read past the buffer (under
 * SANITIZE=1), and every answer is self-consistent. */
TEST(single_byte_corruptions)
{
    char *text;
    int n;
    struct row *rows = read_expected(&text, &n);
    uint32_t seed = 12345;
    int probes = 0, accepted = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(rows[i].file, "good/", 5) != 0)
            continue;
        size_t size;
        unsigned char *data = load_exact(rows[i].file, &size);
        if (!data)
            continue;
        unsigned char *copy = malloc(size);
        for (int t = 0; t < 200; t++) {
            memcpy(copy, data, size);
            size_t span = t % 4 == 0 ? size : (size < 160 ? size : 160);
            size_t pos = lcg(&seed) % span;
            unsigned char v = (unsigned char)lcg(&seed);
            if (v == copy[pos])
                v ^= 0xFF;
            copy[pos] = v;
            struct image_info info;
            err_clear();
            enum image_probe_error e = image_probe(copy, size, rows[i].file, &info);
            probes++;
            if (e == IMAGE_OK) {
                accepted++;
                CHECK(info.format != IMAGE_FORMAT_UNKNOWN);
                CHECK(info.stored_width > 0 && info.stored_height > 0);
                CHECK(info.orientation >= 1 && info.orientation <= 8);
                CHECK(info.channels >= 1 && info.channels <= 4);
                CHECK(info.bit_depth == 8 || info.bit_depth == 16);
                CHECK_INT(info.width, info.orientation >= 5 ? info.stored_height : info.stored_width);
            } else {
                CHECK(e == IMAGE_ERR_UNSUPPORTED || e == IMAGE_ERR_CORRUPT);
                CHECK_CONTAINS(err_get(), rows[i].file);
                CHECK_INT(info.stored_width, 0);
            }
        }
        free(copy);
        free(data);
    }
    CHECK(probes >= 4000);
    CHECK(accepted > 0 && accepted < probes);
    free(rows);
    free(text);
}
