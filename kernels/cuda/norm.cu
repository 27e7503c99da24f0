// LayerNorm without affine, and the adaLN-Zero pieces around it (modulate,
// gated residual), forward and backward.
//
// LayerNorm: one warp per row, the row read once with 16-byte loads into
// registers and the statistics kept there (two passes over registers, so
// the variance does not cancel as E[x^2] - E[x]^2 would). Rows too wide for
// the register tile, or not aligned for vector loads, take a warp-per-row
// loop that reads the row again from L1/L2 for each pass.
//
// The backward reductions over tokens (dshift, dscale, dgate: sums over T
// for each (b, c)) run one block per (32-column tile, batch row): 32 lanes
// over adjacent columns, so every warp reads a contiguous row segment, and
// blockDim.y token rows in parallel, combined through shared memory in a
// fixed order, so the result does not depend on scheduling and no float
// atomics are used. The overwritten dx (dy) is written in the same pass.
// dshift, dscale and dgate are activation gradients (rows of the gradient
// of the adaLN Linear's [B, 6C] output), so they are in the call's dtype.
//
// adaLN (LayerNorm and modulate fused): the LayerNorm kernels' warp per row
// with shift and scale applied before the store, so the normalised row is
// never written; its backward recomputes ln = (x - mean) * rstd, runs the
// LayerNorm backward of dln = dout (1 + scale) a warp per row (dx), and the
// dshift/dscale sums over tokens in the fixed-order column kernel above.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

// ---- layernorm ---------------------------------------------------------------

enum { LN_THREADS = 256, LN_ROWS = LN_THREADS / 32 };

// A row of C = lane-strided groups of N (16 bytes), NV groups per lane at
// most, loaded into raw as stored (bf16 takes half the registers of floats)
// by one warp, with its mean and 1/sqrt(var + eps) (biased variance).
template <typename T, int N, int NV>
__device__ __forceinline__ void row_load_stats(const T *x, vec_raw_t<T, N> (&raw)[NV], int lane,
                                               int G, int C, float eps, float *mu_out,
                                               float *rs_out)
{
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int g = lane + 32 * k;
        if (g < G) {
            raw[k] = vec_load_raw<N>(x + g * N);
            float v[N];
            vec_unpack<N, T>(v, raw[k]);
#pragma unroll
            for (int j = 0; j < N; j++)
                sum += v[j];
        }
    }
    const float mu = warp_sum(sum) / (float)C;
    float var = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++)
        if (lane + 32 * k < G) {
            float v[N];
            vec_unpack<N, T>(v, raw[k]);
#pragma unroll
            for (int j = 0; j < N; j++) {
                float d = v[j] - mu;
                var += d * d;
            }
        }
    var = warp_sum(var) / (float)C;
    *mu_out = mu;
    *rs_out = 1.0f / sqrtf(var + eps);
}

// The row in registers (row_load_stats), widened on each use.
template <typename T, int NV>
__global__ void layernorm_forward_reg(T *out, float *mean, float *rstd, const T *inp, int64_t M,
                                      int C, float eps)
{
    constexpr int N = vec_width<T>::value;
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return; // the whole warp: one row per warp
    const int G = C / N;
    const T *x = inp + row * C;
    vec_raw_t<T, N> raw[NV];
    float mu, rs;
    row_load_stats<T, N, NV>(x, raw, lane, G, C, eps, &mu, &rs);
    T *y = out + row * C;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int g = lane + 32 * k;
        if (g < G) {
            float v[N];
            vec_unpack<N, T>(v, raw[k]);
#pragma unroll
            for (int j = 0; j < N; j++)
                v[j] = (v[j] - mu) * rs;
            vec_store<N>(y + g * N, v);
        }
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

// The mean and 1/sqrt(var + eps) of a row of any length and alignment,
// by one warp, reading the row once per pass.
template <typename T>
__device__ __forceinline__ void row_stats_any(const T *x, int lane, int C, float eps,
                                              float *mu_out, float *rs_out)
{
    float sum = 0.0f;
    for (int c = lane; c < C; c += 32)
        sum += ld(x[c]);
    const float mu = warp_sum(sum) / (float)C;
    float var = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = ld(x[c]) - mu;
        var += d * d;
    }
    var = warp_sum(var) / (float)C;
    *mu_out = mu;
    *rs_out = 1.0f / sqrtf(var + eps);
}

// Any C and alignment: the row is read once per pass.
template <typename T>
__global__ void layernorm_forward_any(T *out, float *mean, float *rstd, const T *inp, int64_t M,
                                      int C, float eps)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return;
    const T *x = inp + row * C;
    float mu, rs;
    row_stats_any(x, lane, C, eps, &mu, &rs);
    T *y = out + row * C;
    for (int c = lane; c < C; c += 32)
        y[c] = st<T>((ld(x[c]) - mu) * rs);
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

// Groups of 16 bytes per lane the register tile needs for C, rounded up to
// an instantiated size; 0 when the row does not fit (or C % N != 0).
static int ln_groups_per_lane(int C, int N)
{
    if (C % N != 0)
        return 0;
    int per_lane = (C / N + 31) / 32;
    static const int sizes[] = {1, 2, 4, 8, 16};
    for (int s : sizes)
        if (per_lane <= s)
            return s;
    return 0;
}

#define LN_REG_CASE(NVV, KERNEL, ...)                                                         \
    case NVV: {                                                                               \
        auto fn = KERNEL<S, NVV>;                                                             \
        KLAUNCH(fn, blocks, LN_THREADS, 0, cuda_stream_of(ctx), __VA_ARGS__);                 \
        break;                                                                                \
    }

extern "C" void cuda_layernorm_forward(struct kctx *ctx, void *out, float *mean, float *rstd,
                                       const void *inp, enum kdtype dt, int M, int C, float eps)
{
    if (M <= 0)
        return;
    const unsigned blocks = (unsigned)((M + LN_ROWS - 1) / LN_ROWS);
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        int nv = vec_aligned(inp, 16) && vec_aligned(out, 16) ? ln_groups_per_lane(C, N) : 0;
        S *o = (S *)out;
        const S *x = (const S *)inp;
        switch (nv) {
            LN_REG_CASE(1, layernorm_forward_reg, o, mean, rstd, x, (int64_t)M, C, eps)
            LN_REG_CASE(2, layernorm_forward_reg, o, mean, rstd, x, (int64_t)M, C, eps)
            LN_REG_CASE(4, layernorm_forward_reg, o, mean, rstd, x, (int64_t)M, C, eps)
            LN_REG_CASE(8, layernorm_forward_reg, o, mean, rstd, x, (int64_t)M, C, eps)
            LN_REG_CASE(16, layernorm_forward_reg, o, mean, rstd, x, (int64_t)M, C, eps)
        default: {
            auto fn = layernorm_forward_any<S>;
            KLAUNCH(fn, blocks, LN_THREADS, 0, cuda_stream_of(ctx), o, mean, rstd, x, (int64_t)M,
                    C, eps);
        }
        }
    });
}

// dinp += rstd (dout - mean(dout) - xhat mean(dout xhat)), the row of x and
// dout in registers as stored.
template <typename T, int NV>
__global__ void layernorm_backward_reg(T *dinp, const T *dout, const T *inp, const float *mean,
                                       const float *rstd, int64_t M, int C)
{
    constexpr int N = vec_width<T>::value;
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return;
    const int G = C / N;
    const float mu = mean[row], rs = rstd[row];
    const T *x = inp + row * C, *dy = dout + row * C;
    vec_raw_t<T, N> xr[NV], gr[NV];
    float sum_dy = 0.0f, sum_dyx = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int gi = lane + 32 * k;
        if (gi < G) {
            xr[k] = vec_load_raw<N>(x + gi * N);
            gr[k] = vec_load_raw<N>(dy + gi * N);
            float xv[N], gv[N];
            vec_unpack<N, T>(xv, xr[k]);
            vec_unpack<N, T>(gv, gr[k]);
#pragma unroll
            for (int j = 0; j < N; j++) {
                sum_dy += gv[j];
                sum_dyx += gv[j] * ((xv[j] - mu) * rs);
            }
        }
    }
    const float mdy = warp_sum(sum_dy) / (float)C;
    const float mdyx = warp_sum(sum_dyx) / (float)C;
    T *dx = dinp + row * C;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int gi = lane + 32 * k;
        if (gi < G) {
            float acc[N], xv[N], gv[N];
            vec_load<N>(acc, dx + gi * N);
            vec_unpack<N, T>(xv, xr[k]);
            vec_unpack<N, T>(gv, gr[k]);
#pragma unroll
            for (int j = 0; j < N; j++)
                acc[j] += rs * (gv[j] - mdy - ((xv[j] - mu) * rs) * mdyx);
            vec_store<N>(dx + gi * N, acc);
        }
    }
}

template <typename T>
__global__ void layernorm_backward_any(T *dinp, const T *dout, const T *inp, const float *mean,
                                       const float *rstd, int64_t M, int C)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return;
    const float mu = mean[row], rs = rstd[row];
    const T *x = inp + row * C, *dy = dout + row * C;
    float sum_dy = 0.0f, sum_dyx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float g = ld(dy[c]);
        sum_dy += g;
        sum_dyx += g * ((ld(x[c]) - mu) * rs);
    }
    const float mdy = warp_sum(sum_dy) / (float)C;
    const float mdyx = warp_sum(sum_dyx) / (float)C;
    T *dx = dinp + row * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (ld(x[c]) - mu) * rs;
        dx[c] = st<T>(ld(dx[c]) + rs * (ld(dy[c]) - mdy - xhat * mdyx));
    }
}

extern "C" void cuda_layernorm_backward(struct kctx *ctx, void *dinp, const void *dout,
                                        const void *inp, const float *mean, const float *rstd,
                                        enum kdtype dt, int M, int C)
{
    if (!dinp || M <= 0)
        return;
    const unsigned blocks = (unsigned)((M + LN_ROWS - 1) / LN_ROWS);
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        bool vec = vec_aligned(dinp, 16) && vec_aligned(dout, 16) && vec_aligned(inp, 16);
        int nv = vec ? ln_groups_per_lane(C, N) : 0;
        S *d = (S *)dinp;
        const S *g = (const S *)dout, *x = (const S *)inp;
        switch (nv) {
            LN_REG_CASE(1, layernorm_backward_reg, d, g, x, mean, rstd, (int64_t)M, C)
            LN_REG_CASE(2, layernorm_backward_reg, d, g, x, mean, rstd, (int64_t)M, C)
            LN_REG_CASE(4, layernorm_backward_reg, d, g, x, mean, rstd, (int64_t)M, C)
            LN_REG_CASE(8, layernorm_backward_reg, d, g, x, mean, rstd, (int64_t)M, C)
            LN_REG_CASE(16, layernorm_backward_reg, d, g, x, mean, rstd, (int64_t)M, C)
        default: {
            auto fn = layernorm_backward_any<S>;
            KLAUNCH(fn, blocks, LN_THREADS, 0, cuda_stream_of(ctx), d, g, x, mean, rstd,
                    (int64_t)M, C);
        }
        }
    });
}

// ---- groupnorm -------------------------------------------------------------
//
// One block per (batch, group): its (C/G) * HW values are contiguous. Three
// passes over them (L2 holds most groups between passes): the sum, the sum
// of squared deviations (two passes: E[x^2] - E[x]^2 cancels), then the
// normalise, affine and SiLU. The values are shifted by the group's first
// value x0 before anything is summed: a VAE's group holds millions of
// values, possibly far from zero, and a float mean of 1000 +- 1 data is off
// by up to half an ulp of 1000 (3e-5 of a standard deviation); with the
// shift, mean = x0 + d is kept as that pair, x - x0 is exact for values
// near x0 (Sterbenz), and only d, a small number, is rounded. Every sum
// runs in a fixed order (per-thread strides, then block_sum), so the
// result is the same bits run after run. In place is safe: a value is read
// by the thread that writes it, after the last of its reads.

enum { GN_THREADS = 512 };

template <typename T>
__global__ void __launch_bounds__(GN_THREADS)
    groupnorm_forward_kernel(T *out, const T *inp, const T *weight, const T *bias, int C,
                             int HW, int G, float eps, int silu)
{
    __shared__ float red[32];
    const int64_t bg = blockIdx.x; // b * G + g
    const int cg = C / G, g = (int)(bg % G);
    const int64_t n = (int64_t)cg * HW;
    const T *x = inp + bg * n;
    T *y = out + bg * n;
    const float x0 = ld(x[0]);

    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        s += ld(x[i]) - x0;
    const float d = block_sum(s, red) / (float)n;
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = (ld(x[i]) - x0) - d;
        q = fmaf(v, v, q);
    }
    const float rs = 1.0f / sqrtf(block_sum(q, red) / (float)n + eps);

    const T *w = weight + (int64_t)g * cg, *b = bias + (int64_t)g * cg;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const int c = (int)(i / HW);
        float v = ((ld(x[i]) - x0) - d) * rs * ld(w[c]) + ld(b[c]);
        if (silu)
            v = v * (1.0f / (1.0f + expf(-v)));
        y[i] = st<T>(v);
    }
}

extern "C" void cuda_groupnorm_forward(struct kctx *ctx, void *out, const void *inp,
                                       const void *weight, const void *bias, enum kdtype dt,
                                       int B, int C, int HW, int G, float eps, int silu)
{
    const int64_t groups = (int64_t)B * G;
    if (groups <= 0 || C <= 0 || HW <= 0)
        return;
    DISPATCH_DTYPE(dt, S, {
        auto fn = groupnorm_forward_kernel<S>;
        KLAUNCH(fn, (unsigned)groups, GN_THREADS, 0, cuda_stream_of(ctx), (S *)out,
                (const S *)inp, (const S *)weight, (const S *)bias, C, HW, G, eps, silu);
    });
}

// ---- modulate and gated residual: elementwise ------------------------------

// Whether the rows of a [B, k*C] buffer at mod_stride are aligned for
// N-element vectors, given that the rows of C are.
template <typename T> static bool mod_vec_ok(const void *p, int mod_stride)
{
    return p && vec_aligned(p, 16) && mod_stride % vec_width<T>::value == 0;
}

// out = x (1 + scale[b]) + shift[b] over rows r = b * T + t.
template <typename T> struct modulate_op {
    T *out;
    const T *x, *shift, *scale;
    int T_, ms;
    template <int N> __device__ void apply(int64_t i, int64_t r, int c) const
    {
        const int64_t m = idiv(r, T_) * ms + c;
        float v[N], sh[N], sc[N];
        vec_load<N>(v, x + i);
        vec_load<N>(sh, shift + m);
        vec_load<N>(sc, scale + m);
#pragma unroll
        for (int k = 0; k < N; k++)
            v[k] = v[k] * (1.0f + sc[k]) + sh[k];
        vec_store<N>(out + i, v);
    }
};

extern "C" void cuda_modulate_forward(struct kctx *ctx, void *out, const void *x,
                                      const void *shift, const void *scale, enum kdtype dt,
                                      int B, int T, int C, int mod_stride)
{
    DISPATCH_DTYPE(dt, S, {
        modulate_op<S> op = {(S *)out, (const S *)x, (const S *)shift, (const S *)scale, T,
                             mod_stride};
        bool vec = vec_aligned(out, 16) && vec_aligned(x, 16) &&
                   mod_vec_ok<S>(shift, mod_stride) && mod_vec_ok<S>(scale, mod_stride);
        vec_rows<vec_width<S>::value>(ctx, op, (int64_t)B * T, C, vec);
    });
}

// out = d * f[b] where f = 1 + scale (modulate's dx) or gate (the gated
// residual's dy): the backward when no reduction is wanted.
template <typename T, bool PLUS_ONE> struct row_scale_op {
    T *out;
    const T *d, *f;
    int T_, ms;
    template <int N> __device__ void apply(int64_t i, int64_t r, int c) const
    {
        float v[N], s[N];
        vec_load<N>(v, d + i);
        vec_load<N>(s, f + idiv(r, T_) * ms + c);
#pragma unroll
        for (int k = 0; k < N; k++)
            v[k] = v[k] * (PLUS_ONE ? 1.0f + s[k] : s[k]);
        vec_store<N>(out + i, v);
    }
};

// out = res + gate[b] y (out may be res: each element is read, then written
// by the same thread).
template <typename T> struct gated_residual_op {
    T *out;
    const T *res, *y, *gate;
    int T_, ms;
    template <int N> __device__ void apply(int64_t i, int64_t r, int c) const
    {
        float v[N], yv[N], g[N];
        vec_load<N>(v, res + i);
        vec_load<N>(yv, y + i);
        vec_load<N>(g, gate + idiv(r, T_) * ms + c);
#pragma unroll
        for (int k = 0; k < N; k++)
            v[k] += g[k] * yv[k];
        vec_store<N>(out + i, v);
    }
};

extern "C" void cuda_gated_residual_forward(struct kctx *ctx, void *out, const void *res,
                                            const void *y, const void *gate, enum kdtype dt,
                                            int B, int T, int C, int mod_stride)
{
    DISPATCH_DTYPE(dt, S, {
        gated_residual_op<S> op = {(S *)out, (const S *)res, (const S *)y, (const S *)gate, T,
                                   mod_stride};
        bool vec = vec_aligned(out, 16) && vec_aligned(res, 16) && vec_aligned(y, 16) &&
                   mod_vec_ok<S>(gate, mod_stride);
        vec_rows<vec_width<S>::value>(ctx, op, (int64_t)B * T, C, vec);
    });
}

// ---- modulate and gated residual: backward with reductions over T ----------

enum { TILE_C = 32 };

// One block per (batch row b, 32-column tile), blockDim (32, BY). With g
// the incoming gradient (dout or dres) and f[c] = 1 + scale or gate:
//   dx[t, c] = g f (when dx),
//   acc1[b, c] += sum_t g          (dshift, modulate only),
//   acc2[b, c] += sum_t g v[t, c]  (dscale with v = x, or dgate with v = y).
// The end of a column-sum block: each of the BY rows of threads holds a
// partial (s1, s2) for its column tx; row 0 adds the BY partials, in order,
// to acc1[idx] and acc2[idx] (either may be NULL). Every thread calls it.
template <typename T, int BY>
__device__ __forceinline__ void column_sums_add(float (&part)[2][BY][TILE_C + 1], float s1,
                                                float s2, int tx, int ty, bool in, T *acc1,
                                                T *acc2, int64_t idx)
{
    part[0][ty][tx] = s1;
    part[1][ty][tx] = s2;
    __syncthreads();
    if (ty == 0 && in) {
        float t1 = 0.0f, t2 = 0.0f;
        for (int k = 0; k < BY; k++) {
            t1 += part[0][k][tx];
            t2 += part[1][k][tx];
        }
        if (acc1)
            acc1[idx] = st<T>(ld(acc1[idx]) + t1);
        if (acc2)
            acc2[idx] = st<T>(ld(acc2[idx]) + t2);
    }
}

template <typename T, int BY, bool PLUS_ONE>
__global__ void adaln_backward_kernel(T *dx, T *acc1, T *acc2, const T *g, const T *v, const T *f,
                                      int T_, int C, int ms)
{
    __shared__ float part[2][BY][TILE_C + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tiles = (C + TILE_C - 1) / TILE_C;
    const int64_t b = blockIdx.x / tiles;
    const int c = (int)(blockIdx.x - b * tiles) * TILE_C + tx;
    const bool in = c < C;
    float s1 = 0.0f, s2 = 0.0f;
    if (in) {
        const float fc = PLUS_ONE ? 1.0f + ld(f[b * ms + c]) : ld(f[b * ms + c]);
        const int64_t base = b * T_ * (int64_t)C + c;
#pragma unroll 4
        for (int t = ty; t < T_; t += BY) {
            const int64_t i = base + (int64_t)t * C;
            const float gi = ld(g[i]);
            if (dx)
                dx[i] = st<T>(gi * fc);
            s1 += gi;
            if (acc2)
                s2 += gi * ld(v[i]);
        }
    }
    column_sums_add<T, BY>(part, s1, s2, tx, ty, in, acc1, acc2, b * ms + c);
}

// 32 token rows per block: with 1024 threads a block keeps enough loads in
// flight even when B * tiles is too small to fill the GPU (one image of
// 4096 tokens), and two blocks still fit an SM when it is large.
enum { ADALN_ROWS = 32 };

static void adaln_backward(struct kctx *ctx, void *dx, void *acc1, void *acc2, const void *g,
                           const void *v, const void *f, enum kdtype dt, bool plus_one, int B,
                           int T, int C, int ms)
{
    if (B <= 0 || C <= 0)
        return;
    const unsigned grid = (unsigned)((C + TILE_C - 1) / TILE_C) * (unsigned)B;
    const dim3 block(TILE_C, ADALN_ROWS);
    cudaStream_t stream = cuda_stream_of(ctx);
    DISPATCH_DTYPE(dt, S, {
        S *o = (S *)dx, *a1 = (S *)acc1, *a2 = (S *)acc2;
        const S *gp = (const S *)g, *vp = (const S *)v, *fp = (const S *)f;
        if (plus_one) {
            auto fn = adaln_backward_kernel<S, ADALN_ROWS, true>;
            KLAUNCH(fn, grid, block, 0, stream, o, a1, a2, gp, vp, fp, T, C, ms);
        } else {
            auto fn = adaln_backward_kernel<S, ADALN_ROWS, false>;
            KLAUNCH(fn, grid, block, 0, stream, o, a1, a2, gp, vp, fp, T, C, ms);
        }
    });
}

extern "C" void cuda_modulate_backward(struct kctx *ctx, void *dx, void *dshift, void *dscale,
                                       const void *dout, const void *x, const void *scale,
                                       enum kdtype dt, int B, int T, int C, int mod_stride)
{
    if (dshift || dscale) {
        adaln_backward(ctx, dx, dshift, dscale, dout, x, scale, dt, true, B, T,
                       C, mod_stride);
        return;
    }
    if (!dx)
        return;
    DISPATCH_DTYPE(dt, S, {
        row_scale_op<S, true> op = {(S *)dx, (const S *)dout, (const S *)scale, T, mod_stride};
        bool vec = vec_aligned(dx, 16) && vec_aligned(dout, 16) && mod_vec_ok<S>(scale, mod_stride);
        vec_rows<vec_width<S>::value>(ctx, op, (int64_t)B * T, C, vec);
    });
}

extern "C" void cuda_gated_residual_backward(struct kctx *ctx, void *dy, void *dgate,
                                             const void *dres, const void *y, const void *gate,
                                             enum kdtype dt, int B, int T, int C, int mod_stride)
{
    if (dgate) {
        adaln_backward(ctx, dy, NULL, dgate, dres, y, gate, dt, false, B, T, C,
                       mod_stride);
        return;
    }
    if (!dy)
        return;
    DISPATCH_DTYPE(dt, S, {
        row_scale_op<S, false> op = {(S *)dy, (const S *)dres, (const S *)gate, T, mod_stride};
        bool vec = vec_aligned(dy, 16) && vec_aligned(dres, 16) && mod_vec_ok<S>(gate, mod_stride);
        vec_rows<vec_width<S>::value>(ctx, op, (int64_t)B * T, C, vec);
    });
}

// ---- adaLN: LayerNorm and modulate fused -----------------------------------

// out = ((x - mean) rstd) (1 + scale[b]) + shift[b], the row in registers
// as layernorm_forward_reg holds it; shift and scale read with 16-byte
// loads (one row of each per batch row, shared by its T tokens in cache).
template <typename T, int NV>
__global__ void adaln_forward_reg(T *out, float *mean, float *rstd, const T *inp, const T *shift,
                                  const T *scale, int64_t M, int T_, int C, int ms, float eps)
{
    constexpr int N = vec_width<T>::value;
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return; // the whole warp: one row per warp
    const int G = C / N;
    const T *x = inp + row * C;
    const int64_t mrow = idiv(row, T_) * ms;
    vec_raw_t<T, N> raw[NV];
    float mu, rs;
    row_load_stats<T, N, NV>(x, raw, lane, G, C, eps, &mu, &rs);
    T *y = out + row * C;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int g = lane + 32 * k;
        if (g < G) {
            float v[N], sh[N], sc[N];
            vec_unpack<N, T>(v, raw[k]);
            vec_load<N>(sh, shift + mrow + g * N);
            vec_load<N>(sc, scale + mrow + g * N);
#pragma unroll
            for (int j = 0; j < N; j++)
                v[j] = ((v[j] - mu) * rs) * (1.0f + sc[j]) + sh[j];
            vec_store<N>(y + g * N, v);
        }
    }
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

// Any C and alignment: the row is read once per pass.
template <typename T>
__global__ void adaln_forward_any(T *out, float *mean, float *rstd, const T *inp, const T *shift,
                                  const T *scale, int64_t M, int T_, int C, int ms, float eps)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return;
    const T *x = inp + row * C;
    const int64_t mrow = idiv(row, T_) * ms;
    float mu, rs;
    row_stats_any(x, lane, C, eps, &mu, &rs);
    T *y = out + row * C;
    for (int c = lane; c < C; c += 32)
        y[c] = st<T>(((ld(x[c]) - mu) * rs) * (1.0f + ld(scale[mrow + c])) + ld(shift[mrow + c]));
    if (lane == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

extern "C" void cuda_adaln_forward(struct kctx *ctx, void *out, float *mean, float *rstd,
                                   const void *x, const void *shift, const void *scale,
                                   enum kdtype dt, int B, int T, int C, int mod_stride, float eps)
{
    const int64_t M = (int64_t)B * T;
    if (M <= 0)
        return;
    const unsigned blocks = (unsigned)((M + LN_ROWS - 1) / LN_ROWS);
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        bool vec = vec_aligned(x, 16) && vec_aligned(out, 16) &&
                   mod_vec_ok<S>(shift, mod_stride) && mod_vec_ok<S>(scale, mod_stride);
        int nv = vec ? ln_groups_per_lane(C, N) : 0;
        S *o = (S *)out;
        const S *xp = (const S *)x, *sh = (const S *)shift, *sc = (const S *)scale;
        switch (nv) {
            LN_REG_CASE(1, adaln_forward_reg, o, mean, rstd, xp, sh, sc, M, T, C, mod_stride, eps)
            LN_REG_CASE(2, adaln_forward_reg, o, mean, rstd, xp, sh, sc, M, T, C, mod_stride, eps)
            LN_REG_CASE(4, adaln_forward_reg, o, mean, rstd, xp, sh, sc, M, T, C, mod_stride, eps)
            LN_REG_CASE(8, adaln_forward_reg, o, mean, rstd, xp, sh, sc, M, T, C, mod_stride, eps)
            LN_REG_CASE(16, adaln_forward_reg, o, mean, rstd, xp, sh, sc, M, T, C, mod_stride,
                        eps)
        default: {
            auto fn = adaln_forward_any<S>;
            KLAUNCH(fn, blocks, LN_THREADS, 0, cuda_stream_of(ctx), o, mean, rstd, xp, sh, sc, M,
                    T, C, mod_stride, eps);
        }
        }
    });
}

// dx += rstd (dln - mean(dln) - xhat mean(dln xhat)), dln = dout (1 +
// scale[b]); the rows of x and dout in registers as stored, scale re-read
// from cache in the second pass rather than held.
template <typename T, int NV>
__global__ void adaln_backward_reg(T *dinp, const T *dout, const T *inp, const float *mean,
                                   const float *rstd, const T *scale, int64_t M, int T_, int C,
                                   int ms)
{
    constexpr int N = vec_width<T>::value;
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return;
    const int G = C / N;
    const float mu = mean[row], rs = rstd[row];
    const T *x = inp + row * C, *dy = dout + row * C;
    const T *sc = scale + idiv(row, T_) * ms;
    vec_raw_t<T, N> xr[NV], gr[NV];
    float sum_dy = 0.0f, sum_dyx = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int gi = lane + 32 * k;
        if (gi < G) {
            xr[k] = vec_load_raw<N>(x + gi * N);
            gr[k] = vec_load_raw<N>(dy + gi * N);
            float xv[N], gv[N], sv[N];
            vec_unpack<N, T>(xv, xr[k]);
            vec_unpack<N, T>(gv, gr[k]);
            vec_load<N>(sv, sc + gi * N);
#pragma unroll
            for (int j = 0; j < N; j++) {
                const float dln = gv[j] * (1.0f + sv[j]);
                sum_dy += dln;
                sum_dyx += dln * ((xv[j] - mu) * rs);
            }
        }
    }
    const float mdy = warp_sum(sum_dy) / (float)C;
    const float mdyx = warp_sum(sum_dyx) / (float)C;
    T *dx = dinp + row * C;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int gi = lane + 32 * k;
        if (gi < G) {
            float acc[N], xv[N], gv[N], sv[N];
            vec_load<N>(acc, dx + gi * N);
            vec_unpack<N, T>(xv, xr[k]);
            vec_unpack<N, T>(gv, gr[k]);
            vec_load<N>(sv, sc + gi * N);
#pragma unroll
            for (int j = 0; j < N; j++) {
                const float dln = gv[j] * (1.0f + sv[j]);
                acc[j] += rs * (dln - mdy - ((xv[j] - mu) * rs) * mdyx);
            }
            vec_store<N>(dx + gi * N, acc);
        }
    }
}

template <typename T>
__global__ void adaln_backward_any(T *dinp, const T *dout, const T *inp, const float *mean,
                                   const float *rstd, const T *scale, int64_t M, int T_, int C,
                                   int ms)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return;
    const float mu = mean[row], rs = rstd[row];
    const T *x = inp + row * C, *dy = dout + row * C;
    const T *sc = scale + idiv(row, T_) * ms;
    float sum_dy = 0.0f, sum_dyx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float dln = ld(dy[c]) * (1.0f + ld(sc[c]));
        sum_dy += dln;
        sum_dyx += dln * ((ld(x[c]) - mu) * rs);
    }
    const float mdy = warp_sum(sum_dy) / (float)C;
    const float mdyx = warp_sum(sum_dyx) / (float)C;
    T *dx = dinp + row * C;
    for (int c = lane; c < C; c += 32) {
        const float xhat = (ld(x[c]) - mu) * rs;
        const float dln = ld(dy[c]) * (1.0f + ld(sc[c]));
        dx[c] = st<T>(ld(dx[c]) + rs * (dln - mdy - xhat * mdyx));
    }
}

// dshift[b, c] += sum_t dout, dscale[b, c] += sum_t dout ln, ln recomputed
// from the row statistics: adaln_backward_kernel's layout (one block per
// (batch row, 32-column tile), BY token rows combined in a fixed order).
template <typename T, int BY>
__global__ void adaln_ln_sums_kernel(T *dshift, T *dscale, const T *g, const T *x,
                                     const float *mean, const float *rstd, int T_, int C, int ms)
{
    __shared__ float part[2][BY][TILE_C + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tiles = (C + TILE_C - 1) / TILE_C;
    const int64_t b = blockIdx.x / tiles;
    const int c = (int)(blockIdx.x - b * tiles) * TILE_C + tx;
    const bool in = c < C;
    float s1 = 0.0f, s2 = 0.0f;
    if (in) {
        const int64_t base = b * T_ * (int64_t)C + c;
        const float *mu = mean + b * T_, *rs = rstd + b * T_;
#pragma unroll 4
        for (int t = ty; t < T_; t += BY) {
            const int64_t i = base + (int64_t)t * C;
            const float gi = ld(g[i]);
            s1 += gi;
            if (dscale)
                s2 += gi * ((ld(x[i]) - mu[t]) * rs[t]);
        }
    }
    column_sums_add<T, BY>(part, s1, s2, tx, ty, in, dshift, dscale, b * ms + c);
}

extern "C" void cuda_adaln_backward(struct kctx *ctx, void *dx, void *dshift, void *dscale,
                                    const void *dout, const void *x, const float *mean,
                                    const float *rstd, const void *scale, enum kdtype dt, int B,
                                    int T, int C, int mod_stride)
{
    const int64_t M = (int64_t)B * T;
    if (M <= 0 || C <= 0)
        return;
    cudaStream_t stream = cuda_stream_of(ctx);
    DISPATCH_DTYPE(dt, S, {
        const S *g = (const S *)dout, *xp = (const S *)x, *sc = (const S *)scale;
        if (dx) {
            constexpr int N = vec_width<S>::value;
            const unsigned blocks = (unsigned)((M + LN_ROWS - 1) / LN_ROWS);
            bool vec = vec_aligned(dx, 16) && vec_aligned(dout, 16) && vec_aligned(x, 16) &&
                       mod_vec_ok<S>(scale, mod_stride);
            int nv = vec ? ln_groups_per_lane(C, N) : 0;
            S *d = (S *)dx;
            switch (nv) {
                LN_REG_CASE(1, adaln_backward_reg, d, g, xp, mean, rstd, sc, M, T, C, mod_stride)
                LN_REG_CASE(2, adaln_backward_reg, d, g, xp, mean, rstd, sc, M, T, C, mod_stride)
                LN_REG_CASE(4, adaln_backward_reg, d, g, xp, mean, rstd, sc, M, T, C, mod_stride)
                LN_REG_CASE(8, adaln_backward_reg, d, g, xp, mean, rstd, sc, M, T, C, mod_stride)
                LN_REG_CASE(16, adaln_backward_reg, d, g, xp, mean, rstd, sc, M, T, C,
                            mod_stride)
            default: {
                auto fn = adaln_backward_any<S>;
                KLAUNCH(fn, blocks, LN_THREADS, 0, stream, d, g, xp, mean, rstd, sc, M, T, C,
                        mod_stride);
            }
            }
        }
        if (dshift || dscale) {
            const unsigned grid = (unsigned)((C + TILE_C - 1) / TILE_C) * (unsigned)B;
            const dim3 block(TILE_C, ADALN_ROWS);
            auto fn = adaln_ln_sums_kernel<S, ADALN_ROWS>;
            KLAUNCH(fn, grid, block, 0, stream, (S *)dshift, (S *)dscale, g, xp, mean, rstd, T,
                    C, mod_stride);
        }
    });
}

// ---- RMS norm (T5LayerNorm) ------------------------------------------------------
//
// One warp per row, as the LayerNorm kernels: the sum of squares in fp32 over
// lane-strided groups of N elements (16-byte loads when the row, the weight
// and out allow it), one warp_sum, then the row read again (a T5-XXL row of
// 4096 bf16 is 8 KiB, still in L1 or L2), scaled by rstd and the weight in
// T5LayerNorm's order, rounded once on store. A lane reads each element of
// the second pass before writing it, and every lane has finished the first
// pass at the warp_sum, so out == inp is safe.

enum { RMS_THREADS = 256, RMS_ROWS = RMS_THREADS / 32 };

// inp (M, C), weight (C) or NULL -> out (M, C), rstd (M) or NULL
template <typename T, int N>
__global__ void rmsnorm_forward_kernel(T *out, float *rstd, const T *inp, const T *weight,
                                       int64_t M, int C, float eps)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return; // the whole warp: one row per warp
    const T *x = inp + row * C;
    float ss = 0.0f;
    for (int c = lane * N; c < C; c += 32 * N) {
        float v[N];
        vec_load<N>(v, x + c);
#pragma unroll
        for (int j = 0; j < N; j++)
            ss = fmaf(v[j], v[j], ss);
    }
    const float rs = 1.0f / sqrtf(warp_sum(ss) / (float)C + eps);
    T *y = out + row * C;
    for (int c = lane * N; c < C; c += 32 * N) {
        float v[N];
        vec_load<N>(v, x + c);
        if (weight) {
            float w[N];
            vec_load<N>(w, weight + c);
#pragma unroll
            for (int j = 0; j < N; j++)
                v[j] = (v[j] * rs) * w[j];
        } else {
#pragma unroll
            for (int j = 0; j < N; j++)
                v[j] *= rs;
        }
        vec_store<N>(y + c, v);
    }
    if (rstd && lane == 0)
        rstd[row] = rs;
}

extern "C" void cuda_rmsnorm_forward(struct kctx *ctx, void *out, float *rstd, const void *inp,
                                     const void *weight, enum kdtype dt, int M, int C, float eps)
{
    if (M <= 0 || C <= 0)
        return;
    const unsigned blocks = (unsigned)((M + RMS_ROWS - 1) / RMS_ROWS);
    DISPATCH_DTYPE(dt, S, {
        constexpr int N = vec_width<S>::value;
        const bool vec = C % N == 0 && vec_aligned(inp, 16) && vec_aligned(out, 16) &&
                         (!weight || vec_aligned(weight, 16));
        auto fn = vec ? rmsnorm_forward_kernel<S, N> : rmsnorm_forward_kernel<S, 1>;
        KLAUNCH(fn, blocks, RMS_THREADS, 0, cuda_stream_of(ctx), (S *)out, rstd, (const S *)inp,
                (const S *)weight, (int64_t)M, C, eps);
    });
}

// ---- RMS norm backward --------------------------------------------------------
//
// dinp: a warp per row, as the forward: n = x rs and dn = dout w (w = 1
// without weight), mean(dn n) by a warp sum, then dx = rs (dn - n mean),
// overwritten. dweight (f32, accumulated): sum over every row of dout n,
// by the column kernel of the adaLN sums: one block per 32-column tile,
// RMS_DW_ROWS rows of threads each taking every RMS_DW_ROWS-th row, their
// partials added in order by column_sums_add, so the bits are the same run
// after run, without atomics or scratch.

enum { RMS_DW_ROWS = 32 };

// w[0..N) = weight[c..c+N), or ones without weight (dn = dout exactly).
template <int N, typename T>
__device__ __forceinline__ void rms_weight(float (&w)[N], const T *weight, int c)
{
    if (weight) {
        vec_load<N>(w, weight + c);
    } else {
#pragma unroll
        for (int j = 0; j < N; j++)
            w[j] = 1.0f;
    }
}

template <typename T, int N>
__global__ void rmsnorm_backward_kernel(T *dinp, const T *dout, const T *inp, const float *rstd,
                                        const T *weight, int64_t M, int C)
{
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M)
        return; // the whole warp: one row per warp
    const T *x = inp + row * C, *g = dout + row * C;
    const float rs = rstd[row];
    float dot = 0.0f;
    for (int c = lane * N; c < C; c += 32 * N) {
        float xv[N], gv[N], wv[N];
        vec_load<N>(xv, x + c);
        vec_load<N>(gv, g + c);
        rms_weight<N>(wv, weight, c);
#pragma unroll
        for (int j = 0; j < N; j++)
            dot = fmaf(gv[j] * wv[j], xv[j] * rs, dot);
    }
    const float m = warp_sum(dot) / (float)C;
    T *dx = dinp + row * C;
    for (int c = lane * N; c < C; c += 32 * N) {
        float xv[N], gv[N], wv[N];
        vec_load<N>(xv, x + c);
        vec_load<N>(gv, g + c);
        rms_weight<N>(wv, weight, c);
#pragma unroll
        for (int j = 0; j < N; j++)
            xv[j] = rs * (gv[j] * wv[j] - (xv[j] * rs) * m);
        vec_store<N>(dx + c, xv);
    }
}

template <typename T>
__global__ void rmsnorm_dweight_kernel(float *dweight, const T *dout, const T *inp,
                                       const float *rstd, int64_t M, int C)
{
    __shared__ float part[2][RMS_DW_ROWS][TILE_C + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * TILE_C + tx;
    const bool in = c < C;
    float s = 0.0f;
    if (in)
        for (int64_t m = ty; m < M; m += RMS_DW_ROWS) {
            const int64_t i = m * C + c;
            s = fmaf(ld(dout[i]), ld(inp[i]) * rstd[m], s);
        }
    column_sums_add<float, RMS_DW_ROWS>(part, 0.0f, s, tx, ty, in, (float *)nullptr, dweight, c);
}

extern "C" void cuda_rmsnorm_backward(struct kctx *ctx, void *dinp, float *dweight,
                                      const void *dout, const void *inp, const float *rstd,
                                      const void *weight, enum kdtype dt, int M, int C)
{
    if (M <= 0 || C <= 0)
        return;
    cudaStream_t stream = cuda_stream_of(ctx);
    DISPATCH_DTYPE(dt, S, {
        if (dinp) {
            constexpr int N = vec_width<S>::value;
            const bool vec = C % N == 0 && vec_aligned(dinp, 16) && vec_aligned(dout, 16) &&
                             vec_aligned(inp, 16) && (!weight || vec_aligned(weight, 16));
            auto fn = vec ? rmsnorm_backward_kernel<S, N> : rmsnorm_backward_kernel<S, 1>;
            const unsigned blocks = (unsigned)((M + RMS_ROWS - 1) / RMS_ROWS);
            KLAUNCH(fn, blocks, RMS_THREADS, 0, stream, (S *)dinp, (const S *)dout,
                    (const S *)inp, rstd, (const S *)weight, (int64_t)M, C);
        }
        if (dweight) {
            auto fn = rmsnorm_dweight_kernel<S>;
            const unsigned tiles = (unsigned)((C + TILE_C - 1) / TILE_C);
            KLAUNCH(fn, tiles, dim3(TILE_C, RMS_DW_ROWS), 0, stream, dweight, (const S *)dout,
                    (const S *)inp, rstd, (int64_t)M, C);
        }
    });
}
