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
