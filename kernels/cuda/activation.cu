// GELU (tanh approximation) and SiLU, forward and backward, and T5's gated
// GELU (forward), in the CPU backend's formulation (kernels/cpu/activation.c):
// GELU as x sigmoid(2u), which keeps its low bits for u < 0, and the exact
// derivative of that approximation. expf here is CUDA's full-precision one
// (not __expf), so fp32 results stay within a few ulp of the CPU's. Last, the
// exact (erf) GELU of F-Lite, forward and backward.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

#define GELU_K 0.7978845608028654f // sqrt(2 / pi)
#define GELU_A 0.044715f

__device__ __forceinline__ float gelu_f(float x)
{
    float u = GELU_K * (x + GELU_A * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float gelu_grad(float x)
{
    float x2 = x * x;
    float s = 1.0f / (1.0f + expf(-2.0f * GELU_K * (x + GELU_A * x2 * x)));
    float du = GELU_K * (1.0f + 3.0f * GELU_A * x2);
    return s + 2.0f * x * s * (1.0f - s) * du;
}

__device__ __forceinline__ float silu_f(float x)
{
    return x * (1.0f / (1.0f + expf(-x)));
}

__device__ __forceinline__ float silu_grad(float x)
{
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

// out = f(inp), f chosen by GELU.
template <typename T, bool GELU> struct act_forward_op {
    T *out;
    const T *inp;
    template <int N> __device__ void apply(int64_t i) const
    {
        float x[N];
        vec_load<N>(x, inp + i);
#pragma unroll
        for (int k = 0; k < N; k++)
            x[k] = GELU ? gelu_f(x[k]) : silu_f(x[k]);
        vec_store<N>(out + i, x);
    }
};

// dinp = dout * f'(inp) (overwrites).
template <typename T, bool GELU> struct act_backward_op {
    T *dinp;
    const T *dout, *inp;
    template <int N> __device__ void apply(int64_t i) const
    {
        float x[N], d[N];
        vec_load<N>(x, inp + i);
        vec_load<N>(d, dout + i);
#pragma unroll
        for (int k = 0; k < N; k++)
            d[k] = d[k] * (GELU ? gelu_grad(x[k]) : silu_grad(x[k]));
        vec_store<N>(dinp + i, d);
    }
};

template <bool GELU>
static void act_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt, int64_t n)
{
    DISPATCH_DTYPE(dt, S, {
        act_forward_op<S, GELU> op = {(S *)out, (const S *)inp};
        vec_map<vec_width<S>::value>(ctx, op, n, vec_aligned(out, 16) && vec_aligned(inp, 16));
    });
}

template <bool GELU>
static void act_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                         enum kdtype dt, int64_t n)
{
    if (!dinp)
        return;
    DISPATCH_DTYPE(dt, S, {
        act_backward_op<S, GELU> op = {(S *)dinp, (const S *)dout, (const S *)inp};
        bool vec = vec_aligned(dinp, 16) && vec_aligned(dout, 16) && vec_aligned(inp, 16);
        vec_map<vec_width<S>::value>(ctx, op, n, vec);
    });
}

extern "C" void cuda_gelu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                                  int64_t n)
{
    act_forward<true>(ctx, out, inp, dt, n);
}

extern "C" void cuda_gelu_backward(struct kctx *ctx, void *dinp, const void *dout,
                                   const void *inp, enum kdtype dt, int64_t n)
{
    act_backward<true>(ctx, dinp, dout, inp, dt, n);
}

extern "C" void cuda_silu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                                  int64_t n)
{
    act_forward<false>(ctx, out, inp, dt, n);
}

extern "C" void cuda_silu_backward(struct kctx *ctx, void *dinp, const void *dout,
                                   const void *inp, enum kdtype dt, int64_t n)
{
    act_backward<false>(ctx, dinp, dout, inp, dt, n);
}

// T5's gated GELU: out[r, c] = gelu(inp[r, c]) * inp[r, F + c], inp rows of
// 2F (wi_0 | wi_1), over rows of F columns in groups of N (16-byte accesses
// when F % N == 0 and both tensors are aligned: the halves of a row are then
// aligned too).
template <typename T> struct gated_gelu_op {
    T *out;
    const T *inp;
    int F;
    template <int N> __device__ void apply(int64_t i, int64_t r, int c) const
    {
        const T *a = inp + r * 2 * F + c;
        float x[N], g[N];
        vec_load<N>(x, a);
        vec_load<N>(g, a + F);
#pragma unroll
        for (int k = 0; k < N; k++)
            x[k] = gelu_f(x[k]) * g[k];
        vec_store<N>(out + i, x);
    }
};

// inp (M, 2F) -> out (M, F)
extern "C" void cuda_gated_gelu_forward(struct kctx *ctx, void *out, const void *inp,
                                        enum kdtype dt, int M, int F)
{
    DISPATCH_DTYPE(dt, S, {
        gated_gelu_op<S> op = {(S *)out, (const S *)inp, F};
        vec_rows<vec_width<S>::value>(ctx, op, M, F, vec_aligned(out, 16) && vec_aligned(inp, 16));
    });
}

// ---- GELU, exact (F-Lite's MLP) ---------------------------------------------
//
// gelu(x) = x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2: erfc rather than
// 1 + erf, so the negative tail keeps its relative accuracy (the CPU computes
// Phi(-|x|) directly for the same reason), and gelu'(x) = Phi(x) + x phi(x),
// what torch's GeluBackward computes. erfcf and expf are CUDA's
// full-precision ones.

#define GELU_ERF_SQRT1_2 0.7071067811865476f      // 1 / sqrt 2
#define GELU_ERF_INV_SQRT_2PI 0.3989422804014327f // 1 / sqrt(2 pi)

__device__ __forceinline__ float gelu_erf_cdf(float x)
{
    return 0.5f * erfcf(-x * GELU_ERF_SQRT1_2);
}

template <typename T> struct gelu_erf_forward_op {
    T *out;
    const T *inp;
    template <int N> __device__ void apply(int64_t i) const
    {
        float x[N];
        vec_load<N>(x, inp + i);
#pragma unroll
        for (int k = 0; k < N; k++)
            x[k] = x[k] * gelu_erf_cdf(x[k]);
        vec_store<N>(out + i, x);
    }
};

template <typename T> struct gelu_erf_backward_op {
    T *dinp;
    const T *dout, *inp;
    template <int N> __device__ void apply(int64_t i) const
    {
        float x[N], d[N];
        vec_load<N>(x, inp + i);
        vec_load<N>(d, dout + i);
#pragma unroll
        for (int k = 0; k < N; k++) {
            float density = expf(-0.5f * x[k] * x[k]) * GELU_ERF_INV_SQRT_2PI;
            d[k] = d[k] * (gelu_erf_cdf(x[k]) + x[k] * density);
        }
        vec_store<N>(dinp + i, d);
    }
};

extern "C" void cuda_gelu_erf_forward(struct kctx *ctx, void *out, const void *inp,
                                      enum kdtype dt, int64_t n)
{
    DISPATCH_DTYPE(dt, S, {
        gelu_erf_forward_op<S> op = {(S *)out, (const S *)inp};
        vec_map<vec_width<S>::value>(ctx, op, n, vec_aligned(out, 16) && vec_aligned(inp, 16));
    });
}

extern "C" void cuda_gelu_erf_backward(struct kctx *ctx, void *dinp, const void *dout,
                                       const void *inp, enum kdtype dt, int64_t n)
{
    if (!dinp)
        return;
    DISPATCH_DTYPE(dt, S, {
        gelu_erf_backward_op<S> op = {(S *)dinp, (const S *)dout, (const S *)inp};
        bool vec = vec_aligned(dinp, 16) && vec_aligned(dout, 16) && vec_aligned(inp, 16);
        vec_map<vec_width<S>::value>(ctx, op, n, vec);
    });
}
