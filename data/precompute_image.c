/* The image step of precompute: decode, check, resize and crop one record
 * as a Python pipeline does with Pillow (image/decode.h, image/resize.h). */
#include "data/precompute.h"
#include "image/decode.h"
#include "libcommon/error.h"

#include <stdlib.h>

static const char *const reject_names[PRECOMPUTE_REJECT_COUNT] = {
    "", "bad bucket columns", "unreadable", "changed since indexing", "undecodable", "size mismatch",
    "encoder failure"};

const char *precompute_reject_name(enum precompute_reject r)
{
    return (unsigned)r < PRECOMPUTE_REJECT_COUNT ? reject_names[r] : "?";
}

enum precompute_reject precompute_image(const struct precompute_config *c, const void *data, size_t size,
                                        const char *name, const struct precompute_geometry *g, uint8_t *rgb)
{
    /* By default JPEGs are decoded at full size, as Pillow's Image.open()
     * does; DCT scaling (fast_decode) gives Pillow's draft() pixels, which
     * differ visibly on photographs. ADM halves with a box filter step by
     * step, so it always decodes at full size. */
    int min_w = 0, min_h = 0;
    if (c->fast_decode && !g->adm)
        min_w = g->resize_width, min_h = g->resize_height;
    struct image_rgb img = {0};
    int scale = 1;
    if (image_decode(data, size, name, c->background, min_w, min_h, &img, &scale) != 0)
        return PRECOMPUTE_UNDECODABLE;
    if ((img.width - 1) * scale >= g->width || img.width * scale < g->width || (img.height - 1) * scale >= g->height ||
        img.height * scale < g->height) {
        err_set("decoded %dx%d (1/%d scale) but the manifest says %dx%d", img.width, img.height, scale, g->width,
                g->height);
        image_rgb_free(&img);
        return PRECOMPUTE_SIZE;
    }
    int rc;
    if (g->adm)
        rc = image_center_crop_adm(img.pixels, img.width, img.height, rgb, g->bucket_width);
    else
        rc = image_resize_crop(img.pixels, img.width, img.height, c->filter, g->resize_width, g->resize_height,
                               g->crop_left, g->crop_top, g->bucket_width, g->bucket_height, rgb);
    image_rgb_free(&img);
    return rc == 0 ? PRECOMPUTE_KEPT : PRECOMPUTE_ENCODER;
}
