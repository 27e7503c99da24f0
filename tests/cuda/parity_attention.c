/* Parity specs of attention (tests/cuda/parity.h): out, lse and dqkv for
 * sequence lengths that are not a whole number of tiles (1, 7, 33, 70, 130,
 * 300), head sizes that are not powers of two (6, 24, 40, 72) up to 128
 * and, forward only, the wide heads (150, 256, 512),
 * both load paths (16-byte vectors and scalars), f32 (CUDA cores) and
 * bf16/f16 (tensor cores, tiles of 64, head dims padded to 16), an absent
 * dqkv. Backward runs on both sides from the CPU's forward (out rounded to
 * the dtype, lse), so that it is tested alone. Shapes stay tiny: the
 * emulator runs every CUDA thread. Determinism and empty heads are
 * test_cuda_attention.c's. */
#include "tests/cuda/parity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { AT_OUT, AT_LSE, AT_QKV, AT_SCRATCH, AT_DQKV, AT_DOUT };

static void att_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                       int64_t *at)
{
    int64_t B = c->d[0], T = c->d[1], C = c->d[2], NH = c->d[3];
    n[AT_OUT] = n[AT_DOUT] = B * T * C;
    n[AT_LSE] = B * NH * T;
    n[AT_QKV] = n[AT_DQKV] = B * T * 3 * C;
    n[AT_SCRATCH] = k_attention_scratch(ctx, (int)B, (int)T, (int)NH);
}

static double att_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    k_attention_forward(ctx, t[AT_OUT], t[AT_LSE], t[AT_QKV], t[AT_SCRATCH], c->d[0], c->d[1],
                        c->d[2], c->d[3]);
    return 0;
}

static double att_backward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                                int step)
{
    k_attention_backward(ctx, t[AT_DQKV], t[AT_DOUT], t[AT_OUT], t[AT_LSE], t[AT_QKV],
                         t[AT_SCRATCH], c->d[0], c->d[1], c->d[2], c->d[3]);
    return 0;
}

static void att_prepare(struct kctx *cpu, struct tensor *t, const struct parity_case *c)
{
    k_attention_forward(cpu, t[AT_OUT], t[AT_LSE], t[AT_QKV], t[AT_SCRATCH], c->d[0], c->d[1],
                        c->d[2], c->d[3]);
}

/* dq, dk and dv separately: each has its own scale. */
static int att_check(const struct parity_case *c, int i, const float *got, const float *want,
                     size_t n, double tol, const char *what)
{
    if (i != AT_DQKV)
        return 0;
    static const char *part[3] = {"dq", "dk", "dv"};
    size_t rows = (size_t)c->d[0] * c->d[1], C = (size_t)c->d[2];
    float *g = malloc((rows * C + 1) * sizeof *g);
    float *w = malloc((rows * C + 1) * sizeof *w);
    for (int p = 0; p < 3; p++) {
        for (size_t r = 0; r < rows; r++) {
            memcpy(g + r * C, got + r * 3 * C + p * C, C * sizeof *g);
            memcpy(w + r * C, want + r * 3 * C + p * C, C * sizeof *w);
        }
        char w2[384];
        snprintf(w2, sizeof w2, "%s %s", what, part[p]);
        if (c->d[1] == 1 && p < 2) {
            /* One key: dS = P (dP - D) is rounding noise around 0, so
             * there is no relative error to speak of. */
            float worst = 0.0f;
            for (size_t k = 0; k < rows * C; k++)
                worst = fabsf(g[k]) > worst ? fabsf(g[k]) : worst;
            if (!(worst <= tol))
                test_fail(__FILE__, __LINE__, "%s: |%g| is not ~0", w2, worst);
        } else {
            CHECK_PARITY(w2, g, w, rows * C, tol);
        }
    }
    free(g);
    free(w);
    return 3;
}

#define F32 .dts = PARITY_BIT(KDT_F32)
#define BF16 .dts = PARITY_BIT(KDT_BF16)
#define F16 .dts = PARITY_BIT(KDT_F16)

/* B, T, C, NH */
#define ATT_CASES                                                                             \
    /* one query and one key: softmax of a single score is 1, out = v */                     \
    {PD(2, 1, 16, 2), F32}, {PD(2, 7, 32, 2), F32},                                           \
        /* HS 24 (not a power of two), T one past a tile */                                   \
        {PD(2, 33, 48, 2), F32},                                                              \
        /* three query tiles and three key tiles, the last ones partial */                   \
        {PD(1, 70, 24, 3), F32},                                                              \
        /* ten tiles each way, and more than the CPU's 256-query blocks */                   \
        {PD(1, 300, 16, 1), F32},                                                             \
        /* DiT-XL/2's head size; the largest, four dims per lane */                           \
        {PD(1, 9, 144, 2), F32}, {PD(1, 5, 128, 1), F32},                                     \
        /* HS 6: rows not a whole number of 16-byte vectors, scalar loads */                 \
        {PD(2, 19, 12, 2), F32},                                                              \
        /* tensor cores, tiles of 64 rows and 64 columns */                                   \
        {PD(2, 33, 48, 2), BF16}, {PD(1, 9, 144, 2), BF16}, {PD(2, 70, 24, 3), BF16},         \
        {PD(1, 130, 32, 2), BF16}, {PD(1, 300, 32, 2), BF16},                                 \
        /* HS 40: whole 16-byte vectors, padded from 40 to 48 dims */                         \
        {PD(1, 33, 80, 2), BF16}, {PD(1, 70, 144, 2), BF16},                                  \
        /* HS 12 and 6 in f16: not whole 8-element vectors, scalar loads */                   \
        {PD(1, 20, 24, 2), F16}, {PD(1, 5, 128, 1), F16}, {PD(2, 19, 12, 2), F16}

/* Forward only, heads past the 128 that backward takes: a VAE's mid-block
 * (one head of 512), two heads of 256, and HS 150 (not a multiple of 4:
 * scalar loads, padded to 152, lanes past it idle), on the wide-head path
 * (16 queries a block, CUDA cores in every dtype); T odd, several query
 * tiles and a partial key tile. */
#define ATT_WIDE_CASES(DT)                                                                    \
    {PD(1, 45, 512, 1), DT}, {PD(2, 67, 512, 2), DT}, {PD(1, 41, 300, 2), DT}

static const struct parity_case ATT_FORWARD_CASES[] = {
    ATT_CASES, {PD(1, 7, 16, 2), F32}, ATT_WIDE_CASES(F32), ATT_WIDE_CASES(BF16),
    ATT_WIDE_CASES(F16)};
/* and no gradient wanted: backward returns without touching anything */
static const struct parity_case ATT_BACKWARD_CASES[] = {ATT_CASES,
                                                        {PD(1, 7, 16, 2), F32, .absent = 1}};

/* Scores of about unit spread: softmax rows neither flat nor one-hot. lse
 * is f32 in every dtype, from the same numbers on both sides, so only the
 * order of the sums differs: f32's tolerance. */
const struct parity_op parity_attention_forward = {
    .name = "attention_forward",
    .args = {[AT_OUT] = ARG("out", PA_OUT),
             [AT_LSE] = ARG("lse", PA_OUT | PA_F32 | PA_ALIGNED),
             [AT_QKV] = ARG("qkv", PA_IN, .scale = 1.2f),
             [AT_SCRATCH] = ARG("scratch", PA_SCRATCH)},
    .layout = att_layout,
    .call = att_forward_call,
    PARITY_CASES(ATT_FORWARD_CASES),
};

const struct parity_op parity_attention_backward = {
    .name = "attention_backward",
    .args = {[AT_OUT] = ARG("out", PA_IN | PA_PREP),
             [AT_LSE] = ARG("lse", PA_IN | PA_F32 | PA_ALIGNED | PA_PREP),
             [AT_QKV] = ARG("qkv", PA_IN, .scale = 1.2f),
             [AT_SCRATCH] = ARG("scratch", PA_SCRATCH),
             [AT_DQKV] = ARG("dqkv", PA_OUT | PA_OPT),
             [AT_DOUT] = ARG("dout", PA_IN)},
    .layout = att_layout,
    .call = att_backward_call,
    .prepare = att_prepare,
    .check = att_check,
    PARITY_CASES(ATT_BACKWARD_CASES),
};

/* ---- attention with a bias and a key mask (T5) ------------------------------- */

enum { AB_OUT, AB_LSE, AB_BUF, AB_Q, AB_K, AB_V, AB_BIAS, AB_MASK, AB_SCRATCH };

/* d: B, Tq, Tk, NH, HS, where q, k and v lie in buf (0: one fused qkv
 * buffer, rows 3C; 1: q rows of C, then a fused kv of rows 2C, as in
 * cross-attention; 2: rows C + 3 and 2C + 5, odd strides), and the mask (0:
 * random; 1: random, the last batch row wholly masked; 2: T5's padding, a
 * prefix of each row, shorter down the batch, so that whole key tiles are
 * masked). f[0]: the scale. Each view is exactly as long as its rows span. */
static void ab_strides(const struct parity_case *c, int *qs, int *kvs)
{
    int C = c->d[3] * c->d[4], lay = c->d[5];
    *qs = lay == 0 ? 3 * C : lay == 1 ? C : C + 3;
    *kvs = lay == 0 ? 3 * C : lay == 1 ? 2 * C : 2 * C + 5;
}

static void ab_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    int64_t B = c->d[0], Tq = c->d[1], Tk = c->d[2], NH = c->d[3], HS = c->d[4];
    int64_t C = NH * HS;
    int qs, kvs;
    ab_strides(c, &qs, &kvs);
    n[AB_Q] = B * Tq > 0 ? (B * Tq - 1) * qs + C : 0;
    n[AB_K] = n[AB_V] = B * Tk > 0 ? (B * Tk - 1) * kvs + C : 0;
    if (c->d[5] == 0) {
        at[AB_K] = C;
        at[AB_V] = 2 * C;
    } else {
        /* kv after q; one element between them for the odd strides */
        at[AB_K] = n[AB_Q] + (c->d[5] == 2);
        at[AB_V] = at[AB_K] + C;
    }
    n[AB_BUF] = at[AB_V] + n[AB_V] > n[AB_Q] ? at[AB_V] + n[AB_V] : n[AB_Q];
    n[AB_OUT] = B * Tq * C;
    n[AB_LSE] = B * NH * Tq;
    n[AB_BIAS] = NH * Tq * Tk;
    n[AB_MASK] = B * Tk;
    n[AB_SCRATCH] = k_attention_bias_scratch(ctx, (int)B, (int)Tq, (int)Tk, (int)NH, (int)HS);
}

static double ab_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                              int step)
{
    int qs, kvs;
    ab_strides(c, &qs, &kvs);
    k_attention_bias_forward(ctx, t[AB_OUT], t[AB_LSE], t[AB_Q], t[AB_K], t[AB_V], t[AB_BIAS],
                             t[AB_MASK], t[AB_SCRATCH], c->d[0], c->d[1], c->d[2], c->d[3],
                             c->d[4], qs, kvs, c->f[0]);
    return 0;
}

/* The mask as the case's mode asks (from the random values: about 7 keys
 * in 10 attended). */
static void ab_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i != AB_MASK)
        return;
    int B = c->d[0], Tk = c->d[2], mode = c->d[6];
    for (int b = 0; b < B; b++) {
        int len = Tk * (B - b) / (B + 1);
        for (int j = 0; j < Tk; j++) {
            float *m = &x[(size_t)b * Tk + j];
            if (mode == 2)
                *m = j < (len > 0 ? len : 1) ? 1.0f : 0.0f;
            else
                *m = (mode == 1 && b == B - 1) ? 0.0f : *m > -0.5f ? 1.0f : 0.0f;
        }
    }
}

/* lse: a query with no attended key has -inf on both sides; the others
 * within tolerance. */
static int ab_check(const struct parity_case *c, int i, const float *got, const float *want,
                    size_t n, double tol, const char *what)
{
    if (i != AB_LSE)
        return 0;
    float *g = malloc((n + 1) * sizeof *g), *w = malloc((n + 1) * sizeof *w);
    size_t m = 0;
    for (size_t k = 0; k < n; k++) {
        if (isinf(want[k]) && want[k] < 0) {
            if (!(isinf(got[k]) && got[k] < 0))
                test_fail(__FILE__, __LINE__, "%s[%zu]: got %.9g, want -inf", what, k,
                          (double)got[k]);
        } else {
            g[m] = got[k];
            w[m] = want[k];
            m++;
        }
    }
    CHECK_PARITY(what, g, w, m, tol);
    free(g);
    free(w);
    return 1;
}

#define AB_T5 PF(1.0f)

/* B, Tq, Tk, NH, HS, buf layout, mask mode; absent: bit 0 lse, 1 bias,
 * 2 mask. */
static const struct parity_case AB_FORWARD_CASES[] = {
    /* T5's shape of call: fused qkv, unscaled, HS 64, a random mask */
    {PD(2, 5, 5, 2, 64, 0, 0), AB_T5},
    /* HS 40, Tq = Tk = 33 (a second query and key tile, one row or key in
     * it), the last batch row wholly masked (zeros, lse -inf) */
    {PD(2, 33, 33, 2, 40, 0, 1), AB_T5},
    /* cross-attention, Tq != Tk, three key tiles of which padding masks
     * whole ones; scaled */
    {PD(2, 37, 70, 1, 40, 1, 2), PF(0.158f), F32},
    {PD(2, 37, 70, 1, 40, 1, 2), PF(0.158f), BF16},
    /* HS 128, four dims per lane */
    {PD(1, 9, 20, 1, 128, 1, 0), PF(0.088f)},
    /* odd strides and HS 6: scalar loads, pad columns */
    {PD(2, 7, 12, 3, 6, 2, 0), AB_T5, F32},
    {PD(2, 7, 12, 3, 6, 2, 0), AB_T5, F16},
    /* views only 2 or 4 bytes aligned */
    {PD(1, 5, 40, 2, 64, 1, 0), AB_T5, .offset = 1},
    /* one query, one key (masked or not) */
    {PD(3, 1, 1, 1, 16, 1, 0), AB_T5, F32},
    /* no lse, no bias, no mask, neither (plain attention), nothing optional */
    {PD(2, 5, 9, 2, 64, 1, 1), AB_T5, F32, .absent = 1},
    {PD(2, 5, 9, 2, 64, 1, 1), AB_T5, F32, .absent = 2},
    {PD(2, 5, 9, 2, 64, 1, 1), AB_T5, F32, .absent = 4},
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), BF16, .absent = 6},
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), F32, .absent = 7},
    /* the wide heads, up to the backend's 512 */
    {PD(1, 3, 9, 1, 256, 1, 0), PF(0.0625f), F32},
    {PD(1, 3, 9, 1, 200, 2, 0), PF(0.0625f), BF16},
    {PD(1, 2, 5, 1, 512, 1, 2), PF(0.0442f), F32},
    /* no head dims (lse from the bias alone), no keys (zeros, lse -inf) */
    {PD(2, 3, 4, 2, 0, 1, 1), AB_T5, F32},
    {PD(2, 3, 0, 2, 8, 1, 0), AB_T5, F32},
};

/* Scores of a few units (T5's are unscaled): q, k, v of spread 0.5, bias
 * of spread 2. */
const struct parity_op parity_attention_bias_forward = {
    .name = "attention_bias_forward",
    .args = {[AB_OUT] = ARG("out", PA_OUT),
             [AB_LSE] = ARG("lse", PA_OUT | PA_F32 | PA_ALIGNED | PA_OPT),
             [AB_BUF] = ARG("buf", PA_IN, .scale = 0.5f),
             [AB_Q] = ARG("q", PA_IN, .view = "buf"),
             [AB_K] = ARG("k", PA_IN, .view = "buf"),
             [AB_V] = ARG("v", PA_IN, .view = "buf"),
             [AB_BIAS] = ARG("bias", PA_IN | PA_F32 | PA_OPT, .scale = 2.0f),
             [AB_MASK] = ARG("key_mask", PA_IN | PA_F32 | PA_OPT),
             [AB_SCRATCH] = ARG("scratch", PA_SCRATCH)},
    .layout = ab_layout,
    .call = ab_forward_call,
    .fill = ab_fill,
    .check = ab_check,
    PARITY_CASES(AB_FORWARD_CASES),
};

/* ---- its backward ---------------------------------------------------------------- */

/* Twelve tensors at most, so q, k, v and the gradients are tensors of
 * their own here, each exactly as long as its rows span at the case's
 * strides (ab_strides: layout 0, the fused qkv's 3C; 1, cross-attention's
 * C and 2C; 2, odd ones): what lies between a gradient's rows stays junk,
 * checked bit for bit (bb_check), as it would be q, k or v of a fused dqkv.
 * d as for the forward: B, Tq, Tk, NH, HS, layout, mask mode; f[0] the
 * scale. */
enum {
    BB_DQ, BB_DK, BB_DV, BB_DOUT, BB_OUT, BB_LSE, BB_Q, BB_K, BB_V, BB_BIAS, BB_MASK, BB_SCRATCH
};

static void bb_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    int64_t B = c->d[0], Tq = c->d[1], Tk = c->d[2], NH = c->d[3], HS = c->d[4];
    int64_t C = NH * HS;
    int qs, kvs;
    ab_strides(c, &qs, &kvs);
    n[BB_Q] = n[BB_DQ] = B * Tq > 0 ? (B * Tq - 1) * qs + C : 0;
    n[BB_K] = n[BB_V] = n[BB_DK] = n[BB_DV] = B * Tk > 0 ? (B * Tk - 1) * kvs + C : 0;
    n[BB_DOUT] = n[BB_OUT] = B * Tq * C;
    n[BB_LSE] = B * NH * Tq;
    n[BB_BIAS] = NH * Tq * Tk;
    n[BB_MASK] = B * Tk;
    n[BB_SCRATCH] =
        k_attention_bias_backward_scratch(ctx, (int)B, (int)Tq, (int)Tk, (int)NH, (int)HS);
}

/* absent: bit 0 dq, 1 dk, 2 dv, 3 bias, 4 mask */
#define BB_NO_BIAS 8u
#define BB_NO_MASK 16u

static double bb_backward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    int qs, kvs;
    ab_strides(c, &qs, &kvs);
    k_attention_bias_backward(ctx, t[BB_DQ], t[BB_DK], t[BB_DV], t[BB_DOUT], t[BB_OUT],
                              t[BB_LSE], t[BB_Q], t[BB_K], t[BB_V], t[BB_BIAS], t[BB_MASK],
                              t[BB_SCRATCH], c->d[0], c->d[1], c->d[2], c->d[3], c->d[4], qs, kvs,
                              c->f[0]);
    return 0;
}

/* out and lse from the CPU's forward with the case's bias and mask (t holds
 * every tensor, absent or not), in a scratch of the forward's own size. */
static void bb_prepare(struct kctx *cpu, struct tensor *t, const struct parity_case *c)
{
    int qs, kvs;
    ab_strides(c, &qs, &kvs);
    int64_t ns = k_attention_bias_scratch(cpu, c->d[0], c->d[1], c->d[2], c->d[3], c->d[4]);
    float *s = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *s);
    k_attention_bias_forward(cpu, t[BB_OUT], t[BB_LSE], t[BB_Q], t[BB_K], t[BB_V],
                             c->absent & BB_NO_BIAS ? tensor_none() : t[BB_BIAS],
                             c->absent & BB_NO_MASK ? tensor_none() : t[BB_MASK],
                             tensor_f32(s, ns), c->d[0], c->d[1], c->d[2], c->d[3], c->d[4], qs,
                             kvs, c->f[0]);
    free(s);
}

static void bb_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == BB_MASK)
        ab_fill(c, AB_MASK, step, x, n);
}

/* A gradient's heads' elements within tolerance of the CPU's, and what
 * lies between its rows the junk both sides started with. */
static int bb_check(const struct parity_case *c, int i, const float *got, const float *want,
                    size_t n, double tol, const char *what)
{
    if (i != BB_DQ && i != BB_DK && i != BB_DV)
        return 0;
    int qs, kvs;
    ab_strides(c, &qs, &kvs);
    const size_t C = (size_t)c->d[3] * c->d[4], stride = (size_t)(i == BB_DQ ? qs : kvs);
    float *g = malloc((n + 1) * sizeof *g), *w = malloc((n + 1) * sizeof *w);
    size_t m = 0;
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        if (k % stride < C) {
            g[m] = got[k];
            w[m] = want[k];
            m++;
        } else if (memcmp(&got[k], &want[k], sizeof *got) != 0 && bad++ < 5) {
            test_fail(__FILE__, __LINE__, "%s[%zu]: %.9g between the heads' rows, where the CPU "
                      "left %.9g", what, k, (double)got[k], (double)want[k]);
        }
    }
    CHECK_PARITY(what, g, w, m, tol);
    free(g);
    free(w);
    return 1;
}

#define BB_PLAIN .absent = BB_NO_BIAS | BB_NO_MASK

/* B, Tq, Tk, NH, HS, layout, mask mode. */
static const struct parity_case BB_BACKWARD_CASES[] = {
    /* F-Lite's self-attention (fused qkv, scaled, no bias, no mask), and its
     * cross-attention (q rows of C, a fused kv of rows 2C, Tq != Tk) */
    {PD(2, 20, 20, 2, 32, 0, 0), PF(0.177f), BB_PLAIN},
    {PD(2, 37, 12, 2, 16, 1, 0), PF(0.25f), BB_PLAIN},
    /* F-Lite's head size, 256: four keys or queries a warp */
    {PD(1, 13, 13, 2, 256, 0, 0), PF(0.0625f), BB_PLAIN, F32},
    {PD(1, 13, 13, 2, 256, 0, 0), PF(0.0625f), BB_PLAIN, BF16},
    /* T5's: a bias and a random mask, unscaled; HS 40, Tq = Tk = 33 (a
     * second query and key tile), the last batch row wholly masked (zero
     * gradients) */
    {PD(2, 33, 33, 2, 40, 0, 1), PF(1.0f), F32},
    {PD(2, 33, 33, 2, 40, 0, 1), PF(1.0f), BF16},
    /* padding masks whole key blocks (zeros stored at once) and key tiles
     * (skipped) */
    {PD(2, 37, 70, 1, 40, 1, 2), PF(0.158f), F32},
    {PD(2, 37, 70, 1, 40, 1, 2), PF(0.158f), F16},
    /* HS 128, four dims per lane */
    {PD(1, 9, 20, 1, 128, 1, 0), PF(0.088f), F32},
    /* odd strides, HS 6 and 12: scalar loads, pad columns; Tq 19, Tk 7 */
    {PD(2, 7, 12, 3, 6, 2, 0), PF(1.0f), F32},
    {PD(2, 7, 12, 3, 6, 2, 0), PF(1.0f), F16},
    {PD(2, 19, 7, 2, 12, 2, 0), PF(0.3f), F32},
    {PD(2, 19, 7, 2, 12, 2, 0), PF(0.3f), BF16},
    /* views only 2 or 4 bytes aligned */
    {PD(1, 5, 40, 2, 64, 1, 0), PF(0.125f), .offset = 1},
    /* the wide heads, up to the forward's 512: HS 200 (not a multiple of
     * 32), two keys or queries a warp at 512 */
    {PD(1, 3, 9, 1, 200, 2, 0), PF(0.0707f), BF16},
    {PD(1, 5, 9, 1, 512, 1, 2), PF(0.0442f), F32},
    /* one query, three keys, masked or not */
    {PD(3, 1, 3, 1, 16, 1, 1), PF(1.0f), F32},
    /* some gradients not wanted: dq alone, dk and dv alone, dv alone, none;
     * no bias, no mask */
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), F32, .absent = 6},
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), F32, .absent = 1},
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), BF16, .absent = 3},
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), F32, .absent = 7},
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), F32, .absent = BB_NO_BIAS},
    {PD(2, 5, 9, 2, 64, 1, 1), PF(0.125f), F32, .absent = BB_NO_MASK},
    /* no head dims (nothing to write), no keys (dq zeros), no queries (dk
     * and dv zeros) */
    {PD(2, 3, 4, 2, 0, 1, 1), PF(1.0f), F32},
    {PD(2, 3, 0, 2, 8, 1, 0), PF(1.0f), F32},
    {PD(2, 0, 5, 2, 8, 1, 0), PF(1.0f), F32},
};

/* Inputs as the forward's (q, k, v of spread 0.5, bias 2), dout of unit
 * spread; out and lse the CPU forward's, given to both. */
const struct parity_op parity_attention_bias_backward = {
    .name = "attention_bias_backward",
    .args = {[BB_DQ] = ARG("dq", PA_OUT | PA_OPT),
             [BB_DK] = ARG("dk", PA_OUT | PA_OPT),
             [BB_DV] = ARG("dv", PA_OUT | PA_OPT),
             [BB_DOUT] = ARG("dout", PA_IN),
             [BB_OUT] = ARG("out", PA_IN | PA_PREP),
             [BB_LSE] = ARG("lse", PA_IN | PA_F32 | PA_ALIGNED | PA_PREP),
             [BB_Q] = ARG("q", PA_IN, .scale = 0.5f),
             [BB_K] = ARG("k", PA_IN, .scale = 0.5f),
             [BB_V] = ARG("v", PA_IN, .scale = 0.5f),
             [BB_BIAS] = ARG("bias", PA_IN | PA_F32 | PA_OPT, .scale = 2.0f),
             [BB_MASK] = ARG("key_mask", PA_IN | PA_F32 | PA_OPT),
             [BB_SCRATCH] = ARG("scratch", PA_SCRATCH)},
    .layout = bb_layout,
    .call = bb_backward_call,
    .prepare = bb_prepare,
    .fill = bb_fill,
    .check = bb_check,
    PARITY_CASES(BB_BACKWARD_CASES),
};
