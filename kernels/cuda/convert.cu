// dtype conversion on the device: through fp32, which holds every bf16 and
// f16 value exactly, and one round to nearest even into the destination;
// and accumulation into any dtype the same way (dst + src in fp32, rounded
// once).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

template <typename D, typename S> struct convert_op {
    D *dst;
    const S *src;
    template <int N> __device__ void apply(int64_t i) const
    {
        float v[N];
        vec_load<N>(v, src + i);
        vec_store<N>(dst + i, v);
    }
};

template <typename D, typename S>
static void convert_launch(struct kctx *ctx, void *dst, const void *src, int64_t n)
{
    // 16 bytes of the wider side per access.
    constexpr int N = (int)(16 / (sizeof(D) > sizeof(S) ? sizeof(D) : sizeof(S)));
    convert_op<D, S> op = {(D *)dst, (const S *)src};
    bool vec = vec_aligned(dst, N * sizeof(D)) && vec_aligned(src, N * sizeof(S));
    vec_map<N>(ctx, op, n, vec);
}

extern "C" void cuda_convert(struct kctx *ctx, void *dst, enum kdtype ddt, const void *src,
                             enum kdtype sdt, int64_t n)
{
    if (n <= 0)
        return;
    if (ddt == sdt) {
        if (dst != src)
            CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * kdtype_size(ddt),
                                       cudaMemcpyDeviceToDevice, cuda_stream_of(ctx)));
        return;
    }
    DISPATCH_DTYPE(ddt, D, {
        DISPATCH_DTYPE(sdt, S, { convert_launch<D, S>(ctx, dst, src, n); });
    });
}

template <typename D> struct accumulate_op {
    D *dst;
    const float *src;
    template <int N> __device__ void apply(int64_t i) const
    {
        float d[N], v[N];
        vec_load<N>(d, dst + i);
        vec_load<N>(v, src + i);
#pragma unroll
        for (int j = 0; j < N; j++)
            d[j] += v[j];
        vec_store<N>(dst + i, d);
    }
};

extern "C" void cuda_accumulate(struct kctx *ctx, void *dst, enum kdtype ddt, const float *src, int64_t n)
{
    if (n <= 0)
        return;
    DISPATCH_DTYPE(ddt, D, {
        constexpr int N = 4; // 16 bytes of the f32 side per access
        accumulate_op<D> op = {(D *)dst, src};
        bool vec = vec_aligned(dst, N * sizeof(D)) && vec_aligned(src, N * sizeof(float));
        vec_map<N>(ctx, op, n, vec);
    });
}
