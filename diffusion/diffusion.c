#include "diffusion/diffusion.h"
#include "libcommon/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ddpm_step_coef(double b, double a, double ap, struct ddpm_step_coef *out)
{
    out->sqrt_recip_alphas_cumprod = sqrt(1.0 / a);
    out->sqrt_recipm1_alphas_cumprod = sqrt(1.0 / a - 1.0);
    out->posterior_variance = b * (1.0 - ap) / (1.0 - a);
    out->posterior_mean_coef1 = b * sqrt(ap) / (1.0 - a);
    out->posterior_mean_coef2 = (1.0 - ap) * sqrt(1.0 - b) / (1.0 - a);
}

int ddpm_schedule_linear(struct ddpm_schedule *s, int steps)
{
    memset(s, 0, sizeof *s);
    if (steps < 2 || steps > 100000) {
        err_set("diffusion steps %d outside 2..100000", steps);
        return -1;
    }
    double **arrays[] = {&s->betas, &s->log_betas, &s->alphas_cumprod, &s->alphas_cumprod_prev,
                         &s->sqrt_alphas_cumprod, &s->sqrt_one_minus_alphas_cumprod,
                         &s->sqrt_recip_alphas_cumprod, &s->sqrt_recipm1_alphas_cumprod,
                         &s->posterior_variance, &s->posterior_log_variance_clipped,
                         &s->posterior_mean_coef1, &s->posterior_mean_coef2};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        if (!(*arrays[i] = calloc((size_t)steps, sizeof(double)))) {
            ddpm_schedule_free(s);
            err_set("out of memory");
            return -1;
        }
    s->steps = steps;
    /* np.linspace: start + i * step, with the last value exactly the end. */
    double scale = 1000.0 / steps, start = scale * 0.0001, end = scale * 0.02;
    double step = (end - start) / (steps - 1);
    double acp = 1.0;
    for (int i = 0; i < steps; i++) {
        double beta = i == steps - 1 ? end : start + i * step;
        s->betas[i] = beta;
        s->log_betas[i] = log(beta);
        s->alphas_cumprod_prev[i] = acp;
        acp *= 1.0 - beta;
        s->alphas_cumprod[i] = acp;
    }
    for (int i = 0; i < steps; i++) {
        double a = s->alphas_cumprod[i];
        struct ddpm_step_coef c;
        ddpm_step_coef(s->betas[i], a, s->alphas_cumprod_prev[i], &c);
        s->sqrt_alphas_cumprod[i] = sqrt(a);
        s->sqrt_one_minus_alphas_cumprod[i] = sqrt(1.0 - a);
        s->sqrt_recip_alphas_cumprod[i] = c.sqrt_recip_alphas_cumprod;
        s->sqrt_recipm1_alphas_cumprod[i] = c.sqrt_recipm1_alphas_cumprod;
        s->posterior_variance[i] = c.posterior_variance;
        s->posterior_mean_coef1[i] = c.posterior_mean_coef1;
        s->posterior_mean_coef2[i] = c.posterior_mean_coef2;
    }
    /* The variance at t = 0 is 0; IDDPM clips its log to the one at t = 1. */
    for (int i = 0; i < steps; i++)
        s->posterior_log_variance_clipped[i] = log(s->posterior_variance[i ? i : 1]);
    return 0;
}

void ddpm_schedule_free(struct ddpm_schedule *s)
{
    free(s->betas);
    free(s->log_betas);
    free(s->alphas_cumprod);
    free(s->alphas_cumprod_prev);
    free(s->sqrt_alphas_cumprod);
    free(s->sqrt_one_minus_alphas_cumprod);
    free(s->sqrt_recip_alphas_cumprod);
    free(s->sqrt_recipm1_alphas_cumprod);
    free(s->posterior_variance);
    free(s->posterior_log_variance_clipped);
    free(s->posterior_mean_coef1);
    free(s->posterior_mean_coef2);
    memset(s, 0, sizeof *s);
}

void ddpm_q_sample(const struct ddpm_schedule *s, float *x_t, const float *x0, const float *noise,
                   const int32_t *t, int B, int64_t n)
{
#pragma omp parallel for schedule(static) if (n * B >= 65536)
    for (int b = 0; b < B; b++) {
        /* The reference casts the coefficients to fp32 before using them. */
        float ca = (float)s->sqrt_alphas_cumprod[t[b]];
        float cn = (float)s->sqrt_one_minus_alphas_cumprod[t[b]];
        for (int64_t i = 0; i < n; i++)
            x_t[b * n + i] = ca * x0[b * n + i] + cn * noise[b * n + i];
    }
}

/* IDDPM's approximate standard normal CDF, in fp32 as the reference
 * evaluates it: its saturation to exactly 0 or 1 far from the mean decides
 * which bins hit the 1e-12 floor, so double precision would not match. */
static float approx_cdf(float x)
{
    return 0.5f * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

/* Its derivative as autograd forms it in fp32: where tanh has saturated to
 * 1 the reference's gradient is exactly 0, and so is this one. */
static float approx_pdf(float x)
{
    float th = tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f - th * th) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
}

/* log p(x) of the discretised Gaussian (8-bit bins on [-1, 1]) and its
 * derivative with respect to log_scale (the mean is stopped); zero where the
 * reference clamps. */
static float discretized_log_likelihood(float x, float mean, float log_scale, double *dlog_scale)
{
    float c = x - mean, inv = expf(-log_scale);
    float plus_in = inv * (c + 1.0f / 255.0f), min_in = inv * (c - 1.0f / 255.0f);
    float cdf_plus = approx_cdf(plus_in), cdf_min = approx_cdf(min_in);
    /* d(in)/d(log_scale) = -in */
    if (x < -0.999f) {
        *dlog_scale = cdf_plus > 1e-12f ? approx_pdf(plus_in) * -plus_in / cdf_plus : 0.0;
        return logf(fmaxf(cdf_plus, 1e-12f));
    }
    if (x > 0.999f) {
        float one_minus = 1.0f - cdf_min;
        *dlog_scale = one_minus > 1e-12f ? -approx_pdf(min_in) * -min_in / one_minus : 0.0;
        return logf(fmaxf(one_minus, 1e-12f));
    }
    float delta = cdf_plus - cdf_min;
    *dlog_scale = delta > 1e-12f ? (approx_pdf(plus_in) * -plus_in - approx_pdf(min_in) * -min_in) / delta : 0.0;
    return logf(fmaxf(delta, 1e-12f));
}

double ddpm_training_loss(const struct ddpm_schedule *s, const float *model_out, const float *x0,
                          const float *x_t, const float *noise, const int32_t *t, int B, int C,
                          int64_t hw, struct ddpm_terms *terms, float *dout)
{
    const int64_t n = (int64_t)C * hw;
    /* Samples in parallel (the host's share of a GPU step), each summed on
     * its own and the batch summed in order afterwards: the same bits on
     * any thread count. */
    double *sample_loss = malloc((size_t)(B > 0 ? B : 1) * sizeof *sample_loss);
    if (!sample_loss)
        return NAN;
#pragma omp parallel for schedule(static) if (B > 1 && n * B >= 65536)
    for (int b = 0; b < B; b++) {
        const int ti = t[b];
        const float *eps = model_out + (int64_t)b * 2 * n, *var = eps + n;
        const float *x0b = x0 + b * n, *xtb = x_t + b * n, *nb = noise + b * n;
        float *deps = dout ? dout + (int64_t)b * 2 * n : NULL, *dvar = deps ? deps + n : NULL;
        /* As the reference: coefficients gathered in double and cast to fp32,
         * then fp32 arithmetic per element. Near t = T the two log-variance
         * bounds differ by ~1e-7, and their fp32 values decide the variance
         * gradient there. Sums are kept in double. */
        const float min_log = (float)s->posterior_log_variance_clipped[ti];
        const float max_log = (float)s->log_betas[ti];
        const float c1 = (float)s->posterior_mean_coef1[ti], c2 = (float)s->posterior_mean_coef2[ti];
        const float rx = (float)s->sqrt_recip_alphas_cumprod[ti];
        const float re = (float)s->sqrt_recipm1_alphas_cumprod[ti];
        const float dlogvar_dv = 0.5f * (max_log - min_log);
        double mse = 0, vb = 0;
        for (int64_t i = 0; i < n; i++) {
            float e = eps[i], d = nb[i] - e;
            mse += (double)d * d;
            if (deps)
                deps[i] = (float)(-2.0 * d / n / B);
            /* The predicted mean from the (stopped) eps. */
            float pred_x0 = rx * xtb[i] - re * e;
            float mean = c1 * pred_x0 + c2 * xtb[i];
            float frac = (var[i] + 1.0f) / 2.0f;
            float log_var = frac * max_log + (1.0f - frac) * min_log;
            double term, dterm_dlogvar;
            if (ti == 0) {
                double dls;
                term = -discretized_log_likelihood(x0b[i], mean, 0.5f * log_var, &dls);
                dterm_dlogvar = -0.5 * dls;
            } else {
                float true_mean = c1 * x0b[i] + c2 * xtb[i], true_log_var = min_log;
                float dm = true_mean - mean;
                term = 0.5f * (-1.0f + log_var - true_log_var + expf(true_log_var - log_var) +
                               dm * dm * expf(-log_var));
                dterm_dlogvar = 0.5f - 0.5f * expf(true_log_var - log_var) - 0.5f * (dm * dm * expf(-log_var));
            }
            vb += term;
            if (dvar)
                dvar[i] = (float)(dterm_dlogvar * dlogvar_dv / (n * M_LN2) / B);
        }
        mse /= n;
        vb /= n * M_LN2; /* in bits per dimension */
        if (terms)
            terms[b] = (struct ddpm_terms){mse, vb, mse + vb};
        sample_loss[b] = mse + vb;
    }
    double total = 0;
    for (int b = 0; b < B; b++)
        total += sample_loss[b];
    free(sample_loss);
    return total / B;
}

void flow_interpolate(float *z_t, float *target, const float *x0, const float *noise,
                      const float *t, int B, int64_t n)
{
    for (int b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) {
            float a = x0[b * n + i], e = noise[b * n + i];
            z_t[b * n + i] = (1.0f - t[b]) * a + t[b] * e;
            target[b * n + i] = a - e;
        }
}

float flow_timestep(float z, float mean, float std, float shift)
{
    float t = 1.0f / (1.0f + expf(-(mean + std * z)));
    return shift * t / (1.0f + (shift - 1.0f) * t);
}

float flow_resolution_shift(int h, int w)
{
    return 2.0f * sqrtf((float)h * (float)w / (64.0f * 64.0f));
}

double flow_loss(const float *pred, const float *target, int B, int64_t n, float *dpred)
{
    double total = 0;
    for (int b = 0; b < B; b++) {
        double sum = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = (double)pred[b * n + i] - target[b * n + i];
            sum += d * d;
            if (dpred)
                dpred[b * n + i] = (float)(2.0 * d / n / B);
        }
        total += sum / n;
    }
    return total / B;
}
