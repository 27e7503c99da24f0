/* F-Lite's query/key path: the rotary embedding, then RMS normalisation over
 * each head (QK-norm), forward and backward, on row views of a fused qkv
 * buffer.
 *
 * A head is HS values x; the rotation pairs x[j] with x[j + HS/2] (F-Lite's
 * halves, not adjacent pairs). The rotated head r is never stored: the
 * forward computes it once for the sum of squares and again for the store,
 * and the backward recomputes it from x, which costs a few multiplies per
 * value and no scratch. Sums of squares and dot products over a head run in
 * double, as the RMS norm's do (kernels/cpu/norm.c). Rows split between
 * threads; each head's sums stay inside one thread, so the results are the
 * same bits for any thread count. */
#include "kernels/cpu/cpu.h"

#include <math.h>

/* Rows [r0, r1) (row = b*T + t) of the forward. c, s: cos and sin [T, HS/2]
 * or NULL; rstd [rows * NH] or NULL. */
CPU_VECTOR_CLONES static void rope_norm_forward_rows(float *out, float *rstd, const float *inp,
                                                     const float *cos, const float *sin,
                                                     int64_t r0, int64_t r1, int T, int NH,
                                                     int HS, int in_stride, int out_stride,
                                                     float eps)
{
    const int h2 = HS / 2;
    for (int64_t row = r0; row < r1; row++) {
        const int64_t t = row % T;
        const float *c = cos ? cos + t * h2 : NULL, *s = sin ? sin + t * h2 : NULL;
        for (int h = 0; h < NH; h++) {
            const float *x = inp + row * in_stride + (int64_t)h * HS;
            float *y = out + row * out_stride + (int64_t)h * HS;
            float rs = 1.0f;
            if (rstd) {
                double ss = 0.0;
                if (c) {
#pragma omp simd reduction(+ : ss)
                    for (int j = 0; j < h2; j++) {
                        float a = x[j] * c[j] + x[j + h2] * s[j];
                        float b = x[j + h2] * c[j] - x[j] * s[j];
                        ss += (double)a * a + (double)b * b;
                    }
                } else {
#pragma omp simd reduction(+ : ss)
                    for (int i = 0; i < HS; i++)
                        ss += (double)x[i] * x[i];
                }
                rs = (float)(1.0 / sqrt(ss / HS + (double)eps));
                rstd[row * NH + h] = rs;
            }
            /* rs = 1 without the norm: the product is exact, y = r */
            if (c) {
#pragma omp simd
                for (int j = 0; j < h2; j++) {
                    float a = x[j] * c[j] + x[j + h2] * s[j];
                    float b = x[j + h2] * c[j] - x[j] * s[j];
                    y[j] = a * rs;
                    y[j + h2] = b * rs;
                }
            } else {
#pragma omp simd
                for (int i = 0; i < HS; i++)
                    y[i] = x[i] * rs;
            }
        }
    }
}

/* inp rows (b, t) in_stride apart, NH heads of HS -> out rows out_stride
 * apart, rstd [B*T*NH]; cos, sin, rstd may be NULL. */
void cpu_rope_norm_forward(float *out, float *rstd, const float *inp, const float *cos,
                           const float *sin, int B, int T, int NH, int HS, int in_stride,
                           int out_stride, float eps)
{
    const int64_t rows = (int64_t)B * T;
#pragma omp parallel if (rows * NH * HS >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(rows, &lo, &hi);
        rope_norm_forward_rows(out, rstd, inp, cos, sin, lo, hi, T, NH, HS, in_stride,
                               out_stride, eps);
    }
}

/* Rows [r0, r1) of the backward. With the norm, n = r * rs and
 * dr = rs (g - n mean(g n)), mean(g n) = rs sum(g r) / HS; then the
 * rotation's transpose: dx1 = dr1 cos - dr2 sin, dx2 = dr1 sin + dr2 cos. */
CPU_VECTOR_CLONES static void rope_norm_backward_rows(float *dinp, const float *dout,
                                                      const float *inp, const float *rstd,
                                                      const float *cos, const float *sin,
                                                      int64_t r0, int64_t r1, int T, int NH,
                                                      int HS, int in_stride, int out_stride)
{
    const int h2 = HS / 2;
    for (int64_t row = r0; row < r1; row++) {
        const int64_t t = row % T;
        const float *c = cos ? cos + t * h2 : NULL, *s = sin ? sin + t * h2 : NULL;
        for (int h = 0; h < NH; h++) {
            const float *g = dout + row * out_stride + (int64_t)h * HS;
            float *dx = dinp + row * in_stride + (int64_t)h * HS;
            if (!rstd) {
                if (c) {
#pragma omp simd
                    for (int j = 0; j < h2; j++) {
                        float d1 = g[j], d2 = g[j + h2];
                        dx[j] = d1 * c[j] - d2 * s[j];
                        dx[j + h2] = d1 * s[j] + d2 * c[j];
                    }
                } else {
                    memcpy(dx, g, (size_t)HS * sizeof *dx);
                }
                continue;
            }
            const float *x = inp + row * in_stride + (int64_t)h * HS;
            const float rs = rstd[row * NH + h];
            double dot = 0.0;
            if (c) {
#pragma omp simd reduction(+ : dot)
                for (int j = 0; j < h2; j++) {
                    float a = x[j] * c[j] + x[j + h2] * s[j];
                    float b = x[j + h2] * c[j] - x[j] * s[j];
                    dot += (double)g[j] * a + (double)g[j + h2] * b;
                }
            } else {
#pragma omp simd reduction(+ : dot)
                for (int i = 0; i < HS; i++)
                    dot += (double)g[i] * x[i];
            }
            const float m = (float)(dot * rs / HS); /* mean(g n) */
            if (c) {
#pragma omp simd
                for (int j = 0; j < h2; j++) {
                    float a = x[j] * c[j] + x[j + h2] * s[j];
                    float b = x[j + h2] * c[j] - x[j] * s[j];
                    float d1 = rs * (g[j] - (a * rs) * m);
                    float d2 = rs * (g[j + h2] - (b * rs) * m);
                    dx[j] = d1 * c[j] - d2 * s[j];
                    dx[j + h2] = d1 * s[j] + d2 * c[j];
                }
            } else {
#pragma omp simd
                for (int i = 0; i < HS; i++)
                    dx[i] = rs * (g[i] - (x[i] * rs) * m);
            }
        }
    }
}

/* dinp (the heads of rows in_stride apart; the rest untouched) from dout
 * (rows out_stride apart); inp is read only with the norm. */
void cpu_rope_norm_backward(float *dinp, const float *dout, const float *inp, const float *rstd,
                            const float *cos, const float *sin, int B, int T, int NH, int HS,
                            int in_stride, int out_stride)
{
    const int64_t rows = (int64_t)B * T;
#pragma omp parallel if (rows * NH * HS >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(rows, &lo, &hi);
        rope_norm_backward_rows(dinp, dout, inp, rstd, cos, sin, lo, hi, T, NH, HS, in_stride,
                                out_stride);
    }
}
