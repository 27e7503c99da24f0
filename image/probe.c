#include "image/probe.h"

#include "libcommon/error.h"
#include "libcommon/utf8.h"

#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <libexif/exif-data.h>
#include <spng.h>
#include <webp/decode.h>

/* The libraries' limits on what an ancillary PNG chunk may make spng keep
 * (text chunks are inflated): generous for real metadata, small enough that
 * a crafted header cannot make the probe allocate gigabytes. */
#define PNG_CHUNK_SIZE_LIMIT ((size_t)16 << 20)
#define PNG_CHUNK_CACHE_LIMIT ((size_t)64 << 20)

static const unsigned char png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const unsigned char exif_header[6] = {'E', 'x', 'i', 'f', 0, 0};

const char *image_format_name(enum image_format f)
{
    switch (f) {
    case IMAGE_FORMAT_JPEG: return "jpeg";
    case IMAGE_FORMAT_PNG: return "png";
    case IMAGE_FORMAT_WEBP: return "webp";
    case IMAGE_FORMAT_UNKNOWN: break;
    }
    return "unknown";
}

const char *image_probe_error_name(enum image_probe_error e)
{
    switch (e) {
    case IMAGE_OK: return "ok";
    case IMAGE_ERR_EMPTY: return "empty";
    case IMAGE_ERR_UNSUPPORTED: return "unsupported format";
    case IMAGE_ERR_CORRUPT: return "truncated or corrupt header";
    }
    return "unknown error";
}

/* Records "NAME: reason (detail)" and returns the reason. */
static enum image_probe_error probe_fail(enum image_probe_error e, const char *name,
                                         const char *detail)
{
    err_set("%s: %s (%s)", name, image_probe_error_name(e), detail);
    return e;
}

/* ---- EXIF ------------------------------------------------------------------ */

/* Orientation from an EXIF block that starts with "Exif\0\0": IFD0 tag 0x0112
 * holding one integer 1..8, else 1, as Pillow's exif_transpose reads it. */
static int exif_orientation(const unsigned char *block, size_t len)
{
    if (len < sizeof exif_header || len > UINT_MAX)
        return 1;
    ExifData *ed = exif_data_new();
    if (!ed)
        return 1;
    /* Read what is there; "fixing" the data would invent or convert entries. */
    exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
    exif_data_load_data(ed, block, (unsigned int)len);
    ExifEntry *e = exif_content_get_entry(ed->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
    long v = 1;
    if (e && e->data && e->components == 1) {
        ExifByteOrder order = exif_data_get_byte_order(ed);
        switch (e->format) {
        case EXIF_FORMAT_BYTE:
            if (e->size >= 1)
                v = e->data[0];
            break;
        case EXIF_FORMAT_SHORT:
            if (e->size >= 2)
                v = exif_get_short(e->data, order);
            break;
        case EXIF_FORMAT_SSHORT:
            if (e->size >= 2)
                v = exif_get_sshort(e->data, order);
            break;
        case EXIF_FORMAT_LONG:
            if (e->size >= 4)
                v = (long)exif_get_long(e->data, order);
            break;
        case EXIF_FORMAT_SLONG:
            if (e->size >= 4)
                v = exif_get_slong(e->data, order);
            break;
        default:
            break;
        }
    }
    exif_data_unref(ed);
    return v >= 1 && v <= 8 ? (int)v : 1;
}

/* ---- JPEG ------------------------------------------------------------------ */

struct jpeg_probe_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int eof; /* the data ended inside the header */
};

/* libjpeg's default handler exits the process; ours returns to the probe. */
static void jpeg_probe_error_exit(j_common_ptr cinfo)
{
    longjmp(((struct jpeg_probe_err *)cinfo->err)->jump, 1);
}

/* Warnings are counted, never printed; running out of data is remembered
 * because libjpeg then feeds itself a fake EOI and fails with a misleading
 * reason ("contains no image", or a bad length read from the filler). */
static void jpeg_probe_emit_message(j_common_ptr cinfo, int level)
{
    struct jpeg_probe_err *err = (struct jpeg_probe_err *)cinfo->err;
    if (level < 0) {
        err->pub.num_warnings++;
        if (err->pub.msg_code == JWRN_JPEG_EOF)
            err->eof = 1;
    }
}

static void jpeg_probe_output_message(j_common_ptr cinfo)
{
    (void)cinfo;
}

/* Errors that name a JPEG libjpeg-turbo cannot decode, not a damaged one. */
static int jpeg_error_is_unsupported(int code)
{
    return code == JERR_SOF_UNSUPPORTED || code == JERR_BAD_PRECISION ||
           code == JERR_ARITH_NOTIMPL || code == JERR_NOT_COMPILED || code == JERR_NOTIMPL;
}

static int jpeg_orientation(j_decompress_ptr cinfo)
{
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= sizeof exif_header &&
            memcmp(m->data, exif_header, sizeof exif_header) == 0)
            return exif_orientation(m->data, m->data_length);
    return 1;
}

static enum image_probe_error probe_jpeg(const unsigned char *data, size_t size, const char *name,
                                         struct image_info *out)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_probe_err jerr;
    memset(&cinfo, 0, sizeof cinfo); /* so a failed create leaves nothing to destroy */
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_probe_error_exit;
    jerr.pub.emit_message = jpeg_probe_emit_message;
    jerr.pub.output_message = jpeg_probe_output_message;
    jerr.eof = 0;
    if (setjmp(jerr.jump)) {
        char msg[JMSG_LENGTH_MAX + 32];
        enum image_probe_error e = IMAGE_ERR_CORRUPT;
        if (jerr.eof) {
            snprintf(msg, sizeof msg, "JPEG: data ends inside the header");
        } else {
            char lib[JMSG_LENGTH_MAX];
            jerr.pub.format_message((j_common_ptr)&cinfo, lib);
            snprintf(msg, sizeof msg, "JPEG: %s", lib);
            if (jpeg_error_is_unsupported(jerr.pub.msg_code))
                e = IMAGE_ERR_UNSUPPORTED;
        }
        jpeg_destroy_decompress(&cinfo);
        return probe_fail(e, name, msg);
    }
    jpeg_create_decompress(&cinfo);
    /* size_t and unsigned long have the same width on the platforms we build for. */
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);

    if (cinfo.jpeg_color_space == JCS_UNKNOWN) {
        char msg[96];
        snprintf(msg, sizeof msg, "JPEG: %d components in no known color space",
                 cinfo.num_components);
        jpeg_destroy_decompress(&cinfo);
        return probe_fail(IMAGE_ERR_UNSUPPORTED, name, msg);
    }
    out->stored_width = (int)cinfo.image_width;
    out->stored_height = (int)cinfo.image_height;
    out->channels = cinfo.num_components;
    out->bit_depth = 8;
    out->progressive = cinfo.progressive_mode ? 1 : 0;
    out->cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    out->orientation = jpeg_orientation(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return IMAGE_OK;
}

/* ---- PNG ------------------------------------------------------------------- */

static int png_orientation(spng_ctx *ctx)
{
    struct spng_exif exif;
    if (spng_get_exif(ctx, &exif) != 0 || !exif.data || exif.length > SIZE_MAX - sizeof exif_header)
        return 1;
    /* libexif wants the JPEG APP1 framing in front of the TIFF structure. */
    size_t len = sizeof exif_header + exif.length;
    unsigned char *block = malloc(len);
    if (!block)
        return 1;
    memcpy(block, exif_header, sizeof exif_header);
    memcpy(block + sizeof exif_header, exif.data, exif.length);
    int o = exif_orientation(block, len);
    free(block);
    return o;
}

static enum image_probe_error probe_png(const unsigned char *data, size_t size, const char *name,
                                        struct image_info *out)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx)
        return probe_fail(IMAGE_ERR_CORRUPT, name, "PNG: out of memory");
    char msg[128];
    struct spng_ihdr ihdr;
    int rc = spng_set_chunk_limits(ctx, PNG_CHUNK_SIZE_LIMIT, PNG_CHUNK_CACHE_LIMIT);
    /* Damaged ancillary chunks are dropped, so a CRC error below can only
     * come from a critical chunk: IHDR itself, or PLTE. */
    if (rc == 0)
        rc = spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_DISCARD);
    if (rc == 0)
        rc = spng_set_png_buffer(ctx, data, size);
    if (rc == 0)
        rc = spng_get_ihdr(ctx, &ihdr);
    if (rc != 0) {
        snprintf(msg, sizeof msg, "PNG: %s",
                 rc == SPNG_IO_EOF ? "data ends inside the header" : spng_strerror(rc));
        spng_ctx_free(ctx);
        return probe_fail(IMAGE_ERR_CORRUPT, name, msg);
    }
    if (ihdr.width == 0 || ihdr.height == 0 || ihdr.width > INT_MAX || ihdr.height > INT_MAX) {
        /* spng refuses these already; the int fields must never wrap. */
        snprintf(msg, sizeof msg, "PNG: size %" PRIu32 "x%" PRIu32 " out of range", ihdr.width,
                 ihdr.height);
        spng_ctx_free(ctx);
        return probe_fail(IMAGE_ERR_CORRUPT, name, msg);
    }
    out->stored_width = (int)ihdr.width;
    out->stored_height = (int)ihdr.height;
    switch (ihdr.color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE: out->channels = 1; break;
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: out->channels = 2; out->has_alpha = 1; break;
    case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: out->channels = 4; out->has_alpha = 1; break;
    default: out->channels = 3; break; /* truecolor, indexed */
    }
    out->bit_depth = ihdr.bit_depth == 16 ? 16 : 8;
    out->interlaced = ihdr.interlace_method != 0;

    /* spng reads IHDR without its CRC, which it checks when it reads on:
     * here, through the chunks before the first IDAT. Apart from a CRC
     * error, what happens there is best effort, so that a file holding a
     * header alone, or a damaged ancillary chunk, keeps its good IHDR. */
    struct spng_trns trns;
    rc = spng_get_trns(ctx, &trns);
    if (rc == SPNG_ECHUNK_CRC) {
        snprintf(msg, sizeof msg, "PNG: %s", spng_strerror(rc));
        spng_ctx_free(ctx);
        return probe_fail(IMAGE_ERR_CORRUPT, name, msg);
    }
    if (rc == 0)
        out->has_alpha = 1;
    out->orientation = png_orientation(ctx);
    spng_ctx_free(ctx);
    return IMAGE_OK;
}

/* ---- WebP ------------------------------------------------------------------ */

static const char *vp8_status_name(VP8StatusCode st)
{
    switch (st) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "data ends inside the header";
    }
    return "unknown status";
}

static enum image_probe_error probe_webp(const unsigned char *data, size_t size, const char *name,
                                         struct image_info *out)
{
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, size, &f);
    if (st != VP8_STATUS_OK) {
        char msg[96];
        snprintf(msg, sizeof msg, "WebP: %s", vp8_status_name(st));
        return probe_fail(st == VP8_STATUS_UNSUPPORTED_FEATURE ? IMAGE_ERR_UNSUPPORTED
                                                               : IMAGE_ERR_CORRUPT,
                          name, msg);
    }
    if (f.has_animation) {
        out->animated = 1;
        return probe_fail(IMAGE_ERR_UNSUPPORTED, name, "animated WebP");
    }
    if (f.width <= 0 || f.height <= 0) /* libwebp guarantees this; be sure */
        return probe_fail(IMAGE_ERR_CORRUPT, name, "WebP: zero size");
    out->stored_width = f.width;
    out->stored_height = f.height;
    out->has_alpha = f.has_alpha ? 1 : 0;
    out->channels = out->has_alpha ? 4 : 3;
    out->bit_depth = 8;
    return IMAGE_OK;
}

/* ---- choosing the reader --------------------------------------------------- */

/* data[0..size) equals the first size bytes of sig (size < n). */
static int is_prefix_of(const unsigned char *data, size_t size, const void *sig, size_t n)
{
    return size < n && memcmp(data, sig, size) == 0;
}

/* The format the magic bytes announce; a prefix of a signature counts, so a
 * file cut inside its magic is a truncated PNG, not an unknown format. */
static enum image_format sniff(const unsigned char *d, size_t n)
{
    if (n >= 2 && d[0] == 0xFF && d[1] == 0xD8)
        return IMAGE_FORMAT_JPEG;
    /* Four bytes suffice: a mangled line end in the rest of the signature
     * is a corrupt PNG, which spng reports. */
    if (n >= 4 ? memcmp(d, png_signature, 4) == 0
               : n >= 2 && is_prefix_of(d, n, png_signature, sizeof png_signature))
        return IMAGE_FORMAT_PNG;
    /* RIFF is a container; only its WEBP form is an image we read, but
     * a RIFF cut before its form type can only be taken for one. */
    if (n >= 4 ? memcmp(d, "RIFF", 4) == 0 && (n < 12 || memcmp(d + 8, "WEBP", 4) == 0)
               : n >= 2 && is_prefix_of(d, n, "RIFF", 4))
        return IMAGE_FORMAT_WEBP;
    return IMAGE_FORMAT_UNKNOWN;
}

/* UTF-8 without control characters in the first 256 bytes; a sequence cut
 * by that window does not count against it. */
static int looks_like_text(const unsigned char *d, size_t n)
{
    size_t w = n > 256 ? 256 : n;
    for (size_t i = 0; i < w; i++)
        if ((d[i] < 0x20 && d[i] != '\t' && d[i] != '\n' && d[i] != '\r' && d[i] != '\f') ||
            d[i] == 0x7F)
            return 0;
    long bad = utf8_invalid_at((const char *)d, w);
    return bad < 0 || (n > w && (size_t)bad + 4 > w);
}

/* Names a few formats people feed to dataset tools by mistake, for the
 * message only; anything else is shown by its first bytes. */
static void describe_unknown(const unsigned char *d, size_t n, char *buf, size_t cap)
{
    static const struct { const char *magic; size_t len; size_t off; const char *what; } known[] = {
        {"GIF87a", 6, 0, "GIF"},         {"GIF89a", 6, 0, "GIF"},
        {"BM", 2, 0, "BMP"},             {"II*\0", 4, 0, "TIFF"},
        {"MM\0*", 4, 0, "TIFF"},         {"ftypavif", 8, 4, "AVIF"},
        {"ftypheic", 8, 4, "HEIC"},      {"ftypmif1", 8, 4, "HEIF"},
        {"\xFF\x0A", 2, 0, "JPEG XL"},   {"\0\0\0\x0CJXL ", 8, 0, "JPEG XL"},
        {"\0\0\0\x0CjP  ", 8, 0, "JPEG 2000"}, {"\xFF\x4F\xFF\x51", 4, 0, "JPEG 2000"},
        {"qoif", 4, 0, "QOI"},           {"8BPS", 4, 0, "Photoshop"},
        {"%PDF", 4, 0, "PDF"},           {"PK\x03\x04", 4, 0, "zip"},
        {"\x1F\x8B", 2, 0, "gzip"},      {"RIFF", 4, 0, "RIFF, not WebP"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (n >= known[i].off + known[i].len &&
            memcmp(d + known[i].off, known[i].magic, known[i].len) == 0) {
            snprintf(buf, cap, "%s", known[i].what);
            return;
        }
    if (looks_like_text(d, n)) {
        snprintf(buf, cap, "text");
        return;
    }
    size_t used = (size_t)snprintf(buf, cap, "signature");
    for (size_t i = 0; i < n && i < 8 && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, " %02x", d[i]);
}

enum image_probe_error image_probe(const void *data, size_t size, const char *name,
                                   struct image_info *out)
{
    const unsigned char *d = data;
    if (!name)
        name = "(image)";
    memset(out, 0, sizeof *out);
    if (size == 0 || !d)
        return probe_fail(IMAGE_ERR_EMPTY, name, "0 bytes");

    out->format = sniff(d, size);
    enum image_probe_error e;
    switch (out->format) {
    case IMAGE_FORMAT_JPEG: e = probe_jpeg(d, size, name, out); break;
    case IMAGE_FORMAT_PNG: e = probe_png(d, size, name, out); break;
    case IMAGE_FORMAT_WEBP:
        e = size < 12 ? probe_fail(IMAGE_ERR_CORRUPT, name, "WebP: data ends inside the RIFF header")
                      : probe_webp(d, size, name, out);
        break;
    default: {
        char what[64];
        describe_unknown(d, size, what, sizeof what);
        return probe_fail(IMAGE_ERR_UNSUPPORTED, name, what);
    }
    }
    if (e != IMAGE_OK) {
        struct image_info keep = {.format = out->format, .animated = out->animated};
        *out = keep;
        return e;
    }
    if (out->orientation < 1 || out->orientation > 8)
        out->orientation = 1;
    /* Orientations 5..8 transpose the picture (exif_transpose's table). */
    int swap = out->orientation >= 5;
    out->width = swap ? out->stored_height : out->stored_width;
    out->height = swap ? out->stored_width : out->stored_height;
    return IMAGE_OK;
}
