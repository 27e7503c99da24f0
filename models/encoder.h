/* Encoders turn a preprocessed image into the tensor a model trains on.
 * One interface for all: `pixel` now (no weights), the VAE and the text
 * encoder later. An encoder's identity string names everything that changes
 * its output, so caches keyed on it go stale exactly when they should. */
#ifndef DIT_MODEL_ENCODER_H
#define DIT_MODEL_ENCODER_H

#include <stddef.h>
#include <stdint.h>

struct encoder {
    char name[32];
    char identity[128]; /* e.g. "pixel/1 s2d=2" */
    int factor;         /* spatial downsampling: an HxW image gives (H/f)x(W/f) */
    int channels;       /* output channels */
    /* Encodes one RGB image (w x h, 8-bit, row-major) into out[channels, h/f, w/f]. */
    int (*encode)(const struct encoder *e, const uint8_t *rgb, int w, int h, float *out);
    /* The inverse, for samples: in[channels, h/f, w/f] to an RGB image w x h. */
    int (*decode)(const struct encoder *e, const float *in, int w, int h, uint8_t *rgb);
    void *state;
};

/* Opens an encoder from a spec: "pixel" or "pixel:F" (space-to-depth by F,
 * as torch's pixel_unshuffle orders channels), or from an identity string
 * as shards and checkpoints record it ("pixel/1 s2d=F"). -1 with err_set()
 * for an unknown or malformed spec. */
int encoder_open(struct encoder *e, const char *spec);
void encoder_close(struct encoder *e);

#endif
