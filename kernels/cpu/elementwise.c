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
