/* rope_ops: F-Lite's query/key path and trainable RMS norm on the CPU backend
 * (k_rope_norm_forward, k_rope_norm_backward, k_rmsnorm_backward) against
 * float64 torch autograd of F-Lite's formulas, themselves checked against
 * F-Lite's RMSNorm, TwoDimRotary and apply_rotary_emb
 * (tests/reference/make_rope_op_goldens.py ->
 * tests/fixtures/rope_ops/goldens.safetensors), within 1e-5 relative: the
 * rotation alone, the norm alone, both; q and k as views of a fused qkv
 * buffer, one call each and one for both, writing only their heads; the
 * RMS norm's gradient with and without weight, dweight accumulating. Then
 * the backward against central differences of the op's own forward, the
 * same bits for any thread count, and the dispatchers refusing broken
 * calls, naming the op. */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* A purpose of this file's own, so no product stream is reused here. */
#define TEST_PURPOSE 0x7270u

#define randn(n, seed, scale) test_normal(n, seed, scale, TEST_PURPOSE)

/* fp32 against the float64 references */
#define TOL 1e-5
#define EPS 1e-6f

/* The goldens' shapes (the script's docstring) */
enum { B = 2, T = 28, NH = 2, HS = 8, C = NH * HS, H2 = HS / 2, ROWS = B * T };
enum { RM = 6, RC = 40 };

/* What the fused buffers' untouched elements hold. */
#define SENTINEL 12345.0f

static struct tensor t32(float *p, size_t n)
{
    return tensor_f32(p, (int64_t)n);
}

#define cpu_ctx test_cpu_ctx

#define check_rel_at test_check_rel
#define check_rel(what, got, want, n) check_rel_at(__FILE__, __LINE__, what, got, want, n, TOL)

#define check_same_bits_at test_check_same_bits
#define check_same_bits(what, a, b, n) check_same_bits_at(__FILE__, __LINE__, what, a, b, n)

static float *filled(size_t n, float v)
{
    return test_filled(n, v);
}

static struct st_file *goldens_open(void)
{
    return test_goldens_open("fixtures/rope_ops/goldens.safetensors");
}

#define golden test_golden_f32

/* Columns [c0, c0 + w) of each of `rows` rows `stride` apart in buf, as a
 * packed [rows, w] copy (malloc'd). */
static float *columns(const float *buf, int rows, int stride, int c0, int w)
{
    float *out = malloc((size_t)rows * w * sizeof *out);
    for (int r = 0; r < rows; r++)
        memcpy(out + (size_t)r * w, buf + (size_t)r * stride + c0, (size_t)w * sizeof *out);
    return out;
}

/* Columns [c0, c0 + w) of every row hold SENTINEL still. */
static void check_untouched_at(const char *file, int line, const char *what, const float *buf,
                               int rows, int stride, int c0, int w)
{
    for (int r = 0; r < rows; r++)
        for (int c = c0; c < c0 + w; c++)
            if (buf[(size_t)r * stride + c] != SENTINEL) {
                test_fail(file, line, "%s: row %d column %d written (%.9g)", what, r, c,
                          (double)buf[(size_t)r * stride + c]);
                return;
            }
}
#define check_untouched(what, buf, rows, stride, c0, w)                                       \
    check_untouched_at(__FILE__, __LINE__, what, buf, rows, stride, c0, w)

/* ---- the rotation and the norm, each and both ------------------------------------ */

/* variant: "both", "rope" or "norm" */
static void check_rope_variant(const char *variant)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = (size_t)ROWS * C, nr = (size_t)ROWS * NH, nt = (size_t)T * H2;
    const int rope = strcmp(variant, "norm") != 0, norm = strcmp(variant, "rope") != 0;
    char key[64], what[96];
    float *x = golden(g, "rope/x", n), *dout = golden(g, "rope/dout", n);
    float *cs = golden(g, "rope/cos", nt), *sn = golden(g, "rope/sin", nt);
    snprintf(key, sizeof key, "rope/out_%s", variant);
    float *want = golden(g, key, n);
    snprintf(key, sizeof key, "rope/dx_%s", variant);
    float *want_dx = golden(g, key, n);
    struct tensor tc = rope ? t32(cs, nt) : tensor_none(), ts = rope ? t32(sn, nt) : tensor_none();
    float *out = filled(n, NAN), *rstd = filled(nr, NAN), *dx = filled(n, NAN);
    struct tensor tr = norm ? t32(rstd, nr) : tensor_none();

    k_rope_norm_forward(&ctx, t32(out, n), tr, t32(x, n), tc, ts, B, T, NH, HS, C, C, EPS);
    snprintf(what, sizeof what, "%s out", variant);
    check_rel(what, out, want, n);
    if (norm) {
        snprintf(key, sizeof key, "rope/rstd_%s", variant);
        float *want_rstd = golden(g, key, nr);
        snprintf(what, sizeof what, "%s rstd", variant);
        check_rel(what, rstd, want_rstd, nr);
        free(want_rstd);
    } else {
        for (size_t i = 0; i < nr; i++)
            CHECK(isnan(rstd[i])); /* rstd absent: not written */
    }
    /* The register tokens: cos 1, sin 0, so the rotation leaves them be. */
    if (!norm)
        for (int b = 0; b < B; b++)
            check_same_bits("register tokens unrotated", out + (size_t)b * T * C,
                            x + (size_t)b * T * C, (size_t)16 * C);

    k_rope_norm_backward(&ctx, t32(dx, n), t32(dout, n), t32(x, n), tr, tc, ts, B, T, NH, HS, C,
                         C);
    snprintf(what, sizeof what, "%s dx", variant);
    check_rel(what, dx, want_dx, n);
    if (!norm) {
        /* no norm: the rotation's transpose needs no inp */
        float *dx2 = filled(n, NAN);
        k_rope_norm_backward(&ctx, t32(dx2, n), t32(dout, n), tensor_none(), tensor_none(), tc,
                             ts, B, T, NH, HS, C, C);
        check_same_bits("rope dx without inp", dx2, dx, n);
        free(dx2);
    }
    free(x), free(dout), free(cs), free(sn), free(want), free(want_dx), free(out), free(rstd);
    free(dx);
    st_close(g);
    kctx_free(&ctx);
}

TEST(rope_norm_matches_flite)
{
    check_rope_variant("both");
}

TEST(rope_alone_matches_flite)
{
    check_rope_variant("rope");
}

TEST(qk_norm_alone_matches_flite)
{
    check_rope_variant("norm");
}

/* ---- q and k as views of a fused qkv buffer ------------------------------------- */

/* q and k of qkv [B, T, 3C] into an output [B, T, 3C] whose v block (and,
 * for the backward, the v block of dqkv) must stay as it was: one call per
 * block, and one call for both (2 NH heads of rows 3C). dout comes as a
 * [B, T, 2C] dq | dk buffer (rows 2C, another stride than the input's). */
TEST(rope_norm_on_fused_qkv_views)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n3 = (size_t)ROWS * 3 * C, n2 = (size_t)ROWS * 2 * C, nr = (size_t)ROWS * NH;
    const size_t nt = (size_t)T * H2;
    /* a view of `rows` rows `stride` apart, C wide, from element `at` */
    const size_t v3 = (size_t)(ROWS - 1) * 3 * C + C, v2 = (size_t)(ROWS - 1) * 2 * C + C;
    float *qkv = golden(g, "fused/qkv", n3), *dqk_out = golden(g, "fused/dout", n2);
    float *want = golden(g, "fused/out", n2), *want_d = golden(g, "fused/dqk", n2);
    float *want_rq = golden(g, "fused/rstd_q", nr), *want_rk = golden(g, "fused/rstd_k", nr);
    float *cs = golden(g, "rope/cos", nt), *sn = golden(g, "rope/sin", nt);
    struct tensor tc = t32(cs, nt), ts = t32(sn, nt);
    float *obuf = filled(n3, SENTINEL), *rq = filled(nr, NAN), *rk = filled(nr, NAN);

    /* forward, q then k, into rows of 3C */
    k_rope_norm_forward(&ctx, t32(obuf, v3), t32(rq, nr), t32(qkv, v3), tc, ts, B, T, NH, HS,
                        3 * C, 3 * C, EPS);
    k_rope_norm_forward(&ctx, t32(obuf + C, v3), t32(rk, nr), t32(qkv + C, v3), tc, ts, B, T, NH,
                        HS, 3 * C, 3 * C, EPS);
    float *got = columns(obuf, ROWS, 3 * C, 0, 2 * C);
    check_rel("fused q | k out", got, want, n2);
    check_rel("fused rstd q", rq, want_rq, nr);
    check_rel("fused rstd k", rk, want_rk, nr);
    check_untouched("fused out, v block", obuf, ROWS, 3 * C, 2 * C, C);

    /* both in one call, 2 NH heads, into a packed [B, T, 2C]: the same bits */
    float *both = filled(n2, NAN), *r2 = filled(2 * nr, NAN);
    k_rope_norm_forward(&ctx, t32(both, n2), t32(r2, 2 * nr), t32(qkv, v3 + C), tc, ts, B, T,
                        2 * NH, HS, 3 * C, 2 * C, EPS);
    check_same_bits("q and k in one call", both, got, n2);
    for (int r = 0; r < ROWS; r++)
        for (int h = 0; h < 2 * NH; h++) {
            float w = h < NH ? rq[r * NH + h] : rk[r * NH + h - NH];
            CHECK(memcmp(&r2[r * 2 * NH + h], &w, sizeof w) == 0);
        }

    /* backward: dq and dk (rows 2C) into a dqkv of rows 3C */
    float *dqkv = filled(n3, SENTINEL);
    k_rope_norm_backward(&ctx, t32(dqkv, v3), t32(dqk_out, v2), t32(qkv, v3), t32(rq, nr), tc,
                         ts, B, T, NH, HS, 3 * C, 2 * C);
    k_rope_norm_backward(&ctx, t32(dqkv + C, v3), t32(dqk_out + C, v2), t32(qkv + C, v3),
                         t32(rk, nr), tc, ts, B, T, NH, HS, 3 * C, 2 * C);
    float *dgot = columns(dqkv, ROWS, 3 * C, 0, 2 * C);
    check_rel("fused dq | dk", dgot, want_d, n2);
    check_untouched("fused dqkv, v block", dqkv, ROWS, 3 * C, 2 * C, C);

    float *dqkv2 = filled(n3, SENTINEL);
    k_rope_norm_backward(&ctx, t32(dqkv2, v3 + C), t32(dqk_out, n2), t32(qkv, v3 + C),
                         t32(r2, 2 * nr), tc, ts, B, T, 2 * NH, HS, 3 * C, 2 * C);
    check_same_bits("dq and dk in one call", dqkv2, dqkv, n3);

    free(qkv), free(dqk_out), free(want), free(want_d), free(want_rq), free(want_rk), free(cs);
    free(sn), free(obuf), free(rq), free(rk), free(got), free(both), free(r2), free(dqkv);
    free(dgot), free(dqkv2);
    st_close(g);
    kctx_free(&ctx);
}

/* ---- RMS norm backward ---------------------------------------------------------- */

TEST(rmsnorm_backward_matches_flite)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = (size_t)RM * RC;
    float *x = golden(g, "rmsnorm/x", n), *w = golden(g, "rmsnorm/w", RC);
    float *dout = golden(g, "rmsnorm/dout", n), *want_rstd = golden(g, "rmsnorm/rstd", RM);
    float *want_dx = golden(g, "rmsnorm/dx", n), *want_dw = golden(g, "rmsnorm/dw", RC);
    float *want_dx_nw = golden(g, "rmsnorm/dx_noweight", n);
    float *out = filled(n, NAN), *rstd = filled(RM, NAN), *dx = filled(n, NAN);
    float *dw = filled(RC, 0.25f), *want_acc = malloc(RC * sizeof *want_acc);

    k_rmsnorm_forward(&ctx, t32(out, n), t32(rstd, RM), t32(x, n), t32(w, RC), RM, RC, EPS);
    check_rel("rmsnorm rstd", rstd, want_rstd, RM);
    k_rmsnorm_backward(&ctx, t32(dx, n), t32(dw, RC), t32(dout, n), t32(x, n), t32(rstd, RM),
                       t32(w, RC), RM, RC);
    check_rel("rmsnorm dx", dx, want_dx, n);
    /* dweight accumulates: onto 0.25, then once more */
    for (int c = 0; c < RC; c++)
        want_acc[c] = 0.25f + want_dw[c];
    check_rel("rmsnorm dweight onto 0.25", dw, want_acc, RC);
    k_rmsnorm_backward(&ctx, tensor_none(), t32(dw, RC), t32(dout, n), t32(x, n), t32(rstd, RM),
                       t32(w, RC), RM, RC);
    for (int c = 0; c < RC; c++)
        want_acc[c] = 0.25f + 2 * want_dw[c];
    check_rel("rmsnorm dweight twice", dw, want_acc, RC);

    /* dinp alone: the same bits */
    float *dx2 = filled(n, NAN);
    k_rmsnorm_backward(&ctx, t32(dx2, n), tensor_none(), t32(dout, n), t32(x, n), t32(rstd, RM),
                       t32(w, RC), RM, RC);
    check_same_bits("rmsnorm dx alone", dx2, dx, n);

    /* no weight (F-Lite's untrained norms): dx of out = x rstd; dweight is
     * the same sum, the weight's gradient wherever it is 1 */
    float *dw2 = filled(RC, 0.0f);
    k_rmsnorm_backward(&ctx, t32(dx2, n), t32(dw2, RC), t32(dout, n), t32(x, n), t32(rstd, RM),
                       tensor_none(), RM, RC);
    check_rel("rmsnorm dx without weight", dx2, want_dx_nw, n);
    check_rel("rmsnorm dweight without weight", dw2, want_dw, RC);

    free(x), free(w), free(dout), free(want_rstd), free(want_dx), free(want_dw), free(want_dx_nw);
    free(out), free(rstd), free(dx), free(dw), free(want_acc), free(dx2), free(dw2);
    st_close(g);
    kctx_free(&ctx);
}

/* ---- finite differences ------------------------------------------------------------ */

/* sum(dout * y) in double, y the op's forward (both pieces) of x; rstd
 * [b*t*nh] is written (the norm needs somewhere to save it). */
static double rope_loss(struct kctx *ctx, const float *x, const float *dout, const float *cs,
                        const float *sn, float *y, float *rstd, int b, int t, int nh, int hs)
{
    const size_t n = (size_t)b * t * nh * hs, nt = (size_t)t * (hs / 2), nr = (size_t)b * t * nh;
    k_rope_norm_forward(ctx, t32(y, n), t32(rstd, nr), t32((float *)x, n), t32((float *)cs, nt),
                        t32((float *)sn, nt), b, t, nh, hs, nh * hs, nh * hs, EPS);
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)dout[i] * y[i];
    return s;
}

/* The backward against central differences of the forward, at every input
 * of a small problem with random angles: float32 differences with h 1e-2
 * come within ~1e-5, far below what a wrong term gives. */
TEST(rope_norm_backward_matches_finite_differences)
{
    struct kctx ctx = cpu_ctx(0);
    const int b = 2, t = 3, nh = 2, hs = 6;
    const size_t n = (size_t)b * t * nh * hs, nt = (size_t)t * (hs / 2), nr = (size_t)b * t * nh;
    float *x = randn(n, 1, 1.0f), *dout = randn(n, 2, 1.0f), *ang = randn(nt, 3, 2.0f);
    float *cs = malloc(nt * sizeof *cs), *sn = malloc(nt * sizeof *sn);
    for (size_t i = 0; i < nt; i++)
        cs[i] = cosf(ang[i]), sn[i] = sinf(ang[i]);
    float *y = filled(n, NAN), *rstd = filled(nr, NAN), *dx = filled(n, NAN);
    float *fd = malloc(n * sizeof *fd);
    k_rope_norm_forward(&ctx, t32(y, n), t32(rstd, nr), t32(x, n), t32(cs, nt), t32(sn, nt), b, t,
                        nh, hs, nh * hs, nh * hs, EPS);
    k_rope_norm_backward(&ctx, t32(dx, n), t32(dout, n), t32(x, n), t32(rstd, nr), t32(cs, nt),
                         t32(sn, nt), b, t, nh, hs, nh * hs, nh * hs);
    const float h = 1e-2f;
    float *r2 = filled(nr, NAN);
    for (size_t i = 0; i < n; i++) {
        float keep = x[i];
        x[i] = keep + h;
        double up = rope_loss(&ctx, x, dout, cs, sn, y, r2, b, t, nh, hs);
        x[i] = keep - h;
        double down = rope_loss(&ctx, x, dout, cs, sn, y, r2, b, t, nh, hs);
        x[i] = keep;
        fd[i] = (float)((up - down) / (2.0 * h));
    }
    check_rel_at(__FILE__, __LINE__, "rope_norm dx against differences", dx, fd, n, 1e-3);
    free(x), free(dout), free(ang), free(cs), free(sn), free(y), free(rstd), free(dx), free(fd);
    free(r2);
    kctx_free(&ctx);
}

/* ---- thread counts ------------------------------------------------------------------ */

/* Above the size at which the CPU splits the work: every output the same
 * bits on 1 thread and on 2, dweight's column sums included. */
TEST(rope_ops_same_bits_for_any_thread_count)
{
    const int b = 2, t = 300, nh = 4, hs = 64, stride = 3 * nh * hs;
    const size_t rows = (size_t)b * t, nbuf = rows * stride, nr = rows * nh;
    const size_t nt = (size_t)t * (hs / 2), nv = (rows - 1) * stride + (size_t)nh * hs;
    float *qkv = randn(nbuf, 10, 1.5f), *dout = randn(nbuf, 11, 1.0f), *ang = randn(nt, 12, 3.0f);
    float *cs = malloc(nt * sizeof *cs), *sn = malloc(nt * sizeof *sn);
    for (size_t i = 0; i < nt; i++)
        cs[i] = cosf(ang[i]), sn[i] = sinf(ang[i]);
    float *w = randn((size_t)stride, 13, 0.5f);
    float *o[2], *r[2], *d[2], *dx[2], *dw[2], *rr[2];
    for (int k = 0; k < 2; k++) {
        struct kctx ctx = cpu_ctx(k + 1);
        o[k] = filled(nbuf, SENTINEL), r[k] = filled(nr, NAN), d[k] = filled(nbuf, SENTINEL);
        dx[k] = filled(nbuf, NAN), dw[k] = filled((size_t)stride, 0.5f), rr[k] = filled(rows, NAN);
        k_rope_norm_forward(&ctx, t32(o[k], nv), t32(r[k], nr), t32(qkv, nv), t32(cs, nt),
                            t32(sn, nt), b, t, nh, hs, stride, stride, EPS);
        k_rope_norm_backward(&ctx, t32(d[k], nv), t32(dout, nv), t32(qkv, nv), t32(r[k], nr),
                             t32(cs, nt), t32(sn, nt), b, t, nh, hs, stride, stride);
        /* the RMS norm over whole rows of the buffer, as F-Lite's norm1 */
        float *y = filled(nbuf, NAN);
        k_rmsnorm_forward(&ctx, t32(y, nbuf), t32(rr[k], rows), t32(qkv, nbuf), t32(w, stride),
                          (int)rows, stride, EPS);
        k_rmsnorm_backward(&ctx, t32(dx[k], nbuf), t32(dw[k], stride), t32(dout, nbuf),
                           t32(qkv, nbuf), t32(rr[k], rows), t32(w, stride), (int)rows, stride);
        free(y);
        kctx_free(&ctx);
    }
    check_same_bits("rope_norm out, 1 and 2 threads", o[0], o[1], nbuf);
    check_same_bits("rope_norm rstd, 1 and 2 threads", r[0], r[1], nr);
    check_same_bits("rope_norm dinp, 1 and 2 threads", d[0], d[1], nbuf);
    check_same_bits("rmsnorm dinp, 1 and 2 threads", dx[0], dx[1], nbuf);
    check_same_bits("rmsnorm dweight, 1 and 2 threads", dw[0], dw[1], (size_t)stride);
    check_untouched("rope_norm out past the heads", o[0], (int)rows, stride, nh * hs,
                    stride - nh * hs);
    check_untouched("rope_norm dinp past the heads", d[0], (int)rows, stride, nh * hs,
                    stride - nh * hs);
    for (int k = 0; k < 2; k++)
        free(o[k]), free(r[k]), free(d[k]), free(dx[k]), free(dw[k]), free(rr[k]);
    free(qkv), free(dout), free(ang), free(cs), free(sn), free(w);
}

/* ---- the dispatchers' refusals ------------------------------------------------------ */

static float buf[256];

/* A valid forward (B 1, T 2, NH 2, HS 4; rows of 12 in buf[0..20), out
 * rows of 8 in buf[64..80)) with one thing broken by `what`. */
static void rope_forward_call(int what)
{
    struct kctx ctx = cpu_ctx(0);
    int hs = 4, in_stride = 12, out_stride = 8;
    struct tensor out = t32(buf + 64, 16), inp = t32(buf, 20), rstd = t32(buf + 100, 4);
    struct tensor cs = t32(buf + 120, 4), sn = t32(buf + 130, 4);
    switch (what) {
    case 0: hs = 3, cs = t32(buf + 120, 2), sn = t32(buf + 130, 2); break; /* odd, rotated */
    case 1: sn = tensor_none(); break;
    case 2: in_stride = 7; break;
    case 3: out = t32(buf + 4, 16); break; /* over inp */
    case 4: cs = t32(buf + 120, 5); break;
    case 5: hs = 0, cs = tensor_none(), sn = tensor_none(); break;
    case 6: inp = t32(buf, 19); break;
    }
    k_rope_norm_forward(&ctx, out, rstd, inp, cs, sn, 1, 2, 2, hs, in_stride, out_stride, EPS);
}

static void rope_odd_head(void)
{
    rope_forward_call(0);
}
static void rope_no_sin(void)
{
    rope_forward_call(1);
}
static void rope_narrow_stride(void)
{
    rope_forward_call(2);
}
static void rope_out_over_inp(void)
{
    rope_forward_call(3);
}
static void rope_long_cos(void)
{
    rope_forward_call(4);
}
static void rope_empty_head(void)
{
    rope_forward_call(5);
}
static void rope_short_view(void)
{
    rope_forward_call(6);
}
static void rope_valid(void)
{
    rope_forward_call(-1);
}

static void rope_backward_over_dout(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rope_norm_backward(&ctx, t32(buf + 2, 16), t32(buf, 16), t32(buf + 64, 16), tensor_none(),
                         tensor_none(), tensor_none(), 1, 2, 2, 4, 8, 8);
}

static void rope_backward_no_inp(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rope_norm_backward(&ctx, t32(buf, 16), t32(buf + 64, 16), tensor_none(), t32(buf + 100, 4),
                         tensor_none(), tensor_none(), 1, 2, 2, 4, 8, 8);
}

static void rmsnorm_backward_over_dout(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rmsnorm_backward(&ctx, t32(buf + 1, 8), tensor_none(), t32(buf, 8), t32(buf + 64, 8),
                       t32(buf + 100, 2), tensor_none(), 2, 4);
}

static void rmsnorm_backward_short_dweight(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rmsnorm_backward(&ctx, t32(buf, 8), t32(buf + 16, 3), t32(buf + 32, 8), t32(buf + 64, 8),
                       t32(buf + 100, 2), tensor_none(), 2, 4);
}

static void rmsnorm_backward_bf16(void)
{
    struct kctx ctx = cpu_ctx(0);
    struct tensor x = {buf + 64, KDT_BF16, DEVICE_CPU, 8};
    k_rmsnorm_backward(&ctx, t32(buf, 8), tensor_none(), t32(buf + 32, 8), x, t32(buf + 100, 2),
                       tensor_none(), 2, 4);
}

TEST(rope_dispatchers_refuse_broken_calls_naming_the_op)
{
    static const struct {
        void (*fn)(void);
        const char *want;
    } cases[] = {
        {rope_odd_head, "dit: kernel rope_norm_forward: head size 3 is odd: the rotation pairs "
                        "x[:HS/2] with x[HS/2:] (a bug in the caller)"},
        {rope_no_sin, "dit: kernel rope_norm_forward: sin is absent but cos is not"},
        {rope_narrow_stride, "dit: kernel rope_norm_forward: in_stride 7 is smaller than NH * "
                             "HS = 8"},
        {rope_out_over_inp, "dit: kernel rope_norm_forward: out overlaps inp"},
        {rope_long_cos, "dit: kernel rope_norm_forward: cos has 5 elements, the shape needs 4"},
        {rope_empty_head, "dit: kernel rope_norm_forward: HS is 0: the mean of an empty head"},
        {rope_short_view, "dit: kernel rope_norm_forward: inp has 19 elements, the shape needs "
                          "at least 20"},
        {rope_backward_over_dout, "dit: kernel rope_norm_backward: dinp overlaps dout or inp"},
        {rope_backward_no_inp, "dit: kernel rope_norm_backward: inp is absent"},
        {rmsnorm_backward_over_dout, "dit: kernel rmsnorm_backward: dinp overlaps dout or inp"},
        {rmsnorm_backward_short_dweight, "dit: kernel rmsnorm_backward: dweight has 3 elements, "
                                         "the shape needs 4"},
        {rmsnorm_backward_bf16, "dit: kernel rmsnorm_backward: inp is bf16; the cpu backend "
                                "computes in f32 only"},
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
    char *msg = test_stderr_of(rope_valid, &sig);
    CHECK_INT(sig, 0);
    free(msg);
}
