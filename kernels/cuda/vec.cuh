// Vectorised access and the grid-stride loops of the memory-bound kernels
// (norm.cu, activation.cu, elementwise.cu, embedding.cu, adamw.cu,
// convert.cu): N consecutive elements of a storage dtype move as one 4, 8 or
// 16 byte load or store and become N floats, so that bf16 rows are read at
// full width. A loop works in groups of N when every pointer it touches is
// aligned for that, and element by element otherwise; the launcher decides.
#ifndef DIT_KERNELS_CUDA_VEC_CUH
#define DIT_KERNELS_CUDA_VEC_CUH

#include "kernels/cuda/common.cuh"

#include <stdint.h>
#include <string.h>

template <int BYTES> struct vec_raw;
template <> struct vec_raw<2> { typedef unsigned short type; };
template <> struct vec_raw<4> { typedef unsigned int type; };
template <> struct vec_raw<8> { typedef uint2 type; };
template <> struct vec_raw<16> { typedef uint4 type; };

// Elements of T in one 16-byte access.
template <typename T> struct vec_width {
    static constexpr int value = (int)(16 / sizeof(T));
};

template <typename T, int N> using vec_raw_t = typename vec_raw<(int)(N * sizeof(T))>::type;

// The N elements at p as they are stored (half the registers of floats for
// bf16 and f16); p aligned to N * sizeof(T).
template <int N, typename T> __device__ __forceinline__ vec_raw_t<T, N> vec_load_raw(const T *p)
{
#ifdef DIT_CUDA_EMU
    emu::check_aligned(p, sizeof(vec_raw_t<T, N>), "vec_load_raw");
#endif
    return *reinterpret_cast<const vec_raw_t<T, N> *>(p);
}

__device__ __forceinline__ float vec_bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

template <int N, typename T> struct vec_unpacker {
    static __device__ __forceinline__ void run(float (&x)[N], const vec_raw_t<T, N> &r)
    {
        T e[N];
        memcpy(e, &r, sizeof r);
#pragma unroll
        for (int k = 0; k < N; k++)
            x[k] = ld(e[k]);
    }
};

// bf16 widens by a shift, done on whole 32-bit words: going through
// __nv_bfloat16 values makes nvcc hold each in a register of its own.
template <int N> struct vec_unpacker<N, bf16> {
    static __device__ __forceinline__ void run(float (&x)[N], const vec_raw_t<bf16, N> &r)
    {
        if constexpr (N % 2 == 0) {
            uint32_t w[N / 2];
            memcpy(w, &r, sizeof r);
#pragma unroll
            for (int k = 0; k < N / 2; k++) {
                x[2 * k] = vec_bits_float(w[k] << 16);
                x[2 * k + 1] = vec_bits_float(w[k] & 0xffff0000u);
            }
        } else {
            static_assert(N == 1, "bf16 vectors are 1 or an even number of elements");
            unsigned short h;
            memcpy(&h, &r, sizeof h);
            x[0] = vec_bits_float((uint32_t)h << 16);
        }
    }
};

template <int N, typename T>
__device__ __forceinline__ void vec_unpack(float (&x)[N], const vec_raw_t<T, N> &r)
{
    vec_unpacker<N, T>::run(x, r);
}

// x[0..N) = p[0..N) as floats; p aligned to N * sizeof(T).
template <int N, typename T> __device__ __forceinline__ void vec_load(float (&x)[N], const T *p)
{
    vec_unpack<N, T>(x, vec_load_raw<N>(p));
}

// p[0..N) = x[0..N) rounded to T; p aligned to N * sizeof(T).
template <int N, typename T> __device__ __forceinline__ void vec_store(T *p, const float (&x)[N])
{
    T e[N];
#pragma unroll
    for (int k = 0; k < N; k++)
        e[k] = st<T>(x[k]);
    vec_raw_t<T, N> r;
    memcpy(&r, e, sizeof r);
#ifdef DIT_CUDA_EMU
    emu::check_aligned(p, sizeof r, "vec_store");
#endif
    *reinterpret_cast<vec_raw_t<T, N> *>(p) = r;
}

static inline bool vec_aligned(const void *p, size_t bytes)
{
    return ((uintptr_t)p % bytes) == 0;
}

// a / b with 32-bit division when both fit: the 64-bit one is a long
// software sequence on the GPU, and index maths must not make a
// memory-bound kernel compute-bound.
__device__ __forceinline__ int64_t idiv(int64_t a, int64_t b)
{
    if (((uint64_t)a | (uint64_t)b) <= 0xffffffffull)
        return (int64_t)((uint32_t)a / (uint32_t)b);
    return a / b;
}

enum { VEC_THREADS = 256 };

// The elementwise map: op.template apply<N>(i) handles elements [i, i + N)
// for every group of N in [0, n), then apply<1> takes the tail.
template <int N, typename Op> __global__ void vec_map_kernel(Op op, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t groups = n / N;
    for (int64_t g = first; g < groups; g += stride)
        op.template apply<N>(g * N);
    if (N > 1)
        for (int64_t i = groups * N + first; i < n; i += stride)
            op.template apply<1>(i);
}

// Runs op over n elements, N at a time when vec (the caller checked the
// alignment of every pointer op touches), else one at a time.
template <int N, typename Op>
static void vec_map(struct kctx *ctx, const Op &op, int64_t n, bool vec)
{
    if (n <= 0)
        return;
    if (vec && N > 1) {
        auto fn = vec_map_kernel<N, Op>;
        KLAUNCH(fn, cuda_blocks_for((n + N - 1) / N, VEC_THREADS), VEC_THREADS, 0,
                cuda_stream_of(ctx), op, n);
    } else {
        auto fn = vec_map_kernel<1, Op>;
        KLAUNCH(fn, cuda_blocks_for(n, VEC_THREADS), VEC_THREADS, 0, cuda_stream_of(ctx), op, n);
    }
}

// The map over rows of C columns: op.template apply<N>(i, r, c) handles
// elements [i, i + N) of row r from column c; groups never straddle rows
// (the vector form needs C % N == 0).
template <int N, typename Op> __global__ void vec_rows_kernel(Op op, int64_t rows, int C)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int G = C / N;
    const int64_t groups = rows * G;
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        int64_t r = idiv(g, G);
        int c = (int)(g - r * G) * N;
        op.template apply<N>(g * N, r, c);
    }
}

template <int N, typename Op>
static void vec_rows(struct kctx *ctx, const Op &op, int64_t rows, int C, bool vec)
{
    if (rows <= 0 || C <= 0)
        return;
    if (vec && N > 1 && C % N == 0) {
        auto fn = vec_rows_kernel<N, Op>;
        KLAUNCH(fn, cuda_blocks_for(rows * (C / N), VEC_THREADS), VEC_THREADS, 0,
                cuda_stream_of(ctx), op, rows, C);
    } else {
        auto fn = vec_rows_kernel<1, Op>;
        KLAUNCH(fn, cuda_blocks_for(rows * C, VEC_THREADS), VEC_THREADS, 0, cuda_stream_of(ctx),
                op, rows, C);
    }
}

#endif
