#include "image/decode.h"

#include "image/probe.h"
#include "libcommon/error.h"

#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <spng.h>
#include <webp/decode.h>

/* The same bounds the probe sets on what ancillary PNG chunks may make spng
 * keep, so metadata cannot make a decode allocate gigabytes. */
#define PNG_CHUNK_SIZE_LIMIT ((size_t)16 << 20)
#define PNG_CHUNK_CACHE_LIMIT ((size_t)64 << 20)

static const uint8_t white[3] = {255, 255, 255};

void image_rgb_free(struct image_rgb *img)
{
    if (!img)
        return;
    free(img->pixels);
    img->pixels = NULL;
    img->width = img->height = 0;
}

/* width * height * channels bytes, or NULL on overflow or out of memory. */
static uint8_t *pixels_alloc(int width, int height, int channels)
{
    if (width <= 0 || height <= 0 || (size_t)width > SIZE_MAX / (size_t)channels / (size_t)height)
        return NULL;
    return malloc((size_t)width * (size_t)height * (size_t)channels);
}

static uint8_t *rgb_alloc(int width, int height)
{
    return pixels_alloc(width, height, 3);
}

/* round((a * c + (255 - a) * bg) / 255); the exact quotient is never a half. */
static inline uint8_t blend(unsigned c, unsigned a, unsigned bg)
{
    return (uint8_t)((a * c + (255 - a) * bg + 127) / 255);
}

/* RGBA pixels to RGB composited onto bg; dst may be src (it never runs ahead). */
static void rgba_to_rgb(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t bg[3])
{
    for (size_t i = 0; i < n; i++, src += 4, dst += 3) {
        unsigned a = src[3];
        uint8_t r = src[0], g = src[1], b = src[2];
        if (a == 255) {
            dst[0] = r, dst[1] = g, dst[2] = b;
        } else {
            dst[0] = blend(r, a, bg[0]);
            dst[1] = blend(g, a, bg[1]);
            dst[2] = blend(b, a, bg[2]);
        }
    }
}

/* Shrinks a buffer that now holds less; keeps the old one if realloc fails. */
static uint8_t *shrink(uint8_t *p, size_t n)
{
    uint8_t *q = realloc(p, n ? n : 1);
    return q ? q : p;
}

/* ---- orientation ----------------------------------------------------------- */

void image_rgb_flip(struct image_rgb *img)
{
    int w = img->width;
    for (int y = 0; y < img->height; y++) {
        uint8_t *row = img->pixels + (size_t)y * w * 3;
        for (int l = 0, r = w - 1; l < r; l++, r--) {
            uint8_t *a = row + (size_t)l * 3, *b = row + (size_t)r * 3;
            uint8_t t0 = a[0], t1 = a[1], t2 = a[2];
            a[0] = b[0], a[1] = b[1], a[2] = b[2];
            b[0] = t0, b[1] = t1, b[2] = t2;
        }
    }
}

static void swap_rows(uint8_t *a, uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t t = a[i];
        a[i] = b[i];
        b[i] = t;
    }
}

static void flip_vertical(struct image_rgb *img)
{
    size_t stride = (size_t)img->width * 3;
    for (int t = 0, b = img->height - 1; t < b; t++, b--)
        swap_rows(img->pixels + (size_t)t * stride, img->pixels + (size_t)b * stride, stride);
}

int image_rgb_orient(struct image_rgb *img, int orientation)
{
    if (orientation < 1 || orientation > 8) {
        err_set("EXIF orientation %d out of range 1..8", orientation);
        return -1;
    }
    switch (orientation) {
    case 1: return 0;
    case 2: image_rgb_flip(img); return 0;
    case 3: image_rgb_flip(img); flip_vertical(img); return 0;
    case 4: flip_vertical(img); return 0;
    default: break;
    }
    /* 5..8 transpose, possibly mirrored: out(x, y) = in(sx, sy) with the
     * output sized h x w. */
    int w = img->width, h = img->height;
    uint8_t *dst = rgb_alloc(h, w);
    if (!dst) {
        err_set("out of memory rotating a %dx%d image", w, h);
        return -1;
    }
    const uint8_t *src = img->pixels;
    for (int y = 0; y < w; y++) {
        uint8_t *out = dst + (size_t)y * h * 3;
        for (int x = 0; x < h; x++, out += 3) {
            int sx, sy;
            switch (orientation) {
            case 5: sx = y, sy = x; break;                  /* transpose */
            case 6: sx = y, sy = h - 1 - x; break;          /* rotate 90 clockwise */
            case 7: sx = w - 1 - y, sy = h - 1 - x; break;  /* transverse */
            default: sx = w - 1 - y, sy = x; break;         /* 8: rotate 90 counter-clockwise */
            }
            const uint8_t *in = src + ((size_t)sy * w + (size_t)sx) * 3;
            out[0] = in[0], out[1] = in[1], out[2] = in[2];
        }
    }
    free(img->pixels);
    img->pixels = dst;
    img->width = h;
    img->height = w;
    return 0;
}

/* ---- JPEG ------------------------------------------------------------------ */

struct jpeg_dec_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int data_lost; /* a warning that says pixels were filled in, not decoded */
};

/* Everything the decode changes after setjmp lives here, in the caller's
 * frame, so nothing is indeterminate after a longjmp. */
struct jpeg_job {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_dec_err err;
    uint8_t *pixels; /* the stored-orientation RGB result */
    uint8_t *row;    /* one scanline of gray or CMYK */
};

static void jpeg_dec_error_exit(j_common_ptr cinfo)
{
    longjmp(((struct jpeg_dec_err *)cinfo->err)->jump, 1);
}

/* libjpeg warns and goes on with made-up data when the input ends (it
 * inserts an EOI and fills the rest gray) or a marker interrupts a scan; for
 * a training set that is a broken image, not a usable one. */
static void jpeg_dec_emit_message(j_common_ptr cinfo, int level)
{
    struct jpeg_dec_err *err = (struct jpeg_dec_err *)cinfo->err;
    if (level < 0) {
        err->pub.num_warnings++;
        if (err->pub.msg_code == JWRN_JPEG_EOF || err->pub.msg_code == JWRN_HIT_MARKER)
            err->data_lost = 1;
    }
}

static void jpeg_dec_output_message(j_common_ptr cinfo)
{
    (void)cinfo;
}

/* Pillow reads every 4-component JPEG as Adobe's inverted CMYK and converts
 * with R = 255 - k' - round(c' (255 - k') / 255) on the re-inverted c' and k';
 * in libjpeg's own values that is round(c k / 255). */
static void cmyk_row_to_rgb(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++, src += 4, dst += 3) {
        unsigned k = src[3];
        dst[0] = (uint8_t)((src[0] * k + 127) / 255);
        dst[1] = (uint8_t)((src[1] * k + 127) / 255);
        dst[2] = (uint8_t)((src[2] * k + 127) / 255);
    }
}

/* The largest s of 8, 4, 2 with s * min <= size on both sides of the
 * displayed image, else 1. */
static int jpeg_pick_scale(const struct image_info *info, int min_w, int min_h)
{
    if (min_w <= 0 || min_h <= 0)
        return 1;
    for (int s = 8; s >= 2; s /= 2)
        if ((long long)s * min_w <= info->width && (long long)s * min_h <= info->height)
            return s;
    return 1;
}

/* Records "NAME: what (detail)" and releases everything. */
static int jpeg_fail(struct jpeg_job *job, const char *name, const char *what, const char *detail)
{
    err_set("%s: %s (%s)", name, what, detail);
    jpeg_destroy_decompress(&job->cinfo);
    free(job->pixels);
    free(job->row);
    job->pixels = job->row = NULL;
    return -1;
}

static int decode_jpeg(struct jpeg_job *job, const unsigned char *data, size_t size, const char *name,
                       int scale, struct image_rgb *out)
{
    struct jpeg_decompress_struct *cinfo = &job->cinfo;
    cinfo->err = jpeg_std_error(&job->err.pub);
    job->err.pub.error_exit = jpeg_dec_error_exit;
    job->err.pub.emit_message = jpeg_dec_emit_message;
    job->err.pub.output_message = jpeg_dec_output_message;
    if (setjmp(job->err.jump)) {
        char lib[JMSG_LENGTH_MAX];
        job->err.pub.format_message((j_common_ptr)cinfo, lib);
        if (job->err.data_lost)
            return jpeg_fail(job, name, "truncated JPEG", "premature end of data");
        return jpeg_fail(job, name, "corrupt JPEG", lib);
    }
    jpeg_create_decompress(cinfo);
    /* size_t and unsigned long have the same width on the platforms we build for. */
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    jpeg_read_header(cinfo, TRUE);

    int cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
    int gray = cinfo->jpeg_color_space == JCS_GRAYSCALE;
    cinfo->out_color_space = cmyk ? JCS_CMYK : gray ? JCS_GRAYSCALE : JCS_RGB;
    cinfo->dct_method = JDCT_ISLOW;
    cinfo->do_fancy_upsampling = TRUE;
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned)scale;
    jpeg_start_decompress(cinfo);
    if (job->err.data_lost)
        return jpeg_fail(job, name, "truncated JPEG", "premature end of data");

    int w = (int)cinfo->output_width, h = (int)cinfo->output_height;
    job->pixels = rgb_alloc(w, h);
    if (!job->pixels)
        return jpeg_fail(job, name, "JPEG", "out of memory");
    if (cmyk || gray) {
        job->row = malloc((size_t)w * (size_t)cinfo->output_components);
        if (!job->row)
            return jpeg_fail(job, name, "JPEG", "out of memory");
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *dst = job->pixels + (size_t)cinfo->output_scanline * (size_t)w * 3;
        JSAMPROW rows[1] = {cmyk || gray ? job->row : dst};
        if (jpeg_read_scanlines(cinfo, rows, 1) != 1)
            return jpeg_fail(job, name, "truncated JPEG", "no more scanlines");
        if (job->err.data_lost)
            return jpeg_fail(job, name, "truncated JPEG", "premature end of data");
        if (cmyk) {
            cmyk_row_to_rgb(dst, job->row, (size_t)w);
        } else if (gray) {
            for (int x = 0; x < w; x++)
                dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = job->row[x];
        }
    }
    /* Whatever follows the last scanline (trailing markers, the EOI) cannot
     * change the pixels, so it is not read. */
    jpeg_destroy_decompress(cinfo);
    free(job->row);
    out->pixels = job->pixels;
    out->width = w;
    out->height = h;
    job->pixels = job->row = NULL;
    return 0;
}

/* ---- PNG ------------------------------------------------------------------- */

static int png_fail(spng_ctx *ctx, uint8_t *buf, const char *name, int rc)
{
    if (rc == SPNG_IO_EOF)
        err_set("%s: truncated PNG (data ends early)", name);
    else if (rc == SPNG_EMEM || rc == SPNG_EOVERFLOW)
        err_set("%s: PNG: %s", name, spng_strerror(rc));
    else
        err_set("%s: corrupt PNG (%s)", name, spng_strerror(rc));
    spng_ctx_free(ctx);
    free(buf);
    return -1;
}

/* One 16-bit sample (host order, as spng's RGBA16 gives it) to 8 bits. */
static inline uint8_t png16_to8(uint16_t v, int clip)
{
    return clip ? (uint8_t)(v > 255 ? 255 : v) : (uint8_t)(v >> 8);
}

/* RGBA16 pixels to RGBA8 the way Pillow reads them (see image_decode.h); in
 * place: the 8-bit pixel never overtakes the 16-bit one it comes from. */
static void png_rgba16_to_rgba8(uint8_t *buf, size_t n, int clip)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t s[4];
        memcpy(s, buf + i * 8, sizeof s);
        uint8_t *d = buf + i * 4;
        d[0] = png16_to8(s[0], clip);
        d[1] = png16_to8(s[1], clip);
        d[2] = png16_to8(s[2], clip);
        d[3] = png16_to8(s[3], 0);
    }
}

static int decode_png(const unsigned char *data, size_t size, const char *name, const uint8_t bg[3],
                      struct image_rgb *out)
{
    uint8_t *buf = NULL;
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        err_set("%s: PNG: out of memory", name);
        return -1;
    }
    struct spng_ihdr ihdr;
    int rc = spng_set_chunk_limits(ctx, PNG_CHUNK_SIZE_LIMIT, PNG_CHUNK_CACHE_LIMIT);
    if (rc == 0)
        rc = spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_DISCARD);
    if (rc == 0)
        rc = spng_set_png_buffer(ctx, data, size);
    if (rc == 0)
        rc = spng_get_ihdr(ctx, &ihdr);
    if (rc != 0)
        return png_fail(ctx, buf, name, rc);

    struct spng_trns trns;
    rc = spng_get_trns(ctx, &trns);
    if (rc != 0 && rc != SPNG_ECHUNKAVAIL)
        return png_fail(ctx, buf, name, rc);
    int has_trns = rc == 0;

    /* Palettes take their tRNS alpha from spng; gray and RGB tRNS are applied
     * below, on the 8-bit values, as Pillow does. */
    int palette = ihdr.color_type == SPNG_COLOR_TYPE_INDEXED;
    int deep = ihdr.bit_depth == 16;
    int fmt = deep ? SPNG_FMT_RGBA16 : SPNG_FMT_RGBA8;
    size_t len;
    rc = spng_decoded_image_size(ctx, fmt, &len);
    if (rc != 0)
        return png_fail(ctx, buf, name, rc);
    buf = malloc(len);
    if (!buf)
        return png_fail(ctx, buf, name, SPNG_EMEM);
    rc = spng_decode_image(ctx, buf, len, fmt, palette ? SPNG_DECODE_TRNS : 0);
    if (rc != 0)
        return png_fail(ctx, buf, name, rc);
    spng_ctx_free(ctx);

    size_t n = (size_t)ihdr.width * ihdr.height;
    if (deep)
        png_rgba16_to_rgba8(buf, n, ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE);
    if (has_trns && !palette) {
        uint8_t t[3];
        if (ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE) {
            /* Pillow's mode "1" stores the key as 0 or 255. */
            uint8_t g = ihdr.bit_depth == 1 ? (trns.gray ? 255 : 0) : (uint8_t)(trns.gray & 0xFF);
            t[0] = t[1] = t[2] = g;
        } else {
            t[0] = (uint8_t)(trns.red & 0xFF);
            t[1] = (uint8_t)(trns.green & 0xFF);
            t[2] = (uint8_t)(trns.blue & 0xFF);
        }
        for (size_t i = 0; i < n; i++) {
            uint8_t *p = buf + i * 4;
            if (p[0] == t[0] && p[1] == t[1] && p[2] == t[2])
                p[3] = 0;
        }
    }
    rgba_to_rgb(buf, buf, n, bg);
    out->pixels = shrink(buf, n * 3);
    out->width = (int)ihdr.width;
    out->height = (int)ihdr.height;
    return 0;
}

/* ---- WebP ------------------------------------------------------------------ */

static const char *vp8_status_reason(VP8StatusCode st)
{
    switch (st) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "data ends early";
    }
    return "unknown status";
}

static int decode_webp(const unsigned char *data, size_t size, const char *name, const uint8_t bg[3],
                       const struct image_info *info, struct image_rgb *out)
{
    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config)) {
        err_set("%s: WebP: libwebp version mismatch", name);
        return -1;
    }
    int alpha = info->has_alpha;
    int w = info->stored_width, h = info->stored_height;
    int channels = alpha ? 4 : 3;
    uint8_t *buf = pixels_alloc(w, h, channels);
    if (!buf) {
        err_set("%s: WebP: out of memory for a %dx%d image", name, w, h);
        return -1;
    }
    /* Decode straight into our buffer: no copy, and one allocation to free. */
    config.output.colorspace = alpha ? MODE_RGBA : MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = buf;
    config.output.u.RGBA.stride = w * channels;
    config.output.u.RGBA.size = (size_t)w * (size_t)h * (size_t)channels;
    VP8StatusCode st = WebPDecode(data, size, &config);
    if (st == VP8_STATUS_OK && (config.output.width != w || config.output.height != h))
        st = VP8_STATUS_BITSTREAM_ERROR; /* the header and the bitstream disagree */
    WebPFreeDecBuffer(&config.output);
    if (st != VP8_STATUS_OK) {
        free(buf);
        if (st == VP8_STATUS_NOT_ENOUGH_DATA)
            err_set("%s: truncated WebP (%s)", name, vp8_status_reason(st));
        else
            err_set("%s: corrupt WebP (%s)", name, vp8_status_reason(st));
        return -1;
    }
    if (alpha) {
        rgba_to_rgb(buf, buf, (size_t)w * (size_t)h, bg);
        buf = shrink(buf, (size_t)w * (size_t)h * 3);
    }
    out->pixels = buf;
    out->width = w;
    out->height = h;
    return 0;
}

/* ---- the entry point ------------------------------------------------------- */

int image_decode(const void *data, size_t size, const char *name, const uint8_t bg[3], int min_width,
                 int min_height, struct image_rgb *out, int *scale_out)
{
    memset(out, 0, sizeof *out);
    if (scale_out)
        *scale_out = 1;
    if (!name)
        name = "(image)";
    if (!bg)
        bg = white;
    struct image_info info;
    if (image_probe(data, size, name, &info) != IMAGE_OK)
        return -1; /* the probe's message names the file and the reason */

    int scale = 1, rc;
    switch (info.format) {
    case IMAGE_FORMAT_JPEG: {
        struct jpeg_job job;
        memset(&job, 0, sizeof job);
        scale = jpeg_pick_scale(&info, min_width, min_height);
        rc = decode_jpeg(&job, data, size, name, scale, out);
        break;
    }
    case IMAGE_FORMAT_PNG: rc = decode_png(data, size, name, bg, out); break;
    case IMAGE_FORMAT_WEBP: rc = decode_webp(data, size, name, bg, &info, out); break;
    default:
        err_set("%s: unsupported format", name);
        return -1;
    }
    if (rc != 0)
        return -1;
    if (image_rgb_orient(out, info.orientation) != 0) {
        err_prefix("%s", name);
        image_rgb_free(out);
        return -1;
    }
    if (scale_out)
        *scale_out = scale;
    return 0;
}
