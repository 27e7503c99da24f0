/* Parity spec of 8-bit AdamW (tests/cuda/parity.h): six steps from random
 * codes and block maxima, with a block whose state and gradients are zero
 * (absmax 0), a NaN and an infinite gradient, a tiny gradient, a learning
 * rate that changes, with and without weight decay and the compute copy;
 * bit for bit (weights, codes, maxima), as both backends compute the same
 * f32 operations in the same order. */
#include "tests/cuda/parity.h"

#include <math.h>

enum { A8_PARAM, A8_GRAD, A8_S1, A8_S2, A8_A1, A8_A2, A8_COPY };

static void a8_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n, int64_t *at)
{
    const int64_t blocks = (c->d[0] + K_ADAMW8BIT_BLOCK - 1) / K_ADAMW8BIT_BLOCK;
    n[A8_PARAM] = n[A8_GRAD] = n[A8_S1] = n[A8_S2] = n[A8_COPY] = c->d[0];
    n[A8_A1] = n[A8_A2] = blocks;
}

static void a8_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    const size_t zero_block = n > K_ADAMW8BIT_BLOCK ? K_ADAMW8BIT_BLOCK : 0; /* block 1 when there is one */
    if (i == A8_S1 || i == A8_S2) {
        for (size_t k = 0; k < n; k++)
            x[k] = (float)((unsigned)(fabsf(x[k]) * 1000.0f) % 256u);
        if (zero_block)
            for (size_t k = zero_block; k < n && k < 2 * zero_block; k++)
                x[k] = i == A8_S1 ? 127.0f : 0.0f;
    }
    if (i == A8_A1 || i == A8_A2) {
        for (size_t k = 0; k < n; k++)
            x[k] = fabsf(x[k]) * (i == A8_A1 ? 0.05f : 0.002f);
        if (zero_block && n > 1)
            x[1] = 0.0f;
    }
    if (i == A8_GRAD) {
        const float s = step + 1 == 3 ? 1e-6f : 0.1f;
        for (size_t k = 0; k < n; k++)
            x[k] *= s;
        if (zero_block)
            for (size_t k = zero_block; k < n && k < 2 * zero_block; k++)
                x[k] = 0.0f;
        if (n > 7 && step == 1)
            x[5] = NAN, x[7] = -INFINITY;
    }
}

static double a8_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    struct adamw_params hp = {1e-3, 0.9, 0.999, 1e-8, c->f[0], step + 1};
    if (step + 1 == 4)
        hp.lr = 3e-2;
    k_adamw8bit_update(ctx, t[A8_PARAM], t[A8_GRAD], t[A8_S1], t[A8_S2], t[A8_A1], t[A8_A2], t[A8_COPY], c->d[0],
                       &hp);
    return 0;
}

/* absent bit 0: no copy; dt2 its dtype; f[0] the weight decay */
static const struct parity_case A8_CASES[] = {
    {PD(1), PF(0.01f), .absent = 1},
    {PD(300), PF(0.01f), .absent = 1},
    {PD(1003), PF(0.0f), .absent = 1},
    {PD(4096), PF(0.01f), .absent = 1},
    {PD(1003), PF(0.01f), .dt2 = KDT_BF16},
    {PD(600), PF(0.1f), .offset = 1, .dt2 = KDT_F16},
    {PD(257), PF(0.01f), .dt2 = KDT_F32},
};

const struct parity_op parity_adamw8bit_update = {
    .name = "adamw8bit_update",
    .args = {[A8_PARAM] = ARG("param", PA_ACC | PA_F32 | PA_EXACT),
             [A8_GRAD] = ARG("grad", PA_IN | PA_F32 | PA_STEP),
             [A8_S1] = ARG("state1", PA_ACC | PA_U8 | PA_EXACT),
             [A8_S2] = ARG("state2", PA_ACC | PA_U8 | PA_EXACT),
             [A8_A1] = ARG("absmax1", PA_ACC | PA_F32 | PA_EXACT),
             [A8_A2] = ARG("absmax2", PA_ACC | PA_F32 | PA_EXACT),
             [A8_COPY] = ARG("copy", PA_OUT | PA_DT2 | PA_OPT | PA_EXACT)},
    .layout = a8_layout,
    .call = a8_call,
    .fill = a8_fill,
    .steps = 6,
    PARITY_CASES(A8_CASES),
};
