/* Sample grids during training, for any denoiser: a fixed set of
 * conditions sampled from the EMA weights (or the raw ones without EMA) at
 * a fixed seed, so grids compare across steps (the prompts of a text model
 * encoded once at setup by the text encoder of the data, which is then
 * freed); written to
 * OUT/samples/step-NNNNNNN.png and to TensorBoard. */
#ifndef DIT_TRAIN_SAMPLES_H
#define DIT_TRAIN_SAMPLES_H

#include "diffusion/sampler.h"
#include "models/denoiser.h"
#include "models/encoder.h"
#include "train/metrics.h"
#include "train/prompts.h"
#include "train/trainer.h"

struct samples_config {
    const char *output;
    const char *labels;     /* "0,1,2" or NULL: the first 8 classes */
    const char *encoder;    /* the identity of the encoder that made the latents */
    int steps;              /* 0: 50 DDIM for ddpm, 28 Euler for flow */
    double cfg_scale;
    uint64_t seed;
    enum objective objective;
    const char *prompts_file; /* text models: the prompts, one per line */
    const char *text_encoder; /* text models: the identity of the data's text encoder */
    enum nn_base base;        /* a frozen base's storage (--base-weight-dtype), as the run's */
};

struct samples {
    struct samples_config cfg;
    struct encoder enc;
    struct sampler s;
    struct denoiser m;
    int32_t *labels;
    struct prompts pr; /* text models: encoded once, at setup */
    int n, guided;
    float cfg_scale;
    int has_lora;               /* the training run's adapter, mirrored for sampling */
    struct nn_lora lora;
    struct nn_lora_binding bind;
};

int samples_setup(struct samples *sp, const struct samples_config *cfg, const struct denoiser_config *mc,
                  enum kdtype dt, struct kctx *ctx);
/* After setup, for a run with an adapter or a frozen model: the frozen
 * weights copied once (they do not change), the adapter mirrored onto the
 * sampling model (its values are set at each samples_make). */
int samples_attach(struct samples *sp, const struct trainer *tr);
int samples_make(struct samples *sp, const struct trainer *tr, struct metrics *mx, int64_t step);
void samples_free(struct samples *sp);

#endif
