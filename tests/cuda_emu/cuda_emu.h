// A CPU emulator of CUDA, so that the kernels of kernels/cuda/*.cu run in CI
// without a GPU. g++ compiles the same sources as C++17 with
//   -DDIT_CUDA_EMU -include tests/cuda_emu/cuda_emu.h -I/usr/local/cuda/include
// and the test binary links tests/cuda_emu/emu.cc instead of libcudart.
//
// The model
//  - The real CUDA headers in host mode give dim3, cudaError_t, the enums,
//    the vector types and __nv_bfloat16/__half with their conversions; this
//    file adds what device code needs on top of them.
//  - A launch (emu_launch, which KLAUNCH calls) runs synchronously. Blocks
//    run one after another, blockIdx.x fastest. Inside a block every CUDA
//    thread is its own OS thread (a pool reused across launches), so threads
//    really run in parallel: a missing __syncthreads shows up as a race, and
//    atomics are real atomics. The price: every barrier costs each thread a
//    sleep and a wake-up (about 2 us on 2 cores), so keep shapes tiny.
//  - __syncthreads() is a barrier over the block's threads that have not
//    returned from the kernel (a returned thread no longer counts, as on
//    sm_70+). Warp intrinsics (__shfl*_sync, __ballot_sync, __any_sync,
//    __all_sync, __syncwarp, __match_*_sync, __reduce_*_sync) are a barrier
//    over the live lanes of the warp (lanes are threadIdx linearised x
//    fastest, warp = linear / 32) followed by the exchange. Shuffle lane
//    arithmetic (width, out-of-segment lanes keeping their own value)
//    follows the PTX shfl.sync rules.
//  - Shared memory holds garbage when a block starts: the dynamic shared
//    memory (DYNAMIC_SMEM -> emu_dynamic_smem()) is one heap buffer of
//    exactly the requested size, so ASan catches accesses past its end, and
//    it and the kernel's static __shared__ variables are refilled with 0xFF
//    bytes before every block, so reading shared memory this block did not
//    write gives NaN (floats) or -1. Static __shared__ variables are
//    function-local statics (`#define __shared__ static`), shared by the
//    threads of the one block that runs at a time; the emulator finds those
//    of the kernel function in the executable's symbol table.
//  - Device memory is host memory: cudaMalloc returns exactly the size asked
//    for (256-byte aligned) filled with 0xFF bytes, so ASan catches kernels
//    that run past the end and uninitialised reads give NaN. Every copy and
//    memset checks that its device side lies inside one live allocation.
//    A pointer argument of a launch must be NULL or point into (or one past
//    the end of) a cudaMalloc or cudaMallocHost allocation: a host pointer
//    passed to a kernel aborts with its argument's position.
//  - Launch configurations are checked as sm_90 checks them: block x, y <=
//    1024, z <= 64, x*y*z in [1, 1024]; grid x in [1, 2^31-1], y, z in
//    [1, 65535]; dynamic shared memory <= 48 KiB unless cudaFuncSetAttribute(
//    fn, cudaFuncAttributeMaxDynamicSharedMemorySize, v) raised that
//    kernel's limit (to at most 227 KiB). A bad launch does not run and
//    leaves cudaErrorInvalidConfiguration (or cudaErrorInvalidValue for
//    shared memory) for cudaGetLastError(), as the runtime does.
//  - Misuse that is undefined on hardware aborts with the kernel's name, the
//    block and the thread: a deadlock (every live thread waiting, e.g. a
//    __syncthreads() some threads skip while others wait at a shuffle), a
//    shuffle reading a lane that has returned or does not exist (the partial
//    last warp of a block whose size is not a multiple of 32), lanes of one
//    warp meeting at different warp intrinsics, a mask that leaves out a
//    live lane, a warp or block intrinsic called outside a kernel.
//  - Streams and events are handles; everything is synchronous. Event times
//    are host wall-clock times. A launch still running after 300 s (or
//    DIT_CUDA_EMU_TIMEOUT seconds; 0 = no limit) aborts, so an endless loop
//    does not hang CI.
//  - nvcuda::wmma (bf16 and half m16n16k16, float accumulators) is emulated
//    with every lane holding the whole tile (num_elements = 256): the
//    element-to-lane mapping of real fragments is unspecified anyway, so a
//    kernel may only use fill_fragment, load/store_matrix_sync, mma_sync and
//    element-wise loops over x[0..num_elements) that do the same to every
//    element.
//  - DIT_CUDA_EMU_TRACE=1 in the environment prints every launch (kernel,
//    grid, block, shared memory, milliseconds) to stderr;
//    DIT_CUDA_EMU_MEM_MB sets the device memory size (default 80 GiB), so
//    that out-of-memory paths can be tested.
//  - Alignment, which x86 forgives and a GPU does not (a misaligned vector
//    access ends the kernel with cudaErrorMisalignedAddress): the 4, 8 and
//    16-byte accesses of kernels/cuda (vec_load_raw / vec_store in vec.cuh,
//    ld_vec / st_vec in common.cuh) abort here with the kernel, block and
//    thread when the address is not a multiple of the access size, and
//    wmma::load_matrix_sync / store_matrix_sync abort unless the pointer is
//    32-byte aligned and ldm is a multiple of 16 bytes (8 bf16 or half, 4
//    float), as the CUDA C++ Programming Guide states for them. Dynamic
//    shared memory starts 128-byte aligned, or only 16-byte aligned (16 past
//    a multiple of 128) when the kernel also has static __shared__
//    variables, the least a GPU guarantees then.
//  - Dry runs, for shapes far beyond what can run here (DiT-XL/2 at batch
//    256, 4096-token images): DIT_CUDA_EMU_DRYRUN=1 in the environment
//    (read at every call: set it before the context is made, and keep it)
//    checks every launch as above (configuration, shared memory, pointer
//    arguments) and then skips the kernel body. cudaMalloc reserves address
//    space without touching it (mmap, MAP_NORESERVE, between PROT_NONE
//    guards of 1 GiB), so an 80 GiB arena "fits" on a small machine; copies
//    and memsets into such memory are checked and skipped, copies out of it
//    give the host zeros, and LeakSanitizer still reports it if never
//    freed. DIT_CUDA_EMU_DRYRUN=last also runs the last block of every
//    launch (the largest block index in every dimension, where offsets are
//    largest) over that memory, now readable (zeros) and writable: an
//    offset past an allocation faults in its guard (the emulator names the
//    kernel and the thread), and the SANITIZE=1 build's UBSan names any int
//    product that overflows. Host code that stands in for a library
//    (lt_emu.cc) must skip its own loops when emu::dryrun() is true.
//
// What it cannot check
//  - Memory-model races: threads share one coherent x86 memory, so a missing
//    __threadfence() or volatile, or a warp-synchronous shared memory idiom
//    without __syncwarp(), usually still works here. A missing
//    __syncthreads() is only caught when the OS happens to interleave the
//    threads badly (it often does: 2 cores, hundreds of threads).
//  - Static __shared__ variables declared in a __device__ function (rather
//    than in the kernel itself) are not refilled between blocks: they keep
//    what the previous block wrote. And a zero-initialised function-local
//    static of a kernel that is not __shared__ (a `static __device__`
//    counter) would be refilled as if it were.
//  - The PTX ISA's stricter wmma rule (each row of a fragment aligned to the
//    fragment's size: 32 bytes for half and f32 fragments) is not checked:
//    nvcc 13 lowers those loads to ldmatrix and 8-byte shared stores on
//    sm_90, which need 16 bytes, and the kernels' bank-conflict padding
//    relies on that.
//  - Timing, occupancy, register and local memory limits, __launch_bounds__,
//    the static shared memory of a kernel (only the dynamic amount is
//    checked against the limit), bank conflicts, coalescing, the order of
//    the blocks and blocks running concurrently (inter-block communication
//    through global memory that relies on concurrency hangs here, until the
//    launch time limit).
//  - Fast-math intrinsics (__expf, rsqrtf, __fdividef...) are computed with
//    the correctly rounded libm functions: results differ from the GPU's in
//    the last bits, so compare with tolerances.
//  - Only full warps' worth of masks: a mask must name every live lane of
//    the warp (the project's rule); partial-warp collectives abort.
//  - __CUDA_ARCH__ is not defined (device code takes its host path),
//    __noinline__ is not defined (glibc uses the name), no inline PTX, no
//    cooperative groups, no textures, no dynamic parallelism, no graphs.
#ifndef DIT_TESTS_CUDA_EMU_H
#define DIT_TESTS_CUDA_EMU_H

#ifndef __cplusplus
#error "cuda_emu.h is for C++ (the emulated .cu and .cc sources)"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

// Device code says `#pragma unroll`, which g++ does not know, and copies
// bf16/half values with memcpy, which g++ frowns upon for classes with
// non-public members; both are fine.
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#pragma GCC diagnostic ignored "-Wclass-memaccess"

// ---- qualifiers -------------------------------------------------------------
// Host mode already makes __device__, __global__, __host__, __constant__ and
// __managed__ empty, and defines __forceinline__ and __align__.

#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

// ---- built-in variables -----------------------------------------------------

extern __thread uint3 emu_thread_idx_;
extern __thread uint3 emu_block_idx_;
extern __thread dim3 emu_block_dim_;
extern __thread dim3 emu_grid_dim_;

// Read-only, as in device code: each reads a copy. (Not references to the
// thread-locals: UBSan's null check of such a reference relies on the flags
// of an add that the linker relaxes into a lea, and fires at random.)
inline uint3 emu_thread_idx(void) { return emu_thread_idx_; }
inline uint3 emu_block_idx(void) { return emu_block_idx_; }
inline dim3 emu_block_dim(void) { return emu_block_dim_; }
inline dim3 emu_grid_dim(void) { return emu_grid_dim_; }
#define threadIdx (emu_thread_idx())
#define blockIdx (emu_block_idx())
#define blockDim (emu_block_dim())
#define gridDim (emu_grid_dim())

static constexpr int warpSize = 32;

// ---- the emulator's core (emu.cc) ---------------------------------------------

namespace emu {

enum shfl_mode { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR };
enum vote_mode { VOTE_BALLOT, VOTE_ANY, VOTE_ALL };
enum reduce_mode { RED_ADD, RED_MIN, RED_MAX, RED_AND, RED_OR, RED_XOR };

// Every lane's bits after a shuffle.
uint64_t shfl(shfl_mode mode, unsigned mask, uint64_t bits, int lane_arg, int width,
              const char *name);
unsigned vote(vote_mode mode, unsigned mask, int pred, const char *name);
void syncwarp(unsigned mask);
unsigned activemask();
unsigned match_any(unsigned mask, uint64_t value, const char *name);
unsigned match_all(unsigned mask, uint64_t value, int *pred, const char *name);
uint64_t reduce(reduce_mode mode, int is_signed, unsigned mask, uint64_t value, const char *name);
// The block barrier; returns how many threads arrived with pred != 0.
int syncthreads(int pred, const char *name);
[[noreturn]] void trap(const char *what);
// Whether launches are dry runs (DIT_CUDA_EMU_DRYRUN set and not "0").
bool dryrun();
// Prints the message with the kernel, block and thread (when called from
// one), then aborts.
[[noreturn]] void abort_kernel(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// A GPU faults on an access of `align` bytes at an address that is not a
// multiple of it; x86 does not, so the accessors check.
inline void check_aligned(const void *p, size_t align, const char *what)
{
    if ((uintptr_t)p % align != 0)
        abort_kernel("misaligned address: %s of %zu bytes at %p (a GPU faults with "
                     "cudaErrorMisalignedAddress)",
                     what, align, p);
}

// A launch with its arguments already converted to the kernel's parameters.
struct launch_args {
    const void *fn;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    void (*run)(void *closure);
    void *closure;
    int nargs;
    const void *const *pointers; // pointer arguments (nullptr for the others)
};
void launch(const launch_args &a);

template <typename T> struct identity {
    typedef T type;
};

// A data pointer argument, checked to point into device memory.
template <typename T> inline const void *pointer_of(const T &v)
{
    if constexpr (std::is_pointer<T>::value &&
                  !std::is_function<typename std::remove_pointer<T>::type>::value)
        return (const void *)v;
    else
        return nullptr;
}

template <typename T> inline uint64_t to_bits(const T &v)
{
    // Not is_trivially_copyable: __half2 and __nv_bfloat162 are not, and
    // CUDA shuffles them.
    static_assert(sizeof(T) <= 8, "warp intrinsics take values of at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}

template <typename T> inline T from_bits(uint64_t b)
{
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}

} // namespace emu

// emu_launch(fn, grid, block, dynamic_smem_bytes, stream, args...): what
// KLAUNCH expands to. The arguments convert to the kernel's parameter types
// as in a call (so 0 or NULL passes as a pointer), and every thread gets its
// own copy of them.
template <typename... P>
inline void emu_launch(void (*fn)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       typename emu::identity<P>::type... args)
{
    struct closure {
        void (*fn)(P...);
        std::tuple<P...> params;
        static void run(void *c)
        {
            // The kernel takes its parameters by value: each thread its own copy.
            closure *self = static_cast<closure *>(c);
            std::apply(self->fn, self->params);
        }
    };
    closure c{fn, std::tuple<P...>(args...)};
    const void *pointers[sizeof...(P) + 1] = {emu::pointer_of<P>(args)..., nullptr};
    emu::launch_args a;
    a.fn = (const void *)fn;
    a.grid = grid;
    a.block = block;
    a.smem = smem;
    a.stream = stream;
    a.run = &closure::run;
    a.closure = &c;
    a.nargs = (int)sizeof...(P);
    a.pointers = pointers;
    emu::launch(a);
}

// The block's dynamic shared memory (DYNAMIC_SMEM in kernels/cuda/common.cuh).
void *emu_dynamic_smem(void);

// ---- the runtime's C++ overloads that cuda_runtime.h gives only to nvcc ----

template <class T>
inline cudaError_t cudaFuncSetAttribute(T *entry, enum cudaFuncAttribute attr, int value)
{
    return ::cudaFuncSetAttribute((const void *)entry, attr, value);
}
template <class T>
inline cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *attr, T *entry)
{
    return ::cudaFuncGetAttributes(attr, (const void *)entry);
}
template <class T> inline cudaError_t cudaFuncGetName(const char **name, T *func)
{
    return ::cudaFuncGetName(name, (const void *)func);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbol(const T &symbol, const void *src, size_t count,
                                      size_t offset = 0,
                                      enum cudaMemcpyKind kind = cudaMemcpyHostToDevice)
{
    return ::cudaMemcpyToSymbol((const void *)&symbol, src, count, offset, kind);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbolAsync(const T &symbol, const void *src, size_t count,
                                           size_t offset = 0,
                                           enum cudaMemcpyKind kind = cudaMemcpyHostToDevice,
                                           cudaStream_t stream = 0)
{
    return ::cudaMemcpyToSymbolAsync((const void *)&symbol, src, count, offset, kind, stream);
}
template <class T>
inline cudaError_t cudaMemcpyFromSymbol(void *dst, const T &symbol, size_t count,
                                        size_t offset = 0,
                                        enum cudaMemcpyKind kind = cudaMemcpyDeviceToHost)
{
    return ::cudaMemcpyFromSymbol(dst, (const void *)&symbol, count, offset, kind);
}

// ---- synchronisation ----------------------------------------------------------

inline void __syncthreads(void) { emu::syncthreads(0, "__syncthreads"); }
inline int __syncthreads_count(int pred) { return emu::syncthreads(pred, "__syncthreads_count"); }
inline int __syncthreads_and(int pred)
{
    // Counting the threads whose predicate is false gives AND in one barrier.
    return emu::syncthreads(!pred, "__syncthreads_and") == 0;
}
inline int __syncthreads_or(int pred) { return emu::syncthreads(pred, "__syncthreads_or") != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::syncwarp(mask); }
inline unsigned __activemask(void) { return emu::activemask(); }
inline void __threadfence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] inline void __trap(void) { emu::trap("__trap()"); }
inline void __nanosleep(unsigned ns) { (void)ns; }

// ---- warp intrinsics ----------------------------------------------------------

// Overloads for the types CUDA shuffles (so arguments convert as with nvcc).
#define EMU_SHFL_(T)                                                                          \
    inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize)           \
    {                                                                                         \
        return emu::from_bits<T>(emu::shfl(emu::SHFL_IDX, mask, emu::to_bits(var), src_lane, \
                                           width, "__shfl_sync"));                            \
    }                                                                                         \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize)      \
    {                                                                                         \
        return emu::from_bits<T>(emu::shfl(emu::SHFL_UP, mask, emu::to_bits(var), (int)delta, \
                                           width, "__shfl_up_sync"));                         \
    }                                                                                         \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize)    \
    {                                                                                         \
        return emu::from_bits<T>(emu::shfl(emu::SHFL_DOWN, mask, emu::to_bits(var),          \
                                           (int)delta, width, "__shfl_down_sync"));           \
    }                                                                                         \
    inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize)      \
    {                                                                                         \
        return emu::from_bits<T>(emu::shfl(emu::SHFL_XOR, mask, emu::to_bits(var), lane_mask, \
                                           width, "__shfl_xor_sync"));                        \
    }
EMU_SHFL_(int)
EMU_SHFL_(unsigned int)
EMU_SHFL_(long)
EMU_SHFL_(unsigned long)
EMU_SHFL_(long long)
EMU_SHFL_(unsigned long long)
EMU_SHFL_(float)
EMU_SHFL_(double)
EMU_SHFL_(__half)
EMU_SHFL_(__half2)
EMU_SHFL_(__nv_bfloat16)
EMU_SHFL_(__nv_bfloat162)
#undef EMU_SHFL_

inline unsigned __ballot_sync(unsigned mask, int pred)
{
    return emu::vote(emu::VOTE_BALLOT, mask, pred, "__ballot_sync");
}
inline int __any_sync(unsigned mask, int pred)
{
    return (int)emu::vote(emu::VOTE_ANY, mask, pred, "__any_sync");
}
inline int __all_sync(unsigned mask, int pred)
{
    return (int)emu::vote(emu::VOTE_ALL, mask, pred, "__all_sync");
}

template <typename T> inline unsigned __match_any_sync(unsigned mask, T value)
{
    static_assert(std::is_integral<T>::value || std::is_floating_point<T>::value,
                  "__match_any_sync takes a 32 or 64-bit number");
    return emu::match_any(mask, emu::to_bits(value), "__match_any_sync");
}
template <typename T> inline unsigned __match_all_sync(unsigned mask, T value, int *pred)
{
    static_assert(std::is_integral<T>::value || std::is_floating_point<T>::value,
                  "__match_all_sync takes a 32 or 64-bit number");
    return emu::match_all(mask, emu::to_bits(value), pred, "__match_all_sync");
}

#define EMU_REDUCE_(name, mode)                                                               \
    inline unsigned name(unsigned mask, unsigned value)                                       \
    {                                                                                         \
        return (unsigned)emu::reduce(mode, 0, mask, value, #name);                            \
    }                                                                                         \
    inline int name(unsigned mask, int value)                                                 \
    {                                                                                         \
        return (int)(int64_t)emu::reduce(mode, 1, mask, (uint64_t)(int64_t)value, #name);     \
    }
EMU_REDUCE_(__reduce_add_sync, emu::RED_ADD)
EMU_REDUCE_(__reduce_min_sync, emu::RED_MIN)
EMU_REDUCE_(__reduce_max_sync, emu::RED_MAX)
#undef EMU_REDUCE_
inline unsigned __reduce_and_sync(unsigned mask, unsigned value)
{
    return (unsigned)emu::reduce(emu::RED_AND, 0, mask, value, "__reduce_and_sync");
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned value)
{
    return (unsigned)emu::reduce(emu::RED_OR, 0, mask, value, "__reduce_or_sync");
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned value)
{
    return (unsigned)emu::reduce(emu::RED_XOR, 0, mask, value, "__reduce_xor_sync");
}

// ---- atomics: relaxed, as CUDA's ---------------------------------------------

namespace emu {
template <typename T, typename F> inline T atomic_update(T *addr, F f)
{
    T old, next;
    __atomic_load(addr, &old, __ATOMIC_RELAXED);
    do {
        next = f(old);
    } while (!__atomic_compare_exchange(addr, &old, &next, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED));
    return old;
}
} // namespace emu

inline int atomicAdd(int *a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned *a, unsigned v)
{
    return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
}
inline unsigned long long atomicAdd(unsigned long long *a, unsigned long long v)
{
    return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float *a, float v)
{
    return emu::atomic_update(a, [v](float o) { return o + v; });
}
inline double atomicAdd(double *a, double v)
{
    return emu::atomic_update(a, [v](double o) { return o + v; });
}
inline __half atomicAdd(__half *a, __half v)
{
    return emu::atomic_update(a, [v](__half o) {
        return __float2half(__half2float(o) + __half2float(v));
    });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *a, __nv_bfloat16 v)
{
    return emu::atomic_update(a, [v](__nv_bfloat16 o) {
        return __float2bfloat16(__bfloat162float(o) + __bfloat162float(v));
    });
}
inline __half2 atomicAdd(__half2 *a, __half2 v)
{
    return emu::atomic_update(a, [v](__half2 o) {
        return __floats2half2_rn(__half2float(o.x) + __half2float(v.x),
                                 __half2float(o.y) + __half2float(v.y));
    });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162 *a, __nv_bfloat162 v)
{
    return emu::atomic_update(a, [v](__nv_bfloat162 o) {
        return __floats2bfloat162_rn(__bfloat162float(o.x) + __bfloat162float(v.x),
                                     __bfloat162float(o.y) + __bfloat162float(v.y));
    });
}
inline int atomicSub(int *a, int v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicSub(unsigned *a, unsigned v)
{
    return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED);
}
inline int atomicExch(int *a, int v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicExch(unsigned *a, unsigned v)
{
    return __atomic_exchange_n(a, v, __ATOMIC_RELAXED);
}
inline unsigned long long atomicExch(unsigned long long *a, unsigned long long v)
{
    return __atomic_exchange_n(a, v, __ATOMIC_RELAXED);
}
inline float atomicExch(float *a, float v)
{
    float old;
    __atomic_exchange(a, &v, &old, __ATOMIC_RELAXED);
    return old;
}
#define EMU_ATOMIC_MINMAX_(T)                                                                 \
    inline T atomicMin(T *a, T v)                                                             \
    {                                                                                         \
        return emu::atomic_update(a, [v](T o) { return v < o ? v : o; });                     \
    }                                                                                         \
    inline T atomicMax(T *a, T v)                                                             \
    {                                                                                         \
        return emu::atomic_update(a, [v](T o) { return v > o ? v : o; });                     \
    }
EMU_ATOMIC_MINMAX_(int)
EMU_ATOMIC_MINMAX_(unsigned)
EMU_ATOMIC_MINMAX_(long long)
EMU_ATOMIC_MINMAX_(unsigned long long)
#undef EMU_ATOMIC_MINMAX_
#define EMU_ATOMIC_BITS_(T)                                                                   \
    inline T atomicAnd(T *a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }      \
    inline T atomicOr(T *a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }        \
    inline T atomicXor(T *a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }
EMU_ATOMIC_BITS_(int)
EMU_ATOMIC_BITS_(unsigned)
EMU_ATOMIC_BITS_(unsigned long long)
#undef EMU_ATOMIC_BITS_
#define EMU_ATOMIC_CAS_(T)                                                                    \
    inline T atomicCAS(T *a, T compare, T v)                                                  \
    {                                                                                         \
        __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
        return compare;                                                                       \
    }
EMU_ATOMIC_CAS_(int)
EMU_ATOMIC_CAS_(unsigned)
EMU_ATOMIC_CAS_(unsigned long long)
EMU_ATOMIC_CAS_(unsigned short)
#undef EMU_ATOMIC_CAS_
inline unsigned atomicInc(unsigned *a, unsigned limit)
{
    return emu::atomic_update(a, [limit](unsigned o) { return o >= limit ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned *a, unsigned limit)
{
    return emu::atomic_update(a, [limit](unsigned o) {
        return (o == 0 || o > limit) ? limit : o - 1;
    });
}

// ---- loads and stores with cache hints: plain accesses here ------------------

template <typename T> inline T __ldg(const T *p) { return *p; }
template <typename T> inline T __ldca(const T *p) { return *p; }
template <typename T> inline T __ldcg(const T *p) { return *p; }
template <typename T> inline T __ldcs(const T *p) { return *p; }
template <typename T> inline T __ldlu(const T *p) { return *p; }
template <typename T> inline T __ldcv(const T *p) { return *p; }
template <typename T> inline void __stwb(T *p, T v) { *p = v; }
template <typename T> inline void __stcg(T *p, T v) { *p = v; }
template <typename T> inline void __stcs(T *p, T v) { *p = v; }
template <typename T> inline void __stwt(T *p, T v) { *p = v; }

// ---- device math the host headers lack ---------------------------------------

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float *s, float *c)
{
    *s = sinf(x);
    *c = cosf(x);
}
inline float __fdividef(float x, float y) { return x / y; }
inline float fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }
inline int __float_as_int(float x) { return emu::from_bits<int>(emu::to_bits(x)); }
inline float __int_as_float(int x) { return emu::from_bits<float>(emu::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return emu::from_bits<unsigned>(emu::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return emu::from_bits<float>(emu::to_bits(x)); }
inline long long __double_as_longlong(double x)
{
    return emu::from_bits<long long>(emu::to_bits(x));
}
inline double __longlong_as_double(long long x) { return emu::from_bits<double>(emu::to_bits(x)); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)truncf(x); }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline unsigned __float2uint_rz(float x) { return (unsigned)truncf(x); }
inline long long __float2ll_rn(float x) { return (long long)nearbyintf(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x)
{
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
inline int __mul24(int a, int b)
{
    int64_t a24 = (int32_t)((uint32_t)a << 8) >> 8, b24 = (int32_t)((uint32_t)b << 8) >> 8;
    return (int)(uint32_t)(a24 * b24);
}
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return (int)(((int64_t)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

// min and max: the overload set of CUDA's math_functions.hpp, plus int.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min((unsigned)a, b); }
inline unsigned max(int a, unsigned b) { return max((unsigned)a, b); }
inline unsigned min(unsigned a, int b) { return min(a, (unsigned)b); }
inline unsigned max(unsigned a, int b) { return max(a, (unsigned)b); }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline unsigned long min(long a, unsigned long b) { return min((unsigned long)a, b); }
inline unsigned long max(long a, unsigned long b) { return max((unsigned long)a, b); }
inline unsigned long min(unsigned long a, long b) { return min(a, (unsigned long)b); }
inline unsigned long max(unsigned long a, long b) { return max(a, (unsigned long)b); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline unsigned long long min(long long a, unsigned long long b)
{
    return min((unsigned long long)a, b);
}
inline unsigned long long max(long long a, unsigned long long b)
{
    return max((unsigned long long)a, b);
}
inline unsigned long long min(unsigned long long a, long long b)
{
    return min(a, (unsigned long long)b);
}
inline unsigned long long max(unsigned long long a, long long b)
{
    return max(a, (unsigned long long)b);
}
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline double max(double a, float b) { return fmax(a, (double)b); }

// ---- nvcuda::wmma: whole tiles per lane ---------------------------------------

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <typename Use, int M, int N, int K> struct tile_shape;
template <int M, int N, int K> struct tile_shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K> struct tile_shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K> struct tile_shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};
template <typename T> inline float to_float(T v) { return (float)v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> inline T from_float(float v) { return (T)v; }
template <> inline __half from_float<__half>(float v) { return __float2half(v); }
template <> inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// The CUDA C++ Programming Guide (Warp Matrix Functions): mptr "must be a
// 256-bit aligned pointer", ldm "a multiple of 8 for __half element type or
// multiple of 4 for float element type (i.e., multiple of 16 bytes in both
// cases)". bf16 follows the __half rule.
template <typename T> inline void check_ldm(const T *p, unsigned ldm, const char *what)
{
    if ((uintptr_t)p % 32 != 0 || (size_t)ldm * sizeof(T) % 16 != 0)
        emu::abort_kernel("%s: pointer %p must be 32-byte aligned and ldm (%u elements of %zu "
                          "bytes) a multiple of 16 bytes",
                          what, (const void *)p, ldm, sizeof(T));
}
} // namespace detail

// The element order inside x[] is the tile's row-major order.
template <typename Use, int M, int N, int K, typename T, typename Layout = void> class fragment {
  public:
    static_assert(M == 16 && N == 16 && K == 16, "the emulator has m16n16k16 only");
    static constexpr int rows = detail::tile_shape<Use, M, N, K>::rows;
    static constexpr int cols = detail::tile_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    typedef T element_type;
    typedef T storage_element_type;
    T x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, const typename emu::identity<T>::type &v)
{
    for (int i = 0; i < f.num_elements; i++)
        f.x[i] = v;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L> &f, const T *p, unsigned ldm)
{
    static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value,
                  "a matrix_a or matrix_b fragment names its layout");
    detail::check_ldm(p, ldm, "wmma::load_matrix_sync");
    __syncwarp();
    const bool row = std::is_same<L, row_major>::value;
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] = row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void> &f, const T *p, unsigned ldm,
                             layout_t layout)
{
    detail::check_ldm(p, ldm, "wmma::load_matrix_sync");
    __syncwarp();
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] =
                layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}

template <int M, int N, int K, typename T>
inline void store_matrix_sync(T *p, const fragment<accumulator, M, N, K, T, void> &f, unsigned ldm,
                              layout_t layout)
{
    detail::check_ldm(p, ldm, "wmma::store_matrix_sync");
    // Every lane holds the same tile: lane 0 stores it, the others wait.
    __syncwarp();
    const unsigned linear =
        threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    if (linear % 32 == 0)
        for (int r = 0; r < f.rows; r++)
            for (int c = 0; c < f.cols; c++) {
                T v = f.x[r * f.cols + c];
                if (layout == mem_row_major)
                    p[(size_t)r * ldm + c] = v;
                else
                    p[(size_t)c * ldm + r] = v;
            }
    __syncwarp();
}

// d = a b + c, products and sums in fp32 with k ascending.
template <int M, int N, int K, typename TA, typename LA, typename LB, typename TC, typename TD>
inline void mma_sync(fragment<accumulator, M, N, K, TD, void> &d,
                     const fragment<matrix_a, M, N, K, TA, LA> &a,
                     const fragment<matrix_b, M, N, K, TA, LB> &b,
                     const fragment<accumulator, M, N, K, TC, void> &c)
{
    static_assert(std::is_same<TA, __half>::value || std::is_same<TA, __nv_bfloat16>::value,
                  "the emulator has half and bf16 inputs");
    // Converted once (b transposed), not once per product: every lane does
    // the whole tile, and this is where tensor-core kernels spend their time.
    float af[M * K], bt[N * K], out[M * N];
    for (int i = 0; i < M * K; i++)
        af[i] = detail::to_float(a.x[i]);
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
            bt[j * K + k] = detail::to_float(b.x[k * N + j]);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = detail::to_float(c.x[i * N + j]);
            for (int k = 0; k < K; k++)
                acc += af[i * K + k] * bt[j * K + k];
            out[i * N + j] = acc;
        }
    for (int i = 0; i < M * N; i++)
        d.x[i] = detail::from_float<TD>(out[i]);
}

} // namespace wmma
} // namespace nvcuda

#endif
