/* GELU (tanh approximation, as PyTorch's approximate='tanh') and SiLU, and
 * T5's gated GELU; the exact (erf) GELU of F-Lite. */
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

/* ---- GELU, exact (F-Lite's MLP) ---------------------------------------------
 *
 * gelu(x) = x Phi(x), Phi the standard normal CDF = erfc(-x / sqrt 2) / 2, in
 * straight-line code that vectorises (libm's erff and erfcf are a call per
 * element). With s = |x|, Q = Phi(-s) is computed directly and Phi(x) is Q
 * for x < 0 and 1 - Q otherwise, so the negative tail keeps its relative
 * accuracy where 1 + erf(x / sqrt 2) would cancel. Q takes the form of
 * Numerical Recipes' erfcc: erfc(z) = t e^(-z^2 + P(t)), z = s / sqrt 2,
 * t = 1 / (1 + z / 2), with P a degree-10 polynomial fitted here (in
 * v = (t - 0.575) / 0.425, which keeps its coefficients small for f32
 * evaluation) to within 8e-9 of log(erfc(z) / t) + z^2 on t in [0.15, 1],
 * i.e. z up to 11.3, past where Q underflows. e^(-z^2) = e^(-s^2 / 2) comes
 * from an exact split s = sh + sl (Veltkamp, sh of 12 bits, so sh^2 / 2 is
 * exact): the rounding of s^2 itself would cost 3e-6 of the result at
 * |x| = 10. The ranges are integer masks, as in cpu_expf: no float selects,
 * which GCC would not vectorise. Checked against double-precision erfc over
 * every float in [-14, 14]: gelu within 7 ulp for |x| <= 12 (12 ulp as Q
 * nears underflow), gelu' within 14 ulp of max(|gelu'|, Phi) (near its zero
 * at -0.75 the two terms cancel, as in any f32 evaluation);
 * test_flite_small_ops.c samples the same. */

#define GELU_ERF_INV_SQRT_2PI 0.3989422804014327f /* 1 / sqrt(2 pi) */

/* Phi(x), and e^(-x^2 / 2) in *density when density is not NULL. */
static inline __attribute__((always_inline)) float gelu_erf_cdf(float x, float *density)
{
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    /* s = min(|x|, 20): Q(20) is 0 in f32 already, and 4097 s stays finite;
     * a NaN's bits exceed 20's too (its NaN comes back through x) */
    uint32_t sb = xb & 0x7fffffffu;
    const uint32_t cap = 0x41a00000u; /* 20.0f */
    sb = sb < cap ? sb : cap;
    float s;
    memcpy(&s, &sb, sizeof s);
    float c = 4097.0f * s;
    float sh = c - (c - s), sl = s - sh;
    float e_hi = cpu_expf(-0.5f * sh * sh);
    float e_lo = -(sh * sl + 0.5f * sl * sl); /* -s^2/2 - (-sh^2/2) */
    float t = 1.0f / (1.0f + 0.35355339059327373f * s);
    float v = (t - 0.575f) * 2.3529411764705883f;
    float p = -2.433047121e-05f;
    p = p * v + 7.002853818e-05f;
    p = p * v + 1.320524752e-04f;
    p = p * v + -6.348680472e-04f;
    p = p * v + -2.185247140e-04f;
    p = p * v + 4.123806953e-03f;
    p = p * v + -1.536751748e-03f;
    p = p * v + -3.116938286e-02f;
    p = p * v + 1.821814477e-02f;
    p = p * v + 5.810347795e-01f;
    p = p * v + -5.699949861e-01f;
    float q;
    if (density) {
        float e = e_hi * cpu_expf(e_lo);
        *density = e;
        q = 0.5f * t * e * cpu_expf(p);
    } else {
        q = 0.5f * t * e_hi * cpu_expf(p + e_lo);
    }
    float r = 1.0f - q;
    uint32_t qb, rb, neg = -(xb >> 31);
    memcpy(&qb, &q, sizeof qb);
    memcpy(&rb, &r, sizeof rb);
    rb = (qb & neg) | (rb & ~neg);
    memcpy(&r, &rb, sizeof r);
    return r;
}

CPU_VECTOR_CLONES static void gelu_erf_forward_range(float *out, const float *inp, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = x * gelu_erf_cdf(x, NULL);
    }
}

/* gelu'(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi): the
 * derivative torch's GeluBackward computes for approximate='none'. */
CPU_VECTOR_CLONES static void gelu_erf_backward_range(float *dinp, const float *dout,
                                                      const float *inp, int64_t n)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float x = inp[i], e;
        float cdf = gelu_erf_cdf(x, &e);
        dinp[i] = dout[i] * (cdf + x * (e * GELU_ERF_INV_SQRT_2PI));
    }
}

void cpu_gelu_erf_forward(float *out, const float *inp, int64_t n)
{
#pragma omp parallel if (n >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(n, &lo, &hi);
        gelu_erf_forward_range(out + lo, inp + lo, hi - lo);
    }
}

void cpu_gelu_erf_backward(float *dinp, const float *dout, const float *inp, int64_t n)
{
#pragma omp parallel if (n >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(n, &lo, &hi);
        gelu_erf_backward_range(dinp + lo, dout + lo, inp + lo, hi - lo);
    }
}
