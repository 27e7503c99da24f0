// Table lookups (class labels) and the sinusoidal timestep embedding
// (kernels/cpu/embedding.c); ids and t live in device memory.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

#include <math.h>

// out[b, c] = table[ids[b], c] over rows b of C.
template <typename T> struct embedding_op {
    T *out;
    const T *table;
    const int32_t *ids;
    int C;
    template <int N> __device__ void apply(int64_t i, int64_t b, int c) const
    {
        float v[N];
        vec_load<N>(v, table + (int64_t)ids[b] * C + c);
        vec_store<N>(out + i, v);
    }
};

extern "C" void cuda_embedding_forward(struct kctx *ctx, void *out, const void *table,
                                       const int32_t *ids, enum kdtype dt, int B, int C)
{
    DISPATCH_DTYPE(dt, S, {
        embedding_op<S> op = {(S *)out, (const S *)table, ids, C};
        bool vec = vec_aligned(out, 16) && vec_aligned(table, 16);
        vec_rows<vec_width<S>::value>(ctx, op, B, C, vec);
    });
}

// dtable[ids[b], c] += dout[b, c]. Ids repeat inside a batch, so the thread
// of (b, c) works only when b is the first row of its id, and then adds
// every row of that id in batch order: the CPU's order, without atomics.
template <typename T>
__global__ void embedding_backward_kernel(float *dtable, const T *dout, const int32_t *ids, int B,
                                          int C)
{
    const int64_t n = (int64_t)B * C;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int b = (int)idiv(i, C);
        const int c = (int)(i - (int64_t)b * C);
        const int32_t id = ids[b];
        bool first = true;
        for (int k = 0; k < b && first; k++)
            first = ids[k] != id;
        if (!first)
            continue;
        float *dst = dtable + (int64_t)id * C + c;
        float acc = *dst;
        for (int k = b; k < B; k++)
            if (ids[k] == id)
                acc += ld(dout[(int64_t)k * C + c]);
        *dst = acc;
    }
}

extern "C" void cuda_embedding_backward(struct kctx *ctx, float *dtable, const void *dout,
                                        const int32_t *ids, enum kdtype dt, int B, int C)
{
    const int64_t n = (int64_t)B * C;
    if (!dtable || n <= 0)
        return;
    DISPATCH_DTYPE(dt, S, {
        auto fn = embedding_backward_kernel<S>;
        KLAUNCH(fn, cuda_blocks_for(n, VEC_THREADS), VEC_THREADS, 0, cuda_stream_of(ctx), dtable,
                (const S *)dout, ids, B, C);
    });
}

// out[b] = [cos(t freq) | sin(t freq)], freq[i] = exp(neg_log i / denom).
// The fp32 argument of exp and t * freq round as on the CPU; exp, cos and
// sin are evaluated in double and rounded once, so they land within half an
// ulp as glibc's expf, cosf and sinf do on the CPU, where CUDA's float
// versions are off by up to 2 ulp (and an ulp of freq moves a 1000-radian
// argument by 1e-4). B * D/2 values: the double maths costs nothing here.
template <typename T>
__global__ void timestep_embedding_kernel(T *out, const float *t, int B, int half, float neg_log,
                                          float denom)
{
    const int64_t n = (int64_t)B * half;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += stride) {
        const int64_t b = idiv(j, half);
        const int i = (int)(j - b * half);
        const float e = neg_log * (float)i / denom;
        const float freq = (float)exp((double)e);
        const float arg = t[b] * freq;
        T *o = out + b * 2 * half;
        o[i] = st<T>((float)cos((double)arg));
        o[half + i] = st<T>((float)sin((double)arg));
    }
}

extern "C" void cuda_timestep_embedding(struct kctx *ctx, void *out, const float *t,
                                        enum kdtype dt, int B, int D, float max_period,
                                        float freq_shift)
{
    const int half = D / 2;
    const int64_t n = (int64_t)B * half;
    if (n <= 0)
        return;
    const float neg_log = (float)-log((double)max_period);
    const float denom = (float)half - freq_shift;
    DISPATCH_DTYPE(dt, S, {
        auto fn = timestep_embedding_kernel<S>;
        KLAUNCH(fn, cuda_blocks_for(n, VEC_THREADS), VEC_THREADS, 0, cuda_stream_of(ctx), (S *)out,
                t, B, half, neg_log, denom);
    });
}
