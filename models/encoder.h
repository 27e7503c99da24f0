/* The image-encoder seam: an encoder turns one preprocessed RGB image into
 * the distribution of its latent z (a mean, and a std for a stochastic
 * encoder such as the VAE's AutoencoderKL; none for a deterministic one such
 * as the weightless pixel encoder), and latents back into RGB.
 *
 * Scaling: the denoiser trains on latents = (z - shift) * scale, as
 * diffusers' AutoencoderKL config has shift_factor and scaling_factor (pixel:
 * shift 0, scale 1). encode gives z's distribution unscaled, so that a
 * trainer can draw z ~ N(mean, std) and then scale (encoder_scale); decode
 * takes latents as the denoiser makes them and unscales before the network's
 * decoder, as diffusers' pipelines do before vae.decode.
 *
 * Implementations live in one folder each (models/pixel/, later models/vae/)
 * and are listed in the table of models/encoder.c; encoder_open picks one by
 * spec. An encoder's identity string names everything that changes its
 * output, so caches keyed on it (shard sets) go stale exactly when they
 * should, and shards and checkpoints record it to be reopened from. */
#ifndef DIT_MODEL_ENCODER_H
#define DIT_MODEL_ENCODER_H

#include <stddef.h>
#include <stdint.h>

struct encoder;

/* One implementation: its table entry in models/encoder.c. */
struct encoder_kind {
    const char *name;  /* "pixel": specs "pixel", "pixel:ARGS", identities "pixel/..." */
    const char *specs; /* for messages: "pixel or pixel:F (space-to-depth factor 1..64)" */
    /* Fills e (identity, factor, channels, has_std, scale, shift, state)
     * from a spec or an identity of this kind: 0, 1 when the text is not a
     * spec it understands (encoder_open then names the forms it accepts),
     * -1 with err_set() when it is but cannot be opened (weights missing...). */
    int (*open)(struct encoder *e, const char *spec);
    /* rgb[h][w][3] to mean[channels][h/f][w/f] and, when has_std, std of the
     * same shape (std is NULL for deterministic kinds). Must be safe to call
     * from several threads at once on one encoder. 0, or -1 with err_set(). */
    int (*encode)(const struct encoder *e, const uint8_t *rgb, int w, int h, float *mean, float *std);
    /* z[channels][h/f][w/f] (unscaled) to rgb[h][w][3]; NULL for a kind
     * without a decoder. 0, or -1 with err_set(). */
    int (*decode)(const struct encoder *e, const float *z, int w, int h, uint8_t *rgb);
    void (*close)(struct encoder *e); /* frees state; NULL when there is none */
};

struct encoder {
    const struct encoder_kind *kind;
    char identity[1024]; /* e.g. "pixel/1 s2d=2", "vae/1 HASH PATH" */
    int factor;         /* spatial downsampling: an HxW image gives (H/f)x(W/f) latents */
    int channels;       /* latent channels */
    int has_std;        /* encode gives a std: the latent is a distribution */
    float scale, shift; /* latents = (z - shift) * scale */
    void *state;
};

/* Opens an encoder from a spec ("pixel", "pixel:F": space-to-depth by F, as
 * torch's pixel_unshuffle orders channels; "vae:PATH[,OPTIONS]", the
 * AutoencoderKL of models/vae/vae.h) or from an identity string as shards
 * and checkpoints record it ("pixel/1 s2d=F", "vae/1 HASH ARGS"). 0, or -1 with
 * err_set() for an unknown or malformed spec; e needs no close then. */
int encoder_open(struct encoder *e, const char *spec);
void encoder_close(struct encoder *e);

/* Elements of one image's latent (mean or std): channels * (h/f) * (w/f). */
size_t encoder_latent_elems(const struct encoder *e, int w, int h);

/* Encodes one RGB image (w x h, 8-bit, row-major, w and h multiples of the
 * factor) into the mean of z, and its std when std is non-NULL (std must be
 * non-NULL exactly when has_std). 0, or -1 with err_set(). */
int encoder_encode(const struct encoder *e, const uint8_t *rgb, int w, int h, float *mean, float *std);

/* z to latents in place: (z - shift) * scale. */
void encoder_scale(const struct encoder *e, float *z, size_t n);

/* Whether the encoder can decode (pixel and the VAE can). */
int encoder_has_decoder(const struct encoder *e);

/* Decodes latents as the denoiser sees them (in[channels][h/f][w/f]): z =
 * latents / scale + shift, then the kind's decoder, to rgb[h][w][3]. 0, or
 * -1 with err_set() (also for an encoder without a decoder). */
int encoder_decode(const struct encoder *e, const float *latents, int w, int h, uint8_t *rgb);

#endif
