// The products of kernels/kernels.h on the GPU: gemm and the Linear layer,
// each one cuBLASLt call (lt.cu) with bias and GELU fused as epilogues where
// cuBLASLt has them, plus the few kernels around the products: the epilogue
// when cuBLASLt declines it, empty products (K = 0), and dbias.
//
// dbias is a column sum over all M rows of dout. It is summed in a fixed
// order, never with atomics, so a step gives the same bits every time: rows
// are cut into R chunks, each block sums 32 columns of one chunk, and a
// second kernel adds the R partial sums of each column in order. R depends
// only on M and OC, not on the device. The partials live in cuBLASLt's
// workspace, which is idle between products on the same stream.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lt.h"

namespace {

// As kernels/cpu/activation.c: x sigmoid(2u) = 0.5 x (1 + tanh u).
const float MM_GELU_K = 0.7978845608028654f; // sqrt(2 / pi)
const float MM_GELU_A = 0.044715f;

__device__ __forceinline__ float mm_gelu(float x)
{
    float u = MM_GELU_K * (x + MM_GELU_A * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

const int MM_THREADS = 256;

// d[n] = beta d (0 when beta is 0, whatever d held): an empty product.
template <typename T> __global__ void mm_scale_kernel(T *d, float beta, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        d[i] = st<T>(beta == 0.0f ? 0.0f : beta * ld(d[i]));
}

// Every row of d[M,N] = bias[N]: the seed of a product accumulated with
// beta = 1, so that x + bias is rounded once, as the fused epilogue does.
template <typename T> __global__ void mm_bias_rows_kernel(T *d, const T *bias, int N, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        d[i] = bias[i % N];
}

template <typename T> __global__ void mm_gelu_kernel(T *out, const T *inp, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = st<T>(mm_gelu(ld(inp[i])));
}

// dbias: blocks of 32 columns x 8 row lanes; block (x, r) sums the columns
// [32x, 32x + 32) over rows [r rows_per, (r + 1) rows_per), each row lane
// every 8th row, then the 8 lanes in order. The result goes to
// partial[r * OC + col], or is added to dbias[col] when there is one chunk.
const int MM_BIAS_COLS = 32;
const int MM_BIAS_LANES = 8;

template <typename T>
__global__ void mm_bias_partial_kernel(float *dst, const T *dout, int M, int OC, int rows_per,
                                       int accumulate)
{
    __shared__ float part[MM_BIAS_LANES][MM_BIAS_COLS + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int col = blockIdx.x * MM_BIAS_COLS + tx;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per;
    int64_t r1 = r0 + rows_per;
    if (r1 > M)
        r1 = M;
    float sum = 0.0f;
    if (col < OC)
        for (int64_t r = r0 + ty; r < r1; r += MM_BIAS_LANES)
            sum += ld(dout[r * OC + col]);
    part[ty][tx] = sum;
    __syncthreads();
    if (ty == 0 && col < OC) {
        float total = 0.0f;
        for (int l = 0; l < MM_BIAS_LANES; l++)
            total += part[l][tx];
        if (accumulate)
            dst[col] += total;
        else
            dst[(int64_t)blockIdx.y * OC + col] = total;
    }
}

__global__ void mm_bias_final_kernel(float *dbias, const float *partial, int R, int OC)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= OC)
        return;
    float total = 0.0f;
    for (int r = 0; r < R; r++)
        total += partial[(int64_t)r * OC + col];
    dbias[col] += total;
}

void mm_scale(struct kctx *ctx, void *d, float beta, enum kdtype dt, int64_t n)
{
    DISPATCH_DTYPE(dt, T, {
        auto fn = mm_scale_kernel<T>;
        KLAUNCH(fn, cuda_blocks_for(n, MM_THREADS), MM_THREADS, 0, cuda_stream_of(ctx), (T *)d,
                beta, n);
    });
}

void mm_bias_rows(struct kctx *ctx, void *d, const void *bias, enum kdtype dt, int M, int N)
{
    const int64_t n = (int64_t)M * N;
    DISPATCH_DTYPE(dt, T, {
        auto fn = mm_bias_rows_kernel<T>;
        KLAUNCH(fn, cuda_blocks_for(n, MM_THREADS), MM_THREADS, 0, cuda_stream_of(ctx), (T *)d,
                (const T *)bias, N, n);
    });
}

void mm_gelu_apply(struct kctx *ctx, void *out, const void *inp, enum kdtype dt, int64_t n)
{
    DISPATCH_DTYPE(dt, T, {
        auto fn = mm_gelu_kernel<T>;
        KLAUNCH(fn, cuda_blocks_for(n, MM_THREADS), MM_THREADS, 0, cuda_stream_of(ctx), (T *)out,
                (const T *)inp, n);
    });
}

// g with its epilogue: fused by cuBLASLt when it can, else a plain product
// and our kernels. Empty products (K = 0) never reach cuBLASLt.
void mm_product(struct kctx *ctx, const struct lt_gemm *g)
{
    if (g->M <= 0 || g->N <= 0)
        return;
    if (g->K > 0 && lt_matmul(ctx, g) == 0)
        return;
    const int64_t n = (int64_t)g->M * g->N;
    // The pre-activation goes where it is kept: aux, or D itself.
    void *pre = g->aux ? g->aux : g->d;
    float beta = g->beta; // 0 whenever there is an epilogue (lt.h)
    if (g->bias) {
        mm_bias_rows(ctx, pre, g->bias, g->d_dtype, g->M, g->N);
        beta = 1.0f;
    }
    if (g->K > 0) {
        struct lt_gemm plain = *g;
        plain.d = pre;
        plain.beta = beta;
        plain.bias = NULL;
        plain.gelu = 0;
        plain.aux = NULL;
        if (lt_matmul(ctx, &plain) != 0) {
            fprintf(stderr, "dit: lt_matmul declined a plain product\n");
            abort();
        }
    } else if (beta != 1.0f) {
        mm_scale(ctx, pre, beta, g->d_dtype, n);
    }
    if (g->gelu)
        mm_gelu_apply(ctx, g->d, pre, g->d_dtype, n);
}

struct lt_gemm mm_gemm_of(void *d, enum kdtype d_dtype, const void *a, const void *b,
                          enum kdtype ab_dtype, int M, int N, int K, int trans_a, int trans_b,
                          float alpha, float beta)
{
    struct lt_gemm g;
    memset(&g, 0, sizeof g);
    g.M = M;
    g.N = N;
    g.K = K;
    g.trans_a = trans_a;
    g.trans_b = trans_b;
    g.a = a;
    g.b = b;
    g.ab_dtype = ab_dtype;
    g.d = d;
    g.d_dtype = d_dtype;
    g.alpha = alpha;
    g.beta = beta;
    return g;
}

// dbias[OC] += sum over M of dout[M,OC].
void mm_bias_backward(struct kctx *ctx, float *dbias, const void *dout, enum kdtype dt, int M,
                      int OC)
{
    if (M <= 0 || OC <= 0)
        return;
    struct cuda_state *s = cuda_state_of(ctx);
    // 256 rows a chunk (32 per row lane), at most 128 chunks, and never more
    // partials than the workspace holds.
    int64_t R = ((int64_t)M + 255) / 256;
    if (R > 128)
        R = 128;
    const int64_t fit = (int64_t)(s->lt_workspace_bytes / sizeof(float)) / OC;
    if (R > fit)
        R = fit > 1 ? fit : 1;
    const int rows_per = (int)(((int64_t)M + R - 1) / R);
    R = ((int64_t)M + rows_per - 1) / rows_per;
    float *partial = (float *)s->lt_workspace;
    const dim3 grid((unsigned)((OC + MM_BIAS_COLS - 1) / MM_BIAS_COLS), (unsigned)R);
    const dim3 block(MM_BIAS_COLS, MM_BIAS_LANES);
    cudaStream_t stream = cuda_stream_of(ctx);
    const int direct = R == 1;
    DISPATCH_DTYPE(dt, T, {
        auto fn = mm_bias_partial_kernel<T>;
        KLAUNCH(fn, grid, block, 0, stream, direct ? dbias : partial, (const T *)dout, M, OC,
                rows_per, direct);
    });
    if (!direct)
        KLAUNCH(mm_bias_final_kernel, cuda_blocks_for(OC, MM_THREADS), MM_THREADS, 0, stream,
                dbias, (const float *)partial, (int)R, OC);
}

} // namespace

extern "C" void cuda_gemm(struct kctx *ctx, void *c, const void *a, const void *b, enum kdtype dt,
                          int M, int N, int K, int trans_a, int trans_b, float alpha, float beta)
{
    struct lt_gemm g = mm_gemm_of(c, dt, a, b, dt, M, N, K, trans_a, trans_b, alpha, beta);
    mm_product(ctx, &g);
}

// out[M,OC] = inp[M,C] weight[OC,C]^T + bias[OC].
extern "C" void cuda_linear_forward(struct kctx *ctx, void *out, const void *inp,
                                    const void *weight, const void *bias, enum kdtype dt, int M,
                                    int C, int OC)
{
    struct lt_gemm g = mm_gemm_of(out, dt, inp, weight, dt, M, OC, C, 0, 1, 1.0f, 0.0f);
    g.bias = bias;
    mm_product(ctx, &g);
}

extern "C" void cuda_linear_gelu_forward(struct kctx *ctx, void *out, void *pre, const void *inp,
                                         const void *weight, const void *bias, enum kdtype dt,
                                         int M, int C, int OC)
{
    struct lt_gemm g = mm_gemm_of(out, dt, inp, weight, dt, M, OC, C, 0, 1, 1.0f, 0.0f);
    g.bias = bias;
    g.gelu = 1;
    g.aux = pre;
    mm_product(ctx, &g);
}

extern "C" void cuda_linear_backward(struct kctx *ctx, void *dinp, float *dweight, float *dbias,
                                     const void *dout, const void *inp, const void *weight,
                                     enum kdtype dt, int M, int C, int OC)
{
    // dinp[M,C] = dout[M,OC] weight[OC,C] (overwrites).
    if (dinp) {
        struct lt_gemm g = mm_gemm_of(dinp, dt, dout, weight, dt, M, C, OC, 0, 0, 1.0f, 0.0f);
        mm_product(ctx, &g);
    }
    // dweight[OC,C] += dout^T inp: fp32 D, beta = 1.
    if (dweight) {
        struct lt_gemm g = mm_gemm_of(dweight, KDT_F32, dout, inp, dt, OC, C, M, 1, 0, 1.0f, 1.0f);
        mm_product(ctx, &g);
    }
    if (dbias)
        mm_bias_backward(ctx, dbias, dout, dt, M, OC);
}
