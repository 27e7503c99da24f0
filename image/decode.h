/* Full image decoding to 8-bit RGB, as a training script gets it from Pillow.
 *
 * The reference is what a Python pipeline does with Pillow 13:
 *
 *     im = ImageOps.exif_transpose(Image.open(f))
 *     if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
 *         im = Image.alpha_composite(Image.new("RGBA", im.size, bg + (255,)),
 *                                    im.convert("RGBA"))
 *     pixels = im.convert("RGB")
 *
 * and tests/reference/make_decode_goldens.py checks it on every fixture. The
 * real libraries decode: libjpeg-turbo, libspng, libwebp; image_probe()
 * picks the format and reads the EXIF orientation first.
 *
 * JPEG: YCbCr and RGB come out as libjpeg's RGB (the default islow IDCT and
 *   fancy upsampling, as Pillow decodes); grayscale is replicated. CMYK and
 *   YCCK come out of libjpeg as CMYK and are read with Adobe's inverted
 *   polarity, as Pillow always does, then converted as Pillow's convert("RGB")
 *   does: with libjpeg's values C, K, R = round(C * K / 255) (same for G from
 *   M, B from Y). Running out of data (libjpeg's "premature end of data"
 *   warnings: the file ends, or a marker cuts an entropy-coded segment) is an
 *   error, so a truncated JPEG never yields gray rows. Nothing after the last
 *   scanline is read, so a file missing only its EOI marker decodes when
 *   libjpeg's read-ahead did not already hit the end. Other libjpeg warnings (extraneous bytes before a marker, and the like)
 *   are tolerated, as Pillow tolerates them.
 * PNG: palettes are expanded, gray replicated, depths 1, 2 and 4 scaled to 8
 *   bits (x255, x85, x17). 16-bit samples follow Pillow, which treats them
 *   unevenly: RGB, RGBA and gray+alpha keep the high byte (truncation,
 *   v >> 8, alpha included), while 16-bit gray without alpha (Pillow's
 *   "I;16") is clipped: min(v, 255), so most 16-bit gray photos come out
 *   nearly white, exactly as they do in a Pillow pipeline. A tRNS chunk
 *   makes pixels transparent as Pillow's convert("RGBA") does: palette
 *   entries take their alpha; for gray and RGB, a pixel is transparent when
 *   its 8-bit result above equals the tRNS sample value(s) taken modulo 256
 *   (1-bit gray: value 1 means white). That matches the PNG spec for 8-bit
 *   images; for 16-bit and 2/4-bit ones it is Pillow's behaviour, kept on
 *   purpose. Gamma, sBIT and colour profiles are ignored, as Pillow ignores
 *   them. Chunk CRCs and the zlib checksum are checked; a damaged ancillary
 *   chunk is dropped.
 * WebP: decoded by libwebp to RGB or, with alpha, to non-premultiplied RGBA.
 *   Its EXIF is not read (see image_probe.h), so a WebP is never rotated.
 * Alpha (an alpha channel, tRNS, WebP alpha) is composited onto bg:
 *   out = round((a * c + (255 - a) * bg) / 255), bit-exact with Pillow's
 *   Image.alpha_composite onto an opaque background.
 *
 * Thread-safe: no shared state; err_set() is per thread. */
#ifndef DIT_IMAGE_DECODE_H
#define DIT_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

struct image_rgb {
    int width, height; /* as displayed: after the EXIF orientation */
    uint8_t *pixels;   /* width * height * 3, row-major RGB, malloc'd */
};

/* Decodes data[0..size) (JPEG, PNG or WebP) to 8-bit RGB in *out, with the
 * EXIF orientation applied (JPEG APP1, PNG eXIf) and alpha composited onto
 * bg (NULL: white). name is for messages (NULL: "(image)").
 *
 * min_width, min_height: the smallest displayed size the caller needs; when
 * both are positive and the image is a JPEG, libjpeg-turbo decodes at 1/s
 * scale (DCT scaling, much faster for big JPEGs) with s the largest of 8, 4,
 * 2 such that s * min_width <= width and s * min_height <= height of the
 * displayed image (the rule of Pillow's draft()); the decoded size is then
 * ceil(width / s) x ceil(height / s), at least the minimum, and the pixels
 * are those of Pillow's draft("RGB", (min_width, min_height)). 0 or a larger
 * minimum: full size. *scale_out (if non-NULL) gets s, 1 when unscaled
 * (always 1 for PNG and WebP).
 *
 * No pixel limit is applied: the caller checks the probed size first.
 * Returns 0, or -1 with out zeroed and err_set("NAME: reason") for an
 * unsupported, truncated or corrupt image, or when out of memory. */
int image_decode(const void *data, size_t size, const char *name, const uint8_t bg[3], int min_width,
                 int min_height, struct image_rgb *out, int *scale_out);

/* Frees the pixels and zeroes the image; NULL allowed. */
void image_rgb_free(struct image_rgb *img);

/* Applies EXIF orientation o (1..8) in place, as Pillow's exif_transpose:
 * 2 mirror, 3 rotate 180, 4 flip vertically, 5 transpose, 6 rotate 90
 * clockwise, 7 transverse, 8 rotate 90 counter-clockwise. 5..8 swap width
 * and height and reallocate the pixels. Returns 0, or -1 with err_set() for
 * an orientation out of range (the image unchanged) or out of memory. */
int image_rgb_orient(struct image_rgb *img, int orientation);

/* Horizontal mirror in place (for flipped encodings). */
void image_rgb_flip(struct image_rgb *img);

#endif
