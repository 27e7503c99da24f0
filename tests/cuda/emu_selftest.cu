// Small kernels that check the CUDA emulator (tests/cuda_emu) against what a
// GPU does: barriers, shared memory, warp intrinsics, atomics, index
// coverage, launch checks, bf16/f16 rounding and wmma. Written with KLAUNCH
// and DYNAMIC_SMEM like the backend, so nvcc builds it too and
// `make test-cuda` runs the same checks on a GPU. The wrappers are declared
// in emu_selftest.h; test_cuda_emu.c checks their results.
#include "kernels/cuda/common.cuh"
#include "tests/cuda/emu_selftest.h"

#include <mma.h>
#include <string.h>
#include <unistd.h>

namespace {

const unsigned FULL = 0xffffffffu;

// Device memory for one wrapper, freed when it returns.
template <typename T> struct dbuf {
    T *p = nullptr;
    size_t n;
    explicit dbuf(size_t count) : n(count) { CUDA_CHECK(cudaMalloc((void **)&p, n * sizeof(T))); }
    ~dbuf() { cudaFree(p); }
    dbuf(const dbuf &) = delete;
    dbuf &operator=(const dbuf &) = delete;
    void put(const T *host)
    {
        CUDA_CHECK(cudaMemcpy(p, host, n * sizeof(T), cudaMemcpyHostToDevice));
    }
    void get(T *host) const
    {
        CUDA_CHECK(cudaMemcpy(host, p, n * sizeof(T), cudaMemcpyDeviceToHost));
    }
    void zero() { CUDA_CHECK(cudaMemset(p, 0, n * sizeof(T))); }
};

// What the wrappers return: the first error of the work they queued.
int finish()
{
    cudaError_t e = cudaDeviceSynchronize();
    cudaError_t l = cudaGetLastError();
    return (int)(e != cudaSuccess ? e : l);
}

// A launch that does not abort on a bad configuration, so that the error
// can be inspected.
#ifdef DIT_CUDA_EMU
#define TRY_LAUNCH(fn, grid, block, smem, ...)                                                \
    emu_launch((fn), dim3(grid), dim3(block), (size_t)(smem), (cudaStream_t)0, __VA_ARGS__)
#else
#define TRY_LAUNCH(fn, grid, block, smem, ...) (fn)<<<(grid), (block), (smem)>>>(__VA_ARGS__)
#endif

__device__ __forceinline__ int linear_tid()
{
    return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

// ---- block sums ----------------------------------------------------------------------

__global__ void block_sum_kernel(const float *in, int n, float *out)
{
    __shared__ float red[32];
    const float *seg = in + (size_t)blockIdx.x * n;
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        v += seg[i];
    float total = block_sum(v, red);
    if (threadIdx.x == 0)
        out[blockIdx.x] = total;
}

// The textbook tree in static shared memory; blockDim.x a power of two.
__global__ void tree_sum_kernel(const float *in, int n, float *out)
{
    __shared__ float buf[1024];
    const float *seg = in + (size_t)blockIdx.x * n;
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        v += seg[i];
    buf[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = buf[0];
}

// ---- dynamic shared memory -------------------------------------------------------------

__global__ void reverse_kernel(const float *in, int n, float *out)
{
    DYNAMIC_SMEM(float, s);
    const float *seg = in + (size_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s[i] = seg[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[(size_t)blockIdx.x * n + i] = s[n - 1 - i];
}

// ---- warp intrinsics -------------------------------------------------------------------

__global__ void shuffle_kernel(int *out)
{
    const int t = linear_tid(), lane = t & 31;
    int *o = out + t;
    o[0 * 64] = __shfl_xor_sync(FULL, t, 1);
    o[1 * 64] = __shfl_xor_sync(FULL, t, 16);
    o[2 * 64] = __shfl_down_sync(FULL, t, 3);
    o[3 * 64] = __shfl_up_sync(FULL, t, 5);
    o[4 * 64] = __shfl_sync(FULL, t, (lane * 7) % 32);
    o[5 * 64] = __shfl_sync(FULL, t, 3, 8);
    o[6 * 64] = __shfl_down_sync(FULL, t, 2, 8);
    o[7 * 64] = __shfl_up_sync(FULL, t, 1, 16);
    o[8 * 64] = __shfl_xor_sync(FULL, t, 12, 8);
    o[9 * 64] = (int)warp_sum((float)t);
    double d = __shfl_xor_sync(FULL, (double)t + 0.5, 2);
    o[10 * 64] = (int)(d - 0.5);
}

__global__ void vote_kernel(int *out)
{
    const int t = threadIdx.x, lane = t & 31;
    int *o = out + t * EMU_ST_VOTE_CASES;
    o[0] = (int)__ballot_sync(FULL, lane % 3 == 0);
    o[1] = __any_sync(FULL, t == 37);
    o[2] = __all_sync(FULL, t < 40);
    o[3] = __syncthreads_count(t % 5 == 0);
    o[4] = __syncthreads_and(t < 64);
    o[5] = __syncthreads_or(t == 63);
    o[6] = (int)__reduce_add_sync(FULL, (unsigned)t);
    o[7] = (int)__match_any_sync(FULL, lane / 4);
}

// ---- atomics ----------------------------------------------------------------------------

__global__ void atomics_kernel(float *fsum, int *isum, double *dsum, int *bins, int *imax)
{
    const int id = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    atomicAdd(fsum, 1.0f);
    atomicAdd(isum, 1);
    atomicAdd(dsum, 0.5);
    atomicAdd(&bins[id % 7], 1);
    atomicMax(imax, id);
}

// ---- threads returning early --------------------------------------------------------------

__global__ void early_return_kernel(const float *in, int valid, float *out)
{
    __shared__ float buf[128];
    const int t = threadIdx.x;
    if (t >= valid)
        return;
    buf[t] = in[(size_t)blockIdx.x * valid + t];
    __syncthreads();
    for (int s = 64; s > 0; s >>= 1) {
        if (t < s && t + s < valid)
            buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0)
        out[blockIdx.x] = buf[0];
}

// ---- 2D and 3D index coverage -------------------------------------------------------------

__global__ void cover_kernel(int *count, int *code, int *dims, int W, int H, int D)
{
    const int x = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    const int y = (int)(blockIdx.y * blockDim.y + threadIdx.y);
    const int z = (int)(blockIdx.z * blockDim.z + threadIdx.z);
    if (x == 0 && y == 0 && z == 0) {
        dims[0] = (int)blockDim.x;
        dims[1] = (int)blockDim.y;
        dims[2] = (int)blockDim.z;
        dims[3] = (int)gridDim.x;
        dims[4] = (int)gridDim.y;
        dims[5] = (int)gridDim.z;
    }
    if (x >= W || y >= H || z >= D)
        return;
    const int i = (z * H + y) * W + x;
    const int block = (int)(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
    atomicAdd(&count[i], 1);
    code[i] = 1000 * block + linear_tid();
}

__global__ void param_kernel(int k, int *out)
{
    k += (int)threadIdx.x; // each thread's own copy of k
    __syncthreads();
    out[threadIdx.x] = k;
}

// ---- launch configurations -----------------------------------------------------------------

__global__ void tiny_kernel(int *out)
{
    if (threadIdx.x == 0 && blockIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0)
        out[0] += 1;
}

__global__ void big_smem_kernel(float *out, int n)
{
    DYNAMIC_SMEM(float, s);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        s[i] = (float)i;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[i] = s[n - 1 - i];
}

// ---- constant memory ---------------------------------------------------------------------

__constant__ float const_table[4];

__global__ void constant_kernel(float *out)
{
    out[threadIdx.x] = const_table[3 - threadIdx.x] * 2.0f;
}

// ---- storage dtypes ------------------------------------------------------------------------

__global__ void convert_kernel(const float *x, int n, uint16_t *bits, float *back)
{
    const int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n)
        return;
    bf16 b = st<bf16>(x[i]);
    f16 h = st<f16>(x[i]);
    uint16_t ub, uh;
    memcpy(&ub, &b, 2);
    memcpy(&uh, &h, 2);
    bits[i] = ub;
    bits[n + i] = uh;
    back[i] = ld(b);
    back[n + i] = ld(h);
}

// ---- wmma ------------------------------------------------------------------------------------

__global__ void wmma_kernel(const bf16 *a, const bf16 *b, const float *c, float *d)
{
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::load_matrix_sync(fc, c, 16, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(d, fc, 16, wmma::mem_row_major);
}

// ---- a barrier-heavy launch, for speed ---------------------------------------------------------

__global__ void bench_kernel(const float *in, int rounds, float *out)
{
    DYNAMIC_SMEM(float, s);
    __shared__ float red[32];
    const int t = threadIdx.x, n = blockDim.x;
    float v = in[(size_t)blockIdx.x * n + t];
    for (int r = 0; r < rounds; r++) {
        s[t] = v;
        __syncthreads();
        v = 0.5f * (v + s[(t + 1) % n]);
        __syncthreads();
    }
    float total = block_sum(v, red);
    if (t == 0)
        out[blockIdx.x] = total;
}

// ---- emulator only ---------------------------------------------------------------------------

__global__ void read_smem_kernel(float *out, int n)
{
    DYNAMIC_SMEM(float, s);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out[i] = s[i];
}

__global__ void read_static_smem_kernel(float *out)
{
    __shared__ float st[64];
    out[blockIdx.x * 64 + threadIdx.x] = st[threadIdx.x];
    __syncthreads();
    st[threadIdx.x] = 1.0f;
}

#ifdef DIT_CUDA_EMU
__global__ void misuse_kernel(int which, float *out)
{
    const int lane = (int)threadIdx.x & 31;
    float v = (float)threadIdx.x;
    switch (which) {
    case 0:
        if (lane < 16)
            __syncthreads();
        else
            v = __shfl_xor_sync(FULL, v, 1);
        break;
    case 1:
        if (lane >= 16)
            return;
        v = __shfl_xor_sync(FULL, v, 16);
        break;
    case 2:
        v = __shfl_down_sync(FULL, v, 16);
        break;
    case 4:
        if (lane < 16)
            v = (float)__ballot_sync(FULL, 1);
        else
            v = __shfl_xor_sync(FULL, v, 1);
        break;
    case 6: {
        // Waits for a value nobody writes, as a wait for another block would.
        volatile float *flag = out;
        while (flag[63] != 12345.0f) {
        }
        break;
    }
    }
    out[threadIdx.x] = v;
}
#endif

} // namespace

extern "C" int emu_st_is_emulator(void)
{
#ifdef DIT_CUDA_EMU
    return 1;
#else
    return 0;
#endif
}

extern "C" int emu_st_block_sum(const float *in, int n, int blocks, int threads, float *out,
                                float *out2)
{
    dbuf<float> din((size_t)n * blocks), dout(blocks), dout2(blocks);
    din.put(in);
    KLAUNCH(block_sum_kernel, blocks, threads, 0, 0, din.p, n, dout.p);
    KLAUNCH(tree_sum_kernel, blocks, threads, 0, 0, din.p, n, dout2.p);
    dout.get(out);
    dout2.get(out2);
    return finish();
}

extern "C" int emu_st_reverse(const float *in, int n, int blocks, float *out)
{
    dbuf<float> din((size_t)n * blocks), dout((size_t)n * blocks);
    din.put(in);
    KLAUNCH(reverse_kernel, blocks, 96, n * sizeof(float), 0, din.p, n, dout.p);
    dout.get(out);
    return finish();
}

extern "C" int emu_st_shuffles(int bx, int *out)
{
    dbuf<int> d(64 * EMU_ST_SHFL_CASES);
    KLAUNCH(shuffle_kernel, 1, dim3(bx, 64 / bx), 0, 0, d.p);
    d.get(out);
    return finish();
}

extern "C" int emu_st_votes(int *out)
{
    dbuf<int> d(64 * EMU_ST_VOTE_CASES);
    KLAUNCH(vote_kernel, 1, 64, 0, 0, d.p);
    d.get(out);
    return finish();
}

extern "C" int emu_st_atomics(int blocks, int threads, float *fsum, int *isum, double *dsum,
                              int *bins, int *imax)
{
    dbuf<float> f(1);
    dbuf<int> i(1), b(7), m(1);
    dbuf<double> d(1);
    f.zero();
    i.zero();
    b.zero();
    d.zero();
    int lowest = -1;
    m.put(&lowest);
    KLAUNCH(atomics_kernel, blocks, threads, 0, 0, f.p, i.p, d.p, b.p, m.p);
    f.get(fsum);
    i.get(isum);
    d.get(dsum);
    b.get(bins);
    m.get(imax);
    return finish();
}

extern "C" int emu_st_early_return(const float *in, int valid, int blocks, float *out)
{
    dbuf<float> din((size_t)valid * blocks), dout(blocks);
    din.put(in);
    KLAUNCH(early_return_kernel, blocks, 128, 0, 0, din.p, valid, dout.p);
    dout.get(out);
    return finish();
}

extern "C" int emu_st_cover(int *count, int *code, int *dims)
{
    const int W = 21, H = 7, D = 3;
    dbuf<int> c(W * H * D), k(W * H * D), d(6);
    c.zero();
    KLAUNCH(cover_kernel, dim3(3, 2, 2), dim3(8, 4, 2), 0, 0, c.p, k.p, d.p, W, H, D);
    c.get(count);
    k.get(code);
    d.get(dims);
    return finish();
}

extern "C" int emu_st_param_copy(int k, int threads, int *out)
{
    dbuf<int> d(threads);
    KLAUNCH(param_kernel, 1, threads, 0, 0, k, d.p);
    d.get(out);
    return finish();
}

extern "C" int emu_st_launch_config(void)
{
    int bad = 0;
    dbuf<int> d(1);
    d.zero();
    cudaGetLastError();

    TRY_LAUNCH(tiny_kernel, 1, 1025, 0, d.p);
    bad |= (cudaGetLastError() == cudaSuccess) << 0;
    bad |= (cudaGetLastError() != cudaSuccess) << 1; // read and cleared
    TRY_LAUNCH(tiny_kernel, 1, dim3(1, 1, 65), 0, d.p);
    bad |= (cudaGetLastError() == cudaSuccess) << 2;
    TRY_LAUNCH(tiny_kernel, 1, dim3(64, 32), 0, d.p);
    bad |= (cudaGetLastError() == cudaSuccess) << 3;
    TRY_LAUNCH(tiny_kernel, dim3(1, 65536), 32, 0, d.p);
    bad |= (cudaGetLastError() == cudaSuccess) << 4;
    TRY_LAUNCH(tiny_kernel, 0, 32, 0, d.p);
    cudaError_t peek1 = cudaPeekAtLastError(), peek2 = cudaPeekAtLastError();
    cudaError_t got = cudaGetLastError(), after = cudaGetLastError();
    bad |= (peek1 == cudaSuccess || peek2 != peek1 || got != peek1 || after != cudaSuccess) << 5;

    // 64 KiB of dynamic shared memory needs the kernel's limit raised.
    const int n = 16384;
    dbuf<float> big(n);
    TRY_LAUNCH(big_smem_kernel, 1, 256, n * sizeof(float), big.p, n);
    bad |= (cudaGetLastError() == cudaSuccess) << 6;
    bad |= (cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 232448 + 1) == cudaSuccess)
           << 7;
    cudaGetLastError();
    bad |= (cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 n * (int)sizeof(float)) != cudaSuccess)
           << 8;
    KLAUNCH(big_smem_kernel, 1, 256, n * sizeof(float), 0, big.p, n);
    float *host = (float *)malloc(n * sizeof(float));
    big.get(host);
    for (int i = 0; i < n; i++)
        if (host[i] != (float)(n - 1 - i)) {
            bad |= 1 << 9;
            break;
        }
    free(host);

    // A good launch still works, and leaves no error behind.
    KLAUNCH(tiny_kernel, 2, dim3(32, 2), 0, 0, d.p);
    int one = 0;
    d.get(&one);
    bad |= (one != 1) << 10;
    bad |= (finish() != 0) << 11;
    return bad;
}

extern "C" int emu_st_constant(const float *v, float *out)
{
    dbuf<float> d(4);
    CUDA_CHECK(cudaMemcpyToSymbol(const_table, v, 4 * sizeof(float)));
    KLAUNCH(constant_kernel, 1, 4, 0, 0, d.p);
    d.get(out);
    float back[4];
    CUDA_CHECK(cudaMemcpyFromSymbol(back, const_table, sizeof back));
    for (int i = 0; i < 4; i++)
        out[4 + i] = back[i];
    return finish();
}

extern "C" int emu_st_convert(const float *x, int n, uint16_t *bits16, float *back)
{
    dbuf<float> dx(n), db(2 * (size_t)n);
    dbuf<uint16_t> du(2 * (size_t)n);
    dx.put(x);
    KLAUNCH(convert_kernel, (n + 63) / 64, 64, 0, 0, dx.p, n, du.p, db.p);
    du.get(bits16);
    db.get(back);
    return finish();
}

extern "C" int emu_st_wmma(const float *a, const float *b_cm, const float *c, float *d)
{
    bf16 ha[256], hb[256];
    for (int i = 0; i < 256; i++) {
        ha[i] = __float2bfloat16(a[i]);
        hb[i] = __float2bfloat16(b_cm[i]);
    }
    dbuf<bf16> da(256), db(256);
    dbuf<float> dc(256), dd(256);
    da.put(ha);
    db.put(hb);
    dc.put(c);
    KLAUNCH(wmma_kernel, 1, 32, 0, 0, da.p, db.p, dc.p, dd.p);
    dd.get(d);
    return finish();
}

extern "C" int emu_st_barrier_bench(int blocks, int threads, int rounds, float *out, float *ms)
{
    const size_t n = (size_t)blocks * threads;
    float *host = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        host[i] = (float)((int)(i % 17) - 8);
    dbuf<float> din(n), dout(blocks);
    din.put(host);
    free(host);
    cudaStream_t stream;
    cudaEvent_t t0, t1;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    CUDA_CHECK(cudaEventRecord(t0, stream));
    KLAUNCH(bench_kernel, blocks, threads, threads * sizeof(float), stream, din.p, rounds,
            dout.p);
    CUDA_CHECK(cudaEventRecord(t1, stream));
    CUDA_CHECK(cudaEventSynchronize(t1));
    CUDA_CHECK(cudaEventElapsedTime(ms, t0, t1));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    CUDA_CHECK(cudaEventDestroy(t0));
    CUDA_CHECK(cudaEventDestroy(t1));
    CUDA_CHECK(cudaStreamDestroy(stream));
    dout.get(out);
    return finish();
}

extern "C" int emu_st_uninitialised(int n, float *out)
{
    dbuf<float> d(n), fresh(n);
    dbuf<float> st(128);
    KLAUNCH(read_smem_kernel, 1, 64, n * sizeof(float), 0, d.p, n);
    KLAUNCH(read_static_smem_kernel, 2, 64, 0, 0, st.p);
    d.get(out);
    fresh.get(out + n);
    st.get(out + 2 * n);
    return finish();
}

extern "C" int emu_st_bad_copies(void)
{
    int bad = 0;
    char host[64] = {0};
    dbuf<char> d(48);
    bad |= (cudaMemcpy(d.p, host, 49, cudaMemcpyHostToDevice) == cudaSuccess) << 0;
    bad |= (cudaGetLastError() == cudaSuccess) << 1;
    bad |= (cudaMemcpy(host, d.p + 40, 9, cudaMemcpyDeviceToHost) == cudaSuccess) << 2;
    bad |= (cudaMemcpy(host, host + 8, 8, cudaMemcpyHostToDevice) == cudaSuccess) << 3;
    bad |= (cudaMemset(d.p + 1, 0, 48) == cudaSuccess) << 4;
    bad |= (cudaFree(d.p + 16) == cudaSuccess) << 5;
    bad |= (cudaMemcpy(d.p, d.p + 24, 24, cudaMemcpyDeviceToDevice) != cudaSuccess) << 6;
    bad |= (cudaMemcpy(d.p + 48, host, 0, cudaMemcpyHostToDevice) != cudaSuccess) << 7;
    cudaGetLastError();
    bad |= (cudaGetLastError() != cudaSuccess) << 8;
    return bad;
}

extern "C" void emu_st_misuse(int which)
{
#ifdef DIT_CUDA_EMU
    dbuf<float> d(64);
    float host[64];
    switch (which) {
    case 0:
    case 1:
    case 4:
    case 6:
        KLAUNCH(misuse_kernel, 1, 32, 0, 0, which, d.p);
        break;
    case 2:
        KLAUNCH(misuse_kernel, 1, 48, 0, 0, which, d.p);
        break;
    case 3:
        KLAUNCH(misuse_kernel, 1, 32, 0, 0, which, host);
        break;
    case 5:
        __syncthreads();
        break;
    }
#else
    (void)which;
#endif
    fprintf(stderr, "emu_st_misuse(%d): the emulator let it pass\n", which);
    fflush(stderr);
    _exit(3);
}
