/* GELU (tanh approximation, as PyTorch's approximate='tanh') and SiLU, and
 * T5's gated GELU. */
#include "kernels/cpu/cpu.h"

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

/* 0.5 x (1 + tanh u) = x sigmoid(2u), as 1 + tanh u = 2 / (1 + e^-2u): one
 * exp and a division, vectorised, where tanhf costs a libm call (and an
 * expm1f inside it) per element; and no cancellation for u < 0, where 1 +
 * tanh u loses the low bits that 1 / (1 + e^-2u) keeps. e^-2u overflowing to
 * inf for large negative u still gives the limit 0. */
CPU_VECTOR_CLONES static void gelu_forward_range(float *out, const float *inp, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = x / (1.0f + cpu_expf(-2.0f * u));
    }
}

/* gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 a x^2),
 * u = k (x + a x^3): the exact derivative of the approximation, so that
 * backward matches what forward computed rather than the erf GELU. With
 * s = sigmoid(2u): 0.5 (1 + tanh u) = s and 1 - tanh^2 u = 4 s (1 - s). */
CPU_VECTOR_CLONES static void gelu_backward_range(float *dinp, const float *dout,
                                                  const float *inp, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float x2 = x * x;
        float s = 1.0f / (1.0f + cpu_expf(-2.0f * GELU_K * (x + GELU_A * x2 * x)));
        float du = GELU_K * (1.0f + 3.0f * GELU_A * x2);
        float grad = s + 2.0f * x * s * (1.0f - s) * du;
        dinp[i] = dout[i] * grad;
    }
}

/* sigmoid(x) = 1 / (1 + e^-x); e^-x overflowing to inf for x < -88 still
 * gives the right limit 0, and no NaN arises for finite x. */
CPU_VECTOR_CLONES static void silu_forward_range(float *out, const float *inp, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x * (1.0f / (1.0f + cpu_expf(-x)));
    }
}

/* silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
CPU_VECTOR_CLONES static void silu_backward_range(float *dinp, const float *dout,
                                                  const float *inp, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float s = 1.0f / (1.0f + cpu_expf(-x));
        dinp[i] = dout[i] * (s * (1.0f + x * (1.0f - s)));
    }
}

void cpu_gelu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel if (n >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(n, &lo, &hi);
        gelu_forward_range(out + lo, inp + lo, hi - lo);
    }
}

void cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
#pragma omp parallel if (n >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(n, &lo, &hi);
        gelu_backward_range(dinp + lo, dout + lo, inp + lo, hi - lo);
    }
}

void cpu_silu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel if (n >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(n, &lo, &hi);
        silu_forward_range(out + lo, inp + lo, hi - lo);
    }
}

void cpu_silu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
#pragma omp parallel if (n >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(n, &lo, &hi);
        silu_backward_range(dinp + lo, dout + lo, inp + lo, hi - lo);
    }
}

/* Rows [m0, m1) of the gated GELU: gelu(a) * g with a = inp[m, f] and
 * g = inp[m, F + f], GELU as gelu_forward_range computes it. */
CPU_VECTOR_CLONES static void gated_gelu_rows(float *out, const float *inp, int64_t m0,
                                              int64_t m1, int F)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *a = inp + m * 2 * F, *g = a + F;
        float *o = out + m * F;
#pragma omp simd
        for (int f = 0; f < F; f++) {
            float x = a[f];
            float u = GELU_K * (x + GELU_A * x * x * x);
            o[f] = x / (1.0f + cpu_expf(-2.0f * u)) * g[f];
        }
    }
}

/* inp (M, 2F) -> out (M, F), rows split between threads. */
void cpu_gated_gelu_forward(float *out, const float *inp, int M, int F)
{
#pragma omp parallel if ((int64_t)M * F >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(M, &lo, &hi);
        gated_gelu_rows(out, inp, lo, hi, F);
    }
}
