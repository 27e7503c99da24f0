/* Diffusion objectives.
 *
 * DDPM as DiT trains it (the IDDPM code in facebookresearch/DiT's diffusion/):
 * a 1000-step linear beta schedule, epsilon prediction with a learned-range
 * variance, loss = MSE(eps) + the variational bound term computed with the
 * predicted mean stopped, so the VB term trains only the variance.
 *
 * Rectified flow (F-Lite, SD3): z_t = (1 - t) x0 + t noise, the model
 * predicts v = x0 - noise, t drawn logit-normal and optionally shifted. */
#ifndef DIT_MODEL_DIFFUSION_H
#define DIT_MODEL_DIFFUSION_H

#include <stdint.h>

struct ddpm_schedule {
    int steps;
    /* All [steps], in double as the reference keeps them. */
    double *betas, *log_betas;
    double *alphas_cumprod, *alphas_cumprod_prev;
    double *sqrt_alphas_cumprod, *sqrt_one_minus_alphas_cumprod;
    double *sqrt_recip_alphas_cumprod, *sqrt_recipm1_alphas_cumprod;
    double *posterior_variance, *posterior_log_variance_clipped;
    double *posterior_mean_coef1, *posterior_mean_coef2;
};

/* The coefficients of one step, from its beta and the cumulative products
 * at it and at the step before, as IDDPM's GaussianDiffusion derives them
 * (in double). The training schedule and every sampler's respaced schedule
 * come from this one place. */
struct ddpm_step_coef {
    double sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod;
    double posterior_variance, posterior_mean_coef1, posterior_mean_coef2;
};
void ddpm_step_coef(double beta, double alphas_cumprod, double alphas_cumprod_prev, struct ddpm_step_coef *out);

/* DiT's "linear" schedule: betas = linspace(1e-4 * 1000 / steps,
 * 0.02 * 1000 / steps, steps). -1 with err_set() on a bad step count. */
int ddpm_schedule_linear(struct ddpm_schedule *s, int steps);
void ddpm_schedule_free(struct ddpm_schedule *s);

/* x_t[b] = sqrt(acp[t]) x0[b] + sqrt(1 - acp[t]) noise[b], n values per sample. */
void ddpm_q_sample(const struct ddpm_schedule *s, float *x_t, const float *x0, const float *noise,
                   const int32_t *t, int B, int64_t n);

/* The per-sample loss terms DiT logs. */
struct ddpm_terms {
    double mse, vb, loss;
};

/* The training loss of DiT for a batch: model_out[B, 2C, H, W] (eps, then
 * the variance interpolation values in [-1, 1]); x0, x_t, noise [B, C, H, W];
 * returns the batch mean of loss and writes terms[B] when non-NULL, and
 * dout[B, 2C, H, W] = d(mean loss)/d(model_out) (overwrites) when non-NULL.
 * hw = H * W. */
double ddpm_training_loss(const struct ddpm_schedule *s, const float *model_out, const float *x0,
                          const float *x_t, const float *noise, const int32_t *t, int B, int C,
                          int64_t hw, struct ddpm_terms *terms, float *dout);

/* Rectified flow: z_t = (1 - t) x0 + t noise; target v = x0 - noise. */
void flow_interpolate(float *z_t, float *target, const float *x0, const float *noise,
                      const float *t, int B, int64_t n);
/* t = sigmoid(mean + std * z) for a standard normal z, then the shift of
 * SD3 and Flux: t' = shift t / (1 + (shift - 1) t) (shift 1: none). */
float flow_timestep(float z, float mean, float std, float shift);
/* F-Lite's resolution-dependent shift for latents of h x w:
 * 2 sqrt(h w / 64^2), so a 64 x 64 latent (512 px) gets 2. */
float flow_resolution_shift(int h, int w);
/* The flow loss: mean over the batch of the per-sample mean of
 * (pred - target)^2; dpred (overwrites, when non-NULL) is its gradient. */
double flow_loss(const float *pred, const float *target, int B, int64_t n, float *dpred);

#endif
