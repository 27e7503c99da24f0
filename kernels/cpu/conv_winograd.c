/* 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3)
 * (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015):
 * each 2x2 block of output pixels is computed from the 4x4 input tile under
 * it with 16 multiplies per (input, output) channel pair instead of 36. The
 * VAE spends nearly all its time in 3x3 convolutions, so this is where the
 * CPU's time goes; torch's CPU path computes them directly (im2col or
 * oneDNN), 2.25 times the multiplies.
 *
 * With d the 4x4 input tile, g the 3x3 filter and
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 * the 2x2 output is A^T [(G g G^T) .* (B^T d B)] A. Summed over channels,
 * the elementwise product becomes 16 matrix products, one per position xi
 * of the 4x4 transformed tile:
 *   M_xi[OC, tiles] = U_xi[OC, C] V_xi[C, tiles]
 * with U = G g G^T (the filters, transformed once per call) and V = B^T d B
 * (the tiles). Tiles go in blocks sized to the scratch budget, so the 4x
 * expansion of V never covers a whole 1024-px image.
 *
 * Numerics: every transform coefficient is 0, +-1 or +-1/2, so the
 * transforms round no more than a few additions do; the products are f32
 * sgemm over C as in the direct path. The difference from the direct
 * convolution stays at a few ulps of the output's magnitude (test_conv's
 * winograd tests bound it). */
#include "kernels/cpu/cpu.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* Floats of V and M per block of tiles: 16 MiB, as the im2col path. */
#define WINOGRAD_BUDGET ((int64_t)4 << 20)
#define WINOGRAD_ALIGN 16

struct wino_geom {
    int C, H, W, OC, pad; /* pad: before each axis */
    int Ho, Wo, th, tw;   /* output size; tiles per column and row */
    int64_t tiles;        /* per image */
    int64_t block;        /* tiles per block */
};

static struct wino_geom wino_geom_of(int C, int H, int W, int OC, int pad_lo, int pad_hi)
{
    struct wino_geom g = {C, H, W, OC, pad_lo, 0, 0, 0, 0, 0, 0};
    g.Ho = H + pad_lo + pad_hi - 2;
    g.Wo = W + pad_lo + pad_hi - 2;
    g.th = (g.Ho + 1) / 2;
    g.tw = (g.Wo + 1) / 2;
    g.tiles = (int64_t)g.th * g.tw;
    int64_t block = WINOGRAD_BUDGET / (16 * ((int64_t)C + OC));
    block = block / WINOGRAD_ALIGN * WINOGRAD_ALIGN;
    if (block < WINOGRAD_ALIGN)
        block = WINOGRAD_ALIGN;
    g.block = block < g.tiles ? block : g.tiles;
    return g;
}

int cpu_conv3x3_winograd_applies(int C, int k, int stride, int pad_lo, int pad_hi)
{
    /* Below 8 input channels (an RGB conv_in) the tile transforms cost as
     * much as the multiplies saved. */
    return k == 3 && stride == 1 && C >= 8 && pad_lo >= 0 && pad_lo <= 2 && pad_hi >= 0 &&
           pad_hi <= 2;
}

/* U[16][OC][C], then V[16][C][block], then M[16][OC][block]. */
int64_t cpu_conv3x3_winograd_scratch(int C, int H, int W, int OC, int pad_lo, int pad_hi)
{
    struct wino_geom g = wino_geom_of(C, H, W, OC, pad_lo, pad_hi);
    return 16 * ((int64_t)OC * C + ((int64_t)C + OC) * g.block);
}

/* U_xi[oc][c] = (G g G^T)[xi] for every filter g = weight[oc][c][3][3]. */
static void wino_filters(float *U, const float *weight, int OC, int C)
{
    const int64_t n = (int64_t)OC * C;
#pragma omp parallel for schedule(static) if (n * 16 >= CPU_PARALLEL_MIN)
    for (int64_t f = 0; f < n; f++) {
        const float *g = weight + f * 9;
        float t[4][3]; /* G g: rows of the filter combined */
        for (int j = 0; j < 3; j++) {
            const float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
            t[0][j] = g0;
            t[1][j] = 0.5f * (g0 + g1 + g2);
            t[2][j] = 0.5f * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        for (int i = 0; i < 4; i++) { /* (G g) G^T: columns combined */
            const float a = t[i][0], b = t[i][1], c = t[i][2];
            U[(int64_t)(i * 4 + 0) * n + f] = a;
            U[(int64_t)(i * 4 + 1) * n + f] = 0.5f * (a + b + c);
            U[(int64_t)(i * 4 + 2) * n + f] = 0.5f * (a - b + c);
            U[(int64_t)(i * 4 + 3) * n + f] = c;
        }
    }
}

/* Tiles of one tile row taken at a time: the row transforms run over
 * whole padded input rows, the column transforms over the tiles of a row,
 * so both are loops the compiler vectorises. */
#define WINOGRAD_ROW_TILES 256

/* The run of tiles from tile t that lies in one tile row (ty, from tile
 * column tx), at most WINOGRAD_ROW_TILES long and ending by tile end. */
static int wino_row_span(const struct wino_geom *g, int64_t t, int64_t end, int *ty, int *tx)
{
    *ty = (int)(t / g->tw), *tx = (int)(t % g->tw);
    int64_t n = g->tw - *tx;
    if (n > WINOGRAD_ROW_TILES)
        n = WINOGRAD_ROW_TILES;
    return (int)(n < end - t ? n : end - t);
}

/* One channel's tiles [t0, t0 + nt) of plane[H,W] into Vc (V_xi[c] for
 * xi = 0, streams cs apart); taps in the padding or past the edge read 0.
 * Cloned per vector ISA, so it runs outside the parallel region's body. */
CPU_VECTOR_CLONES static void wino_tiles_channel(float *Vc, const float *plane, const struct wino_geom *g,
                                                 int64_t t0, int64_t nt, int64_t cs)
{
    float d[4][2 * WINOGRAD_ROW_TILES + 2], r[4][2 * WINOGRAD_ROW_TILES + 2];
    for (int64_t t = t0; t < t0 + nt;) {
        int ty, tx;
        const int n = wino_row_span(g, t, t0 + nt, &ty, &tx);
        const int y0 = ty * 2 - g->pad, x0 = tx * 2 - g->pad, len = 2 * n + 2;
        /* The tile row's 4 input rows, x0 .. x0 + len, zero outside the
         * image: one copy of the part inside, so the loops below have no
         * bounds to test. */
        const int in_lo = x0 < 0 ? -x0 : 0;
        const int in_hi = g->W - x0 < len ? g->W - x0 : len;
        for (int i = 0; i < 4; i++) {
            const int y = y0 + i;
            if (y < 0 || y >= g->H || in_hi <= in_lo) {
                memset(d[i], 0, (size_t)len * sizeof d[i][0]);
                continue;
            }
            memset(d[i], 0, (size_t)in_lo * sizeof d[i][0]);
            memcpy(d[i] + in_lo, plane + (int64_t)y * g->W + x0 + in_lo,
                   (size_t)(in_hi - in_lo) * sizeof d[i][0]);
            memset(d[i] + in_hi, 0, (size_t)(len - in_hi) * sizeof d[i][0]);
        }
#pragma omp simd
        for (int j = 0; j < len; j++) { /* B^T d, over the whole rows */
            r[0][j] = d[0][j] - d[2][j];
            r[1][j] = d[1][j] + d[2][j];
            r[2][j] = d[2][j] - d[1][j];
            r[3][j] = d[1][j] - d[3][j];
        }
        float *v = Vc + (t - t0);
        for (int i = 0; i < 4; i++) { /* (B^T d) B, tile by tile */
            const float *ri = r[i];
            float *v0 = v + (i * 4 + 0) * cs, *v1 = v + (i * 4 + 1) * cs;
            float *v2 = v + (i * 4 + 2) * cs, *v3 = v + (i * 4 + 3) * cs;
            /* The streams never overlap each other or r: simd says so. */
#pragma omp simd
            for (int q = 0; q < n; q++) {
                const float a = ri[2 * q], b = ri[2 * q + 1], e = ri[2 * q + 2],
                            f = ri[2 * q + 3];
                v0[q] = a - e;
                v1[q] = b + e;
                v2[q] = e - b;
                v3[q] = b - f;
            }
        }
        t += n;
    }
}

/* V_xi[c][t - t0] = (B^T d B)[xi] for tiles [t0, t0 + nt) of img[C,H,W]. */
static void wino_tiles(float *V, const float *img, const struct wino_geom *g, int64_t t0,
                       int64_t nt)
{
    const int64_t nb = g->block, cs = (int64_t)g->C * nb; /* V's strides: xi, c */
#pragma omp parallel for schedule(static) if ((int64_t)g->C * nt * 16 >= CPU_PARALLEL_MIN)
    for (int c = 0; c < g->C; c++)
        wino_tiles_channel(V + (int64_t)c * nb, img + (int64_t)c * g->H * g->W, g, t0, nt, cs);
}

/* M_xi[OC, nt] = U_xi[OC, C] V_xi[C, nt]: the 16 products, one per thread
 * at a time (each a sequential sgemm, so no sums meet across threads). */
static void wino_products(float *M, const float *U, const float *V, const struct wino_geom *g,
                          int64_t nt)
{
    const int64_t nb = g->block;
    const int serial = (int64_t)g->OC * g->C * nt * 16 < CPU_PARALLEL_MIN;
#pragma omp parallel for schedule(static) if (!serial)
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->OC, (int)nt, g->C, 1.0f,
                    U + (int64_t)xi * g->OC * g->C, g->C, V + (int64_t)xi * g->C * nb, (int)nb,
                    0.0f, M + (int64_t)xi * g->OC * nb, (int)nb);
}

/* One output channel's tiles [t0, t0 + nt): plane[Ho,Wo] (+)= A^T m A with
 * m from Moc (M_xi[oc] for xi = 0, streams os apart), clipped at the
 * output's edge. Cloned per vector ISA, as wino_tiles_channel. */
CPU_VECTOR_CLONES static void wino_outputs_channel(float *plane, const float *Moc, const struct wino_geom *g,
                                                   int64_t t0, int64_t nt, int64_t os, int accumulate)
{
    float y[2][2 * WINOGRAD_ROW_TILES];
    for (int64_t t = t0; t < t0 + nt;) {
        int ty, tx;
        const int n = wino_row_span(g, t, t0 + nt, &ty, &tx);
        const float *m = Moc + (t - t0);
        /* A^T m A over the run, by stream (each m + xi * os is
         * contiguous in q), even and odd output columns apart so the
         * loop vectorises; then interleaved. */
        float e[2][WINOGRAD_ROW_TILES], o[2][WINOGRAD_ROW_TILES];
#pragma omp simd
        for (int q = 0; q < n; q++) {
            float s0[4], s1[4];
            for (int j = 0; j < 4; j++) {
                const float m0 = m[(0 * 4 + j) * os + q], m1 = m[(1 * 4 + j) * os + q];
                const float m2 = m[(2 * 4 + j) * os + q], m3 = m[(3 * 4 + j) * os + q];
                s0[j] = m0 + m1 + m2;
                s1[j] = m1 - m2 - m3;
            }
            e[0][q] = s0[0] + s0[1] + s0[2];
            o[0][q] = s0[1] - s0[2] - s0[3];
            e[1][q] = s1[0] + s1[1] + s1[2];
            o[1][q] = s1[1] - s1[2] - s1[3];
        }
        for (int i = 0; i < 2; i++)
            for (int q = 0; q < n; q++) {
                y[i][2 * q] = e[i][q];
                y[i][2 * q + 1] = o[i][q];
            }
        const int x0 = tx * 2, w = g->Wo - x0 < 2 * n ? g->Wo - x0 : 2 * n;
        for (int i = 0; i < 2 && ty * 2 + i < g->Ho; i++) {
            float *row = plane + (int64_t)(ty * 2 + i) * g->Wo + x0;
            if (accumulate)
                for (int x = 0; x < w; x++)
                    row[x] += y[i][x];
            else
                memcpy(row, y[i], (size_t)w * sizeof *row);
        }
        t += n;
    }
}

/* out[oc] (+)= A^T m A for each tile and output channel. */
static void wino_outputs(float *out, const float *M, const struct wino_geom *g, int64_t t0,
                         int64_t nt, int accumulate)
{
    const int64_t nb = g->block, os = (int64_t)g->OC * nb; /* M's stride per xi */
#pragma omp parallel for schedule(static) if ((int64_t)g->OC * nt * 16 >= CPU_PARALLEL_MIN)
    for (int oc = 0; oc < g->OC; oc++)
        wino_outputs_channel(out + (int64_t)oc * g->Ho * g->Wo, M + (int64_t)oc * nb, g, t0, nt, os,
                             accumulate);
}

/* out[B,OC,Ho,Wo] (+)= conv3x3(inp[B,C,H,W], weight[OC,C,3,3]), stride 1;
 * accumulate: out already holds the bias. */
void cpu_conv3x3_winograd(float *out, const float *inp, const float *weight, float *scratch,
                          int B, int C, int H, int W, int OC, int pad_lo, int pad_hi,
                          int accumulate)
{
    const struct wino_geom g = wino_geom_of(C, H, W, OC, pad_lo, pad_hi);
    if (g.tiles <= 0)
        return;
    float *U = scratch;
    float *V = U + 16 * (int64_t)OC * C;
    float *M = V + 16 * (int64_t)C * g.block;
    wino_filters(U, weight, OC, C);
    const int64_t in_img = (int64_t)C * H * W, out_img = (int64_t)OC * g.Ho * g.Wo;
    for (int b = 0; b < B; b++)
        for (int64_t t0 = 0; t0 < g.tiles; t0 += g.block) {
            const int64_t nt = g.tiles - t0 < g.block ? g.tiles - t0 : g.block;
            wino_tiles(V, inp + b * in_img, &g, t0, nt);
            wino_products(M, U, V, &g, nt);
            wino_outputs(out + b * out_img, M, &g, t0, nt, accumulate);
        }
}
