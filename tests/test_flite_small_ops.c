/* flite_small_ops: two small ops of F-Lite on the CPU backend. The exact
 * GELU of its MLP (k_gelu_erf_forward, k_gelu_erf_backward) against
 * torch.nn.GELU() and its autograd gradient in float64, and against erfc in
 * double over a dense sweep of [-12, 12], in place too; the residual value
 * mix (k_mix_forward, k_mix_backward: v = lam v + (1 - lam) v_0) against
 * F-Lite's expression and its autograd gradients
 * (tests/reference/make_flite_small_op_goldens.py ->
 * tests/fixtures/flite_small_ops/goldens.safetensors), on row views of
 * fused [M, 3C] buffers whose other elements must be neither read nor
 * written; lam absent (a strided copy; backward da += dout), db absent, dlam
 * accumulating onto a nonzero start; dlam the same bits on every run and
 * for any thread count; and the dispatchers refusing broken calls. */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* A purpose of this file's own, so no product stream is reused here. */
#define TEST_PURPOSE 0x464cu

#define randn(n, seed, scale) test_normal(n, seed, scale, TEST_PURPOSE)

static struct tensor t32(float *p, size_t n)
{
    return tensor_f32(p, (int64_t)n);
}

#define cpu_ctx test_cpu_ctx

static struct st_file *goldens_open(void)
{
    return test_goldens_open("fixtures/flite_small_ops/goldens.safetensors");
}

#define golden test_golden_f32

/* |got - want| <= tol (|want| + floor) for every element: floor 0 is a
 * plain relative bound, which the tails of the GELU must meet too. Prints
 * the largest error seen. */
static void check_near_at(const char *file, int line, const char *what, const float *got,
                          const double *want, size_t n, double tol, double floor)
{
    double worst = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double den = fabs(want[i]) + floor;
        double err = fabs((double)got[i] - want[i]);
        double rel = den > 0 ? err / den : err;
        worst = rel > worst ? rel : worst;
        if (!(rel <= tol) && bad++ < 5)
            test_fail(file, line, "%s[%zu]: got %.9g, want %.17g (relative error %.3g)", what, i,
                      (double)got[i], want[i], rel);
    }
    fprintf(stderr, "    %s: largest relative error %.2g\n", what, worst);
}
#define check_near(what, got, want, n, tol, floor)                                               \
    check_near_at(__FILE__, __LINE__, what, got, want, n, tol, floor)

static double *widen(const float *x, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

#define check_same_bits_at test_check_same_bits
#define check_same_bits(what, a, b, n) check_same_bits_at(__FILE__, __LINE__, what, a, b, n)

/* ---- the exact GELU ---------------------------------------------------------------- */

/* Phi(x) and gelu, gelu' in double: the definitions. */
static double phi_d(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

static double gelu_d(double x)
{
    return x * phi_d(x);
}

static double gelu_grad_d(double x)
{
    return phi_d(x) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
}

/* dinp within tol of want, relative to |want| plus its terms' scale
 * |dout| (Phi(x) + |x| phi(x)): the gradient cancels to 0 near x = -0.75.
 * Only where x >= lo. */
static void check_gelu_grad_at(const char *file, int line, const char *what, const float *got,
                               const float *want, const float *x, const float *dout, size_t n,
                               double lo, double tol)
{
    double worst = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        if (xi < lo)
            continue;
        double scale = fabs((double)dout[i]) *
                       (phi_d(xi) + fabs(xi) * exp(-0.5 * xi * xi) / sqrt(2.0 * M_PI));
        double err = fabs((double)got[i] - want[i]) / (fabs((double)want[i]) + scale + 1e-300);
        worst = err > worst ? err : worst;
        if (!(err <= tol) && bad++ < 5)
            test_fail(file, line, "%s[%zu] (x %.9g): got %.9g, want %.9g", what, i, xi,
                      (double)got[i], (double)want[i]);
    }
    fprintf(stderr, "    %s: largest relative error %.2g\n", what, worst);
}
#define check_gelu_grad(what, got, want, x, dout, n, lo, tol)                                    \
    check_gelu_grad_at(__FILE__, __LINE__, what, got, want, x, dout, n, lo, tol)

/* Against torch's values where its float64 is exact (x >= -5: it takes
 * 1 + erf, which cancels further out), and against mpmath's everywhere:
 * every element to 1e-6 of itself, the tails (gelu(-10) = -7.6e-23) too. */
TEST(gelu_erf_matches_torch_gelu)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = 301;
    float *x = golden(g, "gelu/x", n), *dout = golden(g, "gelu/dout", n);
    float *want = golden(g, "gelu/out", n), *want_d = golden(g, "gelu/dinp", n);
    float *exact = golden(g, "gelu/out_exact", n), *exact_d = golden(g, "gelu/dinp_exact", n);
    float *out = test_filled(n, NAN), *dinp = test_filled(n, NAN);

    k_gelu_erf_forward(&ctx, t32(out, n), t32(x, n), (int64_t)n);
    size_t m = 0;
    double *w = malloc(n * sizeof *w), *we = malloc(n * sizeof *we);
    float *o5 = malloc(n * sizeof *o5);
    for (size_t i = 0; i < n; i++) {
        we[i] = exact[i];
        if (x[i] >= -5.0f)
            w[m] = want[i], o5[m++] = out[i];
    }
    check_near("gelu_erf out, torch (x >= -5)", o5, w, m, 1e-6, 0);
    check_near("gelu_erf out, exact", out, we, n, 1e-6, 0);
    CHECK(x[0] == -10.0f && exact[0] < -7e-23f && out[0] < -7e-23f);
    CHECK(x[100] == 0.0f && out[100] == 0.0f); /* gelu(0) = 0 */

    k_gelu_erf_backward(&ctx, t32(dinp, n), t32(dout, n), t32(x, n), (int64_t)n);
    check_gelu_grad("gelu_erf dinp, torch (x >= -5)", dinp, want_d, x, dout, n, -5.0, 1e-6);
    check_gelu_grad("gelu_erf dinp, exact", dinp, exact_d, x, dout, n, -INFINITY, 1e-6);

    /* in place: the same bits */
    float *y = malloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    k_gelu_erf_forward(&ctx, t32(y, n), t32(y, n), (int64_t)n);
    check_same_bits("gelu_erf in place", y, out, n);

    /* no dinp: nothing to do */
    k_gelu_erf_backward(&ctx, tensor_none(), t32(dout, n), t32(x, n), (int64_t)n);

    free(x), free(dout), free(want), free(want_d), free(exact), free(exact_d), free(out);
    free(dinp), free(w), free(we), free(o5), free(y);
    st_close(g);
    kctx_free(&ctx);
}

/* A dense sweep of [-12, 12] (every vector lane and the thread split's
 * tails met) against erfc in double: the forward within 1e-6 of each value
 * (at x = -12 that is 2e-32), the gradient within 2e-6 of its terms' scale;
 * and the limits far out (0 and x, 0 and 1), and the same bits for any
 * thread count. */
TEST(gelu_erf_sweep_against_erfc)
{
    const size_t n = 240001;
    float *x = malloc(n * sizeof *x), *one = test_filled(n, 1.0f);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(-12.0 + 24.0 * (double)i / (double)(n - 1));
    double *w = malloc(n * sizeof *w), *wd = malloc(n * sizeof *wd);
    double *fl = malloc(n * sizeof *fl);
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        w[i] = gelu_d(xi);
        wd[i] = gelu_grad_d(xi);
        fl[i] = phi_d(xi) + fabs(xi) * exp(-0.5 * xi * xi) / sqrt(2.0 * M_PI);
    }
    float *out = test_filled(n, NAN), *d = test_filled(n, NAN);
    struct kctx ctx = cpu_ctx(0);
    k_gelu_erf_forward(&ctx, t32(out, n), t32(x, n), (int64_t)n);
    k_gelu_erf_backward(&ctx, t32(d, n), t32(one, n), t32(x, n), (int64_t)n);
    kctx_free(&ctx);
    check_near("gelu_erf sweep out", out, w, n, 1e-6, 0);
    double worst = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)d[i] - wd[i]) / (fabs(wd[i]) + fl[i]);
        worst = err > worst ? err : worst;
        if (!(err <= 2e-6) && bad++ < 5)
            test_fail(__FILE__, __LINE__, "gelu_erf sweep dinp at x %.9g: got %.9g, want %.17g",
                      (double)x[i], (double)d[i], wd[i]);
    }
    fprintf(stderr, "    gelu_erf sweep dinp: largest relative error %.2g\n", worst);

    for (int t = 1; t <= 3; t += 2) {
        struct kctx c1 = cpu_ctx(t);
        float *o1 = test_filled(n, NAN), *d1 = test_filled(n, NAN);
        k_gelu_erf_forward(&c1, t32(o1, n), t32(x, n), (int64_t)n);
        k_gelu_erf_backward(&c1, t32(d1, n), t32(one, n), t32(x, n), (int64_t)n);
        check_same_bits("gelu_erf out, other thread count", o1, out, n);
        check_same_bits("gelu_erf dinp, other thread count", d1, d, n);
        free(o1), free(d1);
        kctx_free(&c1);
    }

    /* far out: gelu(x) = x, gelu' = 1 above; 0 and 0 below (-0 for x < 0 is
     * fine: compare values) */
    float far[6] = {30.0f, 1e30f, -30.0f, -1e30f, INFINITY, -0.0f}, fo[6], fd[6];
    float ones[6] = {1, 1, 1, 1, 1, 1};
    struct kctx c2 = cpu_ctx(1);
    k_gelu_erf_forward(&c2, t32(fo, 6), t32(far, 6), 6);
    k_gelu_erf_backward(&c2, t32(fd, 4), t32(ones, 4), t32(far, 4), 4);
    kctx_free(&c2);
    CHECK(fo[0] == 30.0f && fo[1] == 1e30f && fo[2] == 0.0f && fo[3] == 0.0f);
    CHECK(fo[4] == INFINITY && fo[5] == 0.0f);
    CHECK(fd[0] == 1.0f && fd[1] == 1.0f && fd[2] == 0.0f && fd[3] == 0.0f);
    free(x), free(one), free(w), free(wd), free(fl), free(out), free(d);
}

/* ---- the residual value mix ---------------------------------------------------------- */

enum { MM = 6, MC = 19, MS = 3 * MC }; /* the goldens' M, C; rows of fused qkv */
#define SENTINEL 7.0f

/* A [MM, MS] buffer holding `val` [MM, MC] in its v columns (2C..3C) and
 * `fill` everywhere else. */
static float *qkv_with(const float *val, float fill)
{
    float *buf = test_filled((size_t)MM * MS, fill);
    for (int m = 0; m < MM; m++)
        memcpy(buf + (size_t)m * MS + 2 * MC, val + (size_t)m * MC, MC * sizeof *buf);
    return buf;
}

/* The elements of buf outside its v columns are all `fill`. */
static void check_outside_at(const char *file, int line, const char *what, const float *buf,
                             float fill)
{
    for (int m = 0; m < MM; m++)
        for (int c = 0; c < 2 * MC; c++)
            if (memcmp(&buf[(size_t)m * MS + c], &fill, sizeof fill) != 0) {
                test_fail(file, line, "%s: element (%d, %d) outside the view is %.9g", what, m, c,
                          (double)buf[(size_t)m * MS + c]);
                return;
            }
}
#define check_outside(what, buf, fill) check_outside_at(__FILE__, __LINE__, what, buf, fill)

/* The v columns of buf, [MM, MC] (malloc'd). */
static float *v_of(const float *buf)
{
    float *v = malloc((size_t)MM * MC * sizeof *v);
    for (int m = 0; m < MM; m++)
        memcpy(v + (size_t)m * MC, buf + (size_t)m * MS + 2 * MC, MC * sizeof *v);
    return v;
}

/* The views at column 2C of [MM, MS] buffers: as long as their rows span. */
#define VIEW_N ((size_t)(MM - 1) * MS + MC)
static struct tensor vview(float *buf)
{
    return t32(buf + 2 * MC, VIEW_N);
}

TEST(mix_forward_matches_flite_residual_value)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = (size_t)MM * MC;
    float *a = golden(g, "mix/a", n), *b = golden(g, "mix/b", n);
    float *lam = golden(g, "mix/lam", 1), *want = golden(g, "mix/out", n);
    double *w = widen(want, n);
    /* NaN around a's and b's rows: a read outside the view would show */
    float *abuf = qkv_with(a, NAN), *bbuf = qkv_with(b, NAN);
    float *obuf = test_filled((size_t)MM * MS, SENTINEL);

    k_mix_forward(&ctx, vview(obuf), vview(abuf), vview(bbuf), t32(lam, 1), MM, MC, MS, MS, MS);
    float *out = v_of(obuf);
    check_near("mix out", out, w, n, 1e-6, 1.0);
    check_outside("mix out", obuf, SENTINEL);

    /* contiguous out from the strided inputs: the same bits */
    float *flat = test_filled(n, SENTINEL);
    k_mix_forward(&ctx, t32(flat, n), vview(abuf), vview(bbuf), t32(lam, 1), MM, MC, MC, MS, MS);
    check_same_bits("mix out, contiguous", flat, out, n);

    /* in place over a (out is a): the same bits */
    float *ibuf = qkv_with(a, NAN);
    k_mix_forward(&ctx, vview(ibuf), vview(ibuf), vview(bbuf), t32(lam, 1), MM, MC, MS, MS, MS);
    float *in_place = v_of(ibuf);
    check_same_bits("mix out in place", in_place, out, n);
    check_outside("mix out in place", ibuf, NAN);

    /* lam absent: out = a, bit for bit, b not needed */
    float *cbuf = test_filled((size_t)MM * MS, SENTINEL);
    k_mix_forward(&ctx, vview(cbuf), vview(abuf), tensor_none(), tensor_none(), MM, MC, MS, MS,
                  MS);
    float *copy = v_of(cbuf);
    check_same_bits("mix without lam: a copy", copy, a, n);
    check_outside("mix without lam", cbuf, SENTINEL);

    free(a), free(b), free(lam), free(want), free(w), free(abuf), free(bbuf), free(obuf);
    free(out), free(flat), free(ibuf), free(in_place), free(cbuf), free(copy);
    st_close(g);
    kctx_free(&ctx);
}

TEST(mix_backward_matches_autograd)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = (size_t)MM * MC;
    float *a = golden(g, "mix/a", n), *b = golden(g, "mix/b", n);
    float *lam = golden(g, "mix/lam", 1), *dout = golden(g, "mix/dout", n);
    float *want_da = golden(g, "mix/da", n), *want_db = golden(g, "mix/db", n);
    float *want_dl = golden(g, "mix/dlam", 1);
    float *abuf = qkv_with(a, NAN), *bbuf = qkv_with(b, NAN), *dobuf = qkv_with(dout, NAN);
    /* gradients accumulate: they start from values of their own */
    float *da0 = randn(n, 1, 1.0f), *db0 = randn(n, 2, 1.0f);
    float *dabuf = qkv_with(da0, SENTINEL), *db = malloc(n * sizeof *db);
    memcpy(db, db0, n * sizeof *db);
    float dlam = 0.25f;

    k_mix_backward(&ctx, vview(dabuf), t32(db, n), t32(&dlam, 1), vview(dobuf), vview(abuf),
                   vview(bbuf), t32(lam, 1), MM, MC, MS, MS, MS);
    double *w_da = malloc(n * sizeof *w_da), *w_db = malloc(n * sizeof *w_db);
    for (size_t i = 0; i < n; i++) {
        w_da[i] = (double)da0[i] + want_da[i];
        w_db[i] = (double)db0[i] + want_db[i];
    }
    float *da = v_of(dabuf);
    check_near("mix da", da, w_da, n, 1e-6, 1.0);
    check_outside("mix da", dabuf, SENTINEL);
    check_near("mix db", db, w_db, n, 1e-6, 1.0);
    double w_dl = 0.25 + (double)want_dl[0];
    check_near("mix dlam", &dlam, &w_dl, 1, 1e-6, 0);

    /* dlam alone (no da, no db) from the same start: the same bits */
    float dlam2 = 0.25f;
    k_mix_backward(&ctx, tensor_none(), tensor_none(), t32(&dlam2, 1), vview(dobuf), vview(abuf),
                   vview(bbuf), t32(lam, 1), MM, MC, MS, MS, MS);
    check_same_bits("mix dlam alone", &dlam2, &dlam, 1);

    /* da alone (db, dlam absent; a and b then unread, so absent too) */
    float *dabuf2 = qkv_with(da0, SENTINEL);
    k_mix_backward(&ctx, vview(dabuf2), tensor_none(), tensor_none(), vview(dobuf), tensor_none(),
                   tensor_none(), t32(lam, 1), MM, MC, MS, MS, MS);
    float *da2 = v_of(dabuf2);
    check_same_bits("mix da alone", da2, da, n);

    /* lam absent (the forward was a copy): da += dout exactly, one rounding */
    float *dabuf3 = qkv_with(da0, SENTINEL);
    k_mix_backward(&ctx, vview(dabuf3), tensor_none(), tensor_none(), vview(dobuf), tensor_none(),
                   tensor_none(), tensor_none(), MM, MC, MS, MS, MS);
    float *da3 = v_of(dabuf3), *sum = malloc(n * sizeof *sum);
    for (size_t i = 0; i < n; i++)
        sum[i] = da0[i] + dout[i];
    check_same_bits("mix without lam: da += dout", da3, sum, n);
    check_outside("mix without lam", dabuf3, SENTINEL);

    free(a), free(b), free(lam), free(dout), free(want_da), free(want_db), free(want_dl);
    free(abuf), free(bbuf), free(dobuf), free(da0), free(db0), free(dabuf), free(db);
    free(w_da), free(w_db), free(da), free(dabuf2), free(da2), free(dabuf3), free(da3), free(sum);
    st_close(g);
    kctx_free(&ctx);
}

/* F-Lite-like rows (517 x 96, views at 2C of rows 3C; more than the 64
 * chunks, not a multiple of them): dlam the same bits on two runs and on
 * 1, 2, 3 and 8 threads, and within 1e-6 of the sum in double; da, db the
 * same bits too. */
TEST(mix_backward_dlam_same_bits_every_run_and_thread_count)
{
    const int M = 517, C = 96, S = 3 * C;
    const size_t nb = (size_t)M * S, n = (size_t)M * C, nv = (size_t)(M - 1) * S + C;
    float *abuf = randn(nb, 10, 1.0f), *bbuf = randn(nb, 11, 2.0f), *dobuf = randn(nb, 12, 1.0f);
    float lam = 0.625f;
    double want = -3.5;
    for (int m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)m * S + 2 * C + c;
            want += (double)dobuf[i] * ((double)abuf[i] - bbuf[i]);
        }
    float first = 0, *da_first = NULL, *db_first = NULL;
    const int threads[] = {0, 0, 1, 2, 3, 8};
    for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
        struct kctx ctx = cpu_ctx(threads[k]);
        float dl = -3.5f, *dabuf = randn(nb, 13, 1.0f), *db = randn(n, 14, 1.0f);
        k_mix_backward(&ctx, t32(dabuf + 2 * C, nv), t32(db, n), t32(&dl, 1),
                       t32(dobuf + 2 * C, nv), t32(abuf + 2 * C, nv), t32(bbuf + 2 * C, nv),
                       t32(&lam, 1), M, C, S, S, S);
        if (k == 0) {
            first = dl;
            da_first = dabuf, db_first = db;
            check_near("mix dlam, 517 x 96", &dl, &want, 1, 1e-6, 0);
        } else {
            char what[64];
            snprintf(what, sizeof what, "mix dlam, run %zu (%d threads)", k, threads[k]);
            check_same_bits(what, &dl, &first, 1);
            check_same_bits("mix da", dabuf, da_first, nb);
            check_same_bits("mix db", db, db_first, n);
            free(dabuf), free(db);
        }
        kctx_free(&ctx);
    }
    free(abuf), free(bbuf), free(dobuf), free(da_first), free(db_first);
}

/* ---- broken calls ------------------------------------------------------------------- */

static float buf64[64];

/* A valid mix_backward (M 2, C 3, rows 4 apart) with one thing broken. */
static void mix_backward_call(int what)
{
    struct kctx ctx = cpu_ctx(0);
    static float db[6], dlam[1], lam[1] = {0.5f};
    int ds = 4, as = 4, bs = 4, M = 2;
    struct tensor tdb = t32(db, 6), tdl = t32(dlam, 1), tl = t32(lam, 1);
    struct tensor a = t32(buf64 + 8, 7);
    switch (what) {
    case 0: as = 2; break;             /* a_stride below C */
    case 1: tl = tensor_none(); break; /* db and dlam without lam */
    case 2: tl = tensor_none(), tdb = tensor_none(); break;
    case 3: a = t32(buf64 + 8, 6); break; /* a's rows run past its view */
    case 4: tdl.dtype = KDT_BF16; break;
    case 5: M = -1; break;
    case 6: tdb = t32(db, 5); break;
    }
    k_mix_backward(&ctx, t32(buf64, 7), tdb, tdl, t32(buf64 + 16, 7), a, t32(buf64 + 24, 7), tl,
                   M, 3, ds, as, bs);
}

static void mix_backward_narrow_stride(void)
{
    mix_backward_call(0);
}
static void mix_backward_db_without_lam(void)
{
    mix_backward_call(1);
}
static void mix_backward_dlam_without_lam(void)
{
    mix_backward_call(2);
}
static void mix_backward_short_view(void)
{
    mix_backward_call(3);
}
static void mix_backward_dlam_bf16(void)
{
    mix_backward_call(4);
}
static void mix_backward_negative(void)
{
    mix_backward_call(5);
}
static void mix_backward_short_db(void)
{
    mix_backward_call(6);
}
static void mix_backward_valid(void)
{
    mix_backward_call(-1);
}

static void mix_forward_no_b(void)
{
    struct kctx ctx = cpu_ctx(0);
    float lam = 0.5f;
    k_mix_forward(&ctx, t32(buf64, 6), t32(buf64 + 8, 6), tensor_none(), t32(&lam, 1), 2, 3, 3,
                  3, 3);
}

static void mix_forward_narrow_out(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_mix_forward(&ctx, t32(buf64, 6), t32(buf64 + 8, 6), tensor_none(), tensor_none(), 2, 3, 2,
                  3, 3);
}

static void mix_forward_bf16(void)
{
    struct kctx ctx = cpu_ctx(0);
    struct tensor a = t32(buf64 + 8, 6);
    a.dtype = KDT_BF16;
    k_mix_forward(&ctx, t32(buf64, 6), a, tensor_none(), tensor_none(), 2, 3, 3, 3, 3);
}

static void gelu_erf_short_out(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_gelu_erf_forward(&ctx, t32(buf64, 4), t32(buf64 + 8, 5), 5);
}

static void gelu_erf_backward_negative(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_gelu_erf_backward(&ctx, t32(buf64, 4), t32(buf64 + 8, 4), t32(buf64 + 16, 4), -4);
}

TEST(dispatchers_refuse_broken_mix_and_gelu_erf_calls)
{
    static const struct {
        void (*fn)(void);
        const char *want;
    } cases[] = {
        {mix_backward_narrow_stride, "dit: kernel mix_backward: a_stride 2 is smaller than C 3 "
                                     "(a bug in the caller)"},
        {mix_backward_db_without_lam, "dit: kernel mix_backward: db given without lam"},
        {mix_backward_dlam_without_lam, "dit: kernel mix_backward: dlam given without lam"},
        {mix_backward_short_view, "dit: kernel mix_backward: a has 6 elements, the shape needs "
                                  "at least 7"},
        {mix_backward_dlam_bf16, "dit: kernel mix_backward: dlam is bf16 where this call needs "
                                 "f32"},
        {mix_backward_negative, "dit: kernel mix_backward: negative dimension -1 among (M, C)"},
        {mix_backward_short_db, "dit: kernel mix_backward: db has 5 elements, the shape needs 6"},
        {mix_forward_no_b, "dit: kernel mix_forward: b is absent"},
        {mix_forward_narrow_out, "dit: kernel mix_forward: out_stride 2 is smaller than C 3"},
        {mix_forward_bf16, "dit: kernel mix_forward: a is bf16; the cpu backend computes in f32 "
                           "only"},
        {gelu_erf_short_out, "dit: kernel gelu_erf_forward: out has 4 elements, the shape needs "
                             "5"},
        {gelu_erf_backward_negative, "dit: kernel gelu_erf_backward: negative element count -4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int sig = 0;
        char *msg = test_stderr_of(cases[i].fn, &sig);
        CHECK_INT(sig, SIGABRT);
        CHECK_CONTAINS(msg, cases[i].want);
        free(msg);
    }
    /* and the call they break runs */
    int sig = -1;
    char *msg = test_stderr_of(mix_backward_valid, &sig);
    CHECK_INT(sig, 0);
    free(msg);
}
