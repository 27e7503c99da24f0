/* kernels, conv family: the CPU backend's conv2d, nearest 2x upsampling
 * and per-batch transpose against direct loops written here (conv within
 * 1e-5 relative, the permutations exact), Winograd's 3x3 path included; a
 * conv cut into several blocks of output rows or of tiles; the scratch staying bounded for a 1024x1024 image of 512
 * channels on both backends; the dispatcher refusing a broken call. */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* A purpose of these tests' own. */
#define CONV_TEST_PURPOSE 0xc0471u

#define randn(n, seed, scale) test_normal(n, seed, scale, CONV_TEST_PURPOSE)
#define filled test_filled

#define cpu_ctx test_cpu_ctx

struct conv_case {
    int B, C, H, W, OC, k, stride, pad_lo, pad_hi, bias;
};

static int out_size(int n, const struct conv_case *c)
{
    return (n + c->pad_lo + c->pad_hi - c->k) / c->stride + 1;
}

/* The definition, in double: every tap of every output pixel. */
static double *conv_direct(const struct conv_case *c, const float *x, const float *w,
                           const float *bias)
{
    int Ho = out_size(c->H, c), Wo = out_size(c->W, c), k = c->k;
    double *y = malloc((size_t)c->B * c->OC * Ho * Wo * sizeof *y);
    for (int b = 0; b < c->B; b++)
        for (int o = 0; o < c->OC; o++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int ch = 0; ch < c->C; ch++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * c->stride - c->pad_lo + ky;
                                int ix = ox * c->stride - c->pad_lo + kx;
                                if (iy < 0 || iy >= c->H || ix < 0 || ix >= c->W)
                                    continue;
                                acc += (double)w[((o * c->C + ch) * k + ky) * k + kx] *
                                       x[(((size_t)b * c->C + ch) * c->H + iy) * c->W + ix];
                            }
                    y[(((size_t)b * c->OC + o) * Ho + oy) * Wo + ox] = acc;
                }
    return y;
}

/* The worst |got - want| over (|want| + rms of want): relative to the
 * output's scale, so that an output near 0 by cancellation is not asked
 * for digits it cannot have. */
static double worst_error(const float *got, const double *want, size_t n)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += want[i] * want[i];
    double rms = n ? sqrt(ss / (double)n) : 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / (fabs(want[i]) + rms + 1e-30);
        if (!(e <= worst))
            worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

/* Runs c on the CPU and returns the worst relative error against the loop. */
static double conv_error(const struct conv_case *c, int threads, int64_t *scratch_n)
{
    struct kctx ctx = cpu_ctx(threads);
    size_t nx = (size_t)c->B * c->C * c->H * c->W, nw = (size_t)c->OC * c->C * c->k * c->k;
    size_t ny = (size_t)c->B * c->OC * out_size(c->H, c) * out_size(c->W, c);
    float *x = randn(nx, 1, 1.0f), *w = randn(nw, 2, 1.0f / sqrtf((float)(c->C * c->k * c->k)));
    float *bias = c->bias ? randn((size_t)c->OC, 3, 0.5f) : NULL;
    int64_t ns = k_conv2d_scratch(&ctx, c->C, c->H, c->W, c->OC, c->k, c->stride, c->pad_lo, c->pad_hi);
    /* NaN: a block reading scratch it did not write shows in the output. */
    float *scratch = ns > 0 ? filled((size_t)ns, NAN) : NULL;
    float *y = filled(ny, NAN);
    k_conv2d_forward(&ctx, tensor_f32(y, (int64_t)ny), tensor_f32(x, (int64_t)nx),
                     tensor_f32(w, (int64_t)nw),
                     bias ? tensor_f32(bias, c->OC) : tensor_none(), tensor_f32(scratch, ns),
                     c->B, c->C, c->H, c->W, c->OC, c->k, c->stride, c->pad_lo, c->pad_hi);
    double *want = conv_direct(c, x, w, bias);
    double err = worst_error(y, want, ny);
    if (scratch_n)
        *scratch_n = ns;
    free(x);
    free(w);
    free(bias);
    free(scratch);
    free(y);
    free(want);
    kctx_free(&ctx);
    return err;
}

#define CHECK_CONV(c, threads)                                                                  \
    do {                                                                                        \
        double e_ = conv_error(&(c), threads, NULL);                                            \
        if (!(e_ <= 1e-5))                                                                      \
            test_fail(__FILE__, __LINE__,                                                       \
                      "conv B%d C%d %dx%d -> OC%d k%d s%d pad %d,%d bias %d: error %.3g",       \
                      (c).B, (c).C, (c).H, (c).W, (c).OC, (c).k, (c).stride, (c).pad_lo,        \
                      (c).pad_hi, (c).bias, e_);                                                \
    } while (0)

TEST(conv2d_forward_matches_direct_loop)
{
    static const struct conv_case cases[] = {
        /* 3x3 stride 1, pad 1,1: conv_in's 3 -> 8, and 8 -> 12 */
        {2, 3, 7, 5, 8, 3, 1, 1, 1, 1},
        {1, 8, 6, 9, 12, 3, 1, 1, 1, 1},
        {1, 8, 6, 9, 12, 3, 1, 1, 1, 0},
        /* no padding */
        {1, 4, 6, 7, 5, 3, 1, 0, 0, 1},
        /* the downsample after F.pad(x, (0, 1, 0, 1)): even and odd sizes */
        {2, 4, 8, 6, 8, 3, 2, 0, 1, 1},
        {1, 3, 7, 9, 8, 3, 2, 0, 1, 1},
        {1, 3, 1, 1, 2, 3, 2, 1, 1, 1},
        /* 1x1, the plain product: with and without bias */
        {2, 8, 5, 7, 12, 1, 1, 0, 0, 1},
        {2, 8, 5, 7, 12, 1, 1, 0, 0, 0},
        /* a 1x1 with padding goes through im2col */
        {1, 3, 4, 4, 2, 1, 1, 1, 1, 1},
        /* 3x3 stride 1 from 8 channels is Winograd's: odd sizes clip the
         * last tile row and column; every padding */
        {1, 8, 7, 9, 5, 3, 1, 1, 1, 1},
        {2, 9, 5, 4, 3, 3, 1, 0, 0, 1},
        {1, 16, 3, 3, 4, 3, 1, 2, 2, 1},
        {1, 8, 6, 9, 12, 3, 1, 0, 1, 0},
        {1, 12, 1, 1, 3, 3, 1, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_CONV(cases[i], 1);
        CHECK_CONV(cases[i], 2);
    }
}

/* Enough channels and columns that a block holds fewer rows than the
 * output has, so the products land at row offsets of their planes, the
 * last block short (37 rows). */
TEST(conv2d_forward_in_several_row_blocks)
{
    static const struct conv_case cases[] = {
        {1, 256, 37, 64, 3, 3, 1, 1, 1, 1},
        {2, 512, 74, 64, 2, 3, 2, 0, 1, 1}, /* Ho 37, Wo 32 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct conv_case *c = &cases[i];
        int64_t ns = 0;
        double e = conv_error(c, 2, &ns);
        int64_t full = (int64_t)c->C * c->k * c->k * out_size(c->H, c) * out_size(c->W, c);
        if (!(ns < full))
            test_fail(__FILE__, __LINE__, "case %zu: scratch %lld is not below the full %lld", i,
                      (long long)ns, (long long)full);
        if (!(e <= 1e-5))
            test_fail(__FILE__, __LINE__, "case %zu: error %.3g", i, e);
    }
}

/* Winograd's tiles in two blocks, the last short: 8 -> 8 channels give
 * blocks of 16,384 tiles, and a 256x260 output has 16,640. */
TEST(conv2d_winograd_in_several_tile_blocks)
{
    const struct conv_case c = {1, 8, 256, 260, 8, 3, 1, 1, 1, 1};
    int64_t ns = 0;
    double e = conv_error(&c, 2, &ns);
    const int64_t tiles = 128 * 130;
    if (!(ns < 16 * 8 * 2 * tiles))
        test_fail(__FILE__, __LINE__, "scratch %lld holds every tile", (long long)ns);
    if (!(e <= 1e-5))
        test_fail(__FILE__, __LINE__, "error %.3g", e);
}

/* Planning asks with a context that only names its device. */
TEST(conv2d_scratch_is_bounded)
{
    const int64_t full = (int64_t)512 * 9 * 1024 * 1024; /* 4.8 G floats */
    const int64_t bound = (int64_t)64 << 20;
    for (int d = 0; d < 2; d++) {
        struct kctx plan = {.device = d ? DEVICE_CUDA : DEVICE_CPU};
        int64_t s1 = k_conv2d_scratch(&plan, 512, 1024, 1024, 512, 3, 1, 1, 1);
        int64_t s2 = k_conv2d_scratch(&plan, 512, 1024, 1024, 512, 3, 2, 0, 1);
        CHECK(s1 > 0 && s1 <= bound && s1 < full);
        CHECK(s2 > 0 && s2 <= bound);
        CHECK_INT(k_conv2d_scratch(&plan, 512, 1024, 1024, 512, 1, 1, 0, 0), 0);
        /* a small layer needs no more than its whole im2col plus a stage */
        int64_t small = k_conv2d_scratch(&plan, 3, 8, 8, 128, 3, 1, 1, 1);
        CHECK(small >= 27 * 64 && small <= 27 * 64 + 300 * 64);
    }
}

TEST(upsample_nearest2x_matches_loop)
{
    struct kctx ctx = cpu_ctx(0);
    static const int shapes[][4] = {{2, 3, 4, 5}, {1, 1, 1, 1}, {1, 2, 7, 3}, {1, 4, 64, 96}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], C = shapes[s][1], H = shapes[s][2], W = shapes[s][3];
        size_t n = (size_t)B * C * H * W;
        float *x = randn(n, 4, 1.0f), *y = filled(4 * n, NAN);
        k_upsample_nearest2x_forward(&ctx, tensor_f32(y, 4 * (int64_t)n),
                                     tensor_f32(x, (int64_t)n), B, C, H, W);
        size_t bad = 0;
        for (int p = 0; p < B * C; p++)
            for (int oy = 0; oy < 2 * H; oy++)
                for (int ox = 0; ox < 2 * W; ox++) {
                    float want = x[((size_t)p * H + oy / 2) * W + ox / 2];
                    float got = y[((size_t)p * 2 * H + oy) * 2 * W + ox];
                    bad += memcmp(&got, &want, sizeof got) != 0;
                }
        CHECK_INT(bad, 0);
        free(x);
        free(y);
    }
    kctx_free(&ctx);
}

TEST(transpose_matches_loop_and_inverts)
{
    struct kctx ctx = cpu_ctx(0);
    static const int shapes[][3] = {{2, 8, 12}, {1, 70, 33}, {3, 64, 32}, {2, 1, 5},
                                    {2, 5, 1},  {1, 1, 1},   {2, 300, 129}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], M = shapes[s][1], N = shapes[s][2];
        size_t n = (size_t)B * M * N;
        float *x = randn(n, 5, 1.0f), *y = filled(n, NAN), *z = filled(n, NAN);
        k_transpose_forward(&ctx, tensor_f32(y, (int64_t)n), tensor_f32(x, (int64_t)n), B, M, N);
        k_transpose_forward(&ctx, tensor_f32(z, (int64_t)n), tensor_f32(y, (int64_t)n), B, N, M);
        size_t bad = 0;
        for (int b = 0; b < B; b++)
            for (int m = 0; m < M; m++)
                for (int j = 0; j < N; j++) {
                    float want = x[((size_t)b * M + m) * N + j];
                    float got = y[((size_t)b * N + j) * M + m];
                    bad += memcmp(&got, &want, sizeof got) != 0;
                }
        CHECK_INT(bad, 0);
        CHECK(memcmp(x, z, n * sizeof *x) == 0);
        free(x);
        free(y);
        free(z);
    }
    kctx_free(&ctx);
}

/* ---- the dispatcher refuses broken calls ----------------------------- */


static float buf[4096];

static void a_5x5_kernel(void)
{
    struct kctx ctx = cpu_ctx(1);
    k_conv2d_forward(&ctx, tensor_f32(buf, 16), tensor_f32(buf + 16, 16),
                     tensor_f32(buf + 32, 25), tensor_none(), tensor_f32(buf + 64, 400), 1, 1,
                     4, 4, 1, 5, 1, 2, 2);
}

static void a_short_scratch(void)
{
    struct kctx ctx = cpu_ctx(1);
    /* 1 -> 1 channel, 4x4, 3x3 pad 1: im2col is 9 x 16 */
    k_conv2d_forward(&ctx, tensor_f32(buf, 16), tensor_f32(buf + 16, 16),
                     tensor_f32(buf + 32, 9), tensor_none(), tensor_f32(buf + 64, 100), 1, 1, 4,
                     4, 1, 3, 1, 1, 1);
}

static void a_kernel_past_the_padded_input(void)
{
    struct kctx ctx = cpu_ctx(1);
    k_conv2d_forward(&ctx, tensor_f32(buf, 1), tensor_f32(buf + 16, 2), tensor_f32(buf + 32, 9),
                     tensor_none(), tensor_f32(buf + 64, 100), 1, 1, 1, 2, 1, 3, 1, 0, 0);
}

static void a_transpose_in_place(void)
{
    struct kctx ctx = cpu_ctx(1);
    k_transpose_forward(&ctx, tensor_f32(buf + 8, 64), tensor_f32(buf, 64), 1, 8, 8);
}

static void a_short_upsample_output(void)
{
    struct kctx ctx = cpu_ctx(1);
    k_upsample_nearest2x_forward(&ctx, tensor_f32(buf, 15), tensor_f32(buf + 64, 4), 1, 1, 2,
                                 2);
}

TEST(conv_dispatchers_refuse_broken_calls)
{
    static const struct {
        void (*fn)(void);
        const char *says;
    } calls[] = {
        {a_5x5_kernel, "kernel size 5"},
        {a_short_scratch, "scratch has 100 elements, the shape needs at least 144"},
        {a_kernel_past_the_padded_input, "smaller than the 3x3 kernel"},
        {a_transpose_in_place, "overlap"},
        {a_short_upsample_output, "out has 15 elements"},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        int sig = 0;
        char *text = test_stderr_of(calls[i].fn, &sig);
        CHECK_INT(sig, SIGABRT);
        CHECK_CONTAINS(text, calls[i].says);
        free(text);
    }
}
