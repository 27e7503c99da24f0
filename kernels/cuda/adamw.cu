// The optimizer's passes over the fp32 master weights: AdamW (one fused
// pass that also refreshes the low-precision compute copy) and the EMA.
//
// The step-dependent scalars are computed on the host in double and rounded
// once, exactly as kernels/cpu/adamw.c does, and every per-element
// operation is an _rn intrinsic in the CPU's order, so that nvcc fuses no
// multiply-add: an fp32 update gives the CPU backend's bits, step after
// step, and a run can move between the backends without drifting.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

#include <math.h>

struct adamw_scalars {
    float step_size, bc2_sqrt, decay, b1, b2, eps, one_b1, one_b2;
};

// COPY: whether copy receives the updated parameters, rounded to CT.
template <typename CT, bool COPY> struct adamw_op {
    float *param;
    const float *grad;
    float *m, *v;
    CT *copy;
    adamw_scalars s;
    template <int N> __device__ void apply(int64_t i) const
    {
        float p[N], g[N], mv[N], vv[N];
        vec_load<N>(p, param + i);
        vec_load<N>(g, grad + i);
        vec_load<N>(mv, m + i);
        vec_load<N>(vv, v + i);
#pragma unroll
        for (int k = 0; k < N; k++) {
            mv[k] = __fadd_rn(__fmul_rn(s.b1, mv[k]), __fmul_rn(s.one_b1, g[k]));
            vv[k] = __fadd_rn(__fmul_rn(s.b2, vv[k]), __fmul_rn(__fmul_rn(s.one_b2, g[k]), g[k]));
            const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv[k]), s.bc2_sqrt), s.eps);
            p[k] = __fsub_rn(__fmul_rn(p[k], s.decay),
                             __fdiv_rn(__fmul_rn(s.step_size, mv[k]), denom));
        }
        vec_store<N>(m + i, mv);
        vec_store<N>(v + i, vv);
        vec_store<N>(param + i, p);
        if (COPY)
            vec_store<N>(copy + i, p);
    }
};

enum { ADAMW_N = 4 }; // a float4 of each fp32 tensor

template <typename CT, bool COPY>
static void adamw_launch(struct kctx *ctx, float *param, const float *grad, float *m, float *v,
                         void *copy, int64_t n, const adamw_scalars &s)
{
    adamw_op<CT, COPY> op = {param, grad, m, v, (CT *)copy, s};
    bool vec = vec_aligned(param, 16) && vec_aligned(grad, 16) && vec_aligned(m, 16) &&
               vec_aligned(v, 16) && (!COPY || vec_aligned(copy, ADAMW_N * sizeof(CT)));
    vec_map<ADAMW_N>(ctx, op, n, vec);
}

extern "C" void cuda_adamw_update(struct kctx *ctx, float *param, const float *grad, float *m,
                                  float *v, void *copy, enum kdtype copy_dt, int64_t n,
                                  const struct adamw_params *hp)
{
    if (n <= 0)
        return;
    // As kernels/cpu/adamw.c: doubles for what depends on the step, then
    // one rounding to float each.
    const double t = (double)hp->step;
    const double bc1 = 1.0 - pow(hp->beta1, t);
    const double bc2 = 1.0 - pow(hp->beta2, t);
    adamw_scalars s;
    s.step_size = (float)(hp->lr / bc1);
    s.bc2_sqrt = (float)sqrt(bc2);
    s.decay = (float)(1.0 - hp->lr * hp->weight_decay);
    s.b1 = (float)hp->beta1;
    s.b2 = (float)hp->beta2;
    s.eps = (float)hp->eps;
    s.one_b1 = (float)(1.0 - hp->beta1);
    s.one_b2 = (float)(1.0 - hp->beta2);
    if (!copy) {
        adamw_launch<float, false>(ctx, param, grad, m, v, NULL, n, s);
        return;
    }
    DISPATCH_DTYPE(copy_dt, S, { adamw_launch<S, true>(ctx, param, grad, m, v, copy, n, s); });
}

// ema = fl(fl(ema decay) + fl((1 - decay) param)): the rounding of the
// trainer's k_scale then k_axpy, so the CPU and CUDA EMAs agree bitwise.
struct ema_op {
    float *ema;
    const float *param;
    float decay, one_minus;
    template <int N> __device__ void apply(int64_t i) const
    {
        float e[N], p[N];
        vec_load<N>(e, ema + i);
        vec_load<N>(p, param + i);
#pragma unroll
        for (int k = 0; k < N; k++)
            e[k] = __fadd_rn(__fmul_rn(e[k], decay), __fmul_rn(one_minus, p[k]));
        vec_store<N>(ema + i, e);
    }
};

extern "C" void cuda_ema_update(struct kctx *ctx, float *ema, const float *param, float decay,
                                int64_t n)
{
    ema_op op = {ema, param, decay, 1.0f - decay};
    vec_map<4>(ctx, op, n, vec_aligned(ema, 16) && vec_aligned(param, 16));
}
