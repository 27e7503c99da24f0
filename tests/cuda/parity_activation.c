/* Parity specs of the activations (tests/cuda/parity.h): GELU (tanh) and
 * SiLU, forward and backward, and T5's gated GELU forward, on sizes from
 * one element to several blocks, aligned and only 2 or 4 bytes aligned (the
 * scalar tails), an absent gradient. Saturation at large |x| is
 * test_cuda_ops.c's, except for the exact (erf) GELU, whose cases include a
 * ramp over [-12, 12] and in place. */
#include "tests/cuda/parity.h"

enum { A_OUT, A_INP, A_DINP = 0, A_DOUT = 2 };

static void act_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                       int64_t *at)
{
    n[A_OUT] = n[A_INP] = n[A_DOUT] = c->d[0];
}

static double gelu_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                                int step)
{
    k_gelu_forward(ctx, t[A_OUT], t[A_INP], c->d[0]);
    return 0;
}

static double gelu_backward_call(struct kctx *ctx, struct tensor *t,
                                 const struct parity_case *c, int step)
{
    k_gelu_backward(ctx, t[A_DINP], t[A_DOUT], t[A_INP], c->d[0]);
    return 0;
}

static double silu_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                                int step)
{
    k_silu_forward(ctx, t[A_OUT], t[A_INP], c->d[0]);
    return 0;
}

static double silu_backward_call(struct kctx *ctx, struct tensor *t,
                                 const struct parity_case *c, int step)
{
    k_silu_backward(ctx, t[A_DINP], t[A_DOUT], t[A_INP], c->d[0]);
    return 0;
}

static const struct parity_case ACT_CASES[] = {
    {PD(1)},    {PD(7)},    {PD(7), .offset = 1},    {PD(1000)},
    {PD(1000), .offset = 1}, {PD(4096)}, {PD(4096), .offset = 1},
};

static const struct parity_case ACT_BACKWARD_CASES[] = {
    {PD(1)},    {PD(7)},    {PD(7), .offset = 1},    {PD(1000)},
    {PD(1000), .offset = 1}, {PD(4096)}, {PD(4096), .offset = 1}, {PD(1000), .absent = 1},
};

/* x spread over the curved part and both tails */
#define FORWARD_ARGS {[A_OUT] = ARG("out", PA_OUT), [A_INP] = ARG("inp", PA_IN, .scale = 3.0f)}
#define BACKWARD_ARGS                                                                         \
    {[A_DINP] = ARG("dinp", PA_OUT | PA_OPT), [A_INP] = ARG("inp", PA_IN, .scale = 3.0f),     \
     [A_DOUT] = ARG("dout", PA_IN)}

const struct parity_op parity_gelu_forward = {
    .name = "gelu_forward",
    .args = FORWARD_ARGS,
    .layout = act_layout,
    .call = gelu_forward_call,
    PARITY_CASES(ACT_CASES),
};

const struct parity_op parity_gelu_backward = {
    .name = "gelu_backward",
    .args = BACKWARD_ARGS,
    .layout = act_layout,
    .call = gelu_backward_call,
    PARITY_CASES(ACT_BACKWARD_CASES),
};

const struct parity_op parity_silu_forward = {
    .name = "silu_forward",
    .args = FORWARD_ARGS,
    .layout = act_layout,
    .call = silu_forward_call,
    PARITY_CASES(ACT_CASES),
};

const struct parity_op parity_silu_backward = {
    .name = "silu_backward",
    .args = BACKWARD_ARGS,
    .layout = act_layout,
    .call = silu_backward_call,
    PARITY_CASES(ACT_BACKWARD_CASES),
};

/* ---- T5's gated GELU ------------------------------------------------------------ */

enum { GG_OUT, GG_INP };

/* M, F: inp [M, 2F] */
static void gg_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    n[GG_OUT] = (int64_t)c->d[0] * c->d[1];
    n[GG_INP] = 2 * n[GG_OUT];
}

static double gated_gelu_forward_call(struct kctx *ctx, struct tensor *t,
                                      const struct parity_case *c, int step)
{
    k_gated_gelu_forward(ctx, t[GG_OUT], t[GG_INP], c->d[0], c->d[1]);
    return 0;
}

/* F = 1, odd (7, 13), whole f32 vectors but not bf16 ones (20), whole
 * vectors (64, 1024), rows of several blocks' worth; views at offset 1. */
static const struct parity_case GG_CASES[] = {
    {PD(1, 1)},  {PD(3, 7)},    {PD(7, 13)},   {PD(3, 20)},   {PD(5, 64)}, {PD(2, 1000)},
    {PD(4, 1024)}, {PD(3, 7), .offset = 1}, {PD(5, 64), .offset = 1}, {PD(4, 1024), .offset = 1},
};

const struct parity_op parity_gated_gelu_forward = {
    .name = "gated_gelu_forward",
    .args = {[GG_OUT] = ARG("out", PA_OUT), [GG_INP] = ARG("inp", PA_IN, .scale = 3.0f)},
    .layout = gg_layout,
    .call = gated_gelu_forward_call,
    PARITY_CASES(GG_CASES),
};

/* ---- the exact (erf) GELU (F-Lite) ---------------------------------------------- */

static double gelu_erf_forward_call(struct kctx *ctx, struct tensor *t,
                                    const struct parity_case *c, int step)
{
    k_gelu_erf_forward(ctx, t[A_OUT], t[A_INP], c->d[0]);
    return 0;
}

static double gelu_erf_backward_call(struct kctx *ctx, struct tensor *t,
                                     const struct parity_case *c, int step)
{
    k_gelu_erf_backward(ctx, t[A_DINP], t[A_DOUT], t[A_INP], c->d[0]);
    return 0;
}

/* d[1] = 1: inp a ramp over [-12, 12] (both tails, far past where Phi
 * leaves 0 and 1 in f32), instead of normal values of spread 3. */
static void gelu_erf_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == A_INP && c->d[1] == 1)
        for (size_t k = 0; k < n; k++)
            x[k] = n > 1 ? -12.0f + 24.0f * (float)k / (float)(n - 1) : 0.0f;
}

/* as ACT_CASES, with the ramp, and in place (forward) or no dinp (backward) */
static const struct parity_case GELU_ERF_FORWARD_CASES[] = {
    {PD(1)},       {PD(7)},   {PD(7), .offset = 1},       {PD(1000)},
    {PD(1000), .offset = 1},  {PD(4096)}, {PD(4096), .offset = 1},
    {PD(1001, 1)}, {PD(1001, 1), .offset = 1},            {PD(1000), .inplace = 1},
    {PD(13), .offset = 1, .inplace = 1},
};

static const struct parity_case GELU_ERF_BACKWARD_CASES[] = {
    {PD(1)},       {PD(7)},   {PD(7), .offset = 1},       {PD(1000)},
    {PD(1000), .offset = 1},  {PD(4096)}, {PD(4096), .offset = 1},
    {PD(1001, 1)}, {PD(1001, 1), .offset = 1},            {PD(1000), .absent = 1},
};

const struct parity_op parity_gelu_erf_forward = {
    .name = "gelu_erf_forward",
    .args = {[A_OUT] = ARG("out", PA_OUT, .alias = "inp"),
             [A_INP] = ARG("inp", PA_IN, .scale = 3.0f)},
    .layout = act_layout,
    .call = gelu_erf_forward_call,
    .fill = gelu_erf_fill,
    PARITY_CASES(GELU_ERF_FORWARD_CASES),
};

const struct parity_op parity_gelu_erf_backward = {
    .name = "gelu_erf_backward",
    .args = BACKWARD_ARGS,
    .layout = act_layout,
    .call = gelu_erf_backward_call,
    .fill = gelu_erf_fill,
    PARITY_CASES(GELU_ERF_BACKWARD_CASES),
};
