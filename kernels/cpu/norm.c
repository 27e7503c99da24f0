/* LayerNorm without affine and the two adaLN-Zero pieces around it:
 * modulate (x * (1 + scale) + shift), alone and fused with the norm, and
 * the gated residual. The fused adaLN computes every value in the same
 * order and precision as the LayerNorm and modulate ops one after the
 * other, so it gives the same bits without storing the normalised rows. */
#include "kernels/cpu/cpu.h"

#include <math.h>

/* The statistics of one row x[C]: *mean and *rstd = 1/sqrt(var + eps).
 * Two passes in double: the one-pass E[x^2] - E[x]^2 cancels
 * catastrophically on activations with a large mean. */
static inline __attribute__((always_inline)) void ln_row_stats(const float *x, int C, float eps,
                                                                float *mean, float *rstd)
{
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; c++)
        sum += x[c];
    double mu = sum / C;
    double var = 0.0;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; c++) {
        double d = x[c] - mu;
        var += d * d;
    }
    var /= C;
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(var + (double)eps));
}

/* Rows [m0, m1) of the forward. */
CPU_VECTOR_CLONES static void layernorm_forward_rows(float *out, float *mean, float *rstd,
                                                     const float *inp, int64_t m0, int64_t m1,
                                                     int C, float eps)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *x = inp + m * C;
        float *y = out + m * C;
        float mu_f, rs;
        ln_row_stats(x, C, eps, &mu_f, &rs);
#pragma omp simd
        for (int c = 0; c < C; c++)
            y[c] = (x[c] - mu_f) * rs;
        mean[m] = mu_f;
        rstd[m] = rs;
    }
}

/* out[M,C], mean[M], rstd[M] from inp[M,C]. Each row is one thread's, and
 * its sums run in the same order whatever the thread count. */
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, int M, int C,
                           float eps)
{
#pragma omp parallel if ((int64_t)M * C >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(M, &lo, &hi);
        layernorm_forward_rows(out, mean, rstd, inp, lo, hi, C, eps);
    }
}

/* Rows [m0, m1) of the backward. */
CPU_VECTOR_CLONES static void layernorm_backward_rows(float *dinp, const float *dout,
                                                      const float *inp, const float *mean,
                                                      const float *rstd, int64_t m0, int64_t m1,
                                                      int C)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *x = inp + m * C;
        const float *dy = dout + m * C;
        float *dx = dinp + m * C;
        float mu = mean[m], rs = rstd[m];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
#pragma omp simd reduction(+ : sum_dy, sum_dy_xhat)
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            sum_dy += dy[c];
            sum_dy_xhat += (double)dy[c] * xhat;
        }
        float mean_dy = (float)(sum_dy / C);
        float mean_dy_xhat = (float)(sum_dy_xhat / C);
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            dx[c] += rs * (dy[c] - mean_dy - xhat * mean_dy_xhat);
        }
    }
}

/* dinp[M,C] += rstd * (dout - mean(dout) - xhat * mean(dout * xhat)),
 * the gradient of xhat = (x - mean) * rstd through both statistics. */
void cpu_layernorm_backward(float *dinp, const float *dout, const float *inp, const float *mean,
                            const float *rstd, int M, int C)
{
#pragma omp parallel if ((int64_t)M * C >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(M, &lo, &hi);
        layernorm_backward_rows(dinp, dout, inp, mean, rstd, lo, hi, C);
    }
}

/* ---- GroupNorm -------------------------------------------------------------- */

/* One group: n = (C/G) * HW contiguous values x[cg][HW] of cg channels,
 * normalised with its statistics, then channel c's affine and the optional
 * SiLU. The statistics go in two passes in double (a VAE's group holds
 * millions of values, often far from zero), and each value is centred in
 * double too: a float mean is off by up to half an ulp of the mean, which
 * for values of 1000 +- 1 is 3e-5 of one standard deviation. The normalised
 * value is rounded to float once, then the affine is applied in float, as
 * torch does it. In place is safe: a value is read before it is written. */
CPU_VECTOR_CLONES static void groupnorm_group(float *out, const float *x, const float *w,
                                              const float *b, int cg, int HW, float eps,
                                              int silu)
{
    int64_t n = (int64_t)cg * HW;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    double mu = sum / (double)n;
    double var = 0.0;
#pragma omp simd reduction(+ : var)
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mu;
        var += d * d;
    }
    double rstd = 1.0 / sqrt(var / (double)n + (double)eps);
    for (int c = 0; c < cg; c++) {
        const float *xc = x + (int64_t)c * HW;
        float *yc = out + (int64_t)c * HW;
        float wc = w[c], bc = b[c];
        if (silu) {
#pragma omp simd
            for (int i = 0; i < HW; i++) {
                float y = (float)((xc[i] - mu) * rstd) * wc + bc;
                yc[i] = y * (1.0f / (1.0f + cpu_expf(-y)));
            }
        } else {
#pragma omp simd
            for (int i = 0; i < HW; i++)
                yc[i] = (float)((xc[i] - mu) * rstd) * wc + bc;
        }
    }
}

/* out[B,C,HW] from inp[B,C,HW]: one (batch, group) per task, each summed
 * by one thread in a fixed order, so any thread count gives the same bits. */
void cpu_groupnorm_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int B, int C, int HW, int G, float eps, int silu)
{
    int cg = C / G;
    int64_t tasks = (int64_t)B * G, per = (int64_t)cg * HW;
#pragma omp parallel for schedule(static) if (tasks * per >= CPU_PARALLEL_MIN && tasks > 1)
    for (int64_t task = 0; task < tasks; task++) {
        int g = (int)(task % G);
        groupnorm_group(out + task * per, inp + task * per, weight + (int64_t)g * cg,
                        bias + (int64_t)g * cg, cg, HW, eps, silu);
    }
}

/* out[B,T,C] = x * (1 + scale[b]) + shift[b], rows of shift/scale at mod_stride */
void cpu_modulate_forward(float *out, const float *x, const float *shift, const float *scale,
                          int B, int T, int C, int mod_stride)
{
    int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t b = r / T;
        const float *sh = shift + b * mod_stride;
        const float *sc = scale + b * mod_stride;
        const float *xr = x + r * C;
        float *o = out + r * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            o[c] = xr[c] * (1.0f + sc[c]) + sh[c];
    }
}

/* The per-(b, c) reductions over t below go column block by column block, so
 * each thread owns whole columns and sums them in token order: the same bits
 * for any thread count, and no atomics. The elementwise dx (dy) of the same
 * rows is written in the same pass, while they are in cache. */
#define MOD_BLOCK 64

/* One batch row's T tokens (C apart), width columns: dx = dout * (1 + sc)
 * when dx is wanted; sum_dy[j] = sum_t dout, sum_dyx[j] = sum_t dout * x. */
CPU_VECTOR_CLONES static void modulate_backward_block(float *dx, double *sum_dy, double *sum_dyx,
                                                      const float *dout, const float *x,
                                                      const float *sc, int T, int C, int width)
{
    for (int j = 0; j < width; j++)
        sum_dy[j] = sum_dyx[j] = 0.0;
    for (int t = 0; t < T; t++) {
        const float *dy = dout + (int64_t)t * C, *xr = x + (int64_t)t * C;
        if (dx) {
            float *d = dx + (int64_t)t * C;
#pragma omp simd
            for (int j = 0; j < width; j++)
                d[j] = dy[j] * (1.0f + sc[j]);
        }
#pragma omp simd
        for (int j = 0; j < width; j++) {
            sum_dy[j] += dy[j];
            sum_dyx[j] += (double)dy[j] * xr[j];
        }
    }
}

/* out[b,t,:] = d[b,t,:] * (1 + f[b,:]) (plus_one: modulate's dx) or
 * d * f[b,:] (the gated residual's dy), f rows at mod_stride: the backward
 * when no sum over tokens is wanted. */
static void rows_times_mod(float *out, const float *d, const float *f, int plus_one, int B,
                           int T, int C, int mod_stride)
{
    int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *fr = f + (r / T) * mod_stride;
        const float *dr = d + r * C;
        float *o = out + r * C;
        if (plus_one) {
#pragma omp simd
            for (int c = 0; c < C; c++)
                o[c] = dr[c] * (1.0f + fr[c]);
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++)
                o[c] = dr[c] * fr[c];
        }
    }
}

void cpu_modulate_backward(float *dx, float *dshift, float *dscale, const float *dout,
                           const float *x, const float *scale, int B, int T, int C,
                           int mod_stride)
{
    if (!dshift && !dscale) {
        if (dx)
            rows_times_mod(dx, dout, scale, 1, B, T, C, mod_stride);
        return;
    }
    int nblk = (C + MOD_BLOCK - 1) / MOD_BLOCK;
    int64_t tasks = (int64_t)B * nblk;
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= CPU_PARALLEL_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / nblk;
        int c0 = (int)(task % nblk) * MOD_BLOCK;
        int width = C - c0 < MOD_BLOCK ? C - c0 : MOD_BLOCK;
        int64_t at = b * T * C + c0;
        double acc_shift[MOD_BLOCK], acc_scale[MOD_BLOCK];
        modulate_backward_block(dx ? dx + at : NULL, acc_shift, acc_scale, dout + at, x + at,
                                scale + b * mod_stride + c0, T, C, width);
        for (int j = 0; j < width; j++) {
            if (dshift)
                dshift[b * mod_stride + c0 + j] += (float)acc_shift[j];
            if (dscale)
                dscale[b * mod_stride + c0 + j] += (float)acc_scale[j];
        }
    }
}

/* ---- adaLN: LayerNorm and modulate fused ------------------------------- */

/* Rows [m0, m1) of out = ((x - mean) * rstd) * (1 + scale[b]) + shift[b]. */
CPU_VECTOR_CLONES static void adaln_forward_rows(float *out, float *mean, float *rstd,
                                                 const float *inp, const float *shift,
                                                 const float *scale, int64_t m0, int64_t m1,
                                                 int T, int C, int mod_stride, float eps)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *x = inp + m * C;
        const float *sh = shift + (m / T) * mod_stride, *sc = scale + (m / T) * mod_stride;
        float *y = out + m * C;
        float mu, rs;
        ln_row_stats(x, C, eps, &mu, &rs);
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float ln = (x[c] - mu) * rs;
            y[c] = ln * (1.0f + sc[c]) + sh[c];
        }
        mean[m] = mu;
        rstd[m] = rs;
    }
}

void cpu_adaln_forward(float *out, float *mean, float *rstd, const float *x, const float *shift,
                       const float *scale, int B, int T, int C, int mod_stride, float eps)
{
    int64_t M = (int64_t)B * T;
#pragma omp parallel if (M * C >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(M, &lo, &hi);
        adaln_forward_rows(out, mean, rstd, x, shift, scale, lo, hi, T, C, mod_stride, eps);
    }
}

/* Rows [m0, m1) of dx += LayerNorm backward of dln = dout * (1 + scale[b]),
 * dln recomputed where it is used rather than stored. */
CPU_VECTOR_CLONES static void adaln_backward_rows(float *dinp, const float *dout,
                                                  const float *inp, const float *mean,
                                                  const float *rstd, const float *scale,
                                                  int64_t m0, int64_t m1, int T, int C,
                                                  int mod_stride)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *x = inp + m * C, *dy = dout + m * C;
        const float *sc = scale + (m / T) * mod_stride;
        float *dx = dinp + m * C;
        float mu = mean[m], rs = rstd[m];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
#pragma omp simd reduction(+ : sum_dy, sum_dy_xhat)
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            float dln = dy[c] * (1.0f + sc[c]);
            sum_dy += dln;
            sum_dy_xhat += (double)dln * xhat;
        }
        float mean_dy = (float)(sum_dy / C);
        float mean_dy_xhat = (float)(sum_dy_xhat / C);
#pragma omp simd
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            float dln = dy[c] * (1.0f + sc[c]);
            dx[c] += rs * (dln - mean_dy - xhat * mean_dy_xhat);
        }
    }
}

/* One batch row's T tokens (C apart), width columns, in token order:
 * sum_dy[j] = sum_t dout, sum_dyx[j] = sum_t dout * ln, ln recomputed from
 * the row statistics mean[t], rstd[t]. */
CPU_VECTOR_CLONES static void adaln_backward_block(double *sum_dy, double *sum_dyx,
                                                   const float *dout, const float *x,
                                                   const float *mean, const float *rstd, int T,
                                                   int C, int width)
{
    for (int j = 0; j < width; j++)
        sum_dy[j] = sum_dyx[j] = 0.0;
    for (int t = 0; t < T; t++) {
        const float *dy = dout + (int64_t)t * C, *xr = x + (int64_t)t * C;
        float mu = mean[t], rs = rstd[t];
#pragma omp simd
        for (int j = 0; j < width; j++) {
            float ln = (xr[j] - mu) * rs;
            sum_dy[j] += dy[j];
            sum_dyx[j] += (double)dy[j] * ln;
        }
    }
}

/* Two passes: dx row by row (it needs whole-row sums), then dshift and
 * dscale column block by column block as in cpu_modulate_backward. Each
 * reduction has one owner thread and a fixed order. */
void cpu_adaln_backward(float *dx, float *dshift, float *dscale, const float *dout,
                        const float *x, const float *mean, const float *rstd, const float *scale,
                        int B, int T, int C, int mod_stride)
{
    int64_t M = (int64_t)B * T;
    if (dx) {
#pragma omp parallel if (M * C >= CPU_PARALLEL_MIN)
        {
            int64_t lo, hi;
            cpu_thread_range(M, &lo, &hi);
            adaln_backward_rows(dx, dout, x, mean, rstd, scale, lo, hi, T, C, mod_stride);
        }
    }
    if (!dshift && !dscale)
        return;
    int nblk = (C + MOD_BLOCK - 1) / MOD_BLOCK;
    int64_t tasks = (int64_t)B * nblk;
#pragma omp parallel for schedule(static) if (M * C >= CPU_PARALLEL_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / nblk;
        int c0 = (int)(task % nblk) * MOD_BLOCK;
        int width = C - c0 < MOD_BLOCK ? C - c0 : MOD_BLOCK;
        int64_t at = b * T * C + c0;
        double acc_shift[MOD_BLOCK], acc_scale[MOD_BLOCK];
        adaln_backward_block(acc_shift, acc_scale, dout + at, x + at, mean + b * T, rstd + b * T,
                             T, C, width);
        for (int j = 0; j < width; j++) {
            if (dshift)
                dshift[b * mod_stride + c0 + j] += (float)acc_shift[j];
            if (dscale)
                dscale[b * mod_stride + c0 + j] += (float)acc_scale[j];
        }
    }
}

/* ---- gated residual ------------------------------------------------------- */

/* out[B,T,C] = res + gate[b] * y; out may be res */
void cpu_gated_residual_forward(float *out, const float *res, const float *y, const float *gate,
                                int B, int T, int C, int mod_stride)
{
    int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate + (r / T) * mod_stride;
        const float *yr = y + r * C, *rr = res + r * C;
        float *o = out + r * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            o[c] = rr[c] + g[c] * yr[c];
    }
}

/* One batch row's T tokens (C apart), width columns: dy = dres * g when dy
 * is wanted; sum[j] = sum_t dres * y. */
CPU_VECTOR_CLONES static void gated_residual_backward_block(float *dy, double *sum,
                                                            const float *dres, const float *y,
                                                            const float *g, int T, int C,
                                                            int width)
{
    for (int j = 0; j < width; j++)
        sum[j] = 0.0;
    for (int t = 0; t < T; t++) {
        const float *d = dres + (int64_t)t * C, *yr = y + (int64_t)t * C;
        if (dy) {
            float *o = dy + (int64_t)t * C;
#pragma omp simd
            for (int j = 0; j < width; j++)
                o[j] = d[j] * g[j];
        }
#pragma omp simd
        for (int j = 0; j < width; j++)
            sum[j] += (double)d[j] * yr[j];
    }
}

void cpu_gated_residual_backward(float *dy, float *dgate, const float *dres, const float *y,
                                 const float *gate, int B, int T, int C, int mod_stride)
{
    if (!dgate) {
        if (dy)
            rows_times_mod(dy, dres, gate, 0, B, T, C, mod_stride);
        return;
    }
    int nblk = (C + MOD_BLOCK - 1) / MOD_BLOCK;
    int64_t tasks = (int64_t)B * nblk;
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= CPU_PARALLEL_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / nblk;
        int c0 = (int)(task % nblk) * MOD_BLOCK;
        int width = C - c0 < MOD_BLOCK ? C - c0 : MOD_BLOCK;
        int64_t at = b * T * C + c0;
        double acc[MOD_BLOCK];
        gated_residual_backward_block(dy ? dy + at : NULL, acc, dres + at, y + at,
                                      gate + b * mod_stride + c0, T, C, width);
        for (int j = 0; j < width; j++)
            dgate[b * mod_stride + c0 + j] += (float)acc[j];
    }
}

/* ---- RMS norm (T5LayerNorm) ------------------------------------------------ */

/* Rows [m0, m1): the mean of squares in double (it cannot cancel, but a
 * float sum of 4096 squares would drift by more than the result's ulp),
 * rstd rounded to float once, then (x * rstd) * w in float, in T5LayerNorm's
 * order. In place is safe: a row is summed before any of it is written. */
CPU_VECTOR_CLONES static void rmsnorm_forward_rows(float *out, float *rstd, const float *inp,
                                                   const float *weight, int64_t m0, int64_t m1,
                                                   int C, float eps)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *x = inp + m * C;
        float *y = out + m * C;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++)
            ss += (double)x[c] * x[c];
        float rs = (float)(1.0 / sqrt(ss / C + (double)eps));
        if (weight) {
#pragma omp simd
            for (int c = 0; c < C; c++)
                y[c] = (x[c] * rs) * weight[c];
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++)
                y[c] = x[c] * rs;
        }
        if (rstd)
            rstd[m] = rs;
    }
}

/* inp (M, C) -> out (M, C), rstd (M); a row per thread, whatever the count. */
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int M,
                         int C, float eps)
{
#pragma omp parallel if ((int64_t)M * C >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(M, &lo, &hi);
        rmsnorm_forward_rows(out, rstd, inp, weight, lo, hi, C, eps);
    }
}

/* Rows [m0, m1) of the RMS norm's dinp: with n = x rs and dn = dout w
 * (w = 1 without weight), dx = rs (dn - n mean(dn n)), the mean in double. */
CPU_VECTOR_CLONES static void rmsnorm_backward_rows(float *dinp, const float *dout,
                                                    const float *inp, const float *rstd,
                                                    const float *weight, int64_t m0, int64_t m1,
                                                    int C)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *x = inp + m * C, *g = dout + m * C;
        float *dx = dinp + m * C;
        const float rs = rstd[m];
        double dot = 0.0;
        if (weight) {
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < C; c++)
                dot += (double)(g[c] * weight[c]) * (x[c] * rs);
        } else {
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < C; c++)
                dot += (double)g[c] * (x[c] * rs);
        }
        const float mdn = (float)(dot / C);
        if (weight) {
#pragma omp simd
            for (int c = 0; c < C; c++)
                dx[c] = rs * (g[c] * weight[c] - (x[c] * rs) * mdn);
        } else {
#pragma omp simd
            for (int c = 0; c < C; c++)
                dx[c] = rs * (g[c] - (x[c] * rs) * mdn);
        }
    }
}

/* Columns [c0, c0 + width) of dweight: acc[j] = sum over the M rows, in
 * order, of dout * (x rs), in double. */
CPU_VECTOR_CLONES static void rmsnorm_dweight_block(double *acc, const float *dout,
                                                    const float *inp, const float *rstd,
                                                    int64_t M, int C, int width)
{
    for (int j = 0; j < width; j++)
        acc[j] = 0.0;
    for (int64_t m = 0; m < M; m++) {
        const float *g = dout + m * C, *x = inp + m * C;
        const float rs = rstd[m];
#pragma omp simd
        for (int j = 0; j < width; j++)
            acc[j] += (double)g[j] * (x[j] * rs);
    }
}

/* dinp[M,C] (overwrites) and dweight[C] (accumulates), either NULL. dinp
 * splits by rows; dweight by blocks of MOD_BLOCK columns, each summed over
 * every row by one thread, so the bits do not depend on the thread count. */
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *rstd, const float *weight, int M, int C)
{
    const int64_t n = (int64_t)M * C;
    if (dinp) {
#pragma omp parallel if (n >= CPU_PARALLEL_MIN)
        {
            int64_t lo, hi;
            cpu_thread_range(M, &lo, &hi);
            rmsnorm_backward_rows(dinp, dout, inp, rstd, weight, lo, hi, C);
        }
    }
    if (!dweight)
        return;
    const int nblk = (C + MOD_BLOCK - 1) / MOD_BLOCK;
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int blk = 0; blk < nblk; blk++) {
        const int c0 = blk * MOD_BLOCK;
        const int width = C - c0 < MOD_BLOCK ? C - c0 : MOD_BLOCK;
        double acc[MOD_BLOCK];
        rmsnorm_dweight_block(acc, dout + c0, inp + c0, rstd, M, C, width);
        for (int j = 0; j < width; j++)
            dweight[c0 + j] += (float)acc[j];
    }
}
