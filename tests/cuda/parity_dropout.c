/* Parity spec of dropout (tests/cuda/parity.h): the mask is Philox's on
 * both backends and the kept values one f32 multiply, so the output is bit
 * for bit the CPU's in every dtype (rounded once to bf16 or f16). Samples
 * with ids far apart (7, 123456789012, which is past 2^32, 2^32 - 1), a
 * sample length not a multiple of 4 (the short last Philox block), one
 * under 4, aligned and only 2 or 4 bytes aligned tensors (the 4-wide and the
 * one-by-one kernels), p = 0 (a copy), 0.1, 0.5, 0.9, and in place. */
#include "tests/cuda/parity.h"
#include "libcommon/philox.h"

#include <string.h>

/* ---- dropout_forward: B, per, first id; p --------------------------------------- */

enum { DO_OUT, DO_INP, DO_IDS };

/* A seed with both key words set, and a step past 2^32 (rng_stream keeps
 * its low 32 bits; the kernel must take the same ones). */
#define DO_SEED 0x9e3779b97f4a7c15ull
#define DO_STEP ((1ull << 32) + 12345u)

static const uint64_t DO_IDS_ALL[] = {7, 123456789012ull, 0xffffffffull, 0, 5, 9};

/* The ids are uint64 in device memory, which parity.h's int32 PA_IDS
 * cannot hold: they travel as an f32 tensor of 2 elements per id whose bits
 * are the id's (f32 tensors are uploaded and compared as bits, unrounded),
 * aligned for the 8-byte loads. */
static void dropout_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                           int64_t *at)
{
    n[DO_OUT] = n[DO_INP] = (int64_t)c->d[0] * c->d[1];
    n[DO_IDS] = 2 * (int64_t)c->d[0];
}

static void dropout_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == DO_IDS)
        memcpy(x, DO_IDS_ALL + c->d[2], n * sizeof *x);
}

static double dropout_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                           int step)
{
    k_dropout_forward(ctx, t[DO_OUT], t[DO_INP], c->f[0], DO_SEED, RNG_LORA_DROPOUT, DO_STEP,
                      (const uint64_t *)t[DO_IDS].data, c->d[0], c->d[1]);
    return 0;
}

static const struct parity_case DO_CASES[] = {
    {PD(2, 37, 0), PF(0.1f)},
    {PD(3, 1024, 0), PF(0.5f)},
    {PD(3, 1024, 0), PF(0.5f), .offset = 1},
    {PD(2, 4099, 1), PF(0.1f), .offset = 1},
    {PD(4, 64, 2), PF(0.9f)},
    {PD(2, 3, 4), PF(0.5f)},
    {PD(2, 37, 0), PF(0.0f)},
    {PD(2, 40, 0), PF(0.0f), .inplace = 1},
    {PD(2, 1000, 0), PF(0.5f), .inplace = 1},
    {PD(2, 13, 3), PF(0.1f), .offset = 1, .inplace = 1},
};

/* inp is PA_EXACT for the in-place cases, where the output is compared as it. */
const struct parity_op parity_dropout_forward = {
    .name = "dropout_forward",
    .args = {[DO_OUT] = ARG("out", PA_OUT | PA_EXACT, .alias = "inp"),
             [DO_INP] = ARG("inp", PA_IN | PA_EXACT),
             [DO_IDS] = ARG("ids", PA_IN | PA_F32 | PA_ALIGNED)},
    .layout = dropout_layout,
    .call = dropout_call,
    .fill = dropout_fill,
    PARITY_CASES(DO_CASES),
};
