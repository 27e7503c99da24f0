/* kernels: the CPU backend against central finite differences of its own
 * forward ops, against PyTorch goldens (tests/reference/make_kernel_goldens.py
 * -> tests/fixtures/kernels/goldens.safetensors), and against naive loops
 * written here; the fused adaLN ops against the unfused sequence of
 * layernorm and modulate; the accumulate and overwrite rules of kernels.h;
 * bit-identical results across thread counts; a CUDA context refused
 * without a GPU; the dispatcher aborting on a broken contract, naming the
 * op and the problem. */
#include "tests/harness.h"
#include "kernels/cpu/cpu.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"
#include "libcommon/safetensors.h"

#include <fcntl.h>
#include <float.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

/* A purpose of the tests' own, so no product stream is reused here. */
#define TEST_PURPOSE 0x7e57u

#define randn(n, seed, scale) test_normal(n, seed, scale, TEST_PURPOSE)
#define filled test_filled

static float *copy_of(const float *src, size_t n)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    memcpy(x, src, n * sizeof *x);
    return x;
}

/* a - b, elementwise: what an accumulating backward added. */
static float *minus(const float *a, const float *b, size_t n)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = a[i] - b[i];
    return x;
}

static struct tensor t32(float *p, size_t n)
{
    return tensor_f32(p, (int64_t)n);
}

#define cpu_ctx test_cpu_ctx

/* |got - want| <= rtol |want| + atol for every element; names the first few
 * that are not, so a failure says where. */
static void check_close_at(const char *file, int line, const char *what, const float *got,
                           const double *want, size_t n, double rtol, double atol)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= rtol * fabs(want[i]) + atol) && bad++ < 5)
            test_fail(file, line, "%s[%zu]: got %.9g, want %.9g (err %.3g)", what, i,
                      (double)got[i], want[i], err);
    }
    if (bad > 5)
        test_fail(file, line, "%s: %d of %zu elements out of tolerance", what, bad, n);
}

static void check_close_f_at(const char *file, int line, const char *what, const float *got,
                             const float *want, size_t n, double rtol, double atol)
{
    double *w = malloc((n ? n : 1) * sizeof *w);
    for (size_t i = 0; i < n; i++)
        w[i] = want[i];
    check_close_at(file, line, what, got, w, n, rtol, atol);
    free(w);
}

#define check_close(what, got, want, n, rtol, atol)                                           \
    check_close_f_at(__FILE__, __LINE__, what, got, want, n, rtol, atol)
#define check_close_d(what, got, want, n, rtol, atol)                                         \
    check_close_at(__FILE__, __LINE__, what, got, want, n, rtol, atol)

static void check_same_bits_at(const char *file, int line, const char *what, const float *a,
                               const float *b, size_t n)
{
    if (memcmp(a, b, n * sizeof *a) != 0)
        for (size_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], sizeof *a) != 0) {
                test_fail(file, line, "%s[%zu]: %.9g vs %.9g, not the same bits", what, i,
                          (double)a[i], (double)b[i]);
                return;
            }
}
#define check_same_bits(what, a, b, n) check_same_bits_at(__FILE__, __LINE__, what, a, b, n)

/* A second call of an accumulating backward on a buffer that started at g0
 * and held g1 after the first must hold g0 + 2 (g1 - g0). */
static void check_doubled_at(const char *file, int line, const char *what, const float *g0,
                             const float *g1, const float *g2, size_t n)
{
    double *want = malloc((n ? n : 1) * sizeof *want);
    float *got = malloc((n ? n : 1) * sizeof *got);
    for (size_t i = 0; i < n; i++) {
        want[i] = 2.0 * ((double)g1[i] - g0[i]);
        got[i] = g2[i] - g0[i];
    }
    check_close_at(file, line, what, got, want, n, 1e-5, 1e-5);
    free(want);
    free(got);
}
#define check_doubled(what, g0, g1, g2, n) check_doubled_at(__FILE__, __LINE__, what, g0, g1, g2, n)

/* ------------------------------------------------- finite differences */

/* The scalar loss L = sum(out * R) of one forward op: dL/dout = R, so R is
 * the dout given to backward, and backward's gradients must match central
 * differences of L. forward() recomputes out from the inputs in state. */
struct fd {
    void (*forward)(struct fd *f);
    struct kctx *ctx;
    float *out;
    size_t n_out;
    const float *R;
    void *state;
};

static double fd_loss(struct fd *f)
{
    f->forward(f);
    double L = 0.0;
    for (size_t i = 0; i < f->n_out; i++)
        L += (double)f->out[i] * f->R[i];
    return L;
}

/* Checks grad[] against (L(x + h e_i) - L(x - h e_i)) / (2h) on FD_POINTS
 * coordinates spread over x[n] (all of them when n is smaller). The step is
 * measured after rounding x +- h to float, so the quotient uses the step
 * actually taken. The tolerance: 1% of the value plus 0.1% of the largest
 * gradient entry, which fp32 forwards meet with room to spare while a
 * missing term or a wrong factor is far outside it. */
#define FD_POINTS 48

static void fd_check_at(const char *file, int line, struct fd *f, const char *what, float *x,
                        size_t n, const float *grad)
{
    double gmax = 0.0;
    for (size_t i = 0; i < n; i++)
        gmax = fmax(gmax, fabs(grad[i]));
    size_t count = n < FD_POINTS ? n : FD_POINTS;
    int bad = 0;
    for (size_t k = 0; k < count; k++) {
        /* spread over the tensor, not always at the start of a stride */
        size_t i = count == n ? k : (k * n) / count + k % (n / count);
        float x0 = x[i];
        float h = 1e-3f * fmaxf(1.0f, fabsf(x0));
        x[i] = x0 + h;
        double xp = x[i];
        double lp = fd_loss(f);
        x[i] = x0 - h;
        double xm = x[i];
        double lm = fd_loss(f);
        x[i] = x0;
        double fd = (lp - lm) / (xp - xm);
        double err = fabs(fd - grad[i]);
        if (!(err <= 1e-2 * fabs(fd) + 1e-3 * gmax + 1e-6) && bad++ < 5)
            test_fail(file, line, "%s[%zu]: backward %.7g, finite difference %.7g", what, i,
                      (double)grad[i], fd);
    }
    if (bad > 5)
        test_fail(file, line, "%s: %d of %zu coordinates off", what, bad, count);
    f->forward(f); /* leave out as the unperturbed inputs give it */
}
#define fd_check(f, what, x, n, grad) fd_check_at(__FILE__, __LINE__, f, what, x, n, grad)

/* --------------------------------------------------------------- goldens */

static struct st_file *goldens_open(void)
{
    return test_goldens_open("fixtures/kernels/goldens.safetensors");
}

#define golden test_golden_f32

/* ------------------------------------------------------------------ gemm */

/* Every transpose and beta against a naive loop in double, for M x N x K on
 * `threads` threads; atol grows with K, the length of each sum. */
static void check_gemm(int M, int N, int K, int threads, double atol)
{
    struct kctx ctx = cpu_ctx(threads);
    float *a = randn((size_t)M * K, 1, 1.0f), *b = randn((size_t)K * N, 2, 1.0f);
    float *c0 = randn((size_t)M * N, 3, 1.0f);
    float *c = malloc((size_t)M * N * sizeof *c);
    double *want = malloc((size_t)M * N * sizeof *want);
    const float betas[] = {0.0f, 1.3f};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bi = 0; bi < 2; bi++) {
                float alpha = 0.7f, beta = betas[bi];
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double s = 0.0;
                        for (int k = 0; k < K; k++) {
                            double av = ta ? a[k * M + i] : a[i * K + k];
                            double bv = tb ? b[j * K + k] : b[k * N + j];
                            s += av * bv;
                        }
                        want[i * N + j] = alpha * s + (beta != 0.0f ? beta * c0[i * N + j] : 0.0);
                    }
                /* beta 0: C is not read (BLAS), so NaN there must not leak */
                for (int i = 0; i < M * N; i++)
                    c[i] = beta != 0.0f ? c0[i] : NAN;
                k_gemm(&ctx, t32(c, (size_t)M * N), t32(a, (size_t)M * K), t32(b, (size_t)K * N),
                       M, N, K, ta, tb, alpha, beta);
                char what[96];
                snprintf(what, sizeof what, "gemm %dx%dx%d ta=%d tb=%d beta=%g", M, N, K, ta, tb,
                         (double)beta);
                check_close_d(what, c, want, (size_t)M * N, 1e-5, atol);
            }
    /* An empty inner dimension leaves beta * C. */
    memcpy(c, c0, (size_t)M * N * sizeof *c);
    k_gemm(&ctx, t32(c, (size_t)M * N), tensor_none(), tensor_none(), M, N, 0, 0, 0, 1.0f, 0.5f);
    for (int i = 0; i < M * N; i++)
        want[i] = 0.5 * c0[i];
    check_close_d("gemm K=0", c, want, (size_t)M * N, 1e-7, 0);
    free(a), free(b), free(c0), free(c), free(want);
    kctx_free(&ctx);
}

TEST(gemm_all_transposes_match_naive_loop)
{
    check_gemm(7, 5, 9, 0, 1e-5);
}

/* Products past the CPU backend's parallel threshold are split between
 * threads, by rows when M is the longer side (301: a ragged last block) and
 * by columns otherwise. */
TEST(gemm_split_between_threads_matches_naive_loop)
{
    check_gemm(301, 70, 64, 2, 1e-4);
    check_gemm(40, 403, 80, 2, 1e-4);
}

/* ---------------------------------------------------------------- linear */

TEST(linear_forward_matches_torch)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const int M = 7, C = 12, OC = 10;
    float *x = golden(g, "linear/x", M * C), *w = golden(g, "linear/w", OC * C);
    float *b = golden(g, "linear/b", OC), *want = golden(g, "linear/out", M * OC);
    float *want_nb = golden(g, "linear/out_nobias", M * OC);
    float *out = filled(M * OC, NAN);
    k_linear_forward(&ctx, t32(out, M * OC), t32(x, M * C), t32(w, OC * C), t32(b, OC), M, C, OC);
    check_close("linear", out, want, M * OC, 1e-5, 1e-6);
    k_linear_forward(&ctx, t32(out, M * OC), t32(x, M * C), t32(w, OC * C), tensor_none(), M, C,
                     OC);
    check_close("linear without bias", out, want_nb, M * OC, 1e-5, 1e-6);
    free(x), free(w), free(b), free(want), free(want_nb), free(out);
    st_close(g);
    kctx_free(&ctx);
}

struct linear_case {
    float *x, *w, *b;
    int M, C, OC;
};

static void linear_fwd(struct fd *f)
{
    struct linear_case *s = f->state;
    k_linear_forward(f->ctx, t32(f->out, f->n_out), t32(s->x, (size_t)s->M * s->C),
                     t32(s->w, (size_t)s->OC * s->C), t32(s->b, s->OC), s->M, s->C, s->OC);
}

TEST(linear_backward_finite_differences_and_accumulation)
{
    struct kctx ctx = cpu_ctx(0);
    const int M = 7, C = 12, OC = 10;
    const size_t nx = M * C, nw = OC * C, no = M * OC;
    struct linear_case s = {randn(nx, 10, 1.0f), randn(nw, 11, 0.5f), randn(OC, 12, 1.0f), M, C, OC};
    float *R = randn(no, 13, 1.0f), *out = malloc(no * sizeof *out);
    struct fd f = {linear_fwd, &ctx, out, no, R, &s};

    float *dx = filled(nx, NAN); /* overwritten: stale contents must not matter */
    float *dw0 = randn(nw, 14, 1.0f), *db0 = randn(OC, 15, 1.0f);
    float *dw = copy_of(dw0, nw), *db = copy_of(db0, OC);
    k_linear_backward(&ctx, t32(dx, nx), t32(dw, nw), t32(db, OC), t32(R, no), t32(s.x, nx),
                      t32(s.w, nw), M, C, OC);
    float *dx1 = copy_of(dx, nx), *dw1 = copy_of(dw, nw), *db1 = copy_of(db, OC);
    k_linear_backward(&ctx, t32(dx, nx), t32(dw, nw), t32(db, OC), t32(R, no), t32(s.x, nx),
                      t32(s.w, nw), M, C, OC);
    check_same_bits("dinp overwritten", dx, dx1, nx);
    check_doubled("dweight", dw0, dw1, dw, nw);
    check_doubled("dbias", db0, db1, db, OC);

    float *gw = minus(dw1, dw0, nw), *gb = minus(db1, db0, OC);
    fd_check(&f, "dinp", s.x, nx, dx1);
    fd_check(&f, "dweight", s.w, nw, gw);
    fd_check(&f, "dbias", s.b, OC, gb);

    /* Absent dinp and dbias: dweight alone, the same sums. */
    float *dw_only = copy_of(dw0, nw);
    k_linear_backward(&ctx, tensor_none(), t32(dw_only, nw), tensor_none(), t32(R, no),
                      t32(s.x, nx), t32(s.w, nw), M, C, OC);
    check_same_bits("dweight without dinp, dbias", dw_only, dw1, nw);

    free(s.x), free(s.w), free(s.b), free(R), free(out), free(dx), free(dw0), free(db0);
    free(dw), free(db), free(dx1), free(dw1), free(db1), free(gw), free(gb), free(dw_only);
    kctx_free(&ctx);
}

/* ------------------------------------------------------------- layernorm */

TEST(layernorm_forward_matches_torch)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const int M = 5, C = 12;
    float *x = golden(g, "layernorm/x", M * C), *want = golden(g, "layernorm/out", M * C);
    float *want_mean = golden(g, "layernorm/mean", M), *want_rstd = golden(g, "layernorm/rstd", M);
    float *out = filled(M * C, NAN), *mean = filled(M, NAN), *rstd = filled(M, NAN);
    k_layernorm_forward(&ctx, t32(out, M * C), t32(mean, M), t32(rstd, M), t32(x, M * C), M, C,
                        1e-6f);
    check_close("layernorm out", out, want, M * C, 1e-5, 1e-6);
    check_close("layernorm mean", mean, want_mean, M, 1e-5, 1e-6);
    check_close("layernorm rstd", rstd, want_rstd, M, 1e-5, 0);
    free(x), free(want), free(want_mean), free(want_rstd), free(out), free(mean), free(rstd);
    st_close(g);
    kctx_free(&ctx);
}

/* A one-pass variance loses everything to cancellation on a row with a huge
 * mean; two passes keep it. */
TEST(layernorm_survives_a_large_mean)
{
    struct kctx ctx = cpu_ctx(0);
    const int C = 12;
    float x[12], out[12], mean, rstd;
    for (int c = 0; c < C; c++)
        x[c] = 10000.0f + (float)(c - 6);
    k_layernorm_forward(&ctx, t32(out, C), t32(&mean, 1), t32(&rstd, 1), t32(x, C), 1, C, 1e-6f);
    double var = 0.0;
    for (int c = 0; c < C; c++)
        var += (double)(c - 5.5) * (c - 5.5) / C;
    CHECK_NEAR(mean, 9999.5, 1e-3);
    CHECK_NEAR(rstd, 1.0 / sqrt(var + 1e-6), 1e-5);
    CHECK_NEAR(out[0], -5.5 / sqrt(var + 1e-6), 1e-4);
    kctx_free(&ctx);
}

struct ln_case {
    float *x, *mean, *rstd;
    int M, C;
};

static void ln_fwd(struct fd *f)
{
    struct ln_case *s = f->state;
    size_t n = (size_t)s->M * s->C;
    k_layernorm_forward(f->ctx, t32(f->out, n), t32(s->mean, s->M), t32(s->rstd, s->M),
                        t32(s->x, n), s->M, s->C, 1e-6f);
}

TEST(layernorm_backward_finite_differences_and_accumulation)
{
    struct kctx ctx = cpu_ctx(0);
    const int M = 5, C = 12;
    const size_t n = M * C;
    struct ln_case s = {randn(n, 20, 2.0f), malloc(M * sizeof(float)), malloc(M * sizeof(float)),
                        M, C};
    for (size_t i = 0; i < n; i++)
        s.x[i] += 3.0f;
    float *R = randn(n, 21, 1.0f), *out = malloc(n * sizeof *out);
    struct fd f = {ln_fwd, &ctx, out, n, R, &s};
    ln_fwd(&f);
    /* dinp accumulates into the residual stream's gradient */
    float *d0 = randn(n, 22, 1.0f), *d = copy_of(d0, n);
    k_layernorm_backward(&ctx, t32(d, n), t32(R, n), t32(s.x, n), t32(s.mean, M), t32(s.rstd, M),
                         M, C);
    float *d1 = copy_of(d, n);
    k_layernorm_backward(&ctx, t32(d, n), t32(R, n), t32(s.x, n), t32(s.mean, M), t32(s.rstd, M),
                         M, C);
    check_doubled("layernorm dinp", d0, d1, d, n);
    float *gx = minus(d1, d0, n);
    fd_check(&f, "layernorm dinp", s.x, n, gx);
    free(s.x), free(s.mean), free(s.rstd), free(R), free(out), free(d0), free(d), free(d1), free(gx);
    kctx_free(&ctx);
}

/* ------------------------------------------------ modulate, gated residual */

/* shift, scale and gate are the first three C-wide chunks of rows of a
 * [B, 4C] buffer, as adaLN's Linear output would give; chunk 3 is unused, so
 * its gradient must stay untouched and its finite differences zero. */
struct mod_case {
    float *x, *mod, *res0;
    int B, T, C, stride;
};

static size_t mod_n(const struct mod_case *s)
{
    return (size_t)(s->B - 1) * s->stride + s->C;
}

static void modulate_fwd(struct fd *f)
{
    struct mod_case *s = f->state;
    k_modulate_forward(f->ctx, t32(f->out, f->n_out), t32(s->x, f->n_out), t32(s->mod, mod_n(s)),
                       t32(s->mod + s->C, mod_n(s)), s->B, s->T, s->C, s->stride);
}

TEST(modulate_forward_is_the_formula)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 2, T = 5, C = 12, S = 4 * C;
    const size_t n = (size_t)B * T * C;
    struct mod_case s = {randn(n, 30, 1.0f), randn((size_t)B * S, 31, 1.0f), NULL, B, T, C, S};
    float *out = filled(n, NAN);
    struct fd f = {modulate_fwd, &ctx, out, n, NULL, &s};
    modulate_fwd(&f);
    double *want = malloc(n * sizeof *want);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                size_t i = ((size_t)b * T + t) * C + c;
                want[i] = (double)s.x[i] * (1.0 + s.mod[b * S + C + c]) + s.mod[b * S + c];
            }
    check_close_d("modulate", out, want, n, 1e-6, 1e-6);
    free(s.x), free(s.mod), free(out), free(want);
    kctx_free(&ctx);
}

TEST(modulate_backward_finite_differences_and_accumulation)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 2, T = 5, C = 12, S = 4 * C;
    const size_t n = (size_t)B * T * C, nm = (size_t)B * S;
    struct mod_case s = {randn(n, 32, 1.0f), randn(nm, 33, 1.0f), NULL, B, T, C, S};
    float *R = randn(n, 34, 1.0f), *out = malloc(n * sizeof *out);
    struct fd f = {modulate_fwd, &ctx, out, n, R, &s};
    size_t ext = mod_n(&s);

    float *dx = filled(n, NAN), *dmod0 = randn(nm, 35, 1.0f), *dmod = copy_of(dmod0, nm);
    k_modulate_backward(&ctx, t32(dx, n), t32(dmod, ext), t32(dmod + C, ext), t32(R, n),
                        t32(s.x, n), t32(s.mod + C, ext), B, T, C, S);
    float *dx1 = copy_of(dx, n), *dmod1 = copy_of(dmod, nm);
    k_modulate_backward(&ctx, t32(dx, n), t32(dmod, ext), t32(dmod + C, ext), t32(R, n),
                        t32(s.x, n), t32(s.mod + C, ext), B, T, C, S);
    check_same_bits("modulate dx overwritten", dx, dx1, n);
    check_doubled("modulate dshift, dscale", dmod0, dmod1, dmod, nm);
    float *gm = minus(dmod1, dmod0, nm);
    fd_check(&f, "modulate dx", s.x, n, dx1);
    fd_check(&f, "modulate dshift, dscale (and the untouched chunks)", s.mod, nm, gm);
    for (int b = 0; b < B; b++)
        for (int c = 2 * C; c < S; c++)
            CHECK(gm[b * S + c] == 0.0f);
    free(s.x), free(s.mod), free(R), free(out), free(dx), free(dmod0), free(dmod), free(dx1);
    free(dmod1), free(gm);
    kctx_free(&ctx);
}

static void gated_fwd(struct fd *f)
{
    struct mod_case *s = f->state;
    k_gated_residual_forward(f->ctx, t32(f->out, f->n_out), t32(s->res0, f->n_out),
                             t32(s->x, f->n_out), t32(s->mod + 2 * s->C, mod_n(s)), s->B, s->T,
                             s->C, s->stride);
}

TEST(gated_residual_forward_and_backward)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 3, T = 5, C = 12, S = 4 * C;
    const size_t n = (size_t)B * T * C, nm = (size_t)B * S;
    struct mod_case s = {randn(n, 40, 1.0f), randn(nm, 41, 1.0f), randn(n, 42, 1.0f), B, T, C, S};
    float *R = randn(n, 43, 1.0f), *out = malloc(n * sizeof *out);
    struct fd f = {gated_fwd, &ctx, out, n, R, &s};
    size_t ext = mod_n(&s);

    gated_fwd(&f);
    double *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++) {
        size_t b = i / ((size_t)T * C), c = i % C;
        want[i] = (double)s.res0[i] + (double)s.mod[b * S + 2 * C + c] * s.x[i];
    }
    check_close_d("gated residual", out, want, n, 1e-6, 1e-6);
    /* out of place leaves res alone; in place (out = res) gives the same bits */
    float *res0_copy = randn(n, 42, 1.0f);
    check_same_bits("gated residual res untouched", s.res0, res0_copy, n);
    k_gated_residual_forward(&ctx, t32(res0_copy, n), t32(res0_copy, n), t32(s.x, n),
                             t32(s.mod + 2 * C, ext), B, T, C, S);
    check_same_bits("gated residual in place", res0_copy, out, n);
    free(res0_copy);

    float *dy = filled(n, NAN), *dmod0 = randn(nm, 44, 1.0f), *dmod = copy_of(dmod0, nm);
    float *dres = copy_of(R, n);
    k_gated_residual_backward(&ctx, t32(dy, n), t32(dmod + 2 * C, ext), t32(dres, n), t32(s.x, n),
                              t32(s.mod + 2 * C, ext), B, T, C, S);
    float *dy1 = copy_of(dy, n), *dmod1 = copy_of(dmod, nm);
    k_gated_residual_backward(&ctx, t32(dy, n), t32(dmod + 2 * C, ext), t32(dres, n), t32(s.x, n),
                              t32(s.mod + 2 * C, ext), B, T, C, S);
    check_same_bits("dres is not written", dres, R, n);
    check_same_bits("gated dy overwritten", dy, dy1, n);
    check_doubled("gated dgate", dmod0, dmod1, dmod, nm);
    float *gm = minus(dmod1, dmod0, nm);
    fd_check(&f, "gated dy", s.x, n, dy1);
    fd_check(&f, "gated dgate (and the untouched chunks)", s.mod, nm, gm);
    free(s.x), free(s.mod), free(s.res0), free(R), free(out), free(want), free(dy), free(dmod0);
    free(dmod), free(dres), free(dy1), free(dmod1), free(gm);
    kctx_free(&ctx);
}

/* ------------------------------------------------ adaLN: norm + modulate */

/* shift and scale are chunks 0 and 1 of rows of a [B, 4C] buffer, as in
 * mod_case; x gets a mean far from 0 so the statistics matter. */
struct adaln_case {
    float *x, *mod, *mean, *rstd;
    int B, T, C, stride;
};

static size_t adaln_ext(const struct adaln_case *s)
{
    return (size_t)(s->B - 1) * s->stride + s->C;
}

static struct adaln_case adaln_case_new(int B, int T, int C, uint64_t seed)
{
    struct adaln_case s = {randn((size_t)B * T * C, seed, 2.0f),
                           randn((size_t)B * 4 * C, seed + 1, 0.5f),
                           malloc((size_t)B * T * sizeof(float)),
                           malloc((size_t)B * T * sizeof(float)), B, T, C, 4 * C};
    for (size_t i = 0; i < (size_t)B * T * C; i++)
        s.x[i] += 3.0f;
    return s;
}

static void adaln_case_free(struct adaln_case *s)
{
    free(s->x), free(s->mod), free(s->mean), free(s->rstd);
}

static void adaln_fwd(struct fd *f)
{
    struct adaln_case *s = f->state;
    size_t M = (size_t)s->B * s->T;
    k_adaln_forward(f->ctx, t32(f->out, f->n_out), t32(s->mean, M), t32(s->rstd, M),
                    t32(s->x, f->n_out), t32(s->mod, adaln_ext(s)),
                    t32(s->mod + s->C, adaln_ext(s)), s->B, s->T, s->C, s->stride, 1e-6f);
}

/* The fused forward against k_layernorm_forward then k_modulate_forward. */
static void check_adaln_forward_unfused(int B, int T, int C, int threads, uint64_t seed)
{
    struct kctx ctx = cpu_ctx(threads);
    struct adaln_case s = adaln_case_new(B, T, C, seed);
    const size_t n = (size_t)B * T * C, M = (size_t)B * T, ext = adaln_ext(&s);
    float *out = filled(n, NAN), *ln = filled(n, NAN), *want = filled(n, NAN);
    float *mean = filled(M, NAN), *rstd = filled(M, NAN);
    struct fd f = {adaln_fwd, &ctx, out, n, NULL, &s};
    adaln_fwd(&f);
    k_layernorm_forward(&ctx, t32(ln, n), t32(mean, M), t32(rstd, M), t32(s.x, n), (int)M, C,
                        1e-6f);
    k_modulate_forward(&ctx, t32(want, n), t32(ln, n), t32(s.mod, ext), t32(s.mod + C, ext), B,
                       T, C, s.stride);
    check_close("adaln out vs layernorm + modulate", out, want, n, 1e-6, 1e-7);
    check_close("adaln mean", s.mean, mean, M, 1e-7, 0);
    check_close("adaln rstd", s.rstd, rstd, M, 1e-7, 0);
    free(out), free(ln), free(want), free(mean), free(rstd);
    adaln_case_free(&s);
    kctx_free(&ctx);
}

TEST(adaln_forward_equals_layernorm_then_modulate)
{
    check_adaln_forward_unfused(2, 5, 12, 0, 50);
    check_adaln_forward_unfused(3, 7, 37, 0, 52); /* ragged C */
    check_adaln_forward_unfused(2, 32, 1024, 2, 54); /* above the one-thread cutoff */
}

/* The fused backward against k_modulate_backward then k_layernorm_backward,
 * every gradient pre-filled (they all accumulate). */
static void check_adaln_backward_unfused(int B, int T, int C, int threads, uint64_t seed)
{
    struct kctx ctx = cpu_ctx(threads);
    struct adaln_case s = adaln_case_new(B, T, C, seed);
    const size_t n = (size_t)B * T * C, M = (size_t)B * T, nm = (size_t)B * s.stride;
    const size_t ext = adaln_ext(&s);
    float *out = malloc(n * sizeof *out), *ln = malloc(n * sizeof *ln);
    struct fd f = {adaln_fwd, &ctx, out, n, NULL, &s};
    adaln_fwd(&f);
    k_layernorm_forward(&ctx, t32(ln, n), t32(s.mean, M), t32(s.rstd, M), t32(s.x, n), (int)M, C,
                        1e-6f);
    float *dy = randn(n, seed + 2, 1.0f), *dx0 = randn(n, seed + 3, 1.0f);
    float *dmod0 = randn(nm, seed + 4, 1.0f);
    float *dx = copy_of(dx0, n), *dmod = copy_of(dmod0, nm);
    k_adaln_backward(&ctx, t32(dx, n), t32(dmod, ext), t32(dmod + C, ext), t32(dy, n),
                     t32(s.x, n), t32(s.mean, M), t32(s.rstd, M), t32(s.mod + C, ext), B, T, C,
                     s.stride);
    float *wdx = copy_of(dx0, n), *wdmod = copy_of(dmod0, nm), *dln = filled(n, NAN);
    k_modulate_backward(&ctx, t32(dln, n), t32(wdmod, ext), t32(wdmod + C, ext), t32(dy, n),
                        t32(ln, n), t32(s.mod + C, ext), B, T, C, s.stride);
    k_layernorm_backward(&ctx, t32(wdx, n), t32(dln, n), t32(s.x, n), t32(s.mean, M),
                         t32(s.rstd, M), (int)M, C);
    check_close("adaln dx vs modulate + layernorm backward", dx, wdx, n, 1e-6, 1e-6);
    check_close("adaln dshift, dscale vs modulate backward", dmod, wdmod, nm, 1e-6, 1e-6);
    free(out), free(ln), free(dy), free(dx0), free(dmod0), free(dx), free(dmod), free(wdx);
    free(wdmod), free(dln);
    adaln_case_free(&s);
    kctx_free(&ctx);
}

TEST(adaln_backward_equals_modulate_then_layernorm_backward)
{
    check_adaln_backward_unfused(2, 5, 12, 0, 60);
    check_adaln_backward_unfused(3, 7, 37, 0, 62);
    check_adaln_backward_unfused(2, 32, 1024, 2, 64);
    check_adaln_backward_unfused(1, 70, 200, 0, 66); /* C over several column blocks */
}

TEST(adaln_backward_finite_differences_and_accumulation)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 2, T = 5, C = 12;
    struct adaln_case s = adaln_case_new(B, T, C, 70);
    const size_t n = (size_t)B * T * C, M = (size_t)B * T, nm = (size_t)B * s.stride;
    const size_t ext = adaln_ext(&s);
    float *R = randn(n, 72, 1.0f), *out = malloc(n * sizeof *out);
    struct fd f = {adaln_fwd, &ctx, out, n, R, &s};
    adaln_fwd(&f);

    float *dx0 = randn(n, 73, 1.0f), *dx = copy_of(dx0, n);
    float *dmod0 = randn(nm, 74, 1.0f), *dmod = copy_of(dmod0, nm);
    k_adaln_backward(&ctx, t32(dx, n), t32(dmod, ext), t32(dmod + C, ext), t32(R, n),
                     t32(s.x, n), t32(s.mean, M), t32(s.rstd, M), t32(s.mod + C, ext), B, T, C,
                     s.stride);
    float *dx1 = copy_of(dx, n), *dmod1 = copy_of(dmod, nm);
    k_adaln_backward(&ctx, t32(dx, n), t32(dmod, ext), t32(dmod + C, ext), t32(R, n),
                     t32(s.x, n), t32(s.mean, M), t32(s.rstd, M), t32(s.mod + C, ext), B, T, C,
                     s.stride);
    check_doubled("adaln dx", dx0, dx1, dx, n);
    check_doubled("adaln dshift, dscale", dmod0, dmod1, dmod, nm);
    float *gx = minus(dx1, dx0, n), *gm = minus(dmod1, dmod0, nm);
    fd_check(&f, "adaln dx", s.x, n, gx);
    fd_check(&f, "adaln dshift, dscale (and the untouched chunks)", s.mod, nm, gm);
    for (int b = 0; b < B; b++)
        for (int c = 2 * C; c < s.stride; c++)
            CHECK(gm[b * s.stride + c] == 0.0f);
    free(R), free(out), free(dx0), free(dx), free(dmod0), free(dmod), free(dx1), free(dmod1);
    free(gx), free(gm);
    adaln_case_free(&s);
    kctx_free(&ctx);
}

/* Each subset of dx, dshift, dscale: the present ones get the same bits as
 * when all three are wanted, the absent ones are not touched. */
TEST(adaln_backward_absent_outputs)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 2, T = 6, C = 20;
    struct adaln_case s = adaln_case_new(B, T, C, 80);
    const size_t n = (size_t)B * T * C, M = (size_t)B * T, nm = (size_t)B * s.stride;
    const size_t ext = adaln_ext(&s);
    float *out = malloc(n * sizeof *out);
    struct fd f = {adaln_fwd, &ctx, out, n, NULL, &s};
    adaln_fwd(&f);
    float *dy = randn(n, 82, 1.0f), *dx0 = randn(n, 83, 1.0f), *dmod0 = randn(nm, 84, 1.0f);
    float *dx_all = copy_of(dx0, n), *dmod_all = copy_of(dmod0, nm);
    k_adaln_backward(&ctx, t32(dx_all, n), t32(dmod_all, ext), t32(dmod_all + C, ext), t32(dy, n),
                     t32(s.x, n), t32(s.mean, M), t32(s.rstd, M), t32(s.mod + C, ext), B, T, C,
                     s.stride);
    for (int mask = 0; mask < 8; mask++) {
        float *dx = copy_of(dx0, n), *dmod = copy_of(dmod0, nm);
        struct tensor none = tensor_none();
        k_adaln_backward(&ctx, mask & 1 ? t32(dx, n) : none, mask & 2 ? t32(dmod, ext) : none,
                         mask & 4 ? t32(dmod + C, ext) : none, t32(dy, n), t32(s.x, n),
                         t32(s.mean, M), t32(s.rstd, M), t32(s.mod + C, ext), B, T, C, s.stride);
        check_same_bits("adaln dx", dx, mask & 1 ? dx_all : dx0, n);
        for (int b = 0; b < B; b++) {
            const float *shift_want = (mask & 2 ? dmod_all : dmod0) + b * s.stride;
            const float *scale_want = (mask & 4 ? dmod_all : dmod0) + b * s.stride + C;
            check_same_bits("adaln dshift", dmod + b * s.stride, shift_want, (size_t)C);
            check_same_bits("adaln dscale", dmod + b * s.stride + C, scale_want, (size_t)C);
            check_same_bits("adaln untouched chunks", dmod + b * s.stride + 2 * C,
                            dmod0 + b * s.stride + 2 * C, (size_t)(s.stride - 2 * C));
        }
        free(dx), free(dmod);
    }
    free(out), free(dy), free(dx0), free(dmod0), free(dx_all), free(dmod_all);
    adaln_case_free(&s);
    kctx_free(&ctx);
}

/* ----------------------------------------------------------- activations */

typedef void (*unary_fwd_fn)(struct kctx *, struct tensor, struct tensor, int64_t);
typedef void (*unary_bwd_fn)(struct kctx *, struct tensor, struct tensor, struct tensor, int64_t);

struct unary_case {
    unary_fwd_fn fwd;
    float *x;
};

static void unary_fwd(struct fd *f)
{
    struct unary_case *s = f->state;
    s->fwd(f->ctx, t32(f->out, f->n_out), t32(s->x, f->n_out), (int64_t)f->n_out);
}

static void check_activation(const char *name, unary_fwd_fn fwd, unary_bwd_fn bwd)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    char key[64];
    const size_t n = 67;
    snprintf(key, sizeof key, "%s/x", name);
    float *x = golden(g, key, n);
    snprintf(key, sizeof key, "%s/out", name);
    float *want = golden(g, key, n);
    float *out = filled(n, NAN);
    fwd(&ctx, t32(out, n), t32(x, n), (int64_t)n);
    check_close(name, out, want, n, 1e-5, 1e-6);

    float *R = randn(n, 50, 1.0f), *dx = filled(n, NAN);
    bwd(&ctx, t32(dx, n), t32(R, n), t32(x, n), (int64_t)n);
    float *dx1 = copy_of(dx, n);
    bwd(&ctx, t32(dx, n), t32(R, n), t32(x, n), (int64_t)n);
    check_same_bits(name, dx, dx1, n);
    struct unary_case s = {fwd, x};
    struct fd f = {unary_fwd, &ctx, out, n, R, &s};
    fd_check(&f, name, x, n, dx1);
    free(x), free(want), free(out), free(R), free(dx), free(dx1);
    st_close(g);
    kctx_free(&ctx);
}

/* cpu_expf, under GELU, SiLU and the softmax: within 1 ulp of e^x over the
 * whole range (an exhaustive sweep of every float found 0.99 at worst; here
 * a dense sample), subnormal results to within one subnormal step, and the
 * edges: 0 -> 1 exactly, overflow -> inf, far below -> 0, NaN -> NaN. */
TEST(fast_exp_is_within_one_ulp)
{
    double worst = 0.0;
    float worst_x = 0.0f;
    const int n = 2000003;
    for (int i = 0; i <= n; i++) {
        float x = -104.0f + 192.72f * (float)i / (float)n;
        double want = exp((double)x), got = cpu_expf(x);
        if (want > FLT_MAX) {
            CHECK(isinf(got));
            continue;
        }
        double ulp = want < FLT_MIN ? ldexp(1.0, -149) : ldexp(1.0, ilogb(want) - 23);
        double err = fabs(got - want) / ulp;
        if (err > worst) {
            worst = err;
            worst_x = x;
        }
    }
    if (!(worst <= 1.0))
        test_fail(__FILE__, __LINE__, "cpu_expf(%.9g) is %.3f ulp off", (double)worst_x, worst);
    CHECK(cpu_expf(0.0f) == 1.0f);
    CHECK(cpu_expf(1.0f) == expf(1.0f) || fabsf(cpu_expf(1.0f) - expf(1.0f)) <= 2.4e-7f);
    CHECK(isinf(cpu_expf(88.8f)) && cpu_expf(88.8f) > 0);
    CHECK(isinf(cpu_expf(INFINITY)));
    CHECK(isfinite(cpu_expf(88.72f)));
    CHECK(cpu_expf(-105.0f) == 0.0f);
    CHECK(cpu_expf(-INFINITY) == 0.0f);
    CHECK(cpu_expf(-1e30f) == 0.0f);
    CHECK(isnan(cpu_expf(NAN)));
    CHECK(isnan(cpu_expf(-NAN)));
}

TEST(gelu_tanh_matches_torch_and_finite_differences)
{
    check_activation("gelu", k_gelu_forward, k_gelu_backward);
}

TEST(silu_matches_torch_and_finite_differences)
{
    check_activation("silu", k_silu_forward, k_silu_backward);
}

/* ------------------------------------------------------------- attention */

/* The textbook computation in double with the whole T x T matrix per
 * (batch, head): out, lse and, when dout is given, dqkv. */
static void ref_attention(const float *qkv, const float *dout, int B, int T, int C, int NH,
                          double *out, double *lse, double *dqkv)
{
    int HS = C / NH;
    size_t C3 = 3 * (size_t)C;
    double *P = malloc((size_t)T * T * sizeof *P), *dS = malloc((size_t)T * T * sizeof *dS);
    double scale = 1.0 / sqrt(HS);
    if (dqkv)
        for (size_t i = 0; i < (size_t)B * T * C3; i++)
            dqkv[i] = 0.0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *base = qkv + (size_t)b * T * C3 + (size_t)h * HS;
#define Q(t, d) ((double)base[(size_t)(t) * C3 + (d)])
#define K(t, d) ((double)base[(size_t)(t) * C3 + C + (d)])
#define V(t, d) ((double)base[(size_t)(t) * C3 + 2 * C + (d)])
            for (int t = 0; t < T; t++) {
                double mx = -INFINITY, sum = 0.0;
                for (int s = 0; s < T; s++) {
                    double dot = 0.0;
                    for (int d = 0; d < HS; d++)
                        dot += Q(t, d) * K(s, d);
                    P[t * T + s] = dot * scale;
                    mx = fmax(mx, dot * scale);
                }
                for (int s = 0; s < T; s++)
                    sum += exp(P[t * T + s] - mx);
                for (int s = 0; s < T; s++)
                    P[t * T + s] = exp(P[t * T + s] - mx) / sum;
                lse[((size_t)b * NH + h) * T + t] = mx + log(sum);
                for (int d = 0; d < HS; d++) {
                    double o = 0.0;
                    for (int s = 0; s < T; s++)
                        o += P[t * T + s] * V(s, d);
                    out[((size_t)b * T + t) * C + (size_t)h * HS + d] = o;
                }
            }
            if (!dqkv)
                continue;
            const float *dO = dout + (size_t)h * HS;
            double *dbase = dqkv + (size_t)b * T * C3 + (size_t)h * HS;
#define DO(t, d) ((double)dO[((size_t)b * T + (t)) * C + (d)])
            for (int t = 0; t < T; t++) {
                double rowdot = 0.0;
                for (int s = 0; s < T; s++) {
                    double dp = 0.0;
                    for (int d = 0; d < HS; d++)
                        dp += DO(t, d) * V(s, d);
                    dS[t * T + s] = dp;
                    rowdot += P[t * T + s] * dp;
                }
                for (int s = 0; s < T; s++)
                    dS[t * T + s] = P[t * T + s] * (dS[t * T + s] - rowdot);
            }
            for (int t = 0; t < T; t++)
                for (int d = 0; d < HS; d++) {
                    double dq = 0.0, dk = 0.0, dv = 0.0;
                    for (int s = 0; s < T; s++) {
                        dq += dS[t * T + s] * K(s, d);
                        dk += dS[s * T + t] * Q(s, d);
                        dv += P[s * T + t] * DO(s, d);
                    }
                    dbase[(size_t)t * C3 + d] = dq * scale;
                    dbase[(size_t)t * C3 + C + d] = dk * scale;
                    dbase[(size_t)t * C3 + 2 * C + d] = dv;
                }
#undef Q
#undef K
#undef V
#undef DO
        }
    free(P);
    free(dS);
}

TEST(attention_forward_matches_torch)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const int B = 2, T = 5, C = 12, NH = 3;
    const size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    float *qkv = golden(g, "attention/qkv", nqkv), *want = golden(g, "attention/out", no);
    float *want_lse = golden(g, "attention/lse", nl);
    size_t ns = (size_t)k_attention_scratch(&ctx, B, T, NH);
    float *out = filled(no, NAN), *lse = filled(nl, NAN), *scratch = filled(ns, NAN);
    k_attention_forward(&ctx, t32(out, no), t32(lse, nl), t32(qkv, nqkv), t32(scratch, ns), B, T,
                        C, NH);
    check_close("attention out", out, want, no, 1e-4, 1e-5);
    check_close("attention lse", lse, want_lse, nl, 1e-5, 1e-5);
    free(qkv), free(want), free(want_lse), free(out), free(lse), free(scratch);
    st_close(g);
    kctx_free(&ctx);
}

struct attn_case {
    float *qkv, *lse, *scratch;
    size_t ns;
    int B, T, C, NH;
};

static void attn_fwd(struct fd *f)
{
    struct attn_case *s = f->state;
    k_attention_forward(f->ctx, t32(f->out, f->n_out), t32(s->lse, (size_t)s->B * s->NH * s->T),
                        t32(s->qkv, (size_t)s->B * s->T * 3 * s->C), t32(s->scratch, s->ns), s->B,
                        s->T, s->C, s->NH);
}

static void check_attention_backward(int B, int T, int C, int NH, int threads, uint64_t seed)
{
    struct kctx ctx = cpu_ctx(threads);
    const size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    /* exactly the scratch the op asks for, so ASan sees any overrun */
    size_t ns = (size_t)k_attention_scratch(&ctx, B, T, NH);
    struct attn_case s = {randn(nqkv, seed, 1.5f), malloc(nl * sizeof(float)),
                          malloc(ns * sizeof(float)), ns, B, T, C, NH};
    float *R = randn(no, seed + 1, 1.0f), *out = malloc(no * sizeof *out);
    struct fd f = {attn_fwd, &ctx, out, no, R, &s};
    attn_fwd(&f);

    double *ref_out = malloc(no * sizeof *ref_out), *ref_lse = malloc(nl * sizeof *ref_lse);
    double *ref_d = malloc(nqkv * sizeof *ref_d);
    ref_attention(s.qkv, R, B, T, C, NH, ref_out, ref_lse, ref_d);
    check_close_d("attention out vs naive", out, ref_out, no, 1e-4, 1e-5);
    check_close_d("attention lse vs naive", s.lse, ref_lse, nl, 1e-5, 1e-5);

    float *dqkv = filled(nqkv, NAN);
    k_attention_backward(&ctx, t32(dqkv, nqkv), t32(R, no), t32(out, no), t32(s.lse, nl),
                         t32(s.qkv, nqkv), t32(s.scratch, ns), B, T, C, NH);
    float *d1 = copy_of(dqkv, nqkv);
    k_attention_backward(&ctx, t32(dqkv, nqkv), t32(R, no), t32(out, no), t32(s.lse, nl),
                         t32(s.qkv, nqkv), t32(s.scratch, ns), B, T, C, NH);
    check_same_bits("attention dqkv overwritten", dqkv, d1, nqkv);
    check_close_d("attention dqkv vs naive", dqkv, ref_d, nqkv, 1e-4, 1e-5);
    fd_check(&f, "attention dqkv", s.qkv, nqkv, d1);
    free(s.qkv), free(s.lse), free(s.scratch), free(R), free(out), free(ref_out), free(ref_lse);
    free(ref_d), free(dqkv), free(d1);
    kctx_free(&ctx);
}

TEST(attention_backward_against_naive_and_finite_differences)
{
    check_attention_backward(2, 5, 12, 3, 0, 60);
    check_attention_backward(1, 7, 8, 2, 1, 62);
    check_attention_backward(3, 4, 6, 1, 2, 64);
}

/* The CPU backend takes queries 256 at a time: T = 300 leaves a short second
 * block, T = 520 three blocks, and dk, dv add up across them. */
TEST(attention_beyond_one_query_block_matches_naive)
{
    check_attention_backward(1, 300, 8, 2, 2, 66);
    check_attention_backward(2, 520, 4, 1, 1, 68);
}

/* --------------------------------------------------------------- patches */

TEST(patchify_then_linear_is_torch_conv2d)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const int B = 2, CH = 3, H = 8, W = 6, p = 2, OC = 8;
    const int T = (H / p) * (W / p), F = CH * p * p;
    const size_t ni = (size_t)B * CH * H * W, nt = (size_t)B * T * F, no = (size_t)B * T * OC;
    float *img = golden(g, "patchify/img", ni), *w = golden(g, "patchify/w", (size_t)OC * F);
    float *b = golden(g, "patchify/b", OC), *want = golden(g, "patchify/out", no);
    float *tok = filled(nt, NAN), *out = filled(no, NAN);
    k_patchify_forward(&ctx, t32(tok, nt), t32(img, ni), B, CH, H, W, p);
    /* the Conv2d weight [OC, CH, p, p] read as the Linear weight [OC, CH*p*p] */
    k_linear_forward(&ctx, t32(out, no), t32(tok, nt), t32(w, (size_t)OC * F), t32(b, OC), B * T,
                     F, OC);
    check_close("patch embedding", out, want, no, 1e-5, 1e-5);
    free(img), free(w), free(b), free(want), free(tok), free(out);
    st_close(g);
    kctx_free(&ctx);
}

TEST(unpatchify_matches_dit_and_backward_inverts_it)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const int B = 2, CH = 4, H = 4, W = 6, p = 2;
    const size_t n = (size_t)B * CH * H * W;
    float *tok = golden(g, "unpatchify/tok", n), *want = golden(g, "unpatchify/img", n);
    float *img = filled(n, NAN), *back = filled(n, NAN);
    k_unpatchify_forward(&ctx, t32(img, n), t32(tok, n), B, CH, H, W, p);
    check_same_bits("unpatchify", img, want, n); /* a permutation: exact */
    /* the backward of a permutation is its inverse */
    k_unpatchify_backward(&ctx, t32(back, n), t32(img, n), B, CH, H, W, p);
    check_same_bits("unpatchify backward", back, tok, n);
    free(tok), free(want), free(img), free(back);
    st_close(g);
    kctx_free(&ctx);
}

struct unpatch_case {
    float *tok;
    int B, CH, H, W, p;
};

static void unpatch_fwd(struct fd *f)
{
    struct unpatch_case *s = f->state;
    k_unpatchify_forward(f->ctx, t32(f->out, f->n_out), t32(s->tok, f->n_out), s->B, s->CH, s->H,
                         s->W, s->p);
}

TEST(unpatchify_backward_finite_differences)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 1, CH = 3, H = 6, W = 9, p = 3;
    const size_t n = (size_t)B * CH * H * W;
    struct unpatch_case s = {randn(n, 70, 1.0f), B, CH, H, W, p};
    float *R = randn(n, 71, 1.0f), *out = malloc(n * sizeof *out), *dtok = filled(n, NAN);
    struct fd f = {unpatch_fwd, &ctx, out, n, R, &s};
    k_unpatchify_backward(&ctx, t32(dtok, n), t32(R, n), B, CH, H, W, p);
    fd_check(&f, "unpatchify dtok", s.tok, n, dtok);
    free(s.tok), free(R), free(out), free(dtok);
    kctx_free(&ctx);
}

/* ------------------------------------------------------------ embeddings */

struct emb_case {
    float *table;
    const int32_t *ids;
    size_t ntable;
    int B, C;
};

static void emb_fwd(struct fd *f)
{
    struct emb_case *s = f->state;
    k_embedding_forward(f->ctx, t32(f->out, f->n_out), t32(s->table, s->ntable), s->ids, s->B,
                        s->C);
}

TEST(embedding_forward_backward_with_repeated_ids)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 6, C = 12, rows = 5;
    const int32_t ids[6] = {3, 0, 3, 4, 3, 0}; /* row 1, 2 unused; row 3 three times */
    const size_t nt = (size_t)rows * C, no = (size_t)B * C;
    struct emb_case s = {randn(nt, 80, 1.0f), ids, nt, B, C};
    float *R = randn(no, 81, 1.0f), *out = filled(no, NAN);
    struct fd f = {emb_fwd, &ctx, out, no, R, &s};
    emb_fwd(&f);
    for (int b = 0; b < B; b++)
        check_same_bits("embedding row", out + b * C, s.table + ids[b] * C, C);

    float *d0 = randn(nt, 82, 1.0f), *d = copy_of(d0, nt);
    k_embedding_backward(&ctx, t32(d, nt), t32(R, no), ids, B, C);
    float *d1 = copy_of(d, nt);
    k_embedding_backward(&ctx, t32(d, nt), t32(R, no), ids, B, C);
    check_doubled("dtable", d0, d1, d, nt);
    float *gt = minus(d1, d0, nt);
    fd_check(&f, "dtable", s.table, nt, gt);
    free(s.table), free(R), free(out), free(d0), free(d), free(d1), free(gt);
    kctx_free(&ctx);
}

TEST(timestep_embedding_matches_dit_and_diffusers)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const int B = 6, D = 18;
    const size_t n = (size_t)B * D;
    float *t = golden(g, "timestep/t", B), *dit = golden(g, "timestep/dit", n);
    float *dif = golden(g, "timestep/diffusers", n), *out = filled(n, NAN);
    /* torch's vectorised exp is one ulp off the correctly rounded expf at
     * one of these frequencies; t * freq then moves by an ulp of the
     * argument, up to 6e-5 at 1000 rad. The tolerance allows that and
     * nothing like a wrong frequency. */
    k_timestep_embedding(&ctx, t32(out, n), t, B, D, 10000.0f, 0.0f);
    check_close("DiT timestep embedding", out, dit, n, 0, 1e-4);
    k_timestep_embedding(&ctx, t32(out, n), t, B, D, 10000.0f, 1.0f);
    check_close("diffusers timestep embedding", out, dif, n, 0, 1e-4);
    /* t = 0: cos 1, sin 0 exactly */
    for (int i = 0; i < D / 2; i++) {
        CHECK(out[i] == 1.0f);
        CHECK(out[D / 2 + i] == 0.0f);
    }
    free(t), free(dit), free(dif), free(out);
    st_close(g);
    kctx_free(&ctx);
}

/* ------------------------------------------------ elementwise, reductions */

TEST(elementwise_ops)
{
    struct kctx ctx = cpu_ctx(0);
    const int B = 3, T = 5, C = 7;
    const size_t n = (size_t)B * T * C;
    float *a = randn(n, 90, 1.0f), *b = randn((size_t)T * C, 91, 1.0f), *out = filled(n, NAN);
    k_add_broadcast_forward(&ctx, t32(out, n), t32(a, n), t32(b, (size_t)T * C), B, T, C);
    for (size_t i = 0; i < n; i++)
        CHECK(out[i] == a[i] + b[i % ((size_t)T * C)]);

    float *x = randn(n, 92, 1.0f), *y = randn(n, 93, 1.0f), *y0 = copy_of(y, n);
    k_add(&ctx, t32(out, n), t32(x, n), t32(y, n), (int64_t)n);
    for (size_t i = 0; i < n; i++)
        CHECK(out[i] == x[i] + y[i]);
    k_axpy(&ctx, t32(y, n), -0.25f, t32(x, n), (int64_t)n);
    for (size_t i = 0; i < n; i++)
        CHECK(y[i] == y0[i] + -0.25f * x[i]);
    k_scale(&ctx, t32(y, n), 3.0f, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        CHECK(y[i] == (y0[i] + -0.25f * x[i]) * 3.0f);
    k_fill(&ctx, t32(y, n), 1.5f, (int64_t)n);
    for (size_t i = 0; i < n; i++)
        CHECK(y[i] == 1.5f);

    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    CHECK_NEAR(k_sum_squares(&ctx, t32(x, n), (int64_t)n), ss, 1e-12 * ss);
    CHECK_NEAR(k_sum_squares(&ctx, t32(x, 0), 0), 0.0, 0.0);
    free(a), free(b), free(out), free(x), free(y), free(y0);
    kctx_free(&ctx);
}

TEST(mse_matches_torch)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = 50;
    float *pred = golden(g, "mse/pred", n), *target = golden(g, "mse/target", n);
    float *loss = golden(g, "mse/loss", 1), *grad = golden(g, "mse/grad", n);
    float *d = filled(n, NAN);
    float got = k_mse_forward_backward(&ctx, t32(d, n), t32(pred, n), t32(target, n),
                                       (int64_t)n, 0.5f);
    CHECK_NEAR(got, loss[0], 1e-6 * fabs(loss[0]));
    check_close("mse dpred (scale 0.5)", d, grad, n, 1e-5, 1e-8);
    /* without dpred: the loss alone */
    float got2 = k_mse_forward_backward(&ctx, tensor_none(), t32(pred, n), t32(target, n),
                                        (int64_t)n, 0.5f);
    CHECK(got2 == got);
    free(pred), free(target), free(loss), free(grad), free(d);
    st_close(g);
    kctx_free(&ctx);
}

struct mse_case {
    float *pred, *target;
};

static void mse_fwd(struct fd *f)
{
    struct mse_case *s = f->state;
    f->out[0] = k_mse_forward_backward(f->ctx, tensor_none(), t32(s->pred, 29), t32(s->target, 29),
                                       29, 1.0f);
}

TEST(mse_backward_finite_differences)
{
    struct kctx ctx = cpu_ctx(0);
    const size_t n = 29;
    struct mse_case s = {randn(n, 95, 1.0f), randn(n, 96, 1.0f)};
    float out, one = 1.0f, *d = filled(n, NAN);
    struct fd f = {mse_fwd, &ctx, &out, 1, &one, &s};
    k_mse_forward_backward(&ctx, t32(d, n), t32(s.pred, n), t32(s.target, n), (int64_t)n, 1.0f);
    fd_check(&f, "mse dpred", s.pred, n, d);
    free(s.pred), free(s.target), free(d);
    kctx_free(&ctx);
}

/* --------------------------------------------------------------- adamw */

TEST(adamw_matches_torch_after_one_and_three_steps)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = 37;
    float *p = golden(g, "adamw/p0", n), *grads = golden(g, "adamw/g", 3 * n);
    float *m = filled(n, 0.0f), *v = filled(n, 0.0f);
    struct adamw_params hp = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0};
    for (int step = 1; step <= 3; step++) {
        hp.step = step;
        k_adamw_update(&ctx, t32(p, n), t32(grads + (step - 1) * n, n), t32(m, n), t32(v, n),
                       tensor_none(), (int64_t)n, &hp);
        if (step == 2)
            continue;
        char key[32];
        snprintf(key, sizeof key, "adamw/p%d", step);
        float *wp = golden(g, key, n);
        snprintf(key, sizeof key, "adamw/m%d", step);
        float *wm = golden(g, key, n);
        snprintf(key, sizeof key, "adamw/v%d", step);
        float *wv = golden(g, key, n);
        check_close(step == 1 ? "adamw param, step 1" : "adamw param, step 3", p, wp, n, 1e-6,
                    1e-7);
        check_close("adamw m", m, wm, n, 1e-6, 1e-9);
        check_close("adamw v", v, wv, n, 1e-6, 1e-12);
        free(wp), free(wm), free(wv);
    }
    free(p), free(grads), free(m), free(v);
    st_close(g);
    kctx_free(&ctx);
}

/* ------------------------------------------------------- determinism */

/* Everything but the BLAS calls reduces in a fixed order over a fixed
 * partition, so one thread and two give the same bits. The sizes are above
 * the single-thread cutoff so that both really run in parallel. */
struct det_out {
    float ln_out[64 * 1024], ln_d[64 * 1024];
    float mod_d[2 * 3 * 1024];
    float adaln_out[64 * 1024], adaln_d[64 * 1024], adaln_mod_d[2 * 2 * 1024];
    float emb_d[4 * 1024];
    float attn_out[2 * 64 * 64], attn_d[2 * 64 * 192];
    float mse, mse_d[64 * 1024];
    float bias_d[1024];
    double ss;
};

static void det_run(int threads, struct det_out *o)
{
    struct kctx ctx = cpu_ctx(threads);
    const int M = 64, C = 1024;
    const size_t n = (size_t)M * C;
    float *x = randn(n, 100, 1.0f), *dy = randn(n, 101, 1.0f);
    float mean[64], rstd[64];
    k_layernorm_forward(&ctx, t32(o->ln_out, n), t32(mean, M), t32(rstd, M), t32(x, n), M, C,
                        1e-6f);
    memset(o->ln_d, 0, sizeof o->ln_d);
    k_layernorm_backward(&ctx, t32(o->ln_d, n), t32(dy, n), t32(x, n), t32(mean, M), t32(rstd, M),
                         M, C);

    /* B 2, T 32, C 1024 over the same buffers; mod rows of 3C */
    float *mod = randn(2 * 3 * 1024, 102, 1.0f);
    memset(o->mod_d, 0, sizeof o->mod_d);
    size_t ext = (size_t)3 * 1024 + 1024;
    k_modulate_backward(&ctx, tensor_none(), t32(o->mod_d, ext), t32(o->mod_d + 1024, ext),
                        t32(dy, n), t32(x, n), t32(mod + 1024, ext), 2, 32, C, 3 * 1024);
    k_gated_residual_backward(&ctx, tensor_none(), t32(o->mod_d + 2048, ext), t32(dy, n),
                              t32(x, n), t32(mod + 2048, ext), 2, 32, C, 3 * 1024);

    /* adaLN over B 2, T 32; shift and scale rows of 2C in mod */
    size_t ext2 = (size_t)2 * 1024 + 1024;
    float amean[64], arstd[64];
    k_adaln_forward(&ctx, t32(o->adaln_out, n), t32(amean, M), t32(arstd, M), t32(x, n),
                    t32(mod, ext2), t32(mod + 1024, ext2), 2, 32, C, 2 * 1024, 1e-6f);
    memset(o->adaln_d, 0, sizeof o->adaln_d);
    memset(o->adaln_mod_d, 0, sizeof o->adaln_mod_d);
    k_adaln_backward(&ctx, t32(o->adaln_d, n), t32(o->adaln_mod_d, ext2),
                     t32(o->adaln_mod_d + 1024, ext2), t32(dy, n), t32(x, n), t32(amean, M),
                     t32(arstd, M), t32(mod + 1024, ext2), 2, 32, C, 2 * 1024);

    int32_t ids[64];
    for (int i = 0; i < M; i++)
        ids[i] = (i * 7) % 4;
    memset(o->emb_d, 0, sizeof o->emb_d);
    k_embedding_backward(&ctx, t32(o->emb_d, 4 * 1024), t32(dy, n), ids, M, C);

    const int B = 2, T = 64, AC = 64, NH = 4;
    size_t nqkv = (size_t)B * T * 3 * AC, no = (size_t)B * T * AC, nl = (size_t)B * NH * T;
    size_t ns = (size_t)k_attention_scratch(&ctx, B, T, NH);
    float *scratch = malloc(ns * sizeof *scratch), *lse = malloc(nl * sizeof *lse);
    k_attention_forward(&ctx, t32(o->attn_out, no), t32(lse, nl), t32(x, nqkv), t32(scratch, ns),
                        B, T, AC, NH);
    k_attention_backward(&ctx, t32(o->attn_d, nqkv), t32(dy, no), t32(o->attn_out, no),
                         t32(lse, nl), t32(x, nqkv), t32(scratch, ns), B, T, AC, NH);

    /* dbias alone: the only part of the Linear backward outside BLAS */
    for (int i = 0; i < C; i++)
        o->bias_d[i] = 0.25f;
    k_linear_backward(&ctx, tensor_none(), tensor_none(), t32(o->bias_d, C), t32(dy, n),
                      t32(x, (size_t)M * 64), t32(x, (size_t)C * 64), M, 64, C);

    o->mse = k_mse_forward_backward(&ctx, t32(o->mse_d, n), t32(x, n), t32(dy, n), (int64_t)n,
                                    1.0f);
    o->ss = k_sum_squares(&ctx, t32(x, n), (int64_t)n);
    free(x), free(dy), free(mod), free(scratch), free(lse);
    kctx_free(&ctx);
}

TEST(results_do_not_depend_on_thread_count)
{
    struct det_out *one = calloc(1, sizeof *one), *two = calloc(1, sizeof *two);
    det_run(1, one);
    det_run(2, two);
    check_same_bits("layernorm out", one->ln_out, two->ln_out, 64 * 1024);
    check_same_bits("layernorm dinp", one->ln_d, two->ln_d, 64 * 1024);
    check_same_bits("dshift, dscale, dgate", one->mod_d, two->mod_d, 2 * 3 * 1024);
    check_same_bits("adaln out", one->adaln_out, two->adaln_out, 64 * 1024);
    check_same_bits("adaln dx", one->adaln_d, two->adaln_d, 64 * 1024);
    check_same_bits("adaln dshift, dscale", one->adaln_mod_d, two->adaln_mod_d, 2 * 2 * 1024);
    check_same_bits("dtable", one->emb_d, two->emb_d, 4 * 1024);
    check_same_bits("attention out", one->attn_out, two->attn_out, 2 * 64 * 64);
    check_same_bits("attention dqkv", one->attn_d, two->attn_d, 2 * 64 * 192);
    check_same_bits("mse dpred", one->mse_d, two->mse_d, 64 * 1024);
    check_same_bits("dbias", one->bias_d, two->bias_d, 1024);
    CHECK(one->mse == two->mse);
    CHECK(one->ss == two->ss);
    free(one), free(two);
}

/* ------------------------------------------------------------ dispatcher */

TEST(cuda_context_without_a_gpu_is_refused)
{
    /* This machine has no GPU (CI's neither): the context says so. */
    struct kctx ctx;
    err_clear();
    if (device_cuda_count() == 0) {
        CHECK_INT(kctx_init(&ctx, DEVICE_CUDA, 0), -1);
        CHECK_CONTAINS(err_get(), "CUDA");
    }

    struct kctx cpu;
    CHECK_INT(kctx_init(&cpu, DEVICE_CPU, 2), 0);
    CHECK_INT(cpu.device, DEVICE_CPU);
    CHECK_INT(cpu.threads, 2);
    kctx_free(&cpu);
}


static float four[4];

static void bf16_on_the_cpu(void)
{
    struct kctx ctx = cpu_ctx(0);
    uint16_t x[4] = {0};
    struct tensor t = {x, KDT_BF16, DEVICE_CPU, 4};
    k_gelu_forward(&ctx, t32(four, 4), t, 4);
}

static void a_short_output(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_add(&ctx, t32(four, 3), t32(four, 4), t32(four, 4), 4);
}

static void a_tensor_of_the_other_device(void)
{
    struct kctx ctx = cpu_ctx(0);
    struct tensor t = {four, KDT_F32, DEVICE_CUDA, 4};
    k_add(&ctx, t32(four, 4), t, t32(four, 4), 4);
}

static void no_context(void)
{
    k_sync(NULL);
}

static void a_zero_step(void)
{
    struct kctx ctx = cpu_ctx(0);
    struct adamw_params hp = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0};
    k_adamw_update(&ctx, t32(four, 4), t32(four, 4), t32(four, 4), t32(four, 4), tensor_none(),
                   4, &hp);
}

/* A broken contract is the caller's bug: the dispatcher aborts, naming the
 * op and what is wrong. */
TEST(dispatcher_aborts_naming_the_op_and_the_problem)
{
    static const struct {
        void (*fn)(void);
        const char *want;
    } cases[] = {
        {bf16_on_the_cpu, "dit: kernel gelu_forward: inp is bf16; the cpu backend computes in f32 "
                          "only (a bug in the caller)"},
        {a_short_output, "dit: kernel add: out has 3 elements, the shape needs 4 (a bug in the "
                         "caller)"},
        {a_tensor_of_the_other_device, "dit: kernel add: a is on cuda but the context is on cpu"},
        {no_context, "dit: kernel sync: no kernel context"},
        {a_zero_step, "dit: kernel adamw_update: step 0 is below 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int sig = 0;
        char *msg = test_stderr_of(cases[i].fn, &sig);
        CHECK_INT(sig, SIGABRT);
        CHECK_CONTAINS(msg, cases[i].want);
        free(msg);
    }
}
