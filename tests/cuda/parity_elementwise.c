/* Parity specs of the elementwise ops and reductions (tests/cuda/parity.h):
 * add, axpy, scale and fill bit for bit (fp32 arithmetic, one rounding on
 * store), on sizes from one element past the vector width, aligned and only
 * 2 or 4 bytes aligned; the broadcast add; the MSE (its fp32 sum in every
 * dtype, dpred bit for bit in f32) and the sum of squares (the same bits on
 * a second call) over several blocks of the reductions. */
#include "tests/cuda/parity.h"

/* ---- add_broadcast: B, T, C ---------------------------------------------------- */

enum { AB_OUT, AB_A, AB_B };

static void add_broadcast_layout(const struct kctx *ctx, const struct parity_case *c,
                                 int64_t *n, int64_t *at)
{
    n[AB_OUT] = n[AB_A] = (int64_t)c->d[0] * c->d[1] * c->d[2];
    n[AB_B] = (int64_t)c->d[1] * c->d[2];
}

static double add_broadcast_call(struct kctx *ctx, struct tensor *t,
                                 const struct parity_case *c, int step)
{
    k_add_broadcast_forward(ctx, t[AB_OUT], t[AB_A], t[AB_B], c->d[0], c->d[1], c->d[2]);
    return 0;
}

static const struct parity_case ADD_BROADCAST_CASES[] = {
    {PD(2, 16, 64)}, {PD(3, 5, 37)}, {PD(2, 16, 64), .offset = 1}, {PD(1, 1, 8)}};

const struct parity_op parity_add_broadcast_forward = {
    .name = "add_broadcast_forward",
    .args = {[AB_OUT] = ARG("out", PA_OUT | PA_EXACT), [AB_A] = ARG("a", PA_IN),
             [AB_B] = ARG("b", PA_IN)},
    .layout = add_broadcast_layout,
    .call = add_broadcast_call,
    PARITY_CASES(ADD_BROADCAST_CASES),
};

/* ---- add, axpy, scale, fill: n ----------------------------------------------------- */

static void n3_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    n[0] = n[1] = n[2] = c->d[0];
}

static double add_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    k_add(ctx, t[0], t[1], t[2], c->d[0]);
    return 0;
}

static double axpy_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                        int step)
{
    k_axpy(ctx, t[0], -0.37f, t[1], c->d[0]);
    return 0;
}

static double scale_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                         int step)
{
    k_scale(ctx, t[0], 1.7f, c->d[0]);
    return 0;
}

static double fill_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                        int step)
{
    k_fill(ctx, t[0], -2.5f, c->d[0]);
    return 0;
}

static const struct parity_case N_CASES[] = {
    {PD(1)},    {PD(1), .offset = 1},    {PD(13)},   {PD(13), .offset = 1},
    {PD(1000)}, {PD(1000), .offset = 1}, {PD(4099)}, {PD(4099), .offset = 1},
};

const struct parity_op parity_add = {
    .name = "add",
    .args = {ARG("out", PA_OUT | PA_EXACT), ARG("a", PA_IN), ARG("b", PA_IN)},
    .layout = n3_layout,
    .call = add_call,
    PARITY_CASES(N_CASES),
};

const struct parity_op parity_axpy = {
    .name = "axpy",
    .args = {ARG("y", PA_ACC | PA_EXACT), ARG("x", PA_IN)},
    .layout = n3_layout,
    .call = axpy_call,
    PARITY_CASES(N_CASES),
};

const struct parity_op parity_scale = {
    .name = "scale",
    .args = {ARG("x", PA_ACC | PA_EXACT)},
    .layout = n3_layout,
    .call = scale_call,
    PARITY_CASES(N_CASES),
};

const struct parity_op parity_fill = {
    .name = "fill",
    .args = {ARG("x", PA_OUT | PA_EXACT)},
    .layout = n3_layout,
    .call = fill_call,
    PARITY_CASES(N_CASES),
};

/* ---- reductions ---------------------------------------------------------------------- */

enum { MSE_DPRED, MSE_PRED, MSE_TARGET };

static double mse_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    return k_mse_forward_backward(ctx, t[MSE_DPRED], t[MSE_PRED], t[MSE_TARGET], c->d[0], 0.5f);
}

/* 50000 values span several blocks of the reduction in every dtype;
 * absent bit 0: no dpred. */
static const struct parity_case MSE_CASES[] = {
    {PD(1)},
    {PD(1), .absent = 1},
    {PD(1000)},
    {PD(1000), .absent = 1},
    {PD(50000)},
    {PD(50000), .absent = 1},
    {PD(1003), .offset = 1, .dts = PARITY_BIT(KDT_F32)},
    {PD(20001), .offset = 1, .dts = PARITY_BIT(KDT_BF16)},
};

const struct parity_op parity_mse_forward_backward = {
    .name = "mse_forward_backward",
    .args = {[MSE_DPRED] = ARG("dpred", PA_OUT | PA_OPT | PA_EXACT_F32),
             [MSE_PRED] = ARG("pred", PA_IN), [MSE_TARGET] = ARG("target", PA_IN)},
    .layout = n3_layout,
    .call = mse_call,
    .result = 1,
    PARITY_CASES(MSE_CASES),
};

static double sum_squares_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    return k_sum_squares(ctx, t[0], c->d[0]);
}

static const struct parity_case SUM_SQUARES_CASES[] = {
    {PD(0)},    {PD(0), .offset = 1},    {PD(1)},     {PD(1), .offset = 1},
    {PD(1000)}, {PD(1000), .offset = 1}, {PD(70001)}, {PD(70001), .offset = 1},
};

const struct parity_op parity_sum_squares = {
    .name = "sum_squares",
    .args = {ARG("x", PA_IN, .scale = 1.5f)},
    .layout = n3_layout,
    .call = sum_squares_call,
    .result = 1,
    .repeat = 1,
    PARITY_CASES(SUM_SQUARES_CASES),
};
