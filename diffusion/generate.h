/* Sampling latents from any denoiser: the loop dit-sample runs, shared with
 * dit-train's samples during training. */
#ifndef DIT_DIFFUSION_GENERATE_H
#define DIT_DIFFUSION_GENERATE_H

#include "diffusion/sampler.h"
#include "models/denoiser.h"

#include <stdint.h>

struct generate_options {
    float cfg_scale;  /* 1: no guidance */
    int guided;       /* latent channels guided (sampler_cfg_combine) */
    uint64_t seed;    /* image k's noise: sampler_noise(seed, k, ...) */
    void (*on_step)(void *ctx); /* called after every sampler step of a batch (a progress bar) */
    void *ctx;
    /* Text models: the unconditional half takes this embedding [text_len,
     * text_dim] of a negative prompt; NULL: the null condition (zeros). */
    const float *negative_text;
    /* 1: F-Lite's APG instead of plain guidance (sampler_apg_combine),
     * with apg_threshold; apg_batch: its statistics over the whole batch,
     * as F-Lite's code (default: per image). */
    int apg, apg_batch;
    float apg_threshold;
    /* The starting noise [n, C, H, W] (another tool's, to reproduce its
     * run); NULL: sampler_noise's draws. */
    const float *init_noise;
};

/* Samples latents[n, C, H, W] under the conditions c of n samples (labels
 * or text, and which take the null condition), in batches of what the
 * model was planned for (half of it with guidance, which runs the
 * conditional and the null halves together). Image k is the same whatever
 * the batch size. -1 with err_set() when the model cannot take a single
 * guided pair. */
int generate(struct denoiser *m, const struct sampler *s, const struct cond *c, int n,
             const struct generate_options *opt, float *latents);

#endif
