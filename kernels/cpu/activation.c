/* GELU (tanh approximation, as PyTorch's approximate='tanh') and SiLU. */
#include "kernels/cpu/cpu.h"

#include <math.h>

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_A 0.044715f

void cpu_gelu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

/* gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 a x^2),
 * u = k (x + a x^3): the exact derivative of the approximation, so that
 * backward matches what forward computed rather than the erf GELU. */
void cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float x2 = x * x;
        float th = tanhf(GELU_K * (x + GELU_A * x2 * x));
        float du = GELU_K * (1.0f + 3.0f * GELU_A * x2);
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        dinp[i] = dout[i] * grad;
    }
}

/* 1 / (1 + e^-x) overflows e^-x to inf for x < -88, which still gives the
 * right limit 0; no NaN arises for finite x. */
static inline float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

void cpu_silu_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        out[i] = inp[i] * sigmoidf(inp[i]);
}

/* silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
void cpu_silu_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        float s = sigmoidf(x);
        dinp[i] = dout[i] * (s * (1.0f + x * (1.0f - s)));
    }
}
