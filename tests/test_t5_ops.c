/* t5_ops: the T5 text encoder's ops on the CPU backend (k_rmsnorm_forward,
 * k_gated_gelu_forward, k_attention_bias_forward) against transformers'
 * T5LayerNorm, T5DenseGatedActDense's gelu_new and T5Attention, run in
 * float64 (tests/reference/make_t5_op_goldens.py ->
 * tests/fixtures/t5_ops/goldens.safetensors), within 1e-5 relative; the
 * attention's optional pieces (no bias, no mask, no lse), empty heads and
 * empty key sets against a naive double-precision attention written here;
 * the same bits for any thread count; in place for the norm; and the
 * dispatchers aborting on a broken contract, naming the op. */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* A purpose of this file's own, so no product stream is reused here. */
#define TEST_PURPOSE 0x7435u

#define randn(n, seed, scale) test_normal(n, seed, scale, TEST_PURPOSE)

/* fp32 against the float64 references */
#define TOL 1e-5

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

/* ---- goldens --------------------------------------------------------------- */

static struct st_file *goldens_open(void)
{
    return test_goldens_open("fixtures/t5_ops/goldens.safetensors");
}

#define golden test_golden_f32

/* ---- RMS norm ----------------------------------------------------------------- */

static void check_rmsnorm(const char *group, int M, int C, int noweight)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const size_t n = (size_t)M * C;
    char key[64], what[96];
    snprintf(key, sizeof key, "%s/x", group);
    float *x = golden(g, key, n);
    snprintf(key, sizeof key, "%s/w", group);
    float *w = golden(g, key, (size_t)C);
    snprintf(key, sizeof key, "%s/out", group);
    float *want = golden(g, key, n);
    float *out = filled(n, NAN), *rstd = filled((size_t)M, NAN);

    k_rmsnorm_forward(&ctx, t32(out, n), t32(rstd, M), t32(x, n), t32(w, C), M, C, 1e-6f);
    snprintf(what, sizeof what, "%s out", group);
    check_rel(what, out, want, n);

    /* in place: the same bits */
    float *y = malloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    k_rmsnorm_forward(&ctx, t32(y, n), tensor_none(), t32(y, n), t32(w, C), M, C, 1e-6f);
    snprintf(what, sizeof what, "%s in place", group);
    check_same_bits(what, y, out, n);

    if (noweight) {
        float *want_nw = golden(g, "rmsnorm/out_noweight", n);
        float *want_rstd = golden(g, "rmsnorm/rstd", (size_t)M);
        check_rel("rmsnorm rstd", rstd, want_rstd, (size_t)M);
        /* no weight: plain RMS normalisation, rstd as before */
        float *rstd2 = filled((size_t)M, NAN);
        k_rmsnorm_forward(&ctx, t32(out, n), t32(rstd2, M), t32(x, n), tensor_none(), M, C,
                          1e-6f);
        check_rel("rmsnorm out, no weight", out, want_nw, n);
        check_same_bits("rmsnorm rstd, no weight", rstd2, rstd, (size_t)M);
        free(want_nw), free(want_rstd), free(rstd2);
    }
    free(x), free(w), free(want), free(out), free(rstd), free(y);
    st_close(g);
    kctx_free(&ctx);
}

TEST(rmsnorm_matches_t5_layernorm)
{
    check_rmsnorm("rmsnorm", 6, 37, 1);
    check_rmsnorm("rmsnorm_wide", 3, 256, 0);
}

/* ---- gated GELU ----------------------------------------------------------------- */

TEST(gated_gelu_matches_t5_dense_gated_act_dense)
{
    struct kctx ctx = cpu_ctx(0);
    struct st_file *g = goldens_open();
    const int M = 5, F = 19;
    const size_t n = (size_t)M * F;
    float *inp = golden(g, "gated_gelu/inp", 2 * n), *want = golden(g, "gated_gelu/out", n);
    float *out = filled(n, NAN);
    k_gated_gelu_forward(&ctx, t32(out, n), t32(inp, 2 * n), M, F);
    check_rel("gated_gelu out", out, want, n);
    free(inp), free(want), free(out);
    st_close(g);
    kctx_free(&ctx);
}

/* ---- attention with a bias and a key mask ---------------------------------------- */

/* One call's shape and where q, k, v lie. */
struct att_call {
    int B, Tq, Tk, NH, HS, q_stride, kv_stride;
    float scale;
    float *q, *k, *v, *bias, *mask; /* bias, mask may be NULL */
    size_t nq, nkv;                 /* the extents the views span */
};

static size_t extent(int rows, int stride, int C)
{
    return rows > 0 ? (size_t)(rows - 1) * stride + C : 0;
}

/* Runs the op with threads threads (and a scratch of `scratch` floats, or
 * what the op asks when negative) into out and lse (lse may be NULL). */
static void att_run(const struct att_call *a, int threads, int64_t scratch, float *out,
                    float *lse)
{
    struct kctx ctx = cpu_ctx(threads);
    int C = a->NH * a->HS;
    size_t no = (size_t)a->B * a->Tq * C, nl = (size_t)a->B * a->NH * a->Tq;
    int64_t ns = scratch >= 0 ? scratch
                              : k_attention_bias_scratch(&ctx, a->B, a->Tq, a->Tk, a->NH, a->HS);
    float *s = filled(ns > 0 ? (size_t)ns : 1, NAN);
    k_attention_bias_forward(&ctx, t32(out, no), lse ? t32(lse, nl) : tensor_none(),
                             t32(a->q, a->nq), t32(a->k, a->nkv), t32(a->v, a->nkv),
                             a->bias ? t32(a->bias, (size_t)a->NH * a->Tq * a->Tk) : tensor_none(),
                             a->mask ? t32(a->mask, (size_t)a->B * a->Tk) : tensor_none(),
                             ns > 0 ? t32(s, (size_t)ns) : tensor_none(), a->B, a->Tq, a->Tk,
                             a->NH, a->HS, a->q_stride, a->kv_stride, a->scale);
    free(s);
    kctx_free(&ctx);
}

/* The same in double, every score written out: the definition of kernels.h. */
static void att_naive(const struct att_call *a, float *out, float *lse)
{
    int C = a->NH * a->HS;
    double *s = malloc(((size_t)a->Tk + 1) * sizeof *s);
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->NH; h++)
            for (int i = 0; i < a->Tq; i++) {
                const float *qi = a->q + ((size_t)b * a->Tq + i) * a->q_stride + h * a->HS;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < a->Tk; j++) {
                    s[j] = -INFINITY;
                    if (a->mask && a->mask[(size_t)b * a->Tk + j] == 0)
                        continue;
                    const float *kj = a->k + ((size_t)b * a->Tk + j) * a->kv_stride + h * a->HS;
                    double d = 0;
                    for (int e = 0; e < a->HS; e++)
                        d += (double)qi[e] * kj[e];
                    s[j] = a->scale * d;
                    if (a->bias)
                        s[j] += a->bias[((size_t)h * a->Tq + i) * a->Tk + j];
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j < a->Tk; j++)
                    if (s[j] > -INFINITY)
                        sum += exp(s[j] - mx);
                float *o = out + ((size_t)b * a->Tq + i) * C + h * a->HS;
                for (int e = 0; e < a->HS; e++) {
                    double acc = 0;
                    for (int j = 0; j < a->Tk; j++)
                        if (s[j] > -INFINITY)
                            acc += exp(s[j] - mx) *
                                   a->v[((size_t)b * a->Tk + j) * a->kv_stride + h * a->HS + e];
                    o[e] = sum > 0 ? (float)(acc / sum) : 0.0f;
                }
                lse[((size_t)b * a->NH + h) * a->Tq + i] =
                    sum > 0 ? (float)(mx + log(sum)) : -INFINITY;
            }
    free(s);
}

/* T5Attention's own q, k, v (one fused buffer), position bias and mask. */
static void check_self_golden(const char *group, int B, int T, int NH, int HS)
{
    struct st_file *g = goldens_open();
    const int C = NH * HS;
    const size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    char key[64], what[96];
    snprintf(key, sizeof key, "%s/qkv", group);
    float *qkv = golden(g, key, nqkv);
    snprintf(key, sizeof key, "%s/bias", group);
    float *bias = golden(g, key, (size_t)NH * T * T);
    snprintf(key, sizeof key, "%s/mask", group);
    float *mask = golden(g, key, (size_t)B * T);
    snprintf(key, sizeof key, "%s/out", group);
    float *want = golden(g, key, no);
    snprintf(key, sizeof key, "%s/lse", group);
    float *want_lse = golden(g, key, nl);
    struct att_call a = {.B = B, .Tq = T, .Tk = T, .NH = NH, .HS = HS, .q_stride = 3 * C,
                         .kv_stride = 3 * C, .scale = 1.0f, .q = qkv, .k = qkv + C,
                         .v = qkv + 2 * C, .bias = bias, .mask = mask,
                         .nq = extent(B * T, 3 * C, C), .nkv = extent(B * T, 3 * C, C)};
    float *out = filled(no, NAN), *lse = filled(nl, NAN);
    att_run(&a, 0, -1, out, lse);
    snprintf(what, sizeof what, "%s out", group);
    check_rel(what, out, want, no);
    snprintf(what, sizeof what, "%s lse", group);
    check_rel(what, lse, want_lse, nl);
    free(qkv), free(bias), free(mask), free(want), free(want_lse), free(out), free(lse);
    st_close(g);
}

TEST(attention_bias_matches_t5_attention)
{
    check_self_golden("attention_self", 2, 7, 3, 16);
    /* 70 queries: two of the CPU's blocks of 64 */
    check_self_golden("attention_long", 1, 70, 2, 8);
}

/* The scaled variant, q apart from a fused kv of another length, batch row
 * 1 wholly masked: zeros and lse = -inf there. */
TEST(attention_bias_cross_matches_torch)
{
    struct st_file *g = goldens_open();
    const int B = 2, Tq = 5, Tk = 9, NH = 3, HS = 16, C = NH * HS;
    const size_t no = (size_t)B * Tq * C, nl = (size_t)B * NH * Tq;
    float *q = golden(g, "attention_cross/q", no);
    float *kv = golden(g, "attention_cross/kv", (size_t)B * Tk * 2 * C);
    float *bias = golden(g, "attention_cross/bias", (size_t)NH * Tq * Tk);
    float *mask = golden(g, "attention_cross/mask", (size_t)B * Tk);
    float *scale = golden(g, "attention_cross/scale", 1);
    float *want = golden(g, "attention_cross/out", no);
    float *want_lse = golden(g, "attention_cross/lse", nl);
    struct att_call a = {.B = B, .Tq = Tq, .Tk = Tk, .NH = NH, .HS = HS, .q_stride = C,
                         .kv_stride = 2 * C, .scale = scale[0], .q = q, .k = kv, .v = kv + C,
                         .bias = bias, .mask = mask, .nq = extent(B * Tq, C, C),
                         .nkv = extent(B * Tk, 2 * C, C)};
    float *out = filled(no, NAN), *lse = filled(nl, NAN);
    att_run(&a, 0, -1, out, lse);
    check_rel("attention_cross out", out, want, no);
    check_rel("attention_cross lse", lse, want_lse, nl);
    for (size_t i = no / 2; i < no; i++)
        CHECK(out[i] == 0.0f);
    free(q), free(kv), free(bias), free(mask), free(scale), free(want), free(want_lse);
    free(out), free(lse);
    st_close(g);
}

/* A random call: q, k, v in one buffer at odd strides, a bias, a mask with
 * padding and holes; then the op against att_naive with each optional piece
 * left out in turn. */
static void check_against_naive(int B, int Tq, int Tk, int NH, int HS, uint64_t seed)
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
    struct att_call a = {.B = B, .Tq = Tq, .Tk = Tk, .NH = NH, .HS = HS, .q_stride = qs,
                         .kv_stride = kvs, .scale = 0.3f, .q = buf, .k = buf + nq,
                         .v = buf + nq + C, .bias = bias, .mask = mask, .nq = nq, .nkv = nkv};
    const size_t no = (size_t)B * Tq * C, nl = (size_t)B * NH * Tq;
    float *out = filled(no, NAN), *lse = filled(nl, NAN);
    float *want = filled(no, NAN), *want_lse = filled(nl, NAN);
    char what[96];
    for (int variant = 0; variant < 4; variant++) {
        struct att_call v = a;
        if (variant & 1)
            v.bias = NULL;
        if (variant & 2)
            v.mask = NULL;
        att_naive(&v, want, want_lse);
        att_run(&v, 0, -1, out, lse);
        snprintf(what, sizeof what, "naive %dx%dx%d NH %d HS %d%s%s out", B, Tq, Tk, NH, HS,
                 v.bias ? "" : " no bias", v.mask ? "" : " no mask");
        check_rel(what, out, want, no);
        snprintf(what, sizeof what, "naive %dx%dx%d NH %d HS %d%s%s lse", B, Tq, Tk, NH, HS,
                 v.bias ? "" : " no bias", v.mask ? "" : " no mask");
        check_rel(what, lse, want_lse, nl);
    }
    /* no lse: out alone, the same bits */
    float *out2 = filled(no, NAN);
    att_run(&a, 0, -1, out2, NULL);
    att_run(&a, 0, -1, out, lse);
    check_same_bits("out without lse", out2, out, no);
    free(buf), free(bias), free(mask), free(out), free(lse), free(want), free(want_lse);
    free(out2);
}

TEST(attention_bias_matches_a_naive_attention)
{
    check_against_naive(2, 5, 9, 3, 16, 10);
    check_against_naive(1, 130, 67, 2, 24, 20); /* three query blocks, a partial one */
    check_against_naive(3, 1, 1, 1, 5, 30);     /* one key: attended or not */
}

/* HS = 0: every score is the bias, out has nothing to hold; Tk = 0: no key
 * at all, so every query gets lse -inf. */
TEST(attention_bias_empty_heads_and_keys)
{
    const int B = 2, Tq = 3, Tk = 4, NH = 2;
    float *bias = randn((size_t)NH * Tq * Tk, 40, 1.0f);
    float mask[8] = {1, 0, 1, 1, 0, 0, 0, 0};
    float dummy[1] = {0}, out[1], lse[12], want_lse[12];
    struct att_call a = {.B = B, .Tq = Tq, .Tk = Tk, .NH = NH, .HS = 0, .scale = 1.0f,
                         .q = dummy, .k = dummy, .v = dummy, .bias = bias, .mask = mask};
    att_naive(&a, out, want_lse);
    att_run(&a, 0, -1, out, lse);
    check_rel("HS 0 lse", lse, want_lse, 12);
    CHECK(isinf(lse[6]) && lse[6] < 0); /* batch row 1 wholly masked */

    float q[2 * 3 * 8], o[2 * 3 * 8];
    for (int i = 0; i < 48; i++)
        q[i] = (float)i, o[i] = NAN;
    struct att_call e = {.B = B, .Tq = Tq, .Tk = 0, .NH = NH, .HS = 4, .q_stride = 8,
                         .kv_stride = 8, .scale = 1.0f, .q = q, .k = q, .v = q, .nq = 48};
    att_run(&e, 0, -1, o, lse);
    for (int i = 0; i < 48; i++)
        CHECK(o[i] == 0.0f);
    for (int i = 0; i < 12; i++)
        CHECK(isinf(lse[i]) && lse[i] < 0);
    free(bias);
}

/* Bit-identical for 1 thread and 2, and with a scratch larger than the op
 * asks for. */
TEST(attention_bias_same_bits_for_any_thread_count)
{
    const int B = 2, Tq = 150, Tk = 77, NH = 3, HS = 32, C = NH * HS;
    const size_t n = (size_t)B * (Tq + 2 * Tk) * C;
    float *buf = randn(n, 50, 0.5f), *bias = randn((size_t)NH * Tq * Tk, 51, 2.0f);
    float *mask = filled((size_t)B * Tk, 1.0f);
    for (int j = 60; j < Tk; j++)
        mask[Tk + j] = 0.0f;
    const size_t nq = (size_t)B * Tq * C;
    struct att_call a = {.B = B, .Tq = Tq, .Tk = Tk, .NH = NH, .HS = HS, .q_stride = C,
                         .kv_stride = 2 * C, .scale = 1.0f, .q = buf, .k = buf + nq,
                         .v = buf + nq + C, .bias = bias, .mask = mask, .nq = nq,
                         .nkv = extent(B * Tk, 2 * C, C)};
    const size_t no = (size_t)B * Tq * C, nl = (size_t)B * NH * Tq;
    float *o1 = filled(no, NAN), *l1 = filled(nl, NAN), *o2 = filled(no, NAN);
    float *l2 = filled(nl, NAN), *o3 = filled(no, NAN), *l3 = filled(nl, NAN);
    att_run(&a, 1, -1, o1, l1);
    att_run(&a, 2, -1, o2, l2);
    att_run(&a, 2, 5 * 64 * Tk, o3, l3);
    check_same_bits("out, 1 and 2 threads", o1, o2, no);
    check_same_bits("lse, 1 and 2 threads", l1, l2, nl);
    check_same_bits("out, a larger scratch", o1, o3, no);
    check_same_bits("lse, a larger scratch", l1, l3, nl);
    free(buf), free(bias), free(mask), free(o1), free(l1), free(o2), free(l2), free(o3);
    free(l3);
}

/* Linear in Tk, bounded by the query block: T5-base at 512 tokens needs
 * 64 x 512 floats a thread, and 16384 keys no T x T matrix. */
TEST(attention_bias_scratch_is_bounded)
{
    struct kctx ctx = cpu_ctx(4);
    CHECK_INT(k_attention_bias_scratch(&ctx, 1, 512, 512, 12, 64), 4 * 64 * 512);
    CHECK_INT(k_attention_bias_scratch(&ctx, 1, 16384, 16384, 1, 64), 4 * 64 * 16384);
    CHECK_INT(k_attention_bias_scratch(&ctx, 1, 7, 9, 1, 64), 7 * 9); /* one task, one thread */
    CHECK_INT(k_attention_bias_scratch(&ctx, 2, 0, 9, 1, 64), 0);
    kctx_free(&ctx);
}

/* ---- the dispatchers' refusals ------------------------------------------------------ */

static float buf64[64];

static void rmsnorm_short_out(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rmsnorm_forward(&ctx, t32(buf64, 7), tensor_none(), t32(buf64 + 8, 8), tensor_none(), 2,
                      4, 1e-6f);
}

static void rmsnorm_short_weight(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rmsnorm_forward(&ctx, t32(buf64, 8), tensor_none(), t32(buf64 + 8, 8), t32(buf64 + 16, 3),
                      2, 4, 1e-6f);
}

static void rmsnorm_empty_rows(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rmsnorm_forward(&ctx, t32(buf64, 0), tensor_none(), t32(buf64, 0), tensor_none(), 2, 0,
                      1e-6f);
}

static void rmsnorm_shifted_overlap(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_rmsnorm_forward(&ctx, t32(buf64 + 1, 8), tensor_none(), t32(buf64, 8), tensor_none(), 2, 4,
                      1e-6f);
}

static void rmsnorm_bf16(void)
{
    struct kctx ctx = cpu_ctx(0);
    struct tensor t = {buf64, KDT_BF16, DEVICE_CPU, 8};
    k_rmsnorm_forward(&ctx, t32(buf64 + 8, 8), tensor_none(), t, tensor_none(), 2, 4, 1e-6f);
}

static void gated_gelu_short_inp(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_gated_gelu_forward(&ctx, t32(buf64, 6), t32(buf64 + 8, 11), 2, 3);
}

static void gated_gelu_in_place(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_gated_gelu_forward(&ctx, t32(buf64, 6), t32(buf64, 12), 2, 3);
}

static void gated_gelu_negative(void)
{
    struct kctx ctx = cpu_ctx(0);
    k_gated_gelu_forward(&ctx, t32(buf64, 6), t32(buf64 + 8, 12), -2, 3);
}

/* A valid call (B 1, Tq 2, Tk 3, NH 2, HS 2; fused qkv rows of 12 in
 * buf64[0..34), out in [40..48)) with one thing broken by `what`. */
static void attention_call(int what)
{
    struct kctx ctx = cpu_ctx(0);
    static float out[8], bias[12], mask[3], lse[4];
    int B = 1, Tq = 2, Tk = 3, NH = 2, HS = 2, qs = 12, kvs = 12;
    size_t nq = 16, nkv = 28, nmask = 3, nbias = 12;
    struct tensor o = t32(out, 8), q = t32(buf64, nq), k = t32(buf64 + 4, nkv);
    struct tensor v = t32(buf64 + 8, nkv);
    int64_t ns = k_attention_bias_scratch(&ctx, B, Tq, Tk, NH, HS);
    float *s = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *s);
    struct tensor sc = t32(s, (size_t)ns);
    switch (what) {
    case 0: qs = 3; break;                      /* q_stride below NH * HS */
    case 1: v = t32(buf64 + 8, nkv - 1); break; /* v's rows run past its view */
    case 2: nbias = 11; break;
    case 3: nmask = 4; break;
    case 4: sc = t32(s, (size_t)ns - 1); break;
    case 5: q.dtype = KDT_BF16; break;
    case 6: o = t32(buf64 + 2, 8); break;       /* out over q */
    case 7: HS = -1; break;
    case 8: kvs = 3; break;
    }
    k_attention_bias_forward(&ctx, o, t32(lse, 4), q, k, v, t32(bias, nbias), t32(mask, nmask),
                             sc, B, Tq, Tk, NH, HS, qs, kvs, 1.0f);
    free(s);
}

static void attention_narrow_stride(void)
{
    attention_call(0);
}
static void attention_short_view(void)
{
    attention_call(1);
}
static void attention_short_bias(void)
{
    attention_call(2);
}
static void attention_long_mask(void)
{
    attention_call(3);
}
static void attention_short_scratch(void)
{
    attention_call(4);
}
static void attention_bf16(void)
{
    attention_call(5);
}
static void attention_out_over_q(void)
{
    attention_call(6);
}
static void attention_negative(void)
{
    attention_call(7);
}
static void attention_narrow_kv_stride(void)
{
    attention_call(8);
}
static void attention_valid(void)
{
    attention_call(-1);
}

TEST(dispatchers_refuse_broken_calls_naming_the_op)
{
    static const struct {
        void (*fn)(void);
        const char *want;
    } cases[] = {
        {rmsnorm_short_out, "dit: kernel rmsnorm_forward: out has 7 elements, the shape needs 8 "
                            "(a bug in the caller)"},
        {rmsnorm_short_weight, "dit: kernel rmsnorm_forward: weight has 3 elements, the shape "
                               "needs 4"},
        {rmsnorm_empty_rows, "dit: kernel rmsnorm_forward: C is 0: the mean of an empty row"},
        {rmsnorm_shifted_overlap, "dit: kernel rmsnorm_forward: out overlaps inp without being "
                                  "the same tensor"},
        {rmsnorm_bf16, "dit: kernel rmsnorm_forward: inp is bf16; the cpu backend computes in "
                       "f32 only"},
        {gated_gelu_short_inp, "dit: kernel gated_gelu_forward: inp has 11 elements, the shape "
                               "needs 12"},
        {gated_gelu_in_place, "dit: kernel gated_gelu_forward: out overlaps inp"},
        {gated_gelu_negative, "dit: kernel gated_gelu_forward: negative dimension -2 among (M, "
                              "F)"},
        {attention_narrow_stride, "dit: kernel attention_bias_forward: q_stride 3 is smaller "
                                  "than NH * HS = 4"},
        {attention_narrow_kv_stride, "dit: kernel attention_bias_forward: kv_stride 3 is "
                                     "smaller than NH * HS = 4"},
        {attention_short_view, "dit: kernel attention_bias_forward: v has 27 elements, the shape "
                               "needs at least 28"},
        {attention_short_bias, "dit: kernel attention_bias_forward: bias has 11 elements, the "
                               "shape needs 12"},
        {attention_long_mask, "dit: kernel attention_bias_forward: key_mask has 4 elements, the "
                              "shape needs 3"},
        {attention_short_scratch, "dit: kernel attention_bias_forward: scratch has"},
        {attention_bf16, "dit: kernel attention_bias_forward: q is bf16; the cpu backend "
                         "computes in f32 only"},
        {attention_out_over_q, "dit: kernel attention_bias_forward: out overlaps q, k or v"},
        {attention_negative, "dit: kernel attention_bias_forward: negative dimension -1 among "
                             "(B, Tq, Tk, NH, HS)"},
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
    char *msg = test_stderr_of(attention_valid, &sig);
    CHECK_INT(sig, 0);
    free(msg);
}
