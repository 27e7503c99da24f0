// Inverted dropout (kernels/cpu/dropout.c): the mask of libcommon/philox.h,
// recomputed on the device (philox.cuh), so it is the CPU backend's bit for
// bit; kept values are multiplied by the scale the host rounded once, with
// __fmul_rn as the CPU's one rounding, and stored in the call's dtype.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/philox.cuh"
#include "kernels/cuda/vec.cuh"

// The address of sample b's stream, but for its id: rng_stream's key and
// counter words 2 and 3 (philox.h).
struct dropout_stream {
    uint32_t key[2];
    uint32_t step, purpose;
};

__device__ __forceinline__ float dropout_apply(float x, float u, float p, float scale)
{
    return u >= p ? __fmul_rn(x, scale) : 0.0f;
}

// A thread per Philox block: elements 4k .. 4k + 3 of sample b take words
// 0..3 of block k of its stream (rng_uniform_f32's "value j is word j % 4
// of block j / 4", the block index in ctr[0]). VEC: per % 4 == 0 and both
// pointers aligned to 4 elements, so the four move as one access; else one
// at a time, the last block of a sample short when per % 4 != 0. Each
// element is read before it is written by the same thread, so out may be inp.
template <typename T, bool VEC>
__global__ void dropout_kernel(T *out, const T *inp, const uint64_t *ids, int64_t per,
                               int64_t blocks_per, int64_t total, float p, float scale,
                               dropout_stream s)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < total; g += stride) {
        const int64_t b = idiv(g, blocks_per), k = g - b * blocks_per;
        const uint32_t ctr[4] = {(uint32_t)k, (uint32_t)ids[b], s.step, s.purpose};
        uint32_t w[4];
        philox_block(ctr, s.key, w);
        const int64_t at = b * per + 4 * k;
        if constexpr (VEC) {
            float x[4];
            vec_load<4>(x, inp + at);
#pragma unroll
            for (int i = 0; i < 4; i++)
                x[i] = dropout_apply(x[i], philox_uniform(w[i]), p, scale);
            vec_store<4>(out + at, x);
        } else {
            const int m = per - 4 * k < 4 ? (int)(per - 4 * k) : 4;
            for (int i = 0; i < m; i++)
                out[at + i] = st<T>(dropout_apply(ld(inp[at + i]), philox_uniform(w[i]), p, scale));
        }
    }
}

extern "C" void cuda_dropout_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                                     float p, uint64_t seed, uint32_t purpose, uint64_t step,
                                     const uint64_t *ids, int B, int64_t per)
{
    const int64_t n = (int64_t)B * per;
    if (n <= 0)
        return;
    if (p == 0.0f) {
        cuda_mem_copy(ctx, out, inp, (size_t)n * kdtype_size(dt)); // nothing when out is inp
        return;
    }
    // Once, in float, as the CPU backend computes it.
    const float scale = 1.0f / (1.0f - p);
    const dropout_stream s = {{(uint32_t)seed, (uint32_t)(seed >> 32)}, (uint32_t)step, purpose};
    const int64_t blocks_per = (per + 3) / 4, total = (int64_t)B * blocks_per;
    const unsigned grid = cuda_blocks_for(total, VEC_THREADS);
    DISPATCH_DTYPE(dt, S, {
        const size_t four = 4 * sizeof(S);
        if (per % 4 == 0 && vec_aligned(out, four) && vec_aligned(inp, four)) {
            auto fn = dropout_kernel<S, true>;
            KLAUNCH(fn, grid, VEC_THREADS, 0, cuda_stream_of(ctx), (S *)out, (const S *)inp, ids,
                    per, blocks_per, total, p, scale, s);
        } else {
            auto fn = dropout_kernel<S, false>;
            KLAUNCH(fn, grid, VEC_THREADS, 0, cuda_stream_of(ctx), (S *)out, (const S *)inp, ids,
                    per, blocks_per, total, p, scale, s);
        }
    });
}
