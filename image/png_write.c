/* PNG encoding through libspng; see png_write.h for the text-chunk rules. */
#include "image/png_write.h"

#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/utf8.h"

#include <inttypes.h>
#include <limits.h>
#include <spng.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Decodes the code point at s[*i] of a string already known to be valid
 * UTF-8, and advances *i past it. */
static uint32_t utf8_next(const char *s, size_t *i)
{
    const unsigned char *p = (const unsigned char *)s + *i;
    if (p[0] < 0x80) {
        *i += 1;
        return p[0];
    }
    if (p[0] < 0xE0) {
        *i += 2;
        return (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F);
    }
    if (p[0] < 0xF0) {
        *i += 3;
        return (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    }
    *i += 4;
    return (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 |
           (p[3] & 0x3F);
}

/* The characters the PNG spec allows in Latin-1 keywords and tEXt text
 * (libspng checks the same sets). */
static int latin1_printable(uint32_t c)
{
    return (c >= 0x20 && c <= 0x7E) || (c >= 0xA1 && c <= 0xFF);
}

/* Transcodes valid UTF-8 s to Latin-1 in out (room for strlen(s) + 1 bytes,
 * enough since Latin-1 never takes more bytes than UTF-8). Returns the
 * Latin-1 length, or -1 when a character is outside what keep() allows. */
static long to_latin1(const char *s, int (*keep)(uint32_t), char *out)
{
    size_t i = 0, n = 0;
    while (s[i]) {
        uint32_t c = utf8_next(s, &i);
        if (!keep(c))
            return -1;
        out[n++] = (char)(unsigned char)c;
    }
    out[n] = '\0';
    return (long)n;
}

static int latin1_text(uint32_t c)
{
    return c == '\n' || latin1_printable(c);
}

/* Fills *t from one key and value. *owned gets a malloc'd buffer the chunk
 * points into (the Latin-1 value), or NULL; the caller frees it after the
 * encoding, since libspng keeps the pointers. */
static int text_chunk(const char *name, int index, const struct png_text *in, struct spng_text *t, char **owned)
{
    *owned = NULL;
    memset(t, 0, sizeof *t);
    if (!in->key || !in->value) {
        err_set("%s: text chunk %d: %s is NULL", name, index, in->key ? "value" : "key");
        return -1;
    }
    size_t key_len = strlen(in->key), value_len = strlen(in->value);
    long bad = utf8_invalid_at(in->key, key_len);
    if (bad >= 0) {
        err_set("%s: text key %d: invalid UTF-8 at byte %ld", name, index, bad);
        return -1;
    }
    /* Latin-1 takes at most as many bytes as UTF-8, so a key of more than
     * 79 characters may still pass this check; the count below catches it. */
    char key[4 * 80];
    long n = key_len < sizeof key ? to_latin1(in->key, latin1_printable, key) : -1;
    if (n < 1 || n > 79 || key[0] == ' ' || key[n - 1] == ' ' || strstr(key, "  ")) {
        err_set("%s: text key '%s': not a PNG keyword (1 to 79 Latin-1 characters, no leading, trailing "
                "or double space)",
                name, in->key);
        return -1;
    }
    memcpy(t->keyword, key, (size_t)n + 1);

    bad = utf8_invalid_at(in->value, value_len);
    if (bad >= 0) {
        err_set("%s: text '%s': invalid UTF-8 at byte %ld", name, in->key, bad);
        return -1;
    }
    char *latin = malloc(value_len + 1);
    if (!latin) {
        err_set("%s: text '%s': out of memory", name, in->key);
        return -1;
    }
    long latin_len = to_latin1(in->value, latin1_text, latin);
    if (latin_len >= 0) {
        t->type = SPNG_TEXT;
        t->text = latin;
        t->length = (size_t)latin_len;
        *owned = latin;
    } else {
        free(latin);
        t->type = SPNG_ITXT;
        t->text = (char *)in->value;
        t->length = value_len;
        t->language_tag = "";
        t->translated_keyword = "";
    }
    /* libspng 0.7 refuses a zero length yet writes strlen(text) bytes, so an
     * empty value still makes an empty chunk, as the spec allows. */
    if (t->length == 0)
        t->length = 1;
    return 0;
}

static int encode(const char *name, const uint8_t *pixels, int channels, int width, int height,
                  const struct png_text *text, int n_text, void **png, size_t *size)
{
    *png = NULL;
    *size = 0;
    if (width < 1 || height < 1) {
        err_set("%s: bad image size %dx%d (width and height must be at least 1)", name, width, height);
        return -1;
    }
    if (!pixels) {
        err_set("%s: no pixels", name);
        return -1;
    }
    if (n_text < 0 || (n_text > 0 && !text)) {
        err_set("%s: bad text chunk count %d", name, n_text);
        return -1;
    }
    size_t row = (size_t)width * (size_t)channels;
    if ((size_t)height > SIZE_MAX / row) {
        err_set("%s: image of %dx%d is too large", name, width, height);
        return -1;
    }

    int rc = -1;
    struct spng_text *chunks = NULL;
    char **owned = NULL;
    spng_ctx *ctx = NULL;
    if (n_text > 0) {
        chunks = calloc((size_t)n_text, sizeof *chunks);
        owned = calloc((size_t)n_text, sizeof *owned);
        if (!chunks || !owned) {
            err_set("%s: out of memory", name);
            goto done;
        }
        for (int i = 0; i < n_text; i++)
            if (text_chunk(name, i, &text[i], &chunks[i], &owned[i]) != 0)
                goto done;
    }

    ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx) {
        err_set("%s: out of memory", name);
        goto done;
    }
    struct spng_ihdr ihdr = {
        .width = (uint32_t)width,
        .height = (uint32_t)height,
        .bit_depth = 8,
        .color_type = channels == 3 ? SPNG_COLOR_TYPE_TRUECOLOR : SPNG_COLOR_TYPE_GRAYSCALE,
    };
    int e = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    if (!e)
        e = spng_set_ihdr(ctx, &ihdr);
    if (!e && n_text > 0)
        e = spng_set_text(ctx, chunks, (uint32_t)n_text);
    if (!e)
        e = spng_encode_image(ctx, pixels, row * (size_t)height, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    if (e) {
        err_set("%s: PNG encoding failed: %s", name, spng_strerror(e));
        goto done;
    }
    size_t len = 0;
    void *buf = spng_get_png_buffer(ctx, &len, &e);
    if (!buf) {
        err_set("%s: PNG encoding failed: %s", name, spng_strerror(e ? e : SPNG_EMEM));
        goto done;
    }
    *png = buf;
    *size = len;
    rc = 0;
done:
    spng_ctx_free(ctx);
    for (int i = 0; owned && i < n_text; i++)
        free(owned[i]);
    free(owned);
    free(chunks);
    return rc;
}

int png_encode_rgb8(const uint8_t *rgb, int width, int height, const struct png_text *text, int n_text,
                    void **png, size_t *size)
{
    return encode("PNG", rgb, 3, width, height, text, n_text, png, size);
}

int png_encode_gray8(const uint8_t *gray, int width, int height, const struct png_text *text, int n_text,
                     void **png, size_t *size)
{
    return encode("PNG", gray, 1, width, height, text, n_text, png, size);
}

static int write_png(const char *path, const uint8_t *pixels, int channels, int width, int height,
                     const struct png_text *text, int n_text)
{
    void *png;
    size_t size;
    if (encode(path, pixels, channels, width, height, text, n_text, &png, &size) != 0)
        return -1;
    int rc = atomic_write(path, png, size);
    free(png);
    return rc;
}

int png_write_rgb8(const char *path, const uint8_t *rgb, int width, int height, const struct png_text *text,
                   int n_text)
{
    return write_png(path, rgb, 3, width, height, text, n_text);
}

int png_write_gray8(const char *path, const uint8_t *gray, int width, int height, const struct png_text *text,
                    int n_text)
{
    return write_png(path, gray, 1, width, height, text, n_text);
}

int image_grid_rgb8(const uint8_t *const *images, int n, int w, int h, int cols, int pad, const uint8_t bg[3],
                    uint8_t **out, int *ow, int *oh)
{
    *out = NULL;
    if (n < 1 || w < 1 || h < 1 || cols < 1 || pad < 0 || !images) {
        err_set("image grid: bad layout (%d images of %dx%d, %d columns, padding %d)", n, w, h, cols, pad);
        return -1;
    }
    int c = cols < n ? cols : n;
    int r = n / c + (n % c != 0);
    /* In 64 bits these cannot overflow: each factor is below 2^31. */
    int64_t width = (int64_t)c * w + (int64_t)(c - 1) * pad;
    int64_t height = (int64_t)r * h + (int64_t)(r - 1) * pad;
    if (width > INT_MAX || height > INT_MAX || (uint64_t)width * (uint64_t)height > SIZE_MAX / 3) {
        err_set("image grid: %d images of %dx%d in %d columns make a grid too large", n, w, h, cols);
        return -1;
    }
    size_t stride = (size_t)width * 3;
    uint8_t *grid = malloc(stride * (size_t)height);
    if (!grid) {
        err_set("image grid: out of memory for %" PRId64 "x%" PRId64, width, height);
        return -1;
    }
    static const uint8_t black[3] = {0, 0, 0};
    if (!bg)
        bg = black;
    for (size_t i = 0; i < (size_t)width * (size_t)height; i++)
        memcpy(grid + 3 * i, bg, 3);
    size_t cell_row = (size_t)w * 3;
    for (int k = 0; k < n; k++) {
        if (!images[k])
            continue;
        size_t x0 = (size_t)(k % c) * ((size_t)w + (size_t)pad);
        size_t y0 = (size_t)(k / c) * ((size_t)h + (size_t)pad);
        for (int y = 0; y < h; y++)
            memcpy(grid + (y0 + (size_t)y) * stride + x0 * 3, images[k] + (size_t)y * cell_row, cell_row);
    }
    *out = grid;
    *ow = (int)width;
    *oh = (int)height;
    return 0;
}
