/* Samplers for dit-sample: DDPM ancestral sampling with timestep respacing,
 * DDIM, and Euler for rectified-flow models.
 *
 * A sampler visits num_steps steps, i = 0 first (the noisiest). At step i
 * the caller runs the model on x at sampler_model_timestep(s, i), applies
 * classifier-free guidance itself (sampler_cfg_combine), and calls
 * sampler_step, which replaces x by the sample of step i + 1. The starting
 * x is standard normal noise for every sampler.
 *
 * Two references, matched step by step on the same model, noise and
 * schedule (tests/test_sampler.c, goldens from
 * tests/reference/make_sampler_goldens.py):
 *
 *   SAMPLER_REF_DIT: facebookresearch/DiT's sample.py, i.e. IDDPM's
 *     create_diffusion(str(num_steps)) and p_sample_loop (DDPM) or
 *     ddim_sample_loop (DDIM), clip_denoised False. Timesteps from IDDPM's
 *     space_timesteps (num_steps evenly spaced, both ends kept: "25" visits
 *     999, 957, ..., 42, 0); each step goes to the next visited timestep;
 *     the learned-range variance when the model outputs one. Schedule values
 *     in double, cast to float where they meet tensors, tensor arithmetic in
 *     float, in the reference's order.
 *   SAMPLER_REF_DIFFUSERS: diffusers 0.31's DiTPipeline with DDPMScheduler
 *     or DDIMScheduler under the config of facebook/DiT-XL-2-256 (1000 steps,
 *     linear betas 1e-4..0.02, epsilon, clip_sample False, set_alpha_to_one
 *     True, steps_offset 0, timestep_spacing "leading"; DDPMScheduler adds
 *     variance_type "fixed_small"). "leading" visits 960, 920, ..., 0 for 25
 *     steps; both schedulers step from t to t - 1000 / num_steps (integer
 *     division) whatever the spacing. DiTPipeline drops the learned sigma
 *     before scheduler.step, so DDPM samples with the fixed small variance;
 *     it passes no eta, so DDIM runs with eta 0 (this library takes any eta,
 *     as DDIMScheduler.step does). DDPM adds noise at every step with t > 0
 *     (so at the last one too under "trailing"). Arithmetic in float as the
 *     scheduler's 0-dim tensors do it. diffusers builds its schedule in float
 *     (torch.linspace, then cumprod); this library rounds the double schedule
 *     of models/diffusion.h instead: alphas_cumprod differ by at most 5 ulp
 *     (3.4e-7 relative), well inside the tolerance of the parity tests
 *     (torch's vectorised float linspace is not worth reproducing bit for bit).
 *
 * Which combination equals which reference:
 *
 *   DiT sample.py (DDPM, --num-sampling-steps N):
 *       SAMPLER_DDPM, N, {.reference = SAMPLER_REF_DIT} (all defaults)
 *   DiT ddim_sample_loop(eta):
 *       SAMPLER_DDIM, N, {.reference = SAMPLER_REF_DIT, .eta = eta}
 *   DiTPipeline + DDPMScheduler.from_config(DiT-XL-2 config):
 *       SAMPLER_DDPM, N, {.reference = SAMPLER_REF_DIFFUSERS}
 *   DiTPipeline + DDIMScheduler (the hub's scheduler):
 *       SAMPLER_DDIM, N, {.reference = SAMPLER_REF_DIFFUSERS}
 *   F-Lite's pipeline and train.py sampling (alpha a):
 *       SAMPLER_EULER, N, {.shift = a}; F-Lite's default alpha is
 *       flow_resolution_shift(h, w) of the latent size.
 *
 * The spacing and the variance can be chosen apart from the reference
 * (e.g. diffusers' arithmetic with "trailing" spacing, as
 * DDPMScheduler.from_config(config, timestep_spacing="trailing") gives).
 *
 * Euler (rectified flow as models/diffusion.h trains it: z_t = (1 - t) x0 +
 * t noise, the model predicts v = x0 - noise): F-Lite's loop exactly. The
 * grid is u_j = j / N for j = N .. 0, shifted t = a u / (1 + (a - 1) u) (the
 * time shift of SD3 and F-Lite, in double), and step i is
 * x += (float)(t_i - t_{i+1}) * v, which integrates dz/dt = -v from t = 1
 * (noise) down to 0 (data). The model sees t * 1000 (DiT's timestep scale,
 * as dit-train feeds it in flow mode).
 *
 * Classifier-free guidance is the caller's: run the model on the image and
 * on the null class (or the empty prompt), then sampler_cfg_combine. DiT's
 * forward_with_cfg guides only the first 3 output channels "for exact
 * reproducibility" and keeps the conditional values of the rest (the 4th
 * eps channel and the variance): C_guided = 3. diffusers' DiTPipeline guides
 * all latent channels of eps: C_guided = C. F-Lite guides all: C_guided =
 * C_total.
 *
 * Noise: sampler_noise gives image k of seed s its own Philox stream per
 * step (RNG_SAMPLE_NOISE), so an image does not depend on the batch it is
 * sampled in. */
#ifndef DIT_MODEL_SAMPLER_H
#define DIT_MODEL_SAMPLER_H

#include <stdint.h>

/* The training schedule both references sample from: 1000 linear steps. */
#define SAMPLER_TRAIN_STEPS 1000

enum sampler_kind { SAMPLER_DDPM, SAMPLER_DDIM, SAMPLER_EULER };

/* Whose arithmetic, spacing and default variance (see above). */
enum sampler_reference { SAMPLER_REF_DIT, SAMPLER_REF_DIFFUSERS };

/* Which training timesteps N steps visit. */
enum sampler_spacing {
    SAMPLER_SPACING_DEFAULT,  /* the reference's: IDDPM for DiT, leading for diffusers */
    SAMPLER_SPACING_IDDPM,    /* IDDPM space_timesteps(1000, "N"): round(k * 999 / (N - 1)) */
    SAMPLER_SPACING_LEADING,  /* diffusers: k * (1000 / N) + steps_offset */
    SAMPLER_SPACING_TRAILING, /* diffusers: round(1000 - k * 1000 / N) - 1 */
    SAMPLER_SPACING_LINSPACE, /* diffusers: round(linspace(0, 999, N)) */
};

/* The variance of a DDPM step. */
enum ddpm_variance {
    VARIANCE_DEFAULT,       /* the reference's: LEARNED_RANGE for DiT, FIXED_SMALL for diffusers */
    VARIANCE_LEARNED_RANGE, /* DiT sample.py: log variance interpolated between the posterior's
                               (clipped) and log beta by the model's values v in [-1, 1] */
    VARIANCE_FIXED_SMALL,   /* the posterior variance: diffusers' DDPMScheduler as DiTPipeline
                               feeds it; IDDPM's sigma_small */
    VARIANCE_FIXED_LARGE,   /* beta: IDDPM's default for a model without learned sigma */
};

/* Zero-initialised options are DiT's sample.py. */
struct sampler_options {
    enum sampler_reference reference;
    enum sampler_spacing spacing;
    enum ddpm_variance variance;
    int steps_offset;  /* diffusers' steps_offset (leading spacing only) */
    int clip_denoised; /* clamp the x0 prediction to [-1, 1] (DiT samples without; the DiT-XL-2
                          diffusers config has clip_sample False) */
    float eta;         /* DDIM: 0 deterministic, 1 the DDPM posterior's variance */
    double shift;      /* Euler: the time shift a (<= 0: 1, no shift) */
};

/* One DDPM/DDIM step's schedule values, in double as the references hold them. */
struct sampler_coef {
    int32_t t;      /* the training timestep of this step: what the model sees */
    int32_t t_prev; /* the one the step goes to; -1: the end (alphas_cumprod 1) */
    double alphas_cumprod, alphas_cumprod_prev;
    double beta;    /* 1 - alphas_cumprod / alphas_cumprod_prev: the respaced beta */
    double sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod;
    double posterior_mean_coef1, posterior_mean_coef2;
    double posterior_log_variance_clipped; /* IDDPM's: at the last visited timestep, that of the
                                              one before it (the true value is log 0) */
    double log_variance_large;             /* IDDPM's FIXED_LARGE: log beta, clipped likewise */
};

struct sampler {
    enum sampler_kind kind;
    enum sampler_reference reference;
    enum sampler_spacing spacing;  /* resolved: never DEFAULT */
    enum ddpm_variance variance;   /* resolved: never DEFAULT (see sampler_variance) */
    int num_steps;
    int clip_denoised;
    float eta;
    double shift;
    struct sampler_coef *coef;     /* [num_steps], DDPM and DDIM */
    double *time;                  /* [num_steps + 1], Euler: t at step i; time[num_steps] = 0 */
};

/* -1 with err_set() for a step count the spacing cannot make (DDPM and
 * DDIM take 1..1000; Euler 1..1000000), a negative or non-finite eta, a
 * non-finite shift, a timestep outside 0..999, or an unknown enum value.
 * opt NULL: the defaults. */
int sampler_init(struct sampler *s, enum sampler_kind kind, int num_steps, const struct sampler_options *opt);
void sampler_free(struct sampler *s);

int sampler_num_steps(const struct sampler *s);
/* The timestep to give the model at step i (0 first): the training timestep
 * (DDPM, DDIM), or t * 1000 in float (Euler). */
float sampler_model_timestep(const struct sampler *s, int i);
/* The time of step i on the reference's scale, 0 <= i <= num_steps: the
 * training timestep (DDPM, DDIM; -1 for i = num_steps), or t in [0, 1]
 * (Euler; 0 for i = num_steps). */
double sampler_time(const struct sampler *s, int i);
/* The variance sampler_step uses for a model with (learned_sigma 1) or
 * without learned-sigma channels. Without them there is nothing to
 * interpolate: LEARNED_RANGE then falls back to what the reference uses for
 * such a model, FIXED_LARGE for DiT (create_diffusion(learn_sigma=False)),
 * FIXED_SMALL for diffusers. */
enum ddpm_variance sampler_variance(const struct sampler *s, int learned_sigma);
/* Whether sampler_step i adds noise, i.e. reads its noise argument: DDPM at
 * every step but DiT's last (diffusers: every step with t > 0); DDIM with
 * eta > 0 likewise (diffusers: every step); Euler never. */
int sampler_step_noise(const struct sampler *s, int i);

/* One step: x[B, C, H, W] (in place) from step i to step i + 1, given the
 * (guided) model output out[B, CO, H, W] for x at step i, CO = 2C when
 * learned_sigma (eps then the variance values; Euler reads the first C) and
 * C otherwise. noise[B, C, H, W] is this step's fresh standard normal noise,
 * read only where sampler_step_noise(s, i) (NULL allowed elsewhere); the
 * caller draws it per image (sampler_noise) so that image k gets the same
 * noise whatever the batch. hw = H * W. */
void sampler_step(const struct sampler *s, int i, float *x, const float *out, int learned_sigma,
                  const float *noise, int B, int C, int64_t hw);

/* Classifier-free guidance on [B, C_total, H, W] outputs: channels below
 * C_guided get uncond + scale (cond - uncond) (in that float order, as all
 * three references write it), the others cond's values. out may be cond or
 * uncond. */
void sampler_cfg_combine(float *out, const float *cond, const float *uncond, float scale, int B, int C_guided,
                         int C_total, int64_t hw);

/* F-Lite's APG (pipeline.py; "Adaptive Projected Guidance" in its README):
 * with dd = cond - uncond, the part of dd parallel to cond is dropped,
 * orth = dd - (<cond, dd> / <cond, cond>) cond, its size is capped by
 * s = min(1, threshold / std(orth)) (the unbiased std of all its values),
 * and out = cond + (scale - 1) s orth. The sums and the std run over each
 * sample's C x hw values (per_sample), or over the whole batch together
 * as F-Lite's own code does (which couples the images of a batch). F-Lite's
 * threshold is 0.03. Sums in double. out may be cond or uncond. */
void sampler_apg_combine(float *out, const float *cond, const float *uncond, float scale, float threshold,
                         int per_sample, int B, int C, int64_t hw);

/* The n standard normals image `image` of seed `seed` gets at `step`: step
 * 0 is the starting noise, step i + 1 the noise of sampler_step i. The
 * Philox stream (seed, RNG_SAMPLE_NOISE, step, image), from offset 0. */
void sampler_noise(float *out, uint64_t seed, uint64_t image, int step, int64_t n);

#endif
