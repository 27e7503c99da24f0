/* Writing 8-bit PNG images (samples from dit-sample, the demo data set) and
 * tiling images into a grid.
 *
 * libspng does the encoding: 8-bit RGB (colour type 2) or gray (colour type
 * 0), no interlacing, no colour chunks, so every reader shows the bytes as
 * given.
 *
 * Text chunks carry what made the image; "parameters" is the key Stable
 * Diffusion web UIs read. Keys and values are UTF-8 strings. A key is
 * written as the PNG spec's Latin-1 keyword: 1..79 characters out of
 * U+0020..U+007E and U+00A1..U+00FF, no leading, trailing or double space;
 * any other key is an error. A value whose characters all fit Latin-1 text
 * (newline, U+0020..U+007E, U+00A1..U+00FF) goes into a tEXt chunk,
 * transcoded to Latin-1; any other value (non-Latin-1 characters, other
 * control characters) into an uncompressed iTXt chunk as UTF-8 with empty
 * language and translated keyword. Either way Pillow's Image.open(f).text
 * gives back the value as given. A value that is not valid UTF-8 is an
 * error. Chunks are written in the order given, before the image data.
 *
 * Thread-safe: no shared state; err_set() is per thread. */
#ifndef DIT_PNG_WRITE_H
#define DIT_PNG_WRITE_H

#include <stddef.h>
#include <stdint.h>

struct png_text {
    const char *key, *value; /* e.g. {"parameters", "seed 3, class 207, cfg 4.0, ..."} */
};

/* Encodes width x height row-major RGB (3 bytes a pixel) into a malloc'd
 * buffer *png of *size bytes; the caller frees it. text: n_text chunks
 * (NULL when n_text is 0). Returns 0, or -1 with err_set("PNG: reason") and
 * *png NULL, *size 0 for a size outside 1..2^31-1, a bad key or value, or
 * when out of memory. */
int png_encode_rgb8(const uint8_t *rgb, int width, int height, const struct png_text *text, int n_text,
                    void **png, size_t *size);
/* The same for gray (1 byte a pixel). */
int png_encode_gray8(const uint8_t *gray, int width, int height, const struct png_text *text, int n_text,
                     void **png, size_t *size);

/* Encodes as above and writes the file atomically (libcommon/atomic_file.h):
 * an existing path keeps its old bytes until the new ones are complete.
 * Returns 0, or -1 with err_set("PATH: reason"). */
int png_write_rgb8(const char *path, const uint8_t *rgb, int width, int height, const struct png_text *text,
                   int n_text);
int png_write_gray8(const char *path, const uint8_t *gray, int width, int height, const struct png_text *text,
                    int n_text);

/* Tiles n RGB images of w x h into a grid of min(cols, n) columns and
 * ceil(n / cols) rows, in row-major order, with pad pixels of bg (NULL:
 * black) between neighbouring cells and none around the edge:
 *   *ow = c * w + (c - 1) * pad,  *oh = r * h + (r - 1) * pad.
 * A NULL entry of images, and the cells after the last image, are left bg.
 * *out is malloc'd (*ow * *oh * 3 bytes); the caller frees it. Returns 0, or
 * -1 with err_set("image grid: reason") and *out NULL for n, w, h or cols
 * below 1, pad below 0, a grid larger than 2^31-1 a side, or out of memory. */
int image_grid_rgb8(const uint8_t *const *images, int n, int w, int h, int cols, int pad, const uint8_t bg[3],
                    uint8_t **out, int *ow, int *oh);

#endif
