// bitsandbytes' blockwise 8-bit AdamW (kernels/kernels.h): one thread block
// of K_ADAMW8BIT_BLOCK threads per block of the state, a thread per element,
// the new absmax by a block reduction, as bitsandbytes' own kernel
// (kOptimizerStatic8bit2StateBlockwise) does it. The f32 operations are
// kernels/cpu/adamw8bit.c's, in its order, each an _rn intrinsic so that
// nvcc fuses no multiply-add: the backends agree bit for bit, codes,
// absmax and weights.
#include "kernels/adamw8bit.h"
#include "kernels/cuda/common.cuh"

__constant__ float c_qmap_signed[256] = QMAP_SIGNED_VALUES;
__constant__ float c_qmap_unsigned[256] = QMAP_UNSIGNED_VALUES;

template <typename CT, bool COPY>
__global__ void adamw8bit_kernel(float *param, const float *grad, uint8_t *state1, uint8_t *state2,
                                 float *absmax1, float *absmax2, CT *copy, int64_t n, int64_t blocks,
                                 adamw8bit_scalars s)
{
    __shared__ float red[32];
    for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
        const int64_t i = b * K_ADAMW8BIT_BLOCK + threadIdx.x;
        const bool in = i < n;
        const float g = in ? grad[i] : 0.0f;
        const bool ok = in && isfinite(g);
        float m = 0.0f, v = 0.0f;
        if (ok) {
            v = __fmul_rn(c_qmap_unsigned[state2[i]], absmax2[b]);
            v = __fadd_rn(__fmul_rn(v, s.b2), __fmul_rn(__fmul_rn(s.one_b2, g), g));
            m = __fmul_rn(c_qmap_signed[state1[i]], absmax1[b]);
            m = __fadd_rn(__fmul_rn(m, s.b1), __fmul_rn(s.one_b1, g));
        }
        // every thread has read the old absmax before thread 0 writes the new
        const float new1 = fmaxf(block_max(fabsf(m), red), 0.0f);
        const float new2 = fmaxf(block_max(fabsf(v), red), 0.0f);
        if (ok) {
            float p = __fadd_rn(param[i],
                                __fmul_rn(s.step_size, __fdiv_rn(m, __fadd_rn(__fsqrt_rn(v), s.c2eps))));
            if (s.decays)
                p = __fmul_rn(p, s.decay);
            param[i] = p;
        }
        if (in) {
            if (COPY)
                copy[i] = st<CT>(param[i]);
            state1[i] = qmap_code1(c_qmap_signed, m, new1);
            state2[i] = qmap_code2(c_qmap_unsigned, v, new2);
        }
        if (threadIdx.x == 0) {
            absmax1[b] = new1;
            absmax2[b] = new2;
        }
        __syncthreads();
    }
}

template <typename CT, bool COPY>
static void adamw8bit_launch(struct kctx *ctx, float *param, const float *grad, uint8_t *state1, uint8_t *state2,
                             float *absmax1, float *absmax2, void *copy, int64_t n, const adamw8bit_scalars &s)
{
    const int64_t blocks = (n + K_ADAMW8BIT_BLOCK - 1) / K_ADAMW8BIT_BLOCK;
    const unsigned grid = (unsigned)(blocks < 65536 ? blocks : 65536);
    auto fn = adamw8bit_kernel<CT, COPY>;
    KLAUNCH(fn, grid, K_ADAMW8BIT_BLOCK, 0, cuda_stream_of(ctx), param, grad, state1, state2, absmax1, absmax2,
            (CT *)copy, n, blocks, s);
}

extern "C" void cuda_adamw8bit_update(struct kctx *ctx, float *param, const float *grad, uint8_t *state1,
                                      uint8_t *state2, float *absmax1, float *absmax2, void *copy,
                                      enum kdtype copy_dt, int64_t n, const struct adamw_params *hp)
{
    if (n <= 0)
        return;
    const adamw8bit_scalars s = adamw8bit_scalars_of(hp);
    if (!copy) {
        adamw8bit_launch<float, false>(ctx, param, grad, state1, state2, absmax1, absmax2, NULL, n, s);
        return;
    }
    DISPATCH_DTYPE(copy_dt, S, {
        adamw8bit_launch<S, true>(ctx, param, grad, state1, state2, absmax1, absmax2, copy, n, s);
    });
}
