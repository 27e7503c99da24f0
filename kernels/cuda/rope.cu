// F-Lite's query/key path: the rotary embedding, then RMS normalisation over
// each head (QK-norm), forward and backward, on row views of a fused qkv
// buffer (k_rope_norm_* in kernels/kernels.h).
//
// One warp per (row, head), any head size: lane l takes the pairs
// (x[j], x[j + HS/2]) for j = l, l + 32, ... (F-Lite pairs the two halves
// of a head, so a warp's loads of each half are contiguous), or the values
// x[l], x[l + 32], ... without the rotation. The rotated head is recomputed
// from x where it is needed again (the store after the sum of squares, and
// the backward) instead of being kept: a few multiplies per value, no
// registers sized by HS and no scratch. Sums over a head are a warp sum, so
// the result is the same bits run after run. f32 math whatever the storage
// dtype; one rounding on store.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

enum { ROPE_THREADS = 256, ROPE_WARPS = ROPE_THREADS / 32 };

// Pair j of a head, rotated: a = x1 cos + x2 sin, b = -x1 sin + x2 cos.
template <typename T>
__device__ __forceinline__ void rope_pair(const T *x, const float *c, const float *s, int j,
                                          int h2, float &a, float &b)
{
    const float x1 = ld(x[j]), x2 = ld(x[j + h2]);
    a = x1 * c[j] + x2 * s[j];
    b = x2 * c[j] - x1 * s[j];
}

// items = B*T*NH (row, head) pairs, item = row*NH + h, the index of rstd.
template <typename T>
__global__ void __launch_bounds__(ROPE_THREADS)
    rope_norm_forward_kernel(T *out, float *rstd, const T *inp, const float *cos,
                             const float *sin, int64_t items, int T_, int NH, int HS,
                             int in_stride, int out_stride, float eps)
{
    const int lane = threadIdx.x & 31;
    const int64_t item = (int64_t)blockIdx.x * ROPE_WARPS + (threadIdx.x >> 5);
    if (item >= items)
        return; // the whole warp
    const int64_t row = idiv(item, NH);
    const int h = (int)(item - row * NH), h2 = HS / 2;
    const T *x = inp + row * in_stride + (int64_t)h * HS;
    T *y = out + row * out_stride + (int64_t)h * HS;
    const int64_t t = row - idiv(row, T_) * T_;
    const float *c = cos ? cos + t * h2 : nullptr, *s = sin ? sin + t * h2 : nullptr;
    float rs = 1.0f; // without the norm: y = r exactly
    if (rstd) {
        float ss = 0.0f;
        if (c) {
            for (int j = lane; j < h2; j += 32) {
                float a, b;
                rope_pair(x, c, s, j, h2, a, b);
                ss = fmaf(a, a, ss);
                ss = fmaf(b, b, ss);
            }
        } else {
            for (int i = lane; i < HS; i += 32) {
                const float v = ld(x[i]);
                ss = fmaf(v, v, ss);
            }
        }
        rs = 1.0f / sqrtf(warp_sum(ss) / (float)HS + eps);
        if (lane == 0)
            rstd[item] = rs;
    }
    if (c) {
        for (int j = lane; j < h2; j += 32) {
            float a, b;
            rope_pair(x, c, s, j, h2, a, b);
            y[j] = st<T>(a * rs);
            y[j + h2] = st<T>(b * rs);
        }
    } else {
        for (int i = lane; i < HS; i += 32)
            y[i] = st<T>(ld(x[i]) * rs);
    }
}

// With the norm, n = r rs, dr = rs (g - n mean(g n)), mean(g n) =
// rs sum(g r) / HS; then the rotation's transpose, dx1 = dr1 cos - dr2 sin,
// dx2 = dr1 sin + dr2 cos. inp is read only with the norm.
template <typename T>
__global__ void __launch_bounds__(ROPE_THREADS)
    rope_norm_backward_kernel(T *dinp, const T *dout, const T *inp, const float *rstd,
                              const float *cos, const float *sin, int64_t items, int T_, int NH,
                              int HS, int in_stride, int out_stride)
{
    const int lane = threadIdx.x & 31;
    const int64_t item = (int64_t)blockIdx.x * ROPE_WARPS + (threadIdx.x >> 5);
    if (item >= items)
        return; // the whole warp
    const int64_t row = idiv(item, NH);
    const int h = (int)(item - row * NH), h2 = HS / 2;
    const T *g = dout + row * out_stride + (int64_t)h * HS;
    T *dx = dinp + row * in_stride + (int64_t)h * HS;
    const int64_t t = row - idiv(row, T_) * T_;
    const float *c = cos ? cos + t * h2 : nullptr, *s = sin ? sin + t * h2 : nullptr;
    if (!rstd) {
        if (c) {
            for (int j = lane; j < h2; j += 32) {
                const float d1 = ld(g[j]), d2 = ld(g[j + h2]);
                dx[j] = st<T>(d1 * c[j] - d2 * s[j]);
                dx[j + h2] = st<T>(d1 * s[j] + d2 * c[j]);
            }
        } else {
            for (int i = lane; i < HS; i += 32)
                dx[i] = g[i];
        }
        return;
    }
    const T *x = inp + row * in_stride + (int64_t)h * HS;
    const float rs = rstd[item];
    float dot = 0.0f;
    if (c) {
        for (int j = lane; j < h2; j += 32) {
            float a, b;
            rope_pair(x, c, s, j, h2, a, b);
            dot = fmaf(ld(g[j]), a, dot);
            dot = fmaf(ld(g[j + h2]), b, dot);
        }
    } else {
        for (int i = lane; i < HS; i += 32)
            dot = fmaf(ld(g[i]), ld(x[i]), dot);
    }
    const float m = warp_sum(dot) * rs / (float)HS; // mean(g n)
    if (c) {
        for (int j = lane; j < h2; j += 32) {
            float a, b;
            rope_pair(x, c, s, j, h2, a, b);
            const float d1 = rs * (ld(g[j]) - (a * rs) * m);
            const float d2 = rs * (ld(g[j + h2]) - (b * rs) * m);
            dx[j] = st<T>(d1 * c[j] - d2 * s[j]);
            dx[j + h2] = st<T>(d1 * s[j] + d2 * c[j]);
        }
    } else {
        for (int i = lane; i < HS; i += 32)
            dx[i] = st<T>(rs * (ld(g[i]) - (ld(x[i]) * rs) * m));
    }
}

static unsigned rope_blocks(int64_t items)
{
    return (unsigned)((items + ROPE_WARPS - 1) / ROPE_WARPS);
}

extern "C" void cuda_rope_norm_forward(struct kctx *ctx, void *out, float *rstd, const void *inp,
                                       const float *cos, const float *sin, enum kdtype dt, int B,
                                       int T, int NH, int HS, int in_stride, int out_stride,
                                       float eps)
{
    const int64_t items = (int64_t)B * T * NH;
    if (items <= 0 || HS <= 0)
        return;
    DISPATCH_DTYPE(dt, S, {
        auto fn = rope_norm_forward_kernel<S>;
        KLAUNCH(fn, rope_blocks(items), ROPE_THREADS, 0, cuda_stream_of(ctx), (S *)out, rstd,
                (const S *)inp, cos, sin, items, T, NH, HS, in_stride, out_stride, eps);
    });
}

extern "C" void cuda_rope_norm_backward(struct kctx *ctx, void *dinp, const void *dout,
                                        const void *inp, const float *rstd, const float *cos,
                                        const float *sin, enum kdtype dt, int B, int T, int NH,
                                        int HS, int in_stride, int out_stride)
{
    const int64_t items = (int64_t)B * T * NH;
    if (!dinp || items <= 0 || HS <= 0)
        return;
    DISPATCH_DTYPE(dt, S, {
        auto fn = rope_norm_backward_kernel<S>;
        KLAUNCH(fn, rope_blocks(items), ROPE_THREADS, 0, cuda_stream_of(ctx), (S *)dinp,
                (const S *)dout, (const S *)inp, rstd, cos, sin, items, T, NH, HS, in_stride,
                out_stride);
    });
}
