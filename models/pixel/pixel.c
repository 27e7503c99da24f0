#include "models/pixel/pixel.h"
#include "libcommon/error.h"

#include <stdio.h>
#include <string.h>

/* Pixel values to [-1, 1] as DiT's transforms.Normalize([0.5]*3, [0.5]*3)
 * after ToTensor gives: (v / 255 - 0.5) / 0.5, in fp32 as torch does. With a
 * factor f, channel (c, dy, dx) = c * f * f + dy * f + dx, as
 * torch.nn.functional.pixel_unshuffle lays them out. */
static int pixel_encode(const struct encoder *e, const uint8_t *rgb, int w, int h, float *out, float *std)
{
    (void)std; /* deterministic: there is no std */
    const int f = e->factor, ow = w / f, oh = h / f;
    if (w % f || h % f) {
        err_set("pixel encoder: %dx%d is not a multiple of the factor %d", w, h, f);
        return -1;
    }
    for (int c = 0; c < 3; c++)
        for (int dy = 0; dy < f; dy++)
            for (int dx = 0; dx < f; dx++) {
                float *plane = out + ((size_t)(c * f + dy) * f + dx) * oh * ow;
                for (int y = 0; y < oh; y++)
                    for (int x = 0; x < ow; x++) {
                        uint8_t v = rgb[((size_t)(y * f + dy) * w + (x * f + dx)) * 3 + c];
                        plane[(size_t)y * ow + x] = ((float)v / 255.0f - 0.5f) / 0.5f;
                    }
            }
    return 0;
}

/* The inverse of pixel_encode: v = round(255 (x / 2 + 1/2)), clamped, as
 * DiT's samples are saved (torchvision's save_image on [-1, 1]). */
static int pixel_decode(const struct encoder *e, const float *in, int w, int h, uint8_t *rgb)
{
    const int f = e->factor, ow = w / f, oh = h / f;
    if (w % f || h % f) {
        err_set("pixel decoder: %dx%d is not a multiple of the factor %d", w, h, f);
        return -1;
    }
    for (int c = 0; c < 3; c++)
        for (int dy = 0; dy < f; dy++)
            for (int dx = 0; dx < f; dx++) {
                const float *plane = in + ((size_t)(c * f + dy) * f + dx) * oh * ow;
                for (int y = 0; y < oh; y++)
                    for (int x = 0; x < ow; x++) {
                        float v = (plane[(size_t)y * ow + x] * 0.5f + 0.5f) * 255.0f + 0.5f;
                        v = v < 0 ? 0 : v > 255 ? 255 : v;
                        rgb[((size_t)(y * f + dy) * w + (x * f + dx)) * 3 + c] = (uint8_t)v;
                    }
            }
    return 0;
}

static int pixel_open(struct encoder *e, const char *spec)
{
    int f = 1;
    char tail;
    if (strcmp(spec, "pixel") != 0 && !(sscanf(spec, "pixel:%d%c", &f, &tail) == 1 && f >= 1 && f <= 64) &&
        !(sscanf(spec, "pixel/1 s2d=%d%c", &f, &tail) == 1 && f >= 1 && f <= 64))
        return 1;
    snprintf(e->identity, sizeof e->identity, "pixel/1 s2d=%d", f);
    e->factor = f;
    e->channels = 3 * f * f;
    e->has_std = 0;
    e->scale = 1.0f;
    e->shift = 0.0f;
    return 0;
}

const struct encoder_kind pixel_encoder_kind = {
    .name = "pixel",
    .specs = "pixel or pixel:F (space-to-depth factor 1..64)",
    .open = pixel_open,
    .encode = pixel_encode,
    .decode = pixel_decode,
    .close = NULL,
};
