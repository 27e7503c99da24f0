/* Image resizing with Pillow's arithmetic, and the crops dit-precompute applies.
 *
 * image_resize_rgb8 gives, byte for byte, what PIL.Image.resize((dw, dh), filter)
 * gives on an "RGB" image (reducing_gap None, its default): the same kernels
 * (box, triangle, Hamming, Keys cubic with a = -0.5, Lanczos with a = 3), widened
 * by the scale when reducing, the same coefficients rounded to the same 22-bit
 * fixed point, two passes with the first rounded and clipped to 8 bits (each pass
 * only when its axis changes), and Pillow's own nearest-neighbour mapping for
 * RESIZE_NEAREST. tests/test_image_resize.c checks this against goldens that
 * tests/reference/make_resize_goldens.py makes with Pillow 13.0.
 *
 * The pass order is Pillow 13's: horizontal then vertical, except vertical first
 * when the height shrinks by more than twice as many pixels as the width
 * (sh - dh > 2 (sw - dw), box or no box). Pillow 12 and older always went
 * horizontal first (but for images over 100 times taller than wide), so for
 * such sizes (97x61 -> 150x20, 640x427 -> 600x300) their bytes differ from
 * these by a few levels near edges. A reduction by one factor on both axes, as
 * the ADM recipe and a "fit" resize make, goes vertical first only for images
 * more than about twice as tall as wide, so only those differ between Pillow 13
 * and older versions.
 *
 * Pixels are 8-bit RGB, 3 bytes a pixel, rows packed (stride 3 * width), top row
 * first. Sides are 1 .. RESIZE_MAX_SIDE. Source and destination must not overlap.
 *
 * Thread-safe: no shared state but the parallel threshold; err_set() is per
 * thread. A large output (see image_resize_set_parallel_threshold) splits its
 * rows over OpenMP threads. */
#ifndef DIT_IMAGE_RESIZE_H
#define DIT_IMAGE_RESIZE_H

#include <stddef.h>
#include <stdint.h>

/* Larger sides are refused (as formats/bucket.h refuses them). */
#define RESIZE_MAX_SIDE (1 << 24)

/* The default output size, in pixels, from which rows go to OpenMP threads. */
#define RESIZE_PARALLEL_MIN_PIXELS (1L << 20)

enum resize_filter { RESIZE_NEAREST, RESIZE_BOX, RESIZE_BILINEAR, RESIZE_HAMMING, RESIZE_BICUBIC, RESIZE_LANCZOS };

/* "nearest", "box", "bilinear", "hamming", "bicubic", "lanczos" in any case
 * ("antialias", Pillow's old name for Lanczos, too). 0, or -1 with
 * err_set("unknown resize filter 'NAME' (...)"). */
int resize_filter_parse(const char *name, enum resize_filter *out);
/* The lower-case name; "?" for a value outside the enum. */
const char *resize_filter_name(enum resize_filter f);

/* src[sw x sh] -> dst[dw x dh], exactly as PIL.Image.resize((dw, dh), f) on an
 * "RGB" image. dst is caller-allocated (dw * dh * 3 bytes). Same size: a copy.
 * 0, or -1 with err_set() (bad sizes, bad filter, out of memory). */
int image_resize_rgb8(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                      enum resize_filter f);

/* Bytes of scratch that any resize or resize-and-crop of sw x sh to dw x dh
 * (any filter, any box, any crop) needs; 0 for bad sizes. */
size_t resize_scratch_size(int sw, int sh, int dw, int dh);

/* image_resize_rgb8 with the working memory supplied: scratch is NULL (then
 * allocated and freed here) or at least resize_scratch_size(sw, sh, dw, dh)
 * bytes aligned as malloc aligns, reused across calls to save the allocations.
 * One scratch serves one call at a time. */
int image_resize_rgb8_scratch(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                              enum resize_filter f, void *scratch);

/* Pillow's box argument: PIL.Image.resize((dw, dh), f, box=(box[0], box[1],
 * box[2], box[3])), the source region (left, top, right, bottom) that is scaled,
 * in pixels, fractional allowed. Pillow parses the box as C floats, so each value
 * is rounded to float here too. The box must lie inside the source, right >= left
 * and bottom >= top (Pillow's rules). 0, or -1 with err_set(). */
int image_resize_box_rgb8(const uint8_t *src, int sw, int sh, const double box[4], uint8_t *dst,
                          int dw, int dh, enum resize_filter f);

/* Resize to (rw, rh) with filter f, then crop the box (left, top, cw, ch) of the
 * resized image into dst[cw x ch x 3]: what dit-bucket's "fit" method records
 * (resize_width/height, crop_left/top, bucket size). Equals
 * PIL.Image.resize((rw, rh), f).crop((left, top, left + cw, top + ch)) but only
 * the cropped pixels are computed. The crop must lie inside the resized image.
 * 0, or -1 with err_set(). */
int image_resize_crop(const uint8_t *src, int sw, int sh, enum resize_filter f, int rw, int rh,
                      int left, int top, int cw, int ch, uint8_t *dst);
/* The same with scratch as in image_resize_rgb8_scratch (sized for sw, sh, rw, rh). */
int image_resize_crop_scratch(const uint8_t *src, int sw, int sh, enum resize_filter f, int rw,
                              int rh, int left, int top, int cw, int ch, uint8_t *dst,
                              void *scratch);

/* The sizes the ADM recipe goes through for a sw x sh image and side n. */
struct resize_adm_plan {
    int halvings;            /* BOX halvings done */
    int half_width, half_height;     /* the size after them */
    int resize_width, resize_height; /* the BICUBIC resize (short side = n) */
    int crop_left, crop_top;         /* the n x n crop in the resized image */
};

/* Fills *p. 0, or -1 with err_set() (a side < 1 or > RESIZE_MAX_SIDE, n < 1, or
 * a resize side above RESIZE_MAX_SIDE). */
int image_center_crop_adm_plan(int sw, int sh, int n, struct resize_adm_plan *p);

/* The ADM / guided-diffusion center_crop_arr recipe that DiT's train.py uses for
 * class-conditional training at size n:
 *   while min(w, h) >= 2n: image = image.resize((w // 2, h // 2), BOX)
 *   scale = n / min(w, h)
 *   image = image.resize((round(w * scale), round(h * scale)), BICUBIC)
 *       (Python's round: half to even)
 *   crop left = (w' - n) // 2, top = (h' - n) // 2, n x n.
 * dst[n x n x 3]. 0, or -1 with err_set(). */
int image_center_crop_adm(const uint8_t *src, int sw, int sh, uint8_t *dst, int n);

/* Outputs of at least this many pixels split their rows over OpenMP threads
 * (default RESIZE_PARALLEL_MIN_PIXELS). A caller that already resizes one image
 * per thread can pass a value above any output (LONG_MAX) to keep each resize on
 * the calling thread; a value <= 0 restores the default. Process-wide. */
void image_resize_set_parallel_threshold(long pixels);

#endif
