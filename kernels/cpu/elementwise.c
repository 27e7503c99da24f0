/* Elementwise ops and the reductions behind losses and gradient norms. */
#include "kernels/cpu/cpu.h"

/* out[B,T,C] = a[B,T,C] + b[T,C] */
void cpu_add_broadcast_forward(float *out, const float *a, const float *b, int B, int T, int C)
{
    int64_t rows = (int64_t)B * T;
#pragma omp parallel for schedule(static) if (rows * C >= CPU_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *ar = a + r * C, *br = b + (r % T) * C;
        float *o = out + r * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            o[c] = ar[c] + br[c];
    }
}

void cpu_add(float *out, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void cpu_axpy(float *y, float alpha, const float *x, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

void cpu_fill(float *x, float value, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] = value;
}

void cpu_scale(float *x, float s, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] *= s;
}

/* Reductions cut [0, n) into REDUCE_CHUNKS fixed pieces whatever the thread
 * count, sum each piece in order in double and add the pieces in order: the
 * loss and the gradient norm come out as the same bits on 1 or 64 threads,
 * which an OpenMP reduction clause does not promise. */
#define REDUCE_CHUNKS 64

static void chunk_range(int64_t n, int k, int64_t *lo, int64_t *hi)
{
    *lo = n * k / REDUCE_CHUNKS;
    *hi = n * (k + 1) / REDUCE_CHUNKS;
}

float cpu_mse_forward_backward(float *dpred, const float *pred, const float *target, int64_t n,
                               float scale)
{
    if (n <= 0)
        return 0.0f;
    double partial[REDUCE_CHUNKS];
    float gscale = scale * 2.0f / (float)n;
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int k = 0; k < REDUCE_CHUNKS; k++) {
        int64_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        double s = 0.0;
        for (int64_t i = lo; i < hi; i++) {
            float d = pred[i] - target[i];
            s += (double)d * d;
            if (dpred)
                dpred[i] = gscale * d;
        }
        partial[k] = s;
    }
    double total = 0.0;
    for (int k = 0; k < REDUCE_CHUNKS; k++)
        total += partial[k];
    return (float)(total / (double)n);
}

double cpu_sum_squares(const float *x, int64_t n)
{
    if (n <= 0)
        return 0.0;
    double partial[REDUCE_CHUNKS];
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int k = 0; k < REDUCE_CHUNKS; k++) {
        int64_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        double s = 0.0;
        for (int64_t i = lo; i < hi; i++)
            s += (double)x[i] * x[i];
        partial[k] = s;
    }
    double total = 0.0;
    for (int k = 0; k < REDUCE_CHUNKS; k++)
        total += partial[k];
    return total;
}

/* ---- F-Lite's residual value mix ------------------------------------------------ */

/* Rows [m0, m1) of out = lam a + (1 - lam) b, each product rounded, then the
 * sum (ISO C keeps them unfused; the CUDA kernel rounds alike, so f32 gives
 * the same bits on both); lam absent: a copy of a. */
CPU_VECTOR_CLONES static void mix_forward_rows(float *out, const float *a, const float *b,
                                               const float *lam, int64_t m0, int64_t m1, int C,
                                               int out_stride, int a_stride, int b_stride)
{
    const float l = lam ? lam[0] : 1.0f, k = 1.0f - l;
    for (int64_t m = m0; m < m1; m++) {
        float *o = out + m * out_stride;
        const float *ar = a + m * a_stride;
        if (!lam) {
#pragma omp simd
            for (int c = 0; c < C; c++)
                o[c] = ar[c];
            continue;
        }
        const float *br = b + m * b_stride;
#pragma omp simd
        for (int c = 0; c < C; c++)
            o[c] = l * ar[c] + k * br[c];
    }
}

void cpu_mix_forward(float *out, const float *a, const float *b, const float *lam, int M, int C,
                     int out_stride, int a_stride, int b_stride)
{
#pragma omp parallel if ((int64_t)M * C >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(M, &lo, &hi);
        mix_forward_rows(out, a, b, lam, lo, hi, C, out_stride, a_stride, b_stride);
    }
}

/* Rows [m0, m1) of the mix's backward: da += lam dout, db += (1 - lam) dout
 * (each optional; lam absent: da += dout, no db), and the rows' share of
 * dlam, sum dout (a - b) in double (each term rounded in f32, as the CUDA
 * kernel's), returned. */
CPU_VECTOR_CLONES static double mix_backward_rows(float *da, float *db, int want_dlam,
                                                  const float *dout, const float *a,
                                                  const float *b, const float *lam, int64_t m0,
                                                  int64_t m1, int C, int dout_stride,
                                                  int a_stride, int b_stride)
{
    const float l = lam ? lam[0] : 1.0f, k = 1.0f - l;
    double sum = 0.0;
    for (int64_t m = m0; m < m1; m++) {
        const float *g = dout + m * dout_stride;
        if (da) {
            float *d = da + m * a_stride;
#pragma omp simd
            for (int c = 0; c < C; c++)
                d[c] += l * g[c];
        }
        if (db) {
            float *d = db + m * C;
#pragma omp simd
            for (int c = 0; c < C; c++)
                d[c] += k * g[c];
        }
        if (want_dlam) {
            const float *ar = a + m * a_stride, *br = b + m * b_stride;
            double s = 0.0;
#pragma omp simd reduction(+ : s)
            for (int c = 0; c < C; c++)
                s += (double)(g[c] * (ar[c] - br[c]));
            sum += s;
        }
    }
    return sum;
}

/* Rows in REDUCE_CHUNKS fixed pieces, as the reductions above: dlam's sum is
 * the same bits for any thread count. */
void cpu_mix_backward(float *da, float *db, float *dlam, const float *dout, const float *a,
                      const float *b, const float *lam, int M, int C, int dout_stride,
                      int a_stride, int b_stride)
{
    if (M <= 0 || C <= 0)
        return;
    double partial[REDUCE_CHUNKS];
#pragma omp parallel for schedule(static) if ((int64_t)M * C >= CPU_PARALLEL_MIN)
    for (int k = 0; k < REDUCE_CHUNKS; k++) {
        int64_t lo, hi;
        chunk_range(M, k, &lo, &hi);
        partial[k] = mix_backward_rows(da, db, dlam != NULL, dout, a, b, lam, lo, hi, C,
                                       dout_stride, a_stride, b_stride);
    }
    if (dlam) {
        double total = 0.0;
        for (int k = 0; k < REDUCE_CHUNKS; k++)
            total += partial[k];
        dlam[0] = (float)((double)dlam[0] + total);
    }
}
