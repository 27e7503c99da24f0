/* LayerNorm without affine and the two adaLN-Zero pieces around it:
 * modulate (x * (1 + scale) + shift) and the gated residual. */
#include "kernels/cpu/cpu.h"

#include <math.h>

/* out[M,C], mean[M], rstd[M] from inp[M,C] */
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, int M, int C,
                           float eps)
{
#pragma omp parallel for schedule(static) if ((int64_t)M * C >= CPU_PARALLEL_MIN)
    for (int m = 0; m < M; m++) {
        const float *x = inp + (int64_t)m * C;
        float *y = out + (int64_t)m * C;
        /* Two passes in double: the one-pass E[x^2] - E[x]^2 cancels
         * catastrophically on activations with a large mean. */
        double sum = 0.0;
        for (int c = 0; c < C; c++)
            sum += x[c];
        double mu = sum / C;
        double var = 0.0;
        for (int c = 0; c < C; c++) {
            double d = x[c] - mu;
            var += d * d;
        }
        var /= C;
        float mu_f = (float)mu;
        float rs = (float)(1.0 / sqrt(var + (double)eps));
        for (int c = 0; c < C; c++)
            y[c] = (x[c] - mu_f) * rs;
        mean[m] = mu_f;
        rstd[m] = rs;
    }
}

/* dinp[M,C] += rstd * (dout - mean(dout) - xhat * mean(dout * xhat)),
 * the gradient of xhat = (x - mean) * rstd through both statistics. */
void cpu_layernorm_backward(float *dinp, const float *dout, const float *inp, const float *mean,
                            const float *rstd, int M, int C)
{
#pragma omp parallel for schedule(static) if ((int64_t)M * C >= CPU_PARALLEL_MIN)
    for (int m = 0; m < M; m++) {
        const float *x = inp + (int64_t)m * C;
        const float *dy = dout + (int64_t)m * C;
        float *dx = dinp + (int64_t)m * C;
        float mu = mean[m], rs = rstd[m];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            sum_dy += dy[c];
            sum_dy_xhat += (double)dy[c] * xhat;
        }
        float mean_dy = (float)(sum_dy / C);
        float mean_dy_xhat = (float)(sum_dy_xhat / C);
        for (int c = 0; c < C; c++) {
            float xhat = (x[c] - mu) * rs;
            dx[c] += rs * (dy[c] - mean_dy - xhat * mean_dy_xhat);
        }
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
        for (int c = 0; c < C; c++)
            o[c] = xr[c] * (1.0f + sc[c]) + sh[c];
    }
}

/* The per-(b, c) reductions over t below go column block by column block, so
 * each thread owns whole columns and sums them in token order: the same bits
 * for any thread count, and no atomics. */
#define MOD_BLOCK 64

void cpu_modulate_backward(float *dx, float *dshift, float *dscale, const float *dout,
                           const float *x, const float *scale, int B, int T, int C,
                           int mod_stride)
{
    if (dx) {
        int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PARALLEL_MIN)
        for (int64_t r = 0; r < rows; r++) {
            const float *sc = scale + (r / T) * mod_stride;
            const float *dy = dout + r * C;
            float *d = dx + r * C;
            for (int c = 0; c < C; c++)
                d[c] = dy[c] * (1.0f + sc[c]);
        }
    }
    if (!dshift && !dscale)
        return;
    int nblk = (C + MOD_BLOCK - 1) / MOD_BLOCK;
    int64_t tasks = (int64_t)B * nblk;
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= CPU_PARALLEL_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / nblk;
        int c0 = (int)(task % nblk) * MOD_BLOCK;
        int width = C - c0 < MOD_BLOCK ? C - c0 : MOD_BLOCK;
        double acc_shift[MOD_BLOCK] = {0}, acc_scale[MOD_BLOCK] = {0};
        for (int t = 0; t < T; t++) {
            const float *dy = dout + (b * T + t) * C + c0;
            const float *xr = x + (b * T + t) * C + c0;
            for (int j = 0; j < width; j++) {
                acc_shift[j] += dy[j];
                acc_scale[j] += (double)dy[j] * xr[j];
            }
        }
        for (int j = 0; j < width; j++) {
            if (dshift)
                dshift[b * mod_stride + c0 + j] += (float)acc_shift[j];
            if (dscale)
                dscale[b * mod_stride + c0 + j] += (float)acc_scale[j];
        }
    }
}

/* res[B,T,C] += gate[b] * y */
void cpu_gated_residual_forward(float *res, const float *y, const float *gate, int B, int T,
                                int C, int mod_stride)
{
    int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate + (r / T) * mod_stride;
        const float *yr = y + r * C;
        float *o = res + r * C;
        for (int c = 0; c < C; c++)
            o[c] += g[c] * yr[c];
    }
}

void cpu_gated_residual_backward(float *dy, float *dgate, const float *dres, const float *y,
                                 const float *gate, int B, int T, int C, int mod_stride)
{
    if (dy) {
        int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PARALLEL_MIN)
        for (int64_t r = 0; r < rows; r++) {
            const float *g = gate + (r / T) * mod_stride;
            const float *d = dres + r * C;
            float *o = dy + r * C;
            for (int c = 0; c < C; c++)
                o[c] = d[c] * g[c];
        }
    }
    if (!dgate)
        return;
    int nblk = (C + MOD_BLOCK - 1) / MOD_BLOCK;
    int64_t tasks = (int64_t)B * nblk;
#pragma omp parallel for schedule(static) if ((int64_t)B * T * C >= CPU_PARALLEL_MIN)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t b = task / nblk;
        int c0 = (int)(task % nblk) * MOD_BLOCK;
        int width = C - c0 < MOD_BLOCK ? C - c0 : MOD_BLOCK;
        double acc[MOD_BLOCK] = {0};
        for (int t = 0; t < T; t++) {
            const float *d = dres + (b * T + t) * C + c0;
            const float *yr = y + (b * T + t) * C + c0;
            for (int j = 0; j < width; j++)
                acc[j] += (double)d[j] * yr[j];
        }
        for (int j = 0; j < width; j++)
            dgate[b * mod_stride + c0 + j] += (float)acc[j];
    }
}
