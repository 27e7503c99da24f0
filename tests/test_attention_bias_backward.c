/* attention_bias_backward: k_attention_bias_backward on the CPU backend
 * against torch autograd in float64 (tests/reference/
 * make_attention_backward_goldens.py -> tests/fixtures/attention_backward/
 * goldens.safetensors), within 1e-5 relative, from the goldens' out and lse
 * and from the CPU forward's: self-attention from a fused qkv (F-Lite's rows
 * of 3C, and rows with room between them, whose elements must stay as they
 * were), cross-attention (q rows of C, a fused kv of rows 2C, Tq != Tk), a
 * bias with a key mask (a batch row attending nothing: zero gradients; keys
 * no query attends: zero dk and dv), odd sizes at odd strides; then the same
 * bits run after run and for any thread count, empty shapes, gradients not
 * wanted, the scratch bound and the dispatcher's refusals. */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* A purpose of this file's own, so no product stream is reused here. */
#define TEST_PURPOSE 0x6162u

#define randn(n, seed, scale) test_normal(n, seed, scale, TEST_PURPOSE)

/* fp32 against the float64 references */
#define TOL 1e-5

/* What a gradient buffer holds outside the heads' elements, before and after. */
#define SENTINEL 1234.5f

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

/* Elements `rows` rows `stride` apart, each `width` wide, span. */
static size_t extent(int rows, int stride, int width)
{
    return rows > 0 ? (size_t)(rows - 1) * stride + width : 0;
}

static struct st_file *goldens_open(void)
{
    return test_goldens_open("fixtures/attention_backward/goldens.safetensors");
}

#define golden test_golden_f32

/* ---- one call --------------------------------------------------------------- */

/* A call's shape and tensors: q, dq rows q_stride apart (nq elements), k,
 * v, dk, dv rows kv_stride apart (nkv each); bias, mask and each gradient
 * may be NULL. */
struct bwd_call {
    int B, Tq, Tk, NH, HS, q_stride, kv_stride;
    float scale;
    const float *q, *k, *v, *bias, *mask, *dout, *out, *lse;
    float *dq, *dk, *dv;
    size_t nq, nkv;
};

static struct tensor opt(float *p, size_t n)
{
    return p ? t32(p, n) : tensor_none();
}

/* The op on `threads` CPU threads (0: the default) with scratch_n floats of
 * scratch (-1: what the op asks for). */
static void bwd_run(const struct bwd_call *a, int threads, int64_t scratch_n)
{
    struct kctx ctx = cpu_ctx(threads);
    int64_t need = k_attention_bias_backward_scratch(&ctx, a->B, a->Tq, a->Tk, a->NH, a->HS);
    int64_t ns = scratch_n >= 0 ? scratch_n : need;
    float *s = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *s);
    const size_t no = (size_t)a->B * a->Tq * a->NH * a->HS;
    k_attention_bias_backward(
        &ctx, opt(a->dq, a->nq), opt(a->dk, a->nkv), opt(a->dv, a->nkv),
        t32((float *)a->dout, no), t32((float *)a->out, no),
        t32((float *)a->lse, (size_t)a->B * a->NH * a->Tq), t32((float *)a->q, a->nq),
        t32((float *)a->k, a->nkv), t32((float *)a->v, a->nkv),
        opt((float *)a->bias, (size_t)a->NH * a->Tq * a->Tk),
        opt((float *)a->mask, (size_t)a->B * a->Tk), t32(s, (size_t)ns), a->B, a->Tq, a->Tk,
        a->NH, a->HS, a->q_stride, a->kv_stride, a->scale);
    free(s);
    kctx_free(&ctx);
}

/* The forward of the call into out and lse (the CPU's own, for the
 * backward from them). */
static void fwd_run(const struct bwd_call *a, float *out, float *lse)
{
    struct kctx ctx = cpu_ctx(0);
    int64_t ns = k_attention_bias_scratch(&ctx, a->B, a->Tq, a->Tk, a->NH, a->HS);
    float *s = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *s);
    const size_t no = (size_t)a->B * a->Tq * a->NH * a->HS;
    k_attention_bias_forward(&ctx, t32(out, no), t32(lse, (size_t)a->B * a->NH * a->Tq),
                             t32((float *)a->q, a->nq), t32((float *)a->k, a->nkv),
                             t32((float *)a->v, a->nkv),
                             opt((float *)a->bias, (size_t)a->NH * a->Tq * a->Tk),
                             opt((float *)a->mask, (size_t)a->B * a->Tk), t32(s, (size_t)ns),
                             a->B, a->Tq, a->Tk, a->NH, a->HS, a->q_stride, a->kv_stride,
                             a->scale);
    free(s);
    kctx_free(&ctx);
}

/* rows of `width` elements from src (src_stride apart) to dst (dst_stride
 * apart) */
static void copy_rows(float *dst, int dst_stride, const float *src, int src_stride, int rows,
                      int width)
{
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * dst_stride, src + (size_t)r * src_stride,
               (size_t)width * sizeof *dst);
}

/* Every element of buf[n] outside rows of `width` at `stride` (from
 * column col0 of each) still holds SENTINEL. */
static void check_sentinel_at(const char *file, int line, const char *what, const float *buf,
                              size_t n, int stride, int col0, int width)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        int col = (int)(i % (size_t)stride);
        if ((col < col0 || col >= col0 + width) && buf[i] != SENTINEL && bad++ < 5)
            test_fail(file, line, "%s[%zu] (column %d): %.9g, not the %g it held", what, i, col,
                      (double)buf[i], (double)SENTINEL);
    }
}
#define check_sentinel(what, buf, n, stride, col0, width)                                      \
    check_sentinel_at(__FILE__, __LINE__, what, buf, n, stride, col0, width)

/* ---- self-attention from a fused qkv ----------------------------------------------- */

/* group's goldens (qkv [B, T, 3C] and dqkv alike) through the op with the
 * fused rows `pad` elements wider than 3C; what lies past the three views
 * (nothing when pad = 0, F-Lite's layout) must keep the sentinel. Once from
 * the goldens' out and lse, once from the CPU forward's. */
static void check_fused(const char *group, int B, int T, int NH, int HS, float scale,
                        int with_mask, int pad)
{
    struct st_file *g = goldens_open();
    const int C = NH * HS, S = 3 * C + pad;
    const size_t rows = (size_t)B * T, nbuf = rows * S, n3 = rows * 3 * C;
    const size_t no = rows * C, nl = (size_t)B * NH * T;
    char key[64], what[128];
#define GOLD(name, n) (snprintf(key, sizeof key, "%s/%s", group, name), golden(g, key, n))
    float *qkv3 = GOLD("qkv", n3), *want3 = GOLD("dqkv", n3);
    float *dout = GOLD("dout", no), *out = GOLD("out", no), *lse = GOLD("lse", nl);
    float *bias = with_mask ? GOLD("bias", (size_t)NH * T * T) : NULL;
    float *mask = with_mask ? GOLD("mask", (size_t)B * T) : NULL;
#undef GOLD
    float *qkv = filled(nbuf, 0.0f), *dqkv = filled(nbuf, SENTINEL), *want = filled(nbuf, 0.0f);
    copy_rows(qkv, S, qkv3, 3 * C, (int)rows, 3 * C);
    copy_rows(want, S, want3, 3 * C, (int)rows, 3 * C);
    const size_t nv = extent((int)rows, S, C);
    struct bwd_call a = {.B = B, .Tq = T, .Tk = T, .NH = NH, .HS = HS, .q_stride = S,
                         .kv_stride = S, .scale = scale, .q = qkv, .k = qkv + C,
                         .v = qkv + 2 * C, .bias = bias, .mask = mask, .dout = dout, .out = out,
                         .lse = lse, .dq = dqkv, .dk = dqkv + C, .dv = dqkv + 2 * C, .nq = nv,
                         .nkv = nv};
    float *my_out = filled(no, NAN), *my_lse = filled(nl, NAN);
    fwd_run(&a, my_out, my_lse);
    for (int from_forward = 0; from_forward < 2; from_forward++) {
        for (size_t i = 0; i < nbuf; i++)
            dqkv[i] = SENTINEL;
        a.out = from_forward ? my_out : out;
        a.lse = from_forward ? my_lse : lse;
        bwd_run(&a, 0, -1);
        static const char *const part[3] = {"dq", "dk", "dv"};
        float *got = malloc(no * sizeof *got), *ref = malloc(no * sizeof *ref);
        for (int p = 0; p < 3; p++) {
            copy_rows(got, C, dqkv + p * C, S, (int)rows, C);
            copy_rows(ref, C, want + p * C, S, (int)rows, C);
            snprintf(what, sizeof what, "%s%s pad %d %s", group,
                     from_forward ? " (the CPU's forward)" : "", pad, part[p]);
            check_rel(what, got, ref, no);
        }
        free(got), free(ref);
        snprintf(what, sizeof what, "%s pad %d dqkv", group, pad);
        check_sentinel(what, dqkv, nbuf, S, 0, 3 * C);
    }
    free(qkv3), free(want3), free(dout), free(out), free(lse), free(bias), free(mask);
    free(qkv), free(dqkv), free(want), free(my_out), free(my_lse);
    st_close(g);
}

TEST(attention_bias_backward_self_matches_torch)
{
    check_fused("self", 2, 7, 3, 16, 0.25f, 0, 0);
    check_fused("self", 2, 7, 3, 16, 0.25f, 0, 5);
    /* 70 queries: two of the CPU's blocks of 64, dk and dv summed over both */
    check_fused("self_long", 1, 70, 2, 8, 1.0f / sqrtf(8.0f), 0, 0);
    check_fused("self_long", 1, 70, 2, 8, 1.0f / sqrtf(8.0f), 0, 3);
}

/* A bias and a key mask, unscaled: batch row 1 attends nothing, so all of
 * its gradients are 0; keys 2 and 5 of row 0 and 5..7 of row 2 are masked,
 * so their dk and dv are 0 (exactly: the sums are of exact zeros). */
TEST(attention_bias_backward_masked_matches_torch)
{
    check_fused("masked", 3, 8, 2, 8, 1.0f, 1, 0);
    check_fused("masked", 3, 8, 2, 8, 1.0f, 1, 2);

    struct st_file *g = goldens_open();
    const int B = 3, T = 8, NH = 2, HS = 8, C = NH * HS, S = 3 * C;
    const size_t n3 = (size_t)B * T * S, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    float *qkv = golden(g, "masked/qkv", n3), *dout = golden(g, "masked/dout", no);
    float *out = golden(g, "masked/out", no), *lse = golden(g, "masked/lse", nl);
    float *bias = golden(g, "masked/bias", (size_t)NH * T * T);
    float *mask = golden(g, "masked/mask", (size_t)B * T);
    float *dqkv = filled(n3, NAN);
    struct bwd_call a = {.B = B, .Tq = T, .Tk = T, .NH = NH, .HS = HS, .q_stride = S,
                         .kv_stride = S, .scale = 1.0f, .q = qkv, .k = qkv + C, .v = qkv + 2 * C,
                         .bias = bias, .mask = mask, .dout = dout, .out = out, .lse = lse,
                         .dq = dqkv, .dk = dqkv + C, .dv = dqkv + 2 * C, .nq = n3 - 2 * C,
                         .nkv = n3 - 2 * C};
    bwd_run(&a, 0, -1);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < S; c++) {
            CHECK(dqkv[((size_t)1 * T + t) * S + c] == 0.0f); /* row 1: nothing attended */
            if (c >= C && (t == 2 || t == 5))                 /* row 0's masked keys */
                CHECK(dqkv[(size_t)t * S + c] == 0.0f);
            if (c >= C && t >= 5) /* row 2's padding */
                CHECK(dqkv[((size_t)2 * T + t) * S + c] == 0.0f);
        }
    free(qkv), free(dout), free(out), free(lse), free(bias), free(mask), free(dqkv);
    st_close(g);
}

/* ---- cross-attention, and odd sizes at odd strides --------------------------------- */

/* F-Lite's cross-attention: q rows of C from the image tokens, k | v fused
 * per text token (rows of 2C), Tq 11 != Tk 5, no bias, no mask. */
TEST(attention_bias_backward_cross_matches_torch)
{
    struct st_file *g = goldens_open();
    const int B = 2, Tq = 11, Tk = 5, NH = 2, HS = 16, C = NH * HS;
    const size_t no = (size_t)B * Tq * C, nkv = (size_t)B * Tk * 2 * C, nl = (size_t)B * NH * Tq;
    float *q = golden(g, "cross/q", no), *kv = golden(g, "cross/kv", nkv);
    float *dout = golden(g, "cross/dout", no), *out = golden(g, "cross/out", no);
    float *lse = golden(g, "cross/lse", nl);
    float *want_dq = golden(g, "cross/dq", no), *want_dkv = golden(g, "cross/dkv", nkv);
    float *dq = filled(no, NAN), *dkv = filled(nkv, NAN);
    float *my_out = filled(no, NAN), *my_lse = filled(nl, NAN);
    struct bwd_call a = {.B = B, .Tq = Tq, .Tk = Tk, .NH = NH, .HS = HS, .q_stride = C,
                         .kv_stride = 2 * C, .scale = 0.25f, .q = q, .k = kv, .v = kv + C,
                         .dout = dout, .out = out, .lse = lse, .dq = dq, .dk = dkv,
                         .dv = dkv + C, .nq = no, .nkv = extent(B * Tk, 2 * C, C)};
    bwd_run(&a, 0, -1);
    check_rel("cross dq", dq, want_dq, no);
    check_rel("cross dk | dv", dkv, want_dkv, nkv);
    fwd_run(&a, my_out, my_lse);
    a.out = my_out, a.lse = my_lse;
    bwd_run(&a, 0, -1);
    check_rel("cross dq (the CPU's forward)", dq, want_dq, no);
    check_rel("cross dk | dv (the CPU's forward)", dkv, want_dkv, nkv);
    free(q), free(kv), free(dout), free(out), free(lse), free(want_dq), free(want_dkv);
    free(dq), free(dkv), free(my_out), free(my_lse);
    st_close(g);
}

/* Tq 19, Tk 7, HS 12, scale 0.3, a bias, a mask with holes; q rows C + 3
 * apart, k and v in one buffer at rows 2C + 1; the gradients alike in one
 * buffer of sentinels. */
TEST(attention_bias_backward_odd_sizes_match_torch)
{
    struct st_file *g = goldens_open();
    const int B = 2, Tq = 19, Tk = 7, NH = 2, HS = 12, C = NH * HS;
    const int qs = C + 3, kvs = 2 * C + 1;
    const size_t no = (size_t)B * Tq * C, nk = (size_t)B * Tk * C, nl = (size_t)B * NH * Tq;
    float *q0 = golden(g, "odd/q", no), *k0 = golden(g, "odd/k", nk), *v0 = golden(g, "odd/v", nk);
    float *bias = golden(g, "odd/bias", (size_t)NH * Tq * Tk);
    float *mask = golden(g, "odd/mask", (size_t)B * Tk), *scale = golden(g, "odd/scale", 1);
    float *dout = golden(g, "odd/dout", no), *out = golden(g, "odd/out", no);
    float *lse = golden(g, "odd/lse", nl);
    float *want_dq = golden(g, "odd/dq", no), *want_dk = golden(g, "odd/dk", nk);
    float *want_dv = golden(g, "odd/dv", nk);
    /* q at 0, one element, then k | v */
    const size_t nq = extent(B * Tq, qs, C), nkv = extent(B * Tk, kvs, C);
    const size_t at_k = nq + 1, n = at_k + C + nkv;
    float *buf = filled(n, 0.0f), *dbuf = filled(n, SENTINEL);
    copy_rows(buf, qs, q0, C, B * Tq, C);
    copy_rows(buf + at_k, kvs, k0, C, B * Tk, C);
    copy_rows(buf + at_k + C, kvs, v0, C, B * Tk, C);
    struct bwd_call a = {.B = B, .Tq = Tq, .Tk = Tk, .NH = NH, .HS = HS, .q_stride = qs,
                         .kv_stride = kvs, .scale = scale[0], .q = buf, .k = buf + at_k,
                         .v = buf + at_k + C, .bias = bias, .mask = mask, .dout = dout,
                         .out = out, .lse = lse, .dq = dbuf, .dk = dbuf + at_k,
                         .dv = dbuf + at_k + C, .nq = nq, .nkv = nkv};
    float *my_out = filled(no, NAN), *my_lse = filled(nl, NAN);
    fwd_run(&a, my_out, my_lse);
    float *got = malloc(no * sizeof *got);
    for (int from_forward = 0; from_forward < 2; from_forward++) {
        const char *how = from_forward ? " (the CPU's forward)" : "";
        char what[96];
        for (size_t i = 0; i < n; i++)
            dbuf[i] = SENTINEL;
        a.out = from_forward ? my_out : out;
        a.lse = from_forward ? my_lse : lse;
        bwd_run(&a, 0, -1);
        copy_rows(got, C, dbuf, qs, B * Tq, C);
        snprintf(what, sizeof what, "odd dq%s", how);
        check_rel(what, got, want_dq, no);
        copy_rows(got, C, dbuf + at_k, kvs, B * Tk, C);
        snprintf(what, sizeof what, "odd dk%s", how);
        check_rel(what, got, want_dk, nk);
        copy_rows(got, C, dbuf + at_k + C, kvs, B * Tk, C);
        snprintf(what, sizeof what, "odd dv%s", how);
        check_rel(what, got, want_dv, nk);
        check_sentinel("odd: between dq's rows", dbuf, nq, qs, 0, C);
        CHECK(dbuf[nq] == SENTINEL);
        check_sentinel("odd: between dk's and dv's rows", dbuf + at_k, C + nkv, kvs, 0, 2 * C);
    }
    free(q0), free(k0), free(v0), free(bias), free(mask), free(scale), free(dout), free(out);
    free(lse), free(want_dq), free(want_dk), free(want_dv), free(buf), free(dbuf), free(my_out);
    free(my_lse), free(got);
    st_close(g);
}

/* ---- determinism, empty shapes, gradients not wanted --------------------------------- */

/* A random call of several query blocks: q, k, v in one buffer at odd
 * strides, a bias, a mask with padding and holes; out and lse from the
 * forward. Caller frees the buffers (buf, dout, out, lse, bias, mask). */
static struct bwd_call random_call(int B, int Tq, int Tk, int NH, int HS, uint64_t seed)
{
    const int C = NH * HS, qs = C + 3, kvs = 2 * C + 1;
    const size_t nq = extent(B * Tq, qs, C), nkv = extent(B * Tk, kvs, C);
    float *buf = randn(nq + nkv + C, seed, 0.6f);
    float *bias = randn((size_t)NH * Tq * Tk, seed + 1, 2.0f);
    float *mask = randn((size_t)B * Tk, seed + 2, 1.0f);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < Tk; j++) {
            float *m = &mask[(size_t)b * Tk + j];
            *m = j < Tk - 3 * b && *m > -0.8f ? 1.0f : 0.0f;
        }
    const size_t no = (size_t)B * Tq * C, nl = (size_t)B * NH * Tq;
    struct bwd_call a = {.B = B, .Tq = Tq, .Tk = Tk, .NH = NH, .HS = HS, .q_stride = qs,
                         .kv_stride = kvs, .scale = 0.3f, .q = buf, .k = buf + nq,
                         .v = buf + nq + C, .bias = bias, .mask = mask,
                         .dout = randn(no, seed + 3, 1.0f), .nq = nq, .nkv = nkv};
    float *out = filled(no, NAN), *lse = filled(nl, NAN);
    fwd_run(&a, out, lse);
    a.out = out, a.lse = lse;
    return a;
}

static void free_call(struct bwd_call *a)
{
    free((float *)a->q), free((float *)a->bias), free((float *)a->mask);
    free((float *)a->dout), free((float *)a->out), free((float *)a->lse);
}

/* The same bits twice, for 1 thread and 2, and with a larger scratch than
 * the op asks for: 150 queries (three blocks, a partial one), 77 keys. */
TEST(attention_bias_backward_same_bits_every_run)
{
    struct bwd_call a = random_call(2, 150, 77, 3, 20, 60);
    float *d[4][3];
    for (int r = 0; r < 4; r++) {
        d[r][0] = filled(a.nq, NAN);
        d[r][1] = filled(a.nkv, NAN);
        d[r][2] = filled(a.nkv, NAN);
    }
    static const int threads[4] = {0, 0, 1, 2};
    for (int r = 0; r < 4; r++) {
        struct bwd_call c = a;
        c.dq = d[r][0], c.dk = d[r][1], c.dv = d[r][2];
        bwd_run(&c, threads[r], r == 3 ? 5 * 2 * 64 * 77 : -1);
    }
    static const char *const name[3] = {"dq", "dk", "dv"};
    char what[64];
    for (int p = 0; p < 3; p++) {
        size_t n = p ? a.nkv : a.nq;
        snprintf(what, sizeof what, "%s, run twice", name[p]);
        check_same_bits(what, d[0][p], d[1][p], n);
        snprintf(what, sizeof what, "%s, 1 thread and the default", name[p]);
        check_same_bits(what, d[0][p], d[2][p], n);
        snprintf(what, sizeof what, "%s, 2 threads and a larger scratch", name[p]);
        check_same_bits(what, d[0][p], d[3][p], n);
    }
    for (int r = 0; r < 4; r++)
        for (int p = 0; p < 3; p++)
            free(d[r][p]);
    free_call(&a);
}

/* Gradients not wanted are not written, and the wanted ones are the bits
 * the full call gives. */
TEST(attention_bias_backward_gradients_not_wanted)
{
    struct bwd_call a = random_call(2, 9, 13, 2, 8, 70);
    float *full[3] = {filled(a.nq, NAN), filled(a.nkv, NAN), filled(a.nkv, NAN)};
    a.dq = full[0], a.dk = full[1], a.dv = full[2];
    bwd_run(&a, 0, -1);
    for (unsigned wanted = 0; wanted < 8; wanted++) {
        float *part[3] = {filled(a.nq, SENTINEL), filled(a.nkv, SENTINEL),
                          filled(a.nkv, SENTINEL)};
        struct bwd_call c = a;
        c.dq = wanted & 1 ? part[0] : NULL;
        c.dk = wanted & 2 ? part[1] : NULL;
        c.dv = wanted & 4 ? part[2] : NULL;
        bwd_run(&c, 0, -1);
        for (int p = 0; p < 3; p++) {
            size_t n = p ? a.nkv : a.nq;
            char what[64];
            snprintf(what, sizeof what, "wanted %#x, gradient %d", wanted, p);
            if (wanted & (1u << p)) {
                /* the rows' gaps keep the sentinel, the heads get the bits */
                int stride = p ? a.kv_stride : a.q_stride;
                check_sentinel(what, part[p], n, stride, 0, a.NH * a.HS);
                for (size_t i = 0; i < n; i++)
                    if ((int)(i % (size_t)stride) >= a.NH * a.HS)
                        part[p][i] = full[p][i];
                check_same_bits(what, part[p], full[p], n);
            } else {
                check_sentinel(what, part[p], n, 1, 0, 0);
            }
        }
        for (int p = 0; p < 3; p++)
            free(part[p]);
    }
    for (int p = 0; p < 3; p++)
        free(full[p]);
    free_call(&a);
}

/* No keys: dq is 0 (out was 0 whatever dout); no queries: dk and dv are 0;
 * no head dims: nothing to write. */
TEST(attention_bias_backward_empty_shapes)
{
    const int B = 2, NH = 2, HS = 4, C = NH * HS;
    float dummy[1] = {0}, lse[12], out[48], dout[48], q[48], dq[48];
    for (int i = 0; i < 48; i++)
        q[i] = (float)i, dout[i] = 1.0f, out[i] = 0.0f, dq[i] = NAN;
    for (int i = 0; i < 12; i++)
        lse[i] = -INFINITY;
    struct bwd_call e = {.B = B, .Tq = 3, .Tk = 0, .NH = NH, .HS = HS, .q_stride = C,
                         .kv_stride = C, .scale = 1.0f, .q = q, .k = dummy, .v = dummy,
                         .dout = dout, .out = out, .lse = lse, .dq = dq, .nq = 48};
    bwd_run(&e, 0, -1);
    for (int i = 0; i < 48; i++)
        CHECK(dq[i] == 0.0f);

    float kv[80], dk[80], dv[80];
    for (int i = 0; i < 80; i++)
        kv[i] = (float)i, dk[i] = dv[i] = NAN;
    struct bwd_call f = {.B = B, .Tq = 0, .Tk = 5, .NH = NH, .HS = HS, .q_stride = C,
                         .kv_stride = C, .scale = 1.0f, .q = dummy, .k = kv, .v = kv,
                         .dout = dummy, .out = dummy, .lse = dummy, .dk = dk, .dv = dv,
                         .nkv = 80};
    bwd_run(&f, 0, -1);
    for (int i = 0; i < 80; i++)
        CHECK(dk[i] == 0.0f && dv[i] == 0.0f);

    float none[1] = {SENTINEL};
    struct bwd_call h = {.B = B, .Tq = 3, .Tk = 4, .NH = NH, .HS = 0, .q_stride = 0,
                         .kv_stride = 0, .scale = 1.0f, .q = dummy, .k = dummy, .v = dummy,
                         .dout = dummy, .out = dummy, .lse = lse, .dq = none, .dk = none,
                         .dv = none};
    bwd_run(&h, 0, -1);
    CHECK(none[0] == SENTINEL);
}

/* P and dS of a block of 64 queries by Tk keys a thread, no more threads
 * than (batch, head) tasks, and 2^25 floats in all once one thread has its
 * share. */
TEST(attention_bias_backward_scratch_is_bounded)
{
    struct kctx ctx = cpu_ctx(4);
    CHECK_INT(k_attention_bias_backward_scratch(&ctx, 1, 4112, 4112, 12, 256), 4 * 2 * 64 * 4112);
    CHECK_INT(k_attention_bias_backward_scratch(&ctx, 1, 7, 9, 1, 64), 2 * 7 * 9);
    CHECK_INT(k_attention_bias_backward_scratch(&ctx, 1, 512, 512, 2, 64), 2 * 2 * 64 * 512);
    CHECK_INT(k_attention_bias_backward_scratch(&ctx, 2, 0, 9, 1, 64), 0);
    kctx_free(&ctx);
    ctx = cpu_ctx(64);
    CHECK_INT(k_attention_bias_backward_scratch(&ctx, 1, 65536, 65536, 64, 64), (int64_t)1 << 25);
    kctx_free(&ctx);
}

/* ---- the dispatcher's refusals ---------------------------------------------------- */

/* A valid call (B 1, Tq 2, Tk 3, NH 2, HS 2; fused qkv rows of 12 in
 * qkv[0..34), the gradients alike in dqkv) with one thing broken by
 * `what`. */
static void backward_call(int what)
{
    struct kctx ctx = cpu_ctx(0);
    static float qkv[36], dqkv[36], out[8], dout[8], lse[4], bias[12], mask[3];
    int B = 1, Tq = 2, Tk = 3, NH = 2, HS = 2, qs = 12, kvs = 12;
    size_t nq = 16, nkv = 28;
    struct tensor q = t32(qkv, nq), k = t32(qkv + 4, nkv), v = t32(qkv + 8, nkv);
    struct tensor dq = t32(dqkv, nq), dk = t32(dqkv + 4, nkv), dv = t32(dqkv + 8, nkv);
    struct tensor l = t32(lse, 4);
    int64_t ns = k_attention_bias_backward_scratch(&ctx, B, Tq, Tk, NH, HS);
    float *s = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *s);
    struct tensor sc = t32(s, (size_t)ns);
    switch (what) {
    case 0: dq = t32(qkv, nq); break;          /* dq over q */
    case 1: dv = t32(dqkv + 5, nkv); break;    /* dv one column into dk's */
    case 2: dk = t32(dqkv + 4, nkv - 1); break; /* dk's rows run past its view */
    case 3: sc = t32(s, (size_t)ns - 1); break;
    case 4: l = t32(lse, 3); break;
    case 5: kvs = 3; break;
    case 6: dk = tensor_none(), dv = t32(dqkv + 2, nkv); break; /* dv over dq's columns */
    }
    k_attention_bias_backward(&ctx, dq, dk, dv, t32(dout, 8), t32(out, 8), l, q, k, v,
                              t32(bias, 12), t32(mask, 3), sc, B, Tq, Tk, NH, HS, qs, kvs, 1.0f);
    free(s);
}

static void refuse_dq_over_q(void)
{
    backward_call(0);
}
static void refuse_dk_dv_collide(void)
{
    backward_call(1);
}
static void refuse_short_dk(void)
{
    backward_call(2);
}
static void refuse_short_scratch(void)
{
    backward_call(3);
}
static void refuse_short_lse(void)
{
    backward_call(4);
}
static void refuse_narrow_kv_stride(void)
{
    backward_call(5);
}
static void refuse_dq_dv_collide(void)
{
    backward_call(6);
}
static void backward_valid(void)
{
    backward_call(-1);
}

TEST(attention_bias_backward_refuses_broken_calls)
{
    static const struct {
        void (*fn)(void);
        const char *want;
    } cases[] = {
        {refuse_dq_over_q, "dit: kernel attention_bias_backward: dq overlaps q, k, v, dout or "
                           "out (a bug in the caller)"},
        {refuse_dk_dv_collide, "dit: kernel attention_bias_backward: dk and dv write the same "
                               "elements"},
        {refuse_short_dk, "dit: kernel attention_bias_backward: dk has 27 elements, the shape "
                          "needs at least 28"},
        {refuse_short_scratch, "dit: kernel attention_bias_backward: scratch has"},
        {refuse_short_lse, "dit: kernel attention_bias_backward: lse has 3 elements, the shape "
                           "needs 4"},
        {refuse_narrow_kv_stride, "dit: kernel attention_bias_backward: kv_stride 3 is smaller "
                                  "than NH * HS = 4"},
        {refuse_dq_dv_collide, "dit: kernel attention_bias_backward: dq writes the elements of "
                               "dk or dv"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int sig = 0;
        char *msg = test_stderr_of(cases[i].fn, &sig);
        CHECK_INT(sig, SIGABRT);
        CHECK_CONTAINS(msg, cases[i].want);
        free(msg);
    }
    int sig = -1;
    char *msg = test_stderr_of(backward_valid, &sig);
    CHECK_INT(sig, 0);
    free(msg);
}
