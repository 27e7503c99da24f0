// What every CUDA source of the backend shares: the context's state, error
// checks, the launch macro, dtype dispatch, fp32 loads and stores of any
// storage dtype, and warp and block reductions.
//
// Rules that keep a kernel runnable under the CPU emulator (tests/cuda_emu,
// built with DIT_CUDA_EMU), which is what CI checks the kernels with:
//  - launch with KLAUNCH(fn, grid, block, smem_bytes, stream, args...), never
//    <<<...>>>; a template kernel goes through a variable first
//    (`auto fn = my_kernel<T, 4>;`) because the macro splits on commas;
//  - dynamic shared memory through DYNAMIC_SMEM(type, name);
//  - static __shared__ arrays are fine; no inline PTX, no cooperative groups,
//    no wgmma; warp work through __shfl_*_sync with a full mask;
//  - every thread of a block reaches every __syncthreads() (the emulator,
//    like the hardware, waits for all threads that have not returned).
#ifndef DIT_KERNELS_CUDA_COMMON_CUH
#define DIT_KERNELS_CUDA_COMMON_CUH

#include "kernels/cuda/cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// The per-context state behind kctx->backend.
struct cuda_state {
    int device;
    cudaStream_t stream;
    void *lt;               // lt.cu's state: the cuBLASLt handle, symbols, plan cache
    void *lt_workspace;     // cuBLASLt's workspace in device memory
    size_t lt_workspace_bytes;
    double *reduce;         // device scratch of the blocking reductions
    int reduce_slots;       // doubles in `reduce`
    double *reduce_host;    // pinned host copy of `reduce`
    size_t mem_now, mem_peak;
    int sm_count;
};

static inline struct cuda_state *cuda_state_of(struct kctx *ctx)
{
    return (struct cuda_state *)ctx->backend;
}

static inline cudaStream_t cuda_stream_of(struct kctx *ctx)
{
    return cuda_state_of(ctx)->stream;
}

// A CUDA call that must not fail: prints what failed where and aborts.
#define CUDA_CHECK(call)                                                                      \
    do {                                                                                      \
        cudaError_t err_ = (call);                                                            \
        if (err_ != cudaSuccess) {                                                            \
            fprintf(stderr, "dit: CUDA error %s at %s:%d: %s\n", cudaGetErrorString(err_),    \
                    __FILE__, __LINE__, #call);                                               \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

// After a launch: a bad configuration shows up here, at the launch that made it.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#ifdef DIT_CUDA_EMU
#define KLAUNCH(fn, grid, block, smem, stream, ...)                                           \
    do {                                                                                      \
        emu_launch((fn), dim3(grid), dim3(block), (size_t)(smem), (stream), __VA_ARGS__);     \
        CUDA_CHECK_LAUNCH();                                                                  \
    } while (0)
#define DYNAMIC_SMEM(type, name) type *name = (type *)emu_dynamic_smem()
#else
#define KLAUNCH(fn, grid, block, smem, stream, ...)                                           \
    do {                                                                                      \
        (fn)<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);                             \
        CUDA_CHECK_LAUNCH();                                                                  \
    } while (0)
#define DYNAMIC_SMEM(type, name)                                                              \
    extern __shared__ __align__(16) unsigned char dit_dynamic_smem_[];                        \
    type *name = reinterpret_cast<type *>(dit_dynamic_smem_)
#endif

// ---- storage dtypes: fp32 arithmetic, rounding once on store -------------

typedef __nv_bfloat16 bf16;
typedef __half f16;

__device__ __forceinline__ float ld(float x) { return x; }
__device__ __forceinline__ float ld(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ld(f16 x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T st(float x);
template <> __device__ __forceinline__ float st<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 st<bf16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ f16 st<f16>(float x) { return __float2half(x); }

// Runs `body` with the type alias T set to the storage type of dt.
#define DISPATCH_DTYPE(dt, T, ...)                                                            \
    do {                                                                                      \
        switch (dt) {                                                                         \
        case KDT_F32: { typedef float T; __VA_ARGS__; break; }                                \
        case KDT_BF16: { typedef bf16 T; __VA_ARGS__; break; }                                \
        case KDT_F16: { typedef f16 T; __VA_ARGS__; break; }                                  \
        default:                                                                              \
            fprintf(stderr, "dit: CUDA backend: unknown dtype %d\n", (int)(dt));              \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

static inline size_t kdtype_size(enum kdtype dt)
{
    return dt == KDT_F32 ? 4 : dt == KDT_U8 ? 1 : 2;
}

// ---- vector accesses ------------------------------------------------------

// One access of sizeof(V) bytes (a float2, float4, 16-byte pack) at p,
// which a GPU faults on unless p is a multiple of sizeof(V); x86 does not,
// so under the emulator the address is checked.
template <typename V, typename T> __device__ __forceinline__ V ld_vec(const T *p)
{
#ifdef DIT_CUDA_EMU
    emu::check_aligned(p, sizeof(V), "ld_vec");
#endif
    return *reinterpret_cast<const V *>(p);
}

template <typename V, typename T> __device__ __forceinline__ void st_vec(T *p, const V &v)
{
#ifdef DIT_CUDA_EMU
    emu::check_aligned(p, sizeof(V), "st_vec");
#endif
    *reinterpret_cast<V *>(p) = v;
}

// ---- launch geometry ------------------------------------------------------

// Blocks of `threads` covering n items, for grid-stride loops: enough to fill
// the device several times over, never more than the items need.
static inline unsigned cuda_blocks_for(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b > 65536)
        b = 65536;
    return (unsigned)(b > 0 ? b : 1);
}

// ---- reductions -----------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// v reduced over the block by warp (warp_sum or warp_max), returned to
// every thread; idle is what the lanes past the last warp contribute (the
// operation's identity). blockDim.x must be a multiple of 32 and at most
// 1024; `shared` holds 32 floats. Ends with a barrier, so the same `shared`
// can be reused by the next call.
template <float (*WARP)(float)>
__device__ __forceinline__ float block_reduce(float v, float *shared, float idle)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = WARP(v);
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    float r = lane < warps ? shared[lane] : idle;
    r = WARP(r);
    __syncthreads();
    return r;
}

__device__ __forceinline__ float block_sum(float v, float *shared)
{
    return block_reduce<warp_sum>(v, shared, 0.0f);
}

__device__ __forceinline__ float block_max(float v, float *shared)
{
    return block_reduce<warp_max>(v, shared, -INFINITY);
}

#endif
