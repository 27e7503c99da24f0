/* Sampling latents from a DiT: the loop dit-sample runs, shared with
 * dit-train's samples during training. */
#ifndef DIT_MODEL_GENERATE_H
#define DIT_MODEL_GENERATE_H

#include "models/dit/dit.h"
#include "diffusion/sampler.h"

#include <stdint.h>

struct generate_options {
    float cfg_scale;  /* 1: no guidance */
    int guided;       /* latent channels guided (sampler_cfg_combine) */
    uint64_t seed;    /* image k's noise: sampler_noise(seed, k, ...) */
    void (*on_step)(void *ctx); /* called after every sampler step of a batch (a progress bar) */
    void *ctx;
};

/* Samples latents[n, C, L, L] for labels[n] (num_classes is the null class),
 * in batches of what the model was planned for (half of it with guidance,
 * which runs the conditional and the null-class halves together). Image k
 * is the same whatever the batch size. -1 with err_set() when the model
 * cannot take a single guided pair. */
int dit_generate(struct dit_model *m, const struct sampler *s, const int *labels, int n,
                 const struct generate_options *opt, float *latents);

#endif
