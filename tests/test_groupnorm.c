/* GroupNorm (k_groupnorm_forward) on the CPU backend against a naive
 * double-precision GroupNorm written here: with and without SiLU, G = 1 and
 * G = C, HW odd and 1, in place equal to out of place, the same bits for any
 * thread count, and a VAE-sized group (512 channels of 64 x 64) of values
 * around 1000 +- 1, where a float mean or a one-pass variance would lose the
 * spread. Also the attention a VAE's mid-block needs: one head of 512, its
 * scratch far below T x T at T = 16384, and the CPU's output against a naive
 * softmax(Q K^T / sqrt(HS)) V. */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"

#include <stdio.h>
#include <stdlib.h>

#define TEST_PURPOSE 0x6e72u

static float *randn(size_t n, uint64_t seed, float scale, float shift)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    struct rng_stream s = rng_stream(seed, TEST_PURPOSE, 0, 0);
    rng_normal_f32(&s, 0, n, x);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * scale + shift;
    return x;
}

#define cpu_ctx test_cpu_ctx

/* The largest |got - want| / (|want| + rms(want)) (rms: a floor where want
 * is near 0, as the affine's bias can make it), and the norm-wise relative
 * error; both must be <= tol. */
static void check_rel_at(const char *file, int line, const char *what, const float *got,
                         const double *want, size_t n, double tol)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = got[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
    }
    double rms = n ? sqrt(den / (double)n) : 0, worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / (fabs(want[i]) + rms + 1e-30);
        if (!(e <= worst)) {
            worst = e;
            at = i;
        }
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(worst <= tol) || !(rel <= tol))
        test_fail(file, line, "%s: max error %.3g at [%zu] (got %.9g, want %.9g), norm-wise %.3g",
                  what, worst, at, (double)got[at], want[at], rel);
}
#define check_rel(what, got, want, n, tol) check_rel_at(__FILE__, __LINE__, what, got, want, n, tol)

/* ---- GroupNorm ------------------------------------------------------------ */

/* torch.nn.GroupNorm then SiLU, every value in double. */
static double *groupnorm_naive(const float *x, const float *w, const float *b, int B, int C,
                               int HW, int G, double eps, int silu)
{
    size_t n = (size_t)B * C * HW, per = (size_t)(C / G) * HW;
    double *y = malloc((n ? n : 1) * sizeof *y);
    for (size_t grp = 0; grp < (size_t)B * G; grp++) {
        const float *xg = x + grp * per;
        double mu = 0, var = 0;
        for (size_t i = 0; i < per; i++)
            mu += xg[i];
        mu /= (double)per;
        for (size_t i = 0; i < per; i++)
            var += (xg[i] - mu) * (xg[i] - mu);
        var /= (double)per;
        for (size_t i = 0; i < per; i++) {
            int c = (int)((grp % G) * (C / G) + i / HW);
            double v = (xg[i] - mu) / sqrt(var + eps) * w[c] + b[c];
            y[grp * per + i] = silu ? v / (1.0 + exp(-v)) : v;
        }
    }
    return y;
}

struct gn_shape {
    int B, C, HW, G, silu;
};

static void gn_run(struct kctx *ctx, float *out, const float *x, const float *w, const float *b,
                   struct gn_shape s, float eps)
{
    int64_t n = (int64_t)s.B * s.C * s.HW;
    k_groupnorm_forward(ctx, tensor_f32(out, n), tensor_f32((float *)x, n),
                        tensor_f32((float *)w, s.C), tensor_f32((float *)b, s.C), s.B, s.C, s.HW,
                        s.G, eps, s.silu);
}

TEST(groupnorm_matches_naive_double)
{
    static const struct gn_shape shapes[] = {
        {2, 8, 9, 4, 0},  {2, 8, 9, 4, 1},   {1, 6, 7, 1, 0},   {1, 6, 7, 1, 1},
        {2, 6, 5, 6, 1},  {3, 4, 1, 2, 0},   {1, 32, 33, 8, 1}, {2, 64, 255, 32, 1},
        {1, 12, 101, 3, 0},
    };
    struct kctx ctx = cpu_ctx(0);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        struct gn_shape s = shapes[k];
        size_t n = (size_t)s.B * s.C * s.HW;
        float *x = randn(n, 10 + k, 2.0f, 3.0f);
        float *w = randn((size_t)s.C, 20 + k, 0.5f, 1.0f);
        float *b = randn((size_t)s.C, 30 + k, 0.3f, 0.0f);
        float *out = malloc(n * sizeof *out);
        gn_run(&ctx, out, x, w, b, s, 1e-6f);
        double *want = groupnorm_naive(x, w, b, s.B, s.C, s.HW, s.G, 1e-6, s.silu);
        char what[96];
        snprintf(what, sizeof what, "groupnorm B %d C %d HW %d G %d silu %d", s.B, s.C, s.HW,
                 s.G, s.silu);
        check_rel(what, out, want, n, 1e-5);
        free(x);
        free(w);
        free(b);
        free(out);
        free(want);
    }
    kctx_free(&ctx);
}

/* out == inp gives the same bits as a separate out; so do 1 and 4 threads. */
TEST(groupnorm_in_place_and_threads_same_bits)
{
    struct gn_shape s = {3, 16, 999, 4, 1};
    size_t n = (size_t)s.B * s.C * s.HW;
    float *x = randn(n, 1, 1.5f, -2.0f);
    float *w = randn((size_t)s.C, 2, 0.5f, 1.0f);
    float *b = randn((size_t)s.C, 3, 0.3f, 0.0f);
    float *out = malloc(n * sizeof *out), *out1 = malloc(n * sizeof *out1);
    float *inplace = malloc(n * sizeof *inplace);
    memcpy(inplace, x, n * sizeof *x);
    struct kctx ctx = cpu_ctx(4);
    gn_run(&ctx, out, x, w, b, s, 1e-5f);
    gn_run(&ctx, inplace, inplace, w, b, s, 1e-5f);
    kctx_free(&ctx);
    ctx = cpu_ctx(1);
    gn_run(&ctx, out1, x, w, b, s, 1e-5f);
    kctx_free(&ctx);
    CHECK(memcmp(out, inplace, n * sizeof *out) == 0);
    CHECK(memcmp(out, out1, n * sizeof *out) == 0);
    free(x);
    free(w);
    free(b);
    free(out);
    free(out1);
    free(inplace);
}

/* One group of 512 x 64 x 64 values around 1000 +- 1 (a VAE's 512-channel
 * block at 64 x 64, G = 1 to make the group as large as it gets), and the
 * same data split into 32 groups. */
TEST(groupnorm_large_group_large_mean)
{
    static const struct gn_shape shapes[] = {{1, 512, 64 * 64, 1, 1}, {1, 512, 64 * 64, 32, 0}};
    struct kctx ctx = cpu_ctx(0);
    size_t n = (size_t)512 * 64 * 64;
    float *x = randn(n, 7, 1.0f, 1000.0f);
    float *w = randn(512, 8, 0.5f, 1.0f);
    float *b = randn(512, 9, 0.3f, 0.0f);
    float *out = malloc(n * sizeof *out);
    for (int k = 0; k < 2; k++) {
        gn_run(&ctx, out, x, w, b, shapes[k], 1e-6f);
        double *want = groupnorm_naive(x, w, b, 1, 512, 64 * 64, shapes[k].G, 1e-6,
                                       shapes[k].silu);
        check_rel(k == 0 ? "one group of 2M values at 1000 +- 1" : "32 groups at 1000 +- 1",
                  out, want, n, 1e-5);
        free(want);
    }
    kctx_free(&ctx);
    free(x);
    free(w);
    free(b);
    free(out);
}

/* ---- attention with one large head (the VAE's mid-block) -------------------- */

/* The CPU's scratch grows with T (blocks of 256 query rows by T keys, one
 * per thread it can use: one per (batch, head, query block) at most, and
 * 2^25 floats in all), never with T^2. */
TEST(attention_scratch_far_below_t_squared)
{
    static const int threads[] = {1, 8, 0};
    for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
        struct kctx ctx = cpu_ctx(threads[k]);
        int64_t T = 16384, need = k_attention_scratch(&ctx, 1, (int)T, 1);
        if (!(need > 0 && need <= T * T / 8))
            test_fail(__FILE__, __LINE__, "threads %d: scratch %lld floats for T %lld (T^2 %lld)",
                      threads[k], (long long)need, (long long)T, (long long)(T * T));
        kctx_free(&ctx);
    }
}

/* softmax(q k^T / sqrt(HS)) v and its log-sum-exp, in double. */
static void attention_naive(double *out, double *lse, const float *qkv, int T, int C)
{
    double *s = malloc((size_t)T * sizeof *s);
    for (int i = 0; i < T; i++) {
        const float *q = qkv + (size_t)i * 3 * C;
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < T; j++) {
            const float *kr = qkv + (size_t)j * 3 * C + C;
            double d = 0;
            for (int c = 0; c < C; c++)
                d += (double)q[c] * kr[c];
            s[j] = d / sqrt((double)C);
            mx = s[j] > mx ? s[j] : mx;
        }
        for (int j = 0; j < T; j++) {
            s[j] = exp(s[j] - mx);
            sum += s[j];
        }
        lse[i] = mx + log(sum);
        for (int c = 0; c < C; c++) {
            double o = 0;
            for (int j = 0; j < T; j++)
                o += s[j] * qkv[(size_t)j * 3 * C + 2 * C + c];
            out[(size_t)i * C + c] = o / sum;
        }
    }
    free(s);
}

TEST(attention_head_512_matches_naive)
{
    int T = 300, C = 512;
    size_t n = (size_t)T * 3 * C;
    /* q and k of spread 2: scores of spread ~4 after the 1/sqrt(512), so
     * rows are far from uniform */
    float *qkv = randn(n, 11, 2.0f, 0.0f);
    float *out = malloc((size_t)T * C * sizeof *out), *lse = malloc((size_t)T * sizeof *lse);
    double *want = malloc((size_t)T * C * sizeof *want), *want_lse = malloc(T * sizeof *want_lse);
    struct kctx ctx = cpu_ctx(0);
    struct tensor scratch;
    CHECK(k_alloc(&ctx, &scratch, KDT_F32, k_attention_scratch(&ctx, 1, T, 1)) == 0);
    k_attention_forward(&ctx, tensor_f32(out, (int64_t)T * C), tensor_f32(lse, T),
                        tensor_f32(qkv, (int64_t)n), scratch, 1, T, C, 1);
    k_free(&ctx, &scratch);
    kctx_free(&ctx);
    attention_naive(want, want_lse, qkv, T, C);
    check_rel("attention HS 512 out", out, want, (size_t)T * C, 1e-5);
    check_rel("attention HS 512 lse", lse, want_lse, (size_t)T, 1e-5);
    free(qkv);
    free(out);
    free(lse);
    free(want);
    free(want_lse);
}
