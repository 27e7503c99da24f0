/* Image format and size from the header alone, never a full decode.
 *
 * dit-index already holds every image's bytes (it hashes them), so the probe
 * works on a memory buffer. A few magic bytes choose the library; the library
 * then reads the header: libjpeg-turbo (jpeg_read_header, stopping at the
 * first scan), libspng (IHDR, plus the chunks before the first IDAT for tRNS
 * and eXIf) and libwebp (WebPGetFeatures). Pixel data is never touched, so a
 * file cut after its header still probes fine: that is the decoder's failure
 * to report, later.
 *
 * EXIF orientation comes from the first APP1 "Exif" segment of a JPEG and the
 * eXIf chunk of a PNG, read with libexif (IFD0 tag 0x0112, as Pillow's
 * ImageOps.exif_transpose reads it). WebP EXIF is ignored: reaching it needs
 * libwebpdemux, which the tools do not link. An unreadable EXIF block or an
 * unreadable ancillary PNG chunk is not an error; it reads as "absent".
 *
 * No pixel limit is applied (dit-index applies --max-pixels itself); declared
 * sizes are reported as they are, up to PNG's 2^31 - 1 per side, and the
 * probe does no arithmetic on them that could overflow. (libspng itself
 * refuses, as corrupt, an IHDR whose row alone would pass 4 GiB, e.g. an
 * RGB image 2^31 - 1 wide: "arithmetic overflow".)
 *
 * A PNG's ancillary chunks are read best effort: a PNG that ends right after
 * its IHDR (a bomb made of a header alone) still probes, with its declared
 * size; one cut before its eXIf chunk reads as orientation 1. An eXIf chunk
 * after the first IDAT is not seen (the PNG spec puts it before). A CRC
 * mismatch in a critical chunk before IDAT (IHDR, PLTE) is corrupt; damaged
 * ancillary chunks are dropped.
 *
 * Thread-safe: no shared state; err_set() is per thread. */
#ifndef DIT_IMAGE_PROBE_H
#define DIT_IMAGE_PROBE_H

#include <stddef.h>

enum image_format { IMAGE_FORMAT_UNKNOWN = 0, IMAGE_FORMAT_JPEG, IMAGE_FORMAT_PNG, IMAGE_FORMAT_WEBP };

/* "jpeg", "png", "webp", "unknown" */
const char *image_format_name(enum image_format f);

/* Why a probe failed; dit-index counts rejections by these. */
enum image_probe_error {
    IMAGE_OK = 0,
    IMAGE_ERR_EMPTY,       /* zero bytes */
    IMAGE_ERR_UNSUPPORTED, /* not JPEG, PNG or WebP; an animated WebP; a JPEG
                              process libjpeg-turbo cannot decode (lossless,
                              12-bit) */
    IMAGE_ERR_CORRUPT,     /* truncated or corrupt header */
};

/* "ok", "empty", "unsupported format", "truncated or corrupt header" */
const char *image_probe_error_name(enum image_probe_error e);

struct image_info {
    enum image_format format;
    int stored_width, stored_height; /* as encoded */
    int orientation;                 /* EXIF orientation 1..8 (1 when absent or invalid) */
    int width, height;               /* as displayed: swapped for orientations 5..8 */
    int channels;    /* as stored: 1 gray, 2 gray+alpha, 3 RGB/YCbCr, 4 RGBA or CMYK;
                        a PNG palette counts 3 (its entries are RGB), a tRNS
                        chunk sets has_alpha but adds no channel; WebP: 4 when
                        it has alpha, else 3 */
    int bit_depth;   /* 8 or 16 (PNG; depths 1, 2 and 4 count as 8), 8 otherwise */
    int has_alpha;   /* an alpha channel, or a PNG tRNS chunk */
    int progressive; /* JPEG: progressive; 0 otherwise */
    int cmyk;        /* JPEG: CMYK/YCCK */
    int animated;    /* WebP animation flag (such a probe fails as unsupported) */
    int interlaced;  /* PNG: Adam7; 0 otherwise */
};

/* Probes the image in data[0..size) from its header. On failure returns the
 * reason and, through err_set(), a message "NAME: reason (detail)", NAME
 * being what the caller passes (a path or "archive.tar!/member"); out then
 * holds zeros except for out->format, the format the magic bytes named
 * (IMAGE_FORMAT_UNKNOWN for empty input and for formats other than the
 * three), so callers can say "corrupt PNG", and out->animated for an
 * animated WebP. Allocation failure inside a library also reads as
 * IMAGE_ERR_CORRUPT, its message saying so. data may be NULL when size is 0. */
enum image_probe_error image_probe(const void *data, size_t size, const char *name,
                                   struct image_info *out);

#endif
