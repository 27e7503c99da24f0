/* Convolution and resampling on the CPU, forward only: the layers of the
 * frozen VAE (2-D convolutions, nearest upsampling, and the transposes
 * between channel maps and the tokens its attention reads).
 *
 * A convolution is one product per block of output rows: im2col copies the
 * receptive fields of the block's pixels into scratch as col[C*k*k, rows*Wo]
 * (features in the order (channel, ky, kx) of a flattened Conv2d weight),
 * and out[OC, block] = weight[OC, C*k*k] col is one sgemm whose output rows
 * are Ho*Wo apart, so it lands in the NCHW output where it belongs. The
 * block is as many rows as CONV_COL_BUDGET floats hold (at least one): the
 * full im2col of a 1024x1024 image of 512 channels would be 4.8 G floats.
 * A 1x1 stride-1 conv is already a product, weight[OC,C] inp[C,H*W] per
 * image, and needs no scratch; a 3x3 stride-1 conv of 8 or more input
 * channels goes by Winograd's F(2x2, 3x3) instead (conv_winograd.c).
 *
 * Threads: im2col splits the feature rows, the product splits its output
 * the way gemm.c does (each thread one sequential sgemm over the whole K,
 * so no sums meet across threads). */
#include "kernels/cpu/cpu.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* Floats of im2col per block: 16 MiB, a few output rows of the VAE's widest
 * layers and whole images of its small ones. */
#define CONV_COL_BUDGET ((int64_t)4 << 20)
/* As gemm.c: below this many multiply-adds one thread is quicker, and
 * thread blocks start on multiples of the widest sgemm micro-tile. */
#define CONV_GEMM_PARALLEL_MIN (1 << 20)
#define CONV_GEMM_ALIGN 16

struct conv_geom {
    int C, H, W, k, stride, pad; /* pad: before each axis (pad_hi only sets Ho, Wo) */
    int Ho, Wo;
    int64_t K; /* features per output pixel, C*k*k */
};

static struct conv_geom conv_geom_of(int C, int H, int W, int k, int stride, int pad_lo,
                                     int pad_hi)
{
    struct conv_geom g = {C, H, W, k, stride, pad_lo, 0, 0, (int64_t)C * k * k};
    g.Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    g.Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    return g;
}

static int conv_is_product(int k, int stride, int pad_lo, int pad_hi)
{
    return k == 1 && stride == 1 && pad_lo == 0 && pad_hi == 0;
}

/* Output rows per im2col block. */
static int conv_block_rows(const struct conv_geom *g)
{
    int64_t rows = CONV_COL_BUDGET / (g->K * g->Wo);
    if (rows < 1)
        rows = 1;
    return rows < g->Ho ? (int)rows : g->Ho;
}

int64_t cpu_conv2d_scratch(int C, int H, int W, int OC, int k, int stride, int pad_lo, int pad_hi)
{
    if (conv_is_product(k, stride, pad_lo, pad_hi))
        return 0;
    if (cpu_conv3x3_winograd_applies(C, k, stride, pad_lo, pad_hi))
        return cpu_conv3x3_winograd_scratch(C, H, W, OC, pad_lo, pad_hi);
    struct conv_geom g = conv_geom_of(C, H, W, k, stride, pad_lo, pad_hi);
    return g.K * conv_block_rows(&g) * g.Wo;
}

/* col[K, rows*Wo] for output rows [r0, r0 + rows) of one image img[C,H,W];
 * taps that fall in the padding read 0. */
static void conv_im2col(float *col, const float *img, const struct conv_geom *g, int r0,
                        int rows)
{
    const int k = g->k, s = g->stride, Wo = g->Wo;
    const int64_t n = (int64_t)rows * Wo;
#pragma omp parallel for schedule(static) if (g->K * n >= CPU_PARALLEL_MIN)
    for (int64_t f = 0; f < g->K; f++) {
        const int c = (int)(f / (k * k)), ky = (int)(f / k % k), kx = (int)(f % k);
        const int shift = kx - g->pad; /* ix = ox * s + shift */
        /* The output columns whose tap lands inside the row: [lo, hi). */
        int lo = shift < 0 ? (-shift + s - 1) / s : 0;
        int hi = g->W - 1 - shift < 0 ? 0 : (g->W - 1 - shift) / s + 1;
        if (hi > Wo)
            hi = Wo;
        if (lo > hi)
            lo = hi;
        const float *plane = img + (int64_t)c * g->H * g->W;
        for (int r = 0; r < rows; r++) {
            float *d = col + f * n + (int64_t)r * Wo;
            const int iy = (r0 + r) * s - g->pad + ky;
            if (iy < 0 || iy >= g->H) {
                memset(d, 0, (size_t)Wo * sizeof *d);
                continue;
            }
            const float *src = plane + (int64_t)iy * g->W;
            memset(d, 0, (size_t)lo * sizeof *d);
            if (s == 1)
                memcpy(d + lo, src + lo + shift, (size_t)(hi - lo) * sizeof *d);
            else
                for (int ox = lo; ox < hi; ox++)
                    d[ox] = src[ox * s + shift];
            memset(d + hi, 0, (size_t)(Wo - hi) * sizeof *d);
        }
    }
}

/* c[OC, n] (rows ldc apart) = w[OC, K] b[K, n] + beta c, split between
 * threads along the longer side of c, on CONV_GEMM_ALIGN boundaries. */
static void conv_gemm(float *c, int64_t ldc, const float *w, const float *b, int OC, int n, int K,
                      float beta)
{
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if ((int64_t)OC * n * K < CONV_GEMM_PARALLEL_MIN)
        threads = 1;
    const int split_oc = OC >= n;
    const int len = split_oc ? OC : n;
    int64_t units = ((int64_t)len + CONV_GEMM_ALIGN - 1) / CONV_GEMM_ALIGN;
    int parts = units < threads ? (int)units : threads;
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int p = 0; p < parts; p++) {
        int64_t lo = units * p / parts * CONV_GEMM_ALIGN;
        int64_t hi = units * (p + 1) / parts * CONV_GEMM_ALIGN;
        if (hi > len)
            hi = len;
        if (hi <= lo)
            continue;
        if (split_oc)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(hi - lo), n, K, 1.0f,
                        w + lo * K, K, b, n, beta, c + lo * ldc, (int)ldc);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)(hi - lo), K, 1.0f,
                        w, K, b + lo, n, beta, c + lo, (int)ldc);
    }
}

/* out[B,OC,Ho,Wo] = conv2d(inp[B,C,H,W], weight[OC,C,k,k]) + bias[OC] */
void cpu_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                        float *scratch, int B, int C, int H, int W, int OC, int k, int stride,
                        int pad_lo, int pad_hi)
{
    const struct conv_geom g = conv_geom_of(C, H, W, k, stride, pad_lo, pad_hi);
    const int64_t plane = (int64_t)g.Ho * g.Wo;
    if ((int64_t)B * OC * plane <= 0)
        return;
    /* Every output plane starts as its bias and the products add onto it,
     * which saves a second pass over out. */
    float beta = 0.0f;
    if (bias) {
        const int64_t planes = (int64_t)B * OC;
#pragma omp parallel for schedule(static) if (planes * plane >= CPU_PARALLEL_MIN)
        for (int64_t p = 0; p < planes; p++) {
            float *o = out + p * plane;
            const float v = bias[p % OC];
            for (int64_t i = 0; i < plane; i++)
                o[i] = v;
        }
        beta = 1.0f;
    }
    const int64_t in_img = (int64_t)C * H * W, out_img = (int64_t)OC * plane;
    if (conv_is_product(k, stride, pad_lo, pad_hi)) {
        /* out[b][OC, H*W] = weight[OC, C] inp[b][C, H*W] */
        for (int b = 0; b < B; b++)
            conv_gemm(out + b * out_img, plane, weight, inp + b * in_img, OC, (int)plane, C,
                      beta);
        return;
    }
    if (cpu_conv3x3_winograd_applies(C, k, stride, pad_lo, pad_hi)) {
        cpu_conv3x3_winograd(out, inp, weight, scratch, B, C, H, W, OC, pad_lo, pad_hi,
                             bias != NULL);
        return;
    }
    const int rows = conv_block_rows(&g);
    for (int b = 0; b < B; b++)
        for (int r0 = 0; r0 < g.Ho; r0 += rows) {
            const int nr = g.Ho - r0 < rows ? g.Ho - r0 : rows;
            conv_im2col(scratch, inp + b * in_img, &g, r0, nr);
            /* out[b][OC, rows of the block] = weight[OC, K] col[K, nr*Wo] */
            conv_gemm(out + b * out_img + (int64_t)r0 * g.Wo, plane, weight, scratch, OC,
                      nr * g.Wo, (int)g.K, beta);
        }
}

/* out[B,C,2H,2W]: each input row becomes two output rows of doubled pixels. */
void cpu_upsample_nearest2x_forward(float *out, const float *inp, int B, int C, int H, int W)
{
    const int64_t rows = (int64_t)B * C * H;
#pragma omp parallel for schedule(static) if (rows * W * 4 >= CPU_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *src = inp + r * W;
        float *d = out + r * 4 * W; /* output rows 2r and 2r + 1, each 2W long */
        for (int x = 0; x < W; x++)
            d[2 * x] = d[2 * x + 1] = src[x];
        memcpy(d + 2 * W, d, (size_t)2 * W * sizeof *d);
    }
}

/* Tiles small enough that a tile's source rows and destination rows both
 * stay in L1 while it is copied. */
#define TRANSPOSE_TILE 32

/* out[b][n][m] = inp[b][m][n] */
void cpu_transpose_forward(float *out, const float *inp, int B, int M, int N)
{
    const int64_t tm = ((int64_t)M + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    const int64_t tn = ((int64_t)N + TRANSPOSE_TILE - 1) / TRANSPOSE_TILE;
    const int64_t tiles = (int64_t)B * tm * tn, mn = (int64_t)M * N;
#pragma omp parallel for schedule(static) if ((int64_t)B * mn >= CPU_PARALLEL_MIN)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t b = t / (tm * tn), r = t % (tm * tn);
        const int m0 = (int)(r / tn) * TRANSPOSE_TILE, n0 = (int)(r % tn) * TRANSPOSE_TILE;
        const int m1 = M - m0 < TRANSPOSE_TILE ? M : m0 + TRANSPOSE_TILE;
        const int n1 = N - n0 < TRANSPOSE_TILE ? N : n0 + TRANSPOSE_TILE;
        const float *src = inp + b * mn;
        float *dst = out + b * mn;
        for (int n = n0; n < n1; n++)
            for (int m = m0; m < m1; m++)
                dst[(int64_t)n * M + m] = src[(int64_t)m * N + n];
    }
}
