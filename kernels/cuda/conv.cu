// Convolution and resampling on the GPU, forward only: the layers of the
// frozen VAE (kernels/cpu/conv.c is the reference).
//
// A convolution runs by blocks of P output pixels of the flat (b, oy, ox)
// index: im2col writes col[C*k*k, P] (features (channel, ky, kx), as a
// flattened Conv2d weight) into scratch in the activations' dtype, then for
// each run of at most CONV_OC_BLOCK output channels one cuBLASLt product
// (lt.cu, fp32 accumulation) stage[ocn, P] = weight[oc0 .., C*k*k] col goes
// to an fp32 stage in scratch, and a last kernel adds the bias there and
// rounds once into the NCHW output. The stage is what lets a block be any
// run of pixels: out's rows for a block are a plane apart, and lt_gemm
// writes only contiguous rows; and it keeps x + bias one rounding in bf16
// and f16, as the CPU's f32 is compared against. P comes from C, k and the
// output size alone (the scratch query knows no OC and no B), so scratch
// stays bounded: the full im2col of a 1024x1024 image of 512 channels would
// be 4.8 G values.
//
// A 1x1 stride-1 conv is already a product, out[b][OC, H*W] =
// weight[OC, C] inp[b][C, H*W], one per image through cuda_gemm with the
// bias seeded into out and beta 1 (rounded once), and needs no scratch.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lt.h"
#include "kernels/cuda/vec.cuh"

namespace {

const int CONV_THREADS = 256;
// Floats of scratch a convolution's blocks are sized to (128 MiB).
const int64_t CONV_BUDGET = (int64_t)32 << 20;
// Output channels per product: the whole of most VAE layers, half of the
// 512-channel ones; the fp32 stage holds this many rows of P.
const int CONV_OC_BLOCK = 256;
// The stage starts this many floats into scratch past col, aligned.
const int64_t CONV_STAGE_ALIGN = 64;

struct conv_geom {
    int C, H, W, k, stride, pad; // pad: before each axis (pad_hi only sets Ho, Wo)
    int Ho, Wo;
    int64_t K;     // features per output pixel, C*k*k
    int64_t plane; // Ho*Wo
};

conv_geom conv_geom_of(int C, int H, int W, int k, int stride, int pad_lo, int pad_hi)
{
    conv_geom g;
    g.C = C;
    g.H = H;
    g.W = W;
    g.k = k;
    g.stride = stride;
    g.pad = pad_lo;
    g.Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    g.Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    g.K = (int64_t)C * k * k;
    g.plane = (int64_t)g.Ho * g.Wo;
    return g;
}

bool conv_is_product(int k, int stride, int pad_lo, int pad_hi)
{
    return k == 1 && stride == 1 && pad_lo == 0 && pad_hi == 0;
}

// Pixels per block: what the budget holds of col and stage together, a
// multiple of 8 (16-byte rows of col in bf16), at most one image's plane.
int64_t conv_block_pixels(const conv_geom &g)
{
    int64_t p = CONV_BUDGET / (g.K + CONV_OC_BLOCK) / 8 * 8;
    if (p < 8)
        p = 8;
    return p < g.plane ? p : g.plane;
}

int64_t conv_stage_offset(const conv_geom &g, int64_t P)
{
    return (g.K * P + CONV_STAGE_ALIGN - 1) / CONV_STAGE_ALIGN * CONV_STAGE_ALIGN;
}

// col[f, j] = inp[b, c, oy*s - pad + ky, ox*s - pad + kx] (0 in the
// padding) for feature f = (c, ky, kx) and pixel p0 + j = (b, oy, ox).
template <typename T>
__global__ void conv_im2col_kernel(T *col, const T *inp, conv_geom g, int64_t p0, int pn)
{
    const int64_t n = g.K * pn, stride = (int64_t)gridDim.x * blockDim.x;
    const int kk = g.k * g.k;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t f = idiv(i, pn);
        const int64_t p = p0 + (i - f * pn);
        const int64_t b = idiv(p, g.plane);
        const int64_t pix = p - b * g.plane;
        const int oy = (int)idiv(pix, g.Wo), ox = (int)(pix - (int64_t)oy * g.Wo);
        const int c = (int)(f / kk), r = (int)(f - (int64_t)c * kk);
        const int ky = r / g.k, kx = r - ky * g.k;
        const int iy = oy * g.stride - g.pad + ky, ix = ox * g.stride - g.pad + kx;
        T v = st<T>(0.0f);
        if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
            v = inp[((b * g.C + c) * g.H + iy) * (int64_t)g.W + ix];
        col[i] = v;
    }
}

// out[b, oc0 + o, pix] = stage[o, j] + bias[oc0 + o], rounded once, for
// pixel p0 + j = (b, pix).
template <typename T>
__global__ void conv_store_kernel(T *out, const float *stage, const T *bias, conv_geom g, int OC,
                                  int oc0, int ocn, int64_t p0, int pn)
{
    const int64_t n = (int64_t)ocn * pn, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t o = idiv(i, pn);
        const int64_t p = p0 + (i - o * pn);
        const int64_t b = idiv(p, g.plane);
        const int64_t pix = p - b * g.plane;
        float v = stage[i];
        if (bias)
            v += ld(bias[oc0 + o]);
        out[(b * OC + oc0 + o) * g.plane + pix] = st<T>(v);
    }
}

// Every plane of out[B*OC, plane] = its channel's bias: the seed of a
// product accumulated with beta 1.
template <typename T>
__global__ void conv_bias_seed_kernel(T *out, const T *bias, int OC, int64_t plane, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = bias[idiv(i, plane) % OC];
}

// The 1x1 stride-1 conv: a product per image.
void conv_product(struct kctx *ctx, void *out, const void *inp, const void *weight,
                  const void *bias, enum kdtype dt, int B, int C, int OC, const conv_geom &g)
{
    const size_t sz = kdtype_size(dt);
    if (bias) {
        const int64_t n = (int64_t)B * OC * g.plane;
        DISPATCH_DTYPE(dt, T, {
            auto fn = conv_bias_seed_kernel<T>;
            KLAUNCH(fn, cuda_blocks_for(n, CONV_THREADS), CONV_THREADS, 0, cuda_stream_of(ctx),
                    (T *)out, (const T *)bias, OC, g.plane, n);
        });
    }
    for (int b = 0; b < B; b++) {
        void *out_b = (char *)out + (size_t)b * OC * g.plane * sz;
        const void *inp_b = (const char *)inp + (size_t)b * C * g.plane * sz;
        cuda_gemm(ctx, out_b, weight, inp_b, dt, OC, (int)g.plane, C, 0, 0, 1.0f,
                  bias ? 1.0f : 0.0f);
    }
}

// stage[ocn, pn] (f32) = weight[oc0 + .., K] col[K, pn], fp32 accumulation.
void conv_block_product(struct kctx *ctx, float *stage, const void *weight, const void *col,
                        enum kdtype dt, int64_t K, int oc0, int ocn, int pn)
{
    struct lt_gemm m;
    memset(&m, 0, sizeof m);
    m.M = ocn;
    m.N = pn;
    m.K = (int)K;
    m.a = (const char *)weight + (size_t)oc0 * K * kdtype_size(dt);
    m.b = col;
    m.ab_dtype = dt;
    m.d = stage;
    m.d_dtype = KDT_F32;
    m.alpha = 1.0f;
    m.beta = 0.0f;
    if (lt_matmul(ctx, &m) != 0) {
        fprintf(stderr, "dit: lt_matmul declined a plain product\n");
        abort();
    }
}

const int TRANSPOSE_TILE = 32;
const int TRANSPOSE_ROWS = 8; // threads per tile column: each copies 4 rows

// out[b][n][m] = inp[b][m][n], a 32x32 tile per block at a time through
// shared memory, so both the reads and the writes are whole rows; the
// padding column keeps the transposed reads off a single bank. Tiles go
// grid-stride over one index, so no grid dimension limits B, M or N.
template <typename T>
__global__ void transpose_kernel(T *out, const T *inp, int M, int N, int64_t tiles_n,
                                 int64_t tiles_img, int64_t tiles)
{
    __shared__ float tile[TRANSPOSE_TILE][TRANSPOSE_TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t mn = (int64_t)M * N;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int64_t b = idiv(t, tiles_img);
        const int64_t r = t - b * tiles_img;
        const int64_t tm = idiv(r, tiles_n);
        const int m0 = (int)tm * TRANSPOSE_TILE, n0 = (int)(r - tm * tiles_n) * TRANSPOSE_TILE;
        const T *src = inp + b * mn;
        T *dst = out + b * mn;
        for (int dy = ty; dy < TRANSPOSE_TILE; dy += TRANSPOSE_ROWS) {
            const int m = m0 + dy, n = n0 + tx;
            if (m < M && n < N)
                tile[dy][tx] = ld(src[(int64_t)m * N + n]);
        }
        __syncthreads();
        for (int dy = ty; dy < TRANSPOSE_TILE; dy += TRANSPOSE_ROWS) {
            const int n = n0 + dy, m = m0 + tx;
            if (n < N && m < M)
                dst[(int64_t)n * M + m] = st<T>(tile[tx][dy]);
        }
        __syncthreads();
    }
}

// out[r2, x2] = inp[r2 / 2, x2 / 2] over output rows r2 of 2W: output row
// 2y + dy of plane (b, c) is row (b, c, 2y + dy), whose half is input row
// (b, c, y).
template <typename T>
__global__ void upsample_nearest2x_kernel(T *out, const T *inp, int W, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x, W2 = 2 * (int64_t)W;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t r2 = idiv(i, W2);
        const int64_t x2 = i - r2 * W2;
        out[i] = inp[(r2 >> 1) * W + (x2 >> 1)];
    }
}

} // namespace

extern "C" int64_t cuda_conv2d_scratch(int C, int H, int W, int k, int stride, int pad_lo,
                                       int pad_hi)
{
    if (conv_is_product(k, stride, pad_lo, pad_hi))
        return 0;
    const conv_geom g = conv_geom_of(C, H, W, k, stride, pad_lo, pad_hi);
    const int64_t P = conv_block_pixels(g);
    return conv_stage_offset(g, P) + CONV_OC_BLOCK * P;
}

extern "C" void cuda_conv2d_forward(struct kctx *ctx, void *out, const void *inp,
                                    const void *weight, const void *bias, float *scratch,
                                    enum kdtype dt, int B, int C, int H, int W, int OC, int k,
                                    int stride, int pad_lo, int pad_hi)
{
    const conv_geom g = conv_geom_of(C, H, W, k, stride, pad_lo, pad_hi);
    if ((int64_t)B * OC * g.plane <= 0)
        return;
    if (conv_is_product(k, stride, pad_lo, pad_hi)) {
        conv_product(ctx, out, inp, weight, bias, dt, B, C, OC, g);
        return;
    }
    const int64_t P = conv_block_pixels(g), total = (int64_t)B * g.plane;
    float *stage = scratch + conv_stage_offset(g, P);
    cudaStream_t stream = cuda_stream_of(ctx);
    for (int64_t p0 = 0; p0 < total; p0 += P) {
        const int pn = (int)(total - p0 < P ? total - p0 : P);
        const int64_t ncol = g.K * pn;
        DISPATCH_DTYPE(dt, T, {
            auto fn = conv_im2col_kernel<T>;
            KLAUNCH(fn, cuda_blocks_for(ncol, CONV_THREADS), CONV_THREADS, 0, stream,
                    (T *)scratch, (const T *)inp, g, p0, pn);
        });
        for (int oc0 = 0; oc0 < OC; oc0 += CONV_OC_BLOCK) {
            const int ocn = OC - oc0 < CONV_OC_BLOCK ? OC - oc0 : CONV_OC_BLOCK;
            conv_block_product(ctx, stage, weight, scratch, dt, g.K, oc0, ocn, pn);
            const int64_t nst = (int64_t)ocn * pn;
            DISPATCH_DTYPE(dt, T, {
                auto fn = conv_store_kernel<T>;
                KLAUNCH(fn, cuda_blocks_for(nst, CONV_THREADS), CONV_THREADS, 0, stream,
                        (T *)out, (const float *)stage, (const T *)bias, g, OC, oc0, ocn, p0,
                        pn);
            });
        }
    }
}

extern "C" void cuda_upsample_nearest2x_forward(struct kctx *ctx, void *out, const void *inp,
                                                enum kdtype dt, int B, int C, int H, int W)
{
    const int64_t n = (int64_t)B * C * H * W * 4;
    if (n <= 0)
        return;
    DISPATCH_DTYPE(dt, T, {
        auto fn = upsample_nearest2x_kernel<T>;
        KLAUNCH(fn, cuda_blocks_for(n, CONV_THREADS), CONV_THREADS, 0, cuda_stream_of(ctx),
                (T *)out, (const T *)inp, W, n);
    });
}

extern "C" void cuda_transpose_forward(struct kctx *ctx, void *out, const void *inp,
                                       enum kdtype dt, int B, int M, int N)
{
    if ((int64_t)B * M * N <= 0)
        return;
    const int64_t tiles_m = ((int64_t)M + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    const int64_t tiles_n = ((int64_t)N + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    const int64_t tiles_img = tiles_m * tiles_n, tiles = (int64_t)B * tiles_img;
    const unsigned blocks = (unsigned)(tiles < 65536 ? tiles : 65536);
    const dim3 block(TRANSPOSE_TILE, TRANSPOSE_ROWS);
    DISPATCH_DTYPE(dt, T, {
        auto fn = transpose_kernel<T>;
        KLAUNCH(fn, blocks, block, 0, cuda_stream_of(ctx), (T *)out, (const T *)inp, M, N,
                tiles_n, tiles_img, tiles);
    });
}
