// Elementwise ops and the two blocking reductions (the loss and the sum of
// squares behind gradient norms); F-Lite's residual value mix, whose backward
// reduces into the same scratch without waiting.
//
// Where the CPU backend's fp32 result is one rounding per operation, the
// kernels use the _rn intrinsics so that nvcc does not fuse a multiply and
// an add: an fp32 run then gives the CPU's bits (axpy, for one, is how
// gradient accumulation and the trainer's updates are written).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

// out[B,T,C] = a[B,T,C] + b[T,C]: rows r of C, b's row r % T.
template <typename T> struct add_broadcast_op {
    T *out;
    const T *a, *b;
    int T_, C;
    template <int N> __device__ void apply(int64_t i, int64_t r, int c) const
    {
        float x[N], y[N];
        vec_load<N>(x, a + i);
        vec_load<N>(y, b + (r - idiv(r, T_) * T_) * C + c);
#pragma unroll
        for (int k = 0; k < N; k++)
            x[k] = __fadd_rn(x[k], y[k]);
        vec_store<N>(out + i, x);
    }
};

extern "C" void cuda_add_broadcast_forward(struct kctx *ctx, void *out, const void *a,
                                           const void *b, enum kdtype dt, int B, int T, int C)
{
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        add_broadcast_op<S> op = {(S *)out, (const S *)a, (const S *)b, T, C};
        bool vec = vec_aligned(out, 16) && vec_aligned(a, 16) && vec_aligned(b, 16);
        vec_rows<N>(ctx, op, (int64_t)B * T, C, vec);
    });
}

template <typename T> struct add_op {
    T *out;
    const T *a, *b;
    template <int N> __device__ void apply(int64_t i) const
    {
        float x[N], y[N];
        vec_load<N>(x, a + i);
        vec_load<N>(y, b + i);
#pragma unroll
        for (int k = 0; k < N; k++)
            x[k] = __fadd_rn(x[k], y[k]);
        vec_store<N>(out + i, x);
    }
};

extern "C" void cuda_add(struct kctx *ctx, void *out, const void *a, const void *b,
                         enum kdtype dt, int64_t n)
{
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        add_op<S> op = {(S *)out, (const S *)a, (const S *)b};
        bool vec = vec_aligned(out, 16) && vec_aligned(a, 16) && vec_aligned(b, 16);
        vec_map<N>(ctx, op, n, vec);
    });
}

// y += alpha * x, rounded after the product as the CPU does.
template <typename T> struct axpy_op {
    T *y;
    const T *x;
    float alpha;
    template <int N> __device__ void apply(int64_t i) const
    {
        float yv[N], xv[N];
        vec_load<N>(yv, y + i);
        vec_load<N>(xv, x + i);
#pragma unroll
        for (int k = 0; k < N; k++)
            yv[k] = __fadd_rn(yv[k], __fmul_rn(alpha, xv[k]));
        vec_store<N>(y + i, yv);
    }
};

extern "C" void cuda_axpy(struct kctx *ctx, void *y, float alpha, const void *x, enum kdtype dt,
                          int64_t n)
{
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        axpy_op<S> op = {(S *)y, (const S *)x, alpha};
        vec_map<N>(ctx, op, n, vec_aligned(y, 16) && vec_aligned(x, 16));
    });
}

template <typename T> struct fill_op {
    T *x;
    float value;
    template <int N> __device__ void apply(int64_t i) const
    {
        float v[N];
#pragma unroll
        for (int k = 0; k < N; k++)
            v[k] = value;
        vec_store<N>(x + i, v);
    }
};

extern "C" void cuda_fill(struct kctx *ctx, void *x, float value, enum kdtype dt, int64_t n)
{
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        fill_op<S> op = {(S *)x, value};
        vec_map<N>(ctx, op, n, vec_aligned(x, 16));
    });
}

template <typename T> struct scale_op {
    T *x;
    float s;
    template <int N> __device__ void apply(int64_t i) const
    {
        float v[N];
        vec_load<N>(v, x + i);
#pragma unroll
        for (int k = 0; k < N; k++)
            v[k] = __fmul_rn(v[k], s);
        vec_store<N>(x + i, v);
    }
};

extern "C" void cuda_scale(struct kctx *ctx, void *x, float s, enum kdtype dt, int64_t n)
{
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        scale_op<S> op = {(S *)x, s};
        vec_map<N>(ctx, op, n, vec_aligned(x, 16));
    });
}

// ---- blocking reductions ----------------------------------------------------
//
// Each block sums its grid-stride share in fp32 and writes one partial to the
// context's reduce buffer; the host adds the partials in double, in block
// order. The grid depends on n alone, so a result is the same bits on every
// run (and every GPU of the model).

enum { REDUCE_THREADS = 256 };

// Blocks for a reduction over n elements taken N at a time: about eight
// groups per thread, at most the reduce buffer's slots.
static unsigned reduce_blocks(struct kctx *ctx, int64_t n, int N)
{
    int64_t per_block = (int64_t)REDUCE_THREADS * N * 8;
    int64_t blocks = (n + per_block - 1) / per_block;
    int64_t cap = cuda_state_of(ctx)->reduce_slots;
    if (blocks > cap)
        blocks = cap;
    return (unsigned)(blocks > 0 ? blocks : 1);
}

// The partials of `blocks` blocks, summed in double in block order; waits.
static double reduce_finish(struct kctx *ctx, unsigned blocks)
{
    struct cuda_state *s = cuda_state_of(ctx);
    CUDA_CHECK(cudaMemcpyAsync(s->reduce_host, s->reduce, blocks * sizeof(double),
                               cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    double total = 0.0;
    for (unsigned i = 0; i < blocks; i++)
        total += s->reduce_host[i];
    return total;
}

// partial[block] = sum (pred - target)^2; dpred = gscale * (pred - target)
// when wanted, gscale rounded on the host as the CPU rounds it.
template <typename T, int N>
__global__ void mse_kernel(T *dpred, const T *pred, const T *target, int64_t n, float gscale,
                           double *partial)
{
    __shared__ float shared[32];
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t groups = n / N;
    float sum = 0.0f;
    for (int64_t g = first; g < groups; g += stride) {
        float p[N], t[N];
        vec_load<N>(p, pred + g * N);
        vec_load<N>(t, target + g * N);
#pragma unroll
        for (int k = 0; k < N; k++) {
            p[k] = __fsub_rn(p[k], t[k]);
            sum += p[k] * p[k];
            t[k] = __fmul_rn(gscale, p[k]);
        }
        if (dpred)
            vec_store<N>(dpred + g * N, t);
    }
    for (int64_t i = groups * N + first; i < n; i += stride) {
        float d = __fsub_rn(ld(pred[i]), ld(target[i]));
        sum += d * d;
        if (dpred)
            dpred[i] = st<T>(__fmul_rn(gscale, d));
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = (double)sum;
}

extern "C" float cuda_mse_forward_backward(struct kctx *ctx, void *dpred, const void *pred,
                                           const void *target, enum kdtype dt, int64_t n,
                                           float scale)
{
    if (n <= 0)
        return 0.0f;
    float gscale = scale * 2.0f / (float)n;
    double *partial = cuda_state_of(ctx)->reduce;
    unsigned blocks = 0;
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        bool vec = vec_aligned(pred, 16) && vec_aligned(target, 16) &&
                   (!dpred || vec_aligned(dpred, 16));
        if (vec) {
            blocks = reduce_blocks(ctx, n, N);
            auto fn = mse_kernel<S, N>;
            KLAUNCH(fn, blocks, REDUCE_THREADS, 0, cuda_stream_of(ctx), (S *)dpred,
                    (const S *)pred, (const S *)target, n, gscale, partial);
        } else {
            blocks = reduce_blocks(ctx, n, 1);
            auto fn = mse_kernel<S, 1>;
            KLAUNCH(fn, blocks, REDUCE_THREADS, 0, cuda_stream_of(ctx), (S *)dpred,
                    (const S *)pred, (const S *)target, n, gscale, partial);
        }
    });
    return (float)(reduce_finish(ctx, blocks) / (double)n);
}

template <typename T, int N>
__global__ void sum_squares_kernel(const T *x, int64_t n, double *partial)
{
    __shared__ float shared[32];
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t groups = n / N;
    float sum = 0.0f;
    for (int64_t g = first; g < groups; g += stride) {
        float v[N];
        vec_load<N>(v, x + g * N);
#pragma unroll
        for (int k = 0; k < N; k++)
            sum += v[k] * v[k];
    }
    for (int64_t i = groups * N + first; i < n; i += stride) {
        float v = ld(x[i]);
        sum += v * v;
    }
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = (double)sum;
}

extern "C" double cuda_sum_squares(struct kctx *ctx, const void *x, enum kdtype dt, int64_t n)
{
    if (n <= 0)
        return 0.0;
    double *partial = cuda_state_of(ctx)->reduce;
    unsigned blocks = 0;
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        if (vec_aligned(x, 16)) {
            blocks = reduce_blocks(ctx, n, N);
            auto fn = sum_squares_kernel<S, N>;
            KLAUNCH(fn, blocks, REDUCE_THREADS, 0, cuda_stream_of(ctx), (const S *)x, n,
                    partial);
        } else {
            blocks = reduce_blocks(ctx, n, 1);
            auto fn = sum_squares_kernel<S, 1>;
            KLAUNCH(fn, blocks, REDUCE_THREADS, 0, cuda_stream_of(ctx), (const S *)x, n,
                    partial);
        }
    });
    return reduce_finish(ctx, blocks);
}

// ---- F-Lite's residual value mix ---------------------------------------------
//
// out = lam a + (1 - lam) b over M rows of C, each tensor's rows its own
// stride apart (views into fused qkv buffers), rounded as the CPU rounds (the
// two products, then the sum), so f32 gives its bits. lam, one element of the
// activations' dtype, is read by every thread: no host round trip for a
// trained parameter. Groups of N need every pointer 16-byte aligned and every
// stride a multiple of N (vec_rows adds C % N == 0).

static bool mix_vec(int N, const void *p0, const void *p1, const void *p2, int s0, int s1, int s2)
{
    return (!p0 || vec_aligned(p0, 16)) && (!p1 || vec_aligned(p1, 16)) &&
           (!p2 || vec_aligned(p2, 16)) && s0 % N == 0 && s1 % N == 0 && s2 % N == 0;
}

template <typename T> struct mix_forward_op {
    T *out;
    const T *a, *b, *lam; // lam NULL: out = a, b unused
    int out_stride, a_stride, b_stride;
    template <int N> __device__ void apply(int64_t i, int64_t r, int c) const
    {
        float x[N];
        vec_load<N>(x, a + r * a_stride + c);
        if (lam) {
            float y[N];
            vec_load<N>(y, b + r * b_stride + c);
            const float l = ld(lam[0]), k = __fsub_rn(1.0f, l);
#pragma unroll
            for (int j = 0; j < N; j++)
                x[j] = __fadd_rn(__fmul_rn(l, x[j]), __fmul_rn(k, y[j]));
        }
        vec_store<N>(out + r * out_stride + c, x);
    }
};

extern "C" void cuda_mix_forward(struct kctx *ctx, void *out, const void *a, const void *b,
                                 const void *lam, enum kdtype dt, int M, int C, int out_stride,
                                 int a_stride, int b_stride)
{
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        mix_forward_op<S> op = {(S *)out,   (const S *)a, (const S *)b, (const S *)lam,
                                out_stride, a_stride,     b_stride};
        bool vec = mix_vec(N, out, a, lam ? b : NULL, out_stride, a_stride, lam ? b_stride : 0);
        vec_rows<N>(ctx, op, M, C, vec);
    });
}

// The backward over groups of N, grid-stride: da += lam dout (rows a_stride
// apart), db += (1 - lam) dout (contiguous), each optional, and, when partial
// is given, this block's share of sum dout (a - b) (each term rounded as the
// CPU rounds it, summed in fp32) written to partial[block]. The grid depends
// on the shape and alignment alone, and mix_dlam_finish adds the partials in
// a fixed order: dlam is the same bits on every run, without atomics.
template <typename T, int N>
__global__ void mix_backward_kernel(T *da, T *db, double *partial, const T *dout, const T *a,
                                    const T *b, const T *lam, int64_t rows, int C,
                                    int dout_stride, int a_stride, int b_stride)
{
    __shared__ float shared[32];
    const float l = lam ? ld(lam[0]) : 1.0f, k = __fsub_rn(1.0f, l);
    const int G = C / N;
    const int64_t groups = rows * G;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    float sum = 0.0f;
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        const int64_t r = idiv(g, G);
        const int c = (int)(g - r * G) * N;
        float d[N];
        vec_load<N>(d, dout + r * dout_stride + c);
        if (da) {
            T *p = da + r * a_stride + c;
            float x[N];
            vec_load<N>(x, p);
#pragma unroll
            for (int j = 0; j < N; j++)
                x[j] = __fadd_rn(x[j], __fmul_rn(l, d[j]));
            vec_store<N>(p, x);
        }
        if (db) {
            T *p = db + r * C + c;
            float x[N];
            vec_load<N>(x, p);
#pragma unroll
            for (int j = 0; j < N; j++)
                x[j] = __fadd_rn(x[j], __fmul_rn(k, d[j]));
            vec_store<N>(p, x);
        }
        if (partial) {
            float x[N], y[N];
            vec_load<N>(x, a + r * a_stride + c);
            vec_load<N>(y, b + r * b_stride + c);
#pragma unroll
            for (int j = 0; j < N; j++)
                sum += __fmul_rn(d[j], __fsub_rn(x[j], y[j]));
        }
    }
    if (partial) {
        sum = block_sum(sum, shared);
        if (threadIdx.x == 0)
            partial[blockIdx.x] = (double)sum;
    }
}

enum { MIX_FINISH_THREADS = 256 };

// dlam[0] += the blocks' partials, in double: each thread its strided share in
// order, then a fixed halving tree, one block, so the order never changes.
__global__ void mix_dlam_finish(float *dlam, const double *partial, int blocks)
{
    __shared__ double s[MIX_FINISH_THREADS];
    const int t = (int)threadIdx.x;
    double v = 0.0;
    for (int i = t; i < blocks; i += MIX_FINISH_THREADS)
        v += partial[i];
    s[t] = v;
    __syncthreads();
    for (int h = MIX_FINISH_THREADS / 2; h > 0; h >>= 1) {
        if (t < h)
            s[t] += s[t + h];
        __syncthreads();
    }
    if (t == 0)
        dlam[0] = (float)((double)dlam[0] + s[0]);
}

template <typename T, int N>
static void mix_backward_launch(struct kctx *ctx, T *da, T *db, float *dlam, const T *dout,
                                const T *a, const T *b, const T *lam, int M, int C,
                                int dout_stride, int a_stride, int b_stride)
{
    const int64_t groups = (int64_t)M * (C / N);
    double *partial = dlam ? cuda_state_of(ctx)->reduce : NULL;
    unsigned blocks = dlam ? reduce_blocks(ctx, (int64_t)M * C, N)
                           : cuda_blocks_for(groups, REDUCE_THREADS);
    auto fn = mix_backward_kernel<T, N>;
    KLAUNCH(fn, blocks, REDUCE_THREADS, 0, cuda_stream_of(ctx), da, db, partial, dout, a, b, lam,
            (int64_t)M, C, dout_stride, a_stride, b_stride);
    if (dlam)
        KLAUNCH(mix_dlam_finish, 1, MIX_FINISH_THREADS, 0, cuda_stream_of(ctx), dlam,
                (const double *)partial, (int)blocks);
}

extern "C" void cuda_mix_backward(struct kctx *ctx, void *da, void *db, float *dlam,
                                  const void *dout, const void *a, const void *b,
                                  const void *lam, enum kdtype dt, int M, int C, int dout_stride,
                                  int a_stride, int b_stride)
{
    if (M <= 0 || C <= 0 || (!da && !db && !dlam))
        return;
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        bool vec = C % N == 0 && mix_vec(N, dout, da, db, dout_stride, a_stride, 0) &&
                   (!dlam || mix_vec(N, a, b, NULL, a_stride, b_stride, 0));
        if (vec)
            mix_backward_launch<S, N>(ctx, (S *)da, (S *)db, dlam, (const S *)dout,
                                      (const S *)a, (const S *)b, (const S *)lam, M, C,
                                      dout_stride, a_stride, b_stride);
        else
            mix_backward_launch<S, 1>(ctx, (S *)da, (S *)db, dlam, (const S *)dout,
                                      (const S *)a, (const S *)b, (const S *)lam, M, C,
                                      dout_stride, a_stride, b_stride);
    });
}
