#include "diffusion/sampler.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"
#include "diffusion/diffusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EULER_MAX_STEPS 1000000

/* The training timesteps N steps visit, in visiting order (descending).
 * Each rule is computed as its reference computes it (numpy doubles,
 * round half to even), so the integers agree exactly. */
static int spacing_timesteps(enum sampler_spacing sp, int n, int offset, int32_t *out)
{
    const int T = SAMPLER_TRAIN_STEPS;
    switch (sp) {
    case SAMPLER_SPACING_IDDPM: {
        /* space_timesteps(T, "N"): one section, a fractional stride
         * accumulated by repeated addition, Python's round(). */
        double stride = n > 1 ? (double)(T - 1) / (n - 1) : 1.0, cur = 0.0;
        for (int k = 0; k < n; k++) {
            out[n - 1 - k] = (int32_t)nearbyint(cur);
            cur += stride;
        }
        break;
    }
    case SAMPLER_SPACING_LEADING: {
        int ratio = T / n;
        for (int k = 0; k < n; k++)
            out[n - 1 - k] = k * ratio + offset;
        break;
    }
    case SAMPLER_SPACING_TRAILING: {
        /* np.round(np.arange(T, 0, -T / N)) - 1: numpy's arange takes its
         * length as ceil(-T / -ratio) and fills start + i * delta with
         * delta = (start - ratio) - start. */
        double ratio = (double)T / n, delta = ((double)T - ratio) - (double)T;
        double len = ceil((0.0 - T) / -ratio);
        if (len != n) {
            err_set("trailing spacing makes %.0f steps, not %d, from %d", len, n, T);
            return -1;
        }
        for (int k = 0; k < n; k++)
            out[k] = (int32_t)nearbyint((double)T + k * delta) - 1;
        break;
    }
    case SAMPLER_SPACING_LINSPACE: {
        /* np.linspace(0, T - 1, N).round()[::-1]: i * step + 0, the last
         * exactly T - 1. */
        double step = n > 1 ? (double)(T - 1) / (n - 1) : 0.0;
        for (int k = 0; k < n; k++) {
            double v = (n > 1 && k == n - 1) ? (double)(T - 1) : k * step + 0.0;
            out[n - 1 - k] = (int32_t)nearbyint(v);
        }
        break;
    }
    default:
        err_set("unknown timestep spacing %d", (int)sp);
        return -1;
    }
    for (int k = 0; k < n; k++)
        if (out[k] < 0 || out[k] >= T || (k > 0 && out[k] >= out[k - 1])) {
            err_set("timestep spacing gives step %d timestep %d: outside 0..%d or not decreasing", k,
                    (int)out[k], T - 1);
            return -1;
        }
    return 0;
}

/* IDDPM's SpacedDiffusion: the visited timesteps keep their alphas_cumprod;
 * the respaced betas are 1 - acp[k_j] / acp[k_{j-1}], and GaussianDiffusion
 * derives everything again from those betas, in double, in its order. */
static void coef_iddpm(struct sampler_coef *cf, int n, const double *base_acp)
{
    /* j counts visited timesteps upwards (the respaced index); step i = n - 1 - j. */
    double last = 1.0, acp = 1.0;
    for (int j = 0; j < n; j++) {
        struct sampler_coef *c = &cf[n - 1 - j];
        double a = base_acp[c->t];
        c->beta = 1.0 - a / last;
        last = a;
        c->alphas_cumprod_prev = acp;
        acp *= 1.0 - c->beta;
        c->alphas_cumprod = acp;
    }
    for (int j = 0; j < n; j++) {
        struct sampler_coef *c = &cf[n - 1 - j];
        struct ddpm_step_coef k;
        ddpm_step_coef(c->beta, c->alphas_cumprod, c->alphas_cumprod_prev, &k);
        c->sqrt_recip_alphas_cumprod = k.sqrt_recip_alphas_cumprod;
        c->sqrt_recipm1_alphas_cumprod = k.sqrt_recipm1_alphas_cumprod;
        c->posterior_mean_coef1 = k.posterior_mean_coef1;
        c->posterior_mean_coef2 = k.posterior_mean_coef2;
    }
    /* The posterior variance is 0 at the first visited timestep; IDDPM
     * takes its log (and FIXED_LARGE's value there) from the next one. */
    for (int j = 0; j < n; j++) {
        const struct sampler_coef *c = &cf[n - 1 - (j == 0 && n > 1 ? 1 : j)];
        struct ddpm_step_coef k;
        ddpm_step_coef(c->beta, c->alphas_cumprod, c->alphas_cumprod_prev, &k);
        double v = k.posterior_variance;
        cf[n - 1 - j].posterior_log_variance_clipped = log(v);
        cf[n - 1 - j].log_variance_large = j == 0 ? log(v) : log(cf[n - 1 - j].beta);
    }
}

/* diffusers: each step pairs acp[t] with acp[t - T / N] (1 past the start). */
static void coef_diffusers(struct sampler_coef *cf, int n, const double *base_acp)
{
    for (int i = 0; i < n; i++) {
        struct sampler_coef *c = &cf[i];
        c->t_prev = c->t - SAMPLER_TRAIN_STEPS / n;
        if (c->t_prev < 0)
            c->t_prev = -1;
        double a = base_acp[c->t], ap = c->t_prev >= 0 ? base_acp[c->t_prev] : 1.0, b = 1.0 - a / ap;
        struct ddpm_step_coef k;
        ddpm_step_coef(b, a, ap, &k);
        c->alphas_cumprod = a;
        c->alphas_cumprod_prev = ap;
        c->beta = b;
        c->sqrt_recip_alphas_cumprod = k.sqrt_recip_alphas_cumprod;
        c->sqrt_recipm1_alphas_cumprod = k.sqrt_recipm1_alphas_cumprod;
        c->posterior_mean_coef1 = k.posterior_mean_coef1;
        c->posterior_mean_coef2 = k.posterior_mean_coef2;
        c->posterior_log_variance_clipped = log(fmax(k.posterior_variance, 1e-20));
        c->log_variance_large = log(b);
    }
}

static int init_ddpm(struct sampler *s, int n, int offset)
{
    if (n < 1 || n > SAMPLER_TRAIN_STEPS) {
        err_set("%d sampling steps: a %s sampler takes 1..%d", n, s->kind == SAMPLER_DDPM ? "DDPM" : "DDIM",
                SAMPLER_TRAIN_STEPS);
        return -1;
    }
    if (offset != 0 && s->spacing != SAMPLER_SPACING_LEADING) {
        err_set("steps_offset %d: only the leading spacing takes one", offset);
        return -1;
    }
    int32_t *ts = malloc((size_t)n * sizeof *ts);
    s->coef = calloc((size_t)n, sizeof *s->coef);
    if (!ts || !s->coef) {
        free(ts);
        err_set("out of memory");
        return -1;
    }
    if (spacing_timesteps(s->spacing, n, offset, ts) != 0) {
        free(ts);
        return -1;
    }
    struct ddpm_schedule base;
    if (ddpm_schedule_linear(&base, SAMPLER_TRAIN_STEPS) != 0) {
        free(ts);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        s->coef[i].t = ts[i];
        s->coef[i].t_prev = i + 1 < n ? ts[i + 1] : -1;
    }
    if (s->reference == SAMPLER_REF_DIT)
        coef_iddpm(s->coef, n, base.alphas_cumprod);
    else
        coef_diffusers(s->coef, n, base.alphas_cumprod);
    ddpm_schedule_free(&base);
    free(ts);
    return 0;
}

static int init_euler(struct sampler *s, int n)
{
    if (n < 1 || n > EULER_MAX_STEPS) {
        err_set("%d sampling steps: the Euler sampler takes 1..%d", n, EULER_MAX_STEPS);
        return -1;
    }
    if (!(s->time = malloc((size_t)(n + 1) * sizeof *s->time))) {
        err_set("out of memory");
        return -1;
    }
    /* F-Lite: t = j / N, then t * a / (1 + (a - 1) * t), in Python floats. */
    const double a = s->shift;
    for (int i = 0; i <= n; i++) {
        double u = (double)(n - i) / n;
        s->time[i] = u * a / (1.0 + (a - 1.0) * u);
    }
    return 0;
}

int sampler_init(struct sampler *s, enum sampler_kind kind, int num_steps, const struct sampler_options *opt)
{
    static const struct sampler_options defaults;
    if (!opt)
        opt = &defaults;
    memset(s, 0, sizeof *s);
    if (kind != SAMPLER_DDPM && kind != SAMPLER_DDIM && kind != SAMPLER_EULER) {
        err_set("unknown sampler %d", (int)kind);
        return -1;
    }
    if (opt->reference != SAMPLER_REF_DIT && opt->reference != SAMPLER_REF_DIFFUSERS) {
        err_set("unknown sampler reference %d", (int)opt->reference);
        return -1;
    }
    if ((unsigned)opt->spacing > SAMPLER_SPACING_LINSPACE) {
        err_set("unknown timestep spacing %d", (int)opt->spacing);
        return -1;
    }
    if ((unsigned)opt->variance > VARIANCE_FIXED_LARGE) {
        err_set("unknown DDPM variance %d", (int)opt->variance);
        return -1;
    }
    if (!(opt->eta >= 0.0f) || isinf(opt->eta)) {
        err_set("eta %g: must be finite and >= 0", (double)opt->eta);
        return -1;
    }
    if (!isfinite(opt->shift)) {
        err_set("time shift %g: must be finite", opt->shift);
        return -1;
    }
    s->kind = kind;
    s->reference = opt->reference;
    s->num_steps = num_steps;
    s->clip_denoised = opt->clip_denoised != 0;
    s->eta = opt->eta;
    s->shift = opt->shift > 0 ? opt->shift : 1.0;
    s->spacing = opt->spacing != SAMPLER_SPACING_DEFAULT ? opt->spacing
                 : s->reference == SAMPLER_REF_DIT    ? SAMPLER_SPACING_IDDPM
                                                      : SAMPLER_SPACING_LEADING;
    s->variance = opt->variance != VARIANCE_DEFAULT ? opt->variance
                  : s->reference == SAMPLER_REF_DIT ? VARIANCE_LEARNED_RANGE
                                                    : VARIANCE_FIXED_SMALL;
    int rc = kind == SAMPLER_EULER ? init_euler(s, num_steps) : init_ddpm(s, num_steps, opt->steps_offset);
    if (rc != 0)
        sampler_free(s);
    return rc;
}

void sampler_free(struct sampler *s)
{
    free(s->coef);
    free(s->time);
    memset(s, 0, sizeof *s);
}

int sampler_num_steps(const struct sampler *s)
{
    return s->num_steps;
}

float sampler_model_timestep(const struct sampler *s, int i)
{
    if (s->kind == SAMPLER_EULER)
        return (float)s->time[i] * 1000.0f; /* the float time, scaled in float as F-Lite's model does */
    return (float)s->coef[i].t;
}

double sampler_time(const struct sampler *s, int i)
{
    if (s->kind == SAMPLER_EULER)
        return s->time[i];
    return i < s->num_steps ? s->coef[i].t : -1;
}

enum ddpm_variance sampler_variance(const struct sampler *s, int learned_sigma)
{
    if (s->variance == VARIANCE_LEARNED_RANGE && !learned_sigma)
        return s->reference == SAMPLER_REF_DIT ? VARIANCE_FIXED_LARGE : VARIANCE_FIXED_SMALL;
    return s->variance;
}

int sampler_step_noise(const struct sampler *s, int i)
{
    int last = i == s->num_steps - 1;
    switch (s->kind) {
    case SAMPLER_DDPM:
        return s->reference == SAMPLER_REF_DIT ? !last : s->coef[i].t > 0;
    case SAMPLER_DDIM:
        return s->eta > 0 && (s->reference == SAMPLER_REF_DIFFUSERS || !last);
    default:
        return 0;
    }
}

static float clip1(float v)
{
    return v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v; /* NaN passes, as torch.clamp */
}

/* IDDPM's p_sample: p_mean_variance, then mean + exp(0.5 log_var) noise. */
static void step_ddpm_dit(const struct sampler *s, const struct sampler_coef *c, enum ddpm_variance var,
                          int use_noise, float *x, const float *eps, const float *v, const float *noise, int64_t n)
{
    const float rx = (float)c->sqrt_recip_alphas_cumprod, re = (float)c->sqrt_recipm1_alphas_cumprod;
    const float c1 = (float)c->posterior_mean_coef1, c2 = (float)c->posterior_mean_coef2;
    const float min_log = (float)c->posterior_log_variance_clipped, max_log = (float)log(c->beta);
    const float fixed_log = var == VARIANCE_FIXED_LARGE ? (float)c->log_variance_large : min_log;
    for (int64_t k = 0; k < n; k++) {
        float xv = x[k], x0 = rx * xv - re * eps[k];
        if (s->clip_denoised)
            x0 = clip1(x0);
        float mean = c1 * x0 + c2 * xv;
        if (use_noise) {
            float lv = fixed_log;
            if (var == VARIANCE_LEARNED_RANGE) {
                float frac = (v[k] + 1.0f) / 2.0f;
                lv = frac * max_log + (1.0f - frac) * min_log;
            }
            mean = mean + expf(0.5f * lv) * noise[k];
        }
        x[k] = mean;
    }
}

/* IDDPM's ddim_sample: eps re-derived from the x0 prediction. */
static void step_ddim_dit(const struct sampler *s, const struct sampler_coef *c, int use_noise, float *x,
                          const float *eps, const float *noise, int64_t n)
{
    const float rx = (float)c->sqrt_recip_alphas_cumprod, re = (float)c->sqrt_recipm1_alphas_cumprod;
    const float ab = (float)c->alphas_cumprod, abp = (float)c->alphas_cumprod_prev;
    const float sigma = s->eta * sqrtf((1.0f - abp) / (1.0f - ab)) * sqrtf(1.0f - ab / abp);
    const float cx0 = sqrtf(abp), ceps = sqrtf(1.0f - abp - sigma * sigma);
    for (int64_t k = 0; k < n; k++) {
        float xv = x[k], x0 = rx * xv - re * eps[k];
        if (s->clip_denoised)
            x0 = clip1(x0);
        float e = (rx * xv - x0) / re;
        float mean = x0 * cx0 + ceps * e;
        if (use_noise)
            mean = mean + sigma * noise[k];
        x[k] = mean;
    }
}

/* diffusers' DDPMScheduler.step, its 0-dim float tensors in its order. */
static void step_ddpm_diffusers(const struct sampler *s, const struct sampler_coef *c, enum ddpm_variance var,
                                int use_noise, float *x, const float *eps, const float *v, const float *noise,
                                int64_t n)
{
    const float apt = (float)c->alphas_cumprod, aptp = c->t_prev >= 0 ? (float)c->alphas_cumprod_prev : 1.0f;
    const float bpt = 1.0f - apt, bptp = 1.0f - aptp;
    const float cat = apt / aptp, cbt = 1.0f - cat;
    const float sb = sqrtf(bpt), sa = sqrtf(apt);
    const float cx0 = (sqrtf(aptp) * cbt) / bpt, cxt = sqrtf(cat) * bptp / bpt;
    /* _get_variance */
    float small = (1.0f - aptp) / (1.0f - apt) * cbt;
    small = small < 1e-20f ? 1e-20f : small;
    const float min_log = logf(small), max_log = logf(cbt);
    const float sd = var == VARIANCE_FIXED_LARGE ? sqrtf(cbt) : sqrtf(small);
    for (int64_t k = 0; k < n; k++) {
        float xv = x[k], x0 = (xv - sb * eps[k]) / sa;
        if (s->clip_denoised)
            x0 = clip1(x0);
        float prev = cx0 * x0 + cxt * xv;
        if (use_noise) {
            if (var == VARIANCE_LEARNED_RANGE) {
                float frac = (v[k] + 1.0f) / 2.0f;
                prev = prev + expf(0.5f * (frac * max_log + (1.0f - frac) * min_log)) * noise[k];
            } else {
                prev = prev + sd * noise[k];
            }
        }
        x[k] = prev;
    }
}

/* diffusers' DDIMScheduler.step (use_clipped_model_output False: the
 * direction uses the model's eps even when x0 was clipped). */
static void step_ddim_diffusers(const struct sampler *s, const struct sampler_coef *c, int use_noise, float *x,
                                const float *eps, const float *noise, int64_t n)
{
    const float apt = (float)c->alphas_cumprod, aptp = c->t_prev >= 0 ? (float)c->alphas_cumprod_prev : 1.0f;
    const float bpt = 1.0f - apt, bptp = 1.0f - aptp;
    const float sb = sqrtf(bpt), sa = sqrtf(apt);
    const float variance = (bptp / bpt) * (1.0f - apt / aptp);
    const float sd = s->eta * sqrtf(variance);
    const float cdir = sqrtf(1.0f - aptp - sd * sd), cx0 = sqrtf(aptp);
    for (int64_t k = 0; k < n; k++) {
        float xv = x[k], e = eps[k], x0 = (xv - sb * e) / sa;
        if (s->clip_denoised)
            x0 = clip1(x0);
        float prev = cx0 * x0 + cdir * e;
        if (use_noise)
            prev = prev + sd * noise[k];
        x[k] = prev;
    }
}

void sampler_step(const struct sampler *s, int i, float *x, const float *out, int learned_sigma,
                  const float *noise, int B, int C, int64_t hw)
{
    const int64_t n = (int64_t)C * hw, stride = learned_sigma ? 2 * n : n;
    const int use_noise = sampler_step_noise(s, i);
    const enum ddpm_variance var = sampler_variance(s, learned_sigma);
    /* Images are independent: in parallel, the same bits on any thread count
     * (on a GPU run this is the host's share of every sampling step). */
#pragma omp parallel for schedule(static) if (B > 1 && n * B >= 65536)
    for (int b = 0; b < B; b++) {
        float *xb = x + b * n;
        const float *eps = out + b * stride, *v = learned_sigma ? eps + n : NULL;
        const float *nb = use_noise ? noise + b * n : NULL;
        if (s->kind == SAMPLER_EULER) {
            /* F-Lite: latents + dt * v, dt a Python float, rounded to the tensor's float. */
            const float dt = (float)(s->time[i] - s->time[i + 1]);
            for (int64_t k = 0; k < n; k++)
                xb[k] = xb[k] + dt * eps[k];
        } else if (s->kind == SAMPLER_DDPM) {
            if (s->reference == SAMPLER_REF_DIT)
                step_ddpm_dit(s, &s->coef[i], var, use_noise, xb, eps, v, nb, n);
            else
                step_ddpm_diffusers(s, &s->coef[i], var, use_noise, xb, eps, v, nb, n);
        } else {
            if (s->reference == SAMPLER_REF_DIT)
                step_ddim_dit(s, &s->coef[i], use_noise, xb, eps, nb, n);
            else
                step_ddim_diffusers(s, &s->coef[i], use_noise, xb, eps, nb, n);
        }
    }
}

void sampler_cfg_combine(float *out, const float *cond, const float *uncond, float scale, int B, int C_guided,
                         int C_total, int64_t hw)
{
    const int64_t guided = (int64_t)(C_guided < C_total ? C_guided : C_total) * hw, n = (int64_t)C_total * hw;
#pragma omp parallel for schedule(static) if (B > 1 && n * B >= 65536)
    for (int b = 0; b < B; b++) {
        const float *c = cond + b * n, *u = uncond + b * n;
        float *o = out + b * n;
        for (int64_t k = 0; k < guided; k++)
            o[k] = u[k] + scale * (c[k] - u[k]);
        if (o != c)
            memmove(o + guided, c + guided, (size_t)(n - guided) * sizeof *o);
    }
}

/* APG over samples [b0, b1), which share one projection and one cap. */
static void apg_group(float *out, const float *cond, const float *uncond, float scale, float threshold,
                      int64_t b0, int64_t b1, int64_t n)
{
    const int64_t lo = b0 * n, hi = b1 * n, m = hi - lo;
    double cd = 0, cc = 0;
    for (int64_t k = lo; k < hi; k++) {
        double c = cond[k], dd = (double)cond[k] - uncond[k];
        cd += c * dd, cc += c * c;
    }
    const double proj = cc > 0 ? cd / cc : 0;
    /* mean and unbiased variance of orth, in two passes */
    double sum = 0;
    for (int64_t k = lo; k < hi; k++)
        sum += ((double)cond[k] - uncond[k]) - proj * cond[k];
    const double mean = sum / (double)m;
    double var = 0;
    for (int64_t k = lo; k < hi; k++) {
        double o = ((double)cond[k] - uncond[k]) - proj * cond[k] - mean;
        var += o * o;
    }
    const double sd = m > 1 ? sqrt(var / (double)(m - 1)) : 0;
    const double cap = sd > threshold ? threshold / sd : 1.0;
    const double g = ((double)scale - 1.0) * cap;
    for (int64_t k = lo; k < hi; k++) {
        double orth = ((double)cond[k] - uncond[k]) - proj * cond[k];
        out[k] = (float)(cond[k] + g * orth);
    }
}

void sampler_apg_combine(float *out, const float *cond, const float *uncond, float scale, float threshold,
                         int per_sample, int B, int C, int64_t hw)
{
    const int64_t n = (int64_t)C * hw;
    if (!per_sample) {
        apg_group(out, cond, uncond, scale, threshold, 0, B, n);
        return;
    }
#pragma omp parallel for schedule(static) if (B > 1 && n * B >= 65536)
    for (int b = 0; b < B; b++)
        apg_group(out, cond, uncond, scale, threshold, b, b + 1, n);
}

void sampler_noise(float *out, uint64_t seed, uint64_t image, int step, int64_t n)
{
    struct rng_stream st = rng_stream(seed, RNG_SAMPLE_NOISE, (uint64_t)step, image);
    rng_normal_f32(&st, 0, (size_t)n, out);
}
