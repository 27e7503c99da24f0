// fp8 weights widened on the device: a thread per element, the code decoded
// by libcommon/e4m3.h (the CPU's decode), one f32 product with its row's
// scale (an _rn multiply, as the CPU's), then rounded to the output dtype:
// bit for bit the CPU's in f32.
#include "kernels/cuda/common.cuh"
#include "libcommon/e4m3.h"

template <typename T>
__global__ void fp8_rows_widen_kernel(T *out, const uint8_t *codes, const float *scale, int cols, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = st<T>(__fmul_rn(e4m3_decode(codes[i]), scale[i / cols]));
}

extern "C" void cuda_fp8_rows_widen(struct kctx *ctx, void *out, const uint8_t *codes, const float *scale,
                                    enum kdtype dt, int rows, int cols)
{
    const int64_t n = (int64_t)rows * cols;
    if (n <= 0)
        return;
    const unsigned grid = cuda_blocks_for(n, 256);
    DISPATCH_DTYPE(dt, T, {
        auto fn = fp8_rows_widen_kernel<T>;
        KLAUNCH(fn, grid, 256, 0, cuda_stream_of(ctx), (T *)out, codes, scale, cols, n);
    });
}
