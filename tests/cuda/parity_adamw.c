/* Parity specs of the optimizer (tests/cuda/parity.h): AdamW over five
 * steps (a tiny gradient, a zero one where eps matters, a learning rate
 * that changes), with and without the bf16/f16/f32 compute copy, and the
 * EMA over four steps; bit for bit, as both compute in f32 in the same
 * order. */
#include "tests/cuda/parity.h"

enum { AW_PARAM, AW_GRAD, AW_M, AW_V, AW_COPY };

static void aw_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    for (int i = 0; i <= AW_COPY; i++)
        n[i] = c->d[0];
}

/* m and v start at 0; the gradient is tiny at step 3, and one entry stays
 * 0 (v stays small, eps matters). */
static void aw_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == AW_M || i == AW_V)
        for (size_t k = 0; k < n; k++)
            x[k] = 0.0f;
    if (i == AW_GRAD) {
        float s = step + 1 == 3 ? 1e-6f : 0.1f;
        for (size_t k = 0; k < n; k++)
            x[k] *= s;
        if (n > 2)
            x[1] = 0.0f;
    }
}

static double aw_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    struct adamw_params hp = {1e-3, 0.9, 0.999, 1e-8, 0.01, step + 1};
    if (step + 1 == 4)
        hp.lr = 3e-2;
    k_adamw_update(ctx, t[AW_PARAM], t[AW_GRAD], t[AW_M], t[AW_V], t[AW_COPY], c->d[0], &hp);
    return 0;
}

/* absent bit 0: no copy; dt2 its dtype */
static const struct parity_case AW_CASES[] = {
    {PD(1), .absent = 1},
    {PD(1003), .absent = 1},
    {PD(1003), .offset = 1, .absent = 1},
    {PD(4096), .absent = 1},
    {PD(1003), .dt2 = KDT_BF16},
    {PD(1003), .offset = 1, .dt2 = KDT_BF16},
    {PD(64), .dt2 = KDT_F16},
    {PD(37), .dt2 = KDT_F32},
};

const struct parity_op parity_adamw_update = {
    .name = "adamw_update",
    .args = {[AW_PARAM] = ARG("param", PA_ACC | PA_F32 | PA_EXACT),
             [AW_GRAD] = ARG("grad", PA_IN | PA_F32 | PA_STEP),
             [AW_M] = ARG("m", PA_ACC | PA_F32 | PA_EXACT),
             [AW_V] = ARG("v", PA_ACC | PA_F32 | PA_EXACT),
             [AW_COPY] = ARG("copy", PA_OUT | PA_DT2 | PA_OPT | PA_EXACT)},
    .layout = aw_layout,
    .call = aw_call,
    .fill = aw_fill,
    .steps = 5,
    PARITY_CASES(AW_CASES),
};

enum { EMA_EMA, EMA_PARAM };

static double ema_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    k_ema_update(ctx, t[EMA_EMA], t[EMA_PARAM], step == 2 ? 0.5f : 0.9999f, c->d[0]);
    return 0;
}

static const struct parity_case EMA_CASES[] = {
    {PD(1)}, {PD(1), .offset = 1}, {PD(1003)}, {PD(1003), .offset = 1}, {PD(4096)},
    {PD(4096), .offset = 1},
};

const struct parity_op parity_ema_update = {
    .name = "ema_update",
    .args = {[EMA_EMA] = ARG("ema", PA_ACC | PA_F32 | PA_EXACT),
             [EMA_PARAM] = ARG("param", PA_IN | PA_F32 | PA_STEP)},
    .layout = aw_layout,
    .call = ema_call,
    .steps = 4,
    PARITY_CASES(EMA_CASES),
};
