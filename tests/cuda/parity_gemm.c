/* Parity specs of the gemm family (tests/cuda/parity.h): gemm in all four
 * transpose combinations with alpha and beta and K = 0; the Linear forward
 * with and without bias, alone and with its GELU, on views only 2 or 4
 * bytes aligned, and empty (C = 0: out = bias; M = 0); the Linear backward
 * with every subset of its outputs, accumulating into pre-filled dweight
 * and dbias, over enough rows that dbias is summed in chunks, and empty.
 * Sizes that are not multiples of 8 or 16, M = 1. What cuBLASLt may do
 * with the requests is test_cuda_matmul.c's. */
#include "tests/cuda/parity.h"

/* ---- gemm: C[M,N] = alpha op(A) op(B) + beta C ----------------------------- */

enum { G_C, G_A, G_B };

static void gemm_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                        int64_t *at)
{
    int64_t M = c->d[0], N = c->d[1], K = c->d[2];
    n[G_C] = M * N;
    n[G_A] = M * K;
    n[G_B] = K * N;
}

static double gemm_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                        int step)
{
    k_gemm(ctx, t[G_C], t[G_A], t[G_B], c->d[0], c->d[1], c->d[2], c->d[3], c->d[4], c->f[0],
           c->f[1]);
    return 0;
}

/* every transpose (d[3] A^T, d[4] B^T) with three (alpha, beta) */
#define GEMM_T(M, N, K, a, b)                                                                 \
    {PD(M, N, K, 0, 0), PF(a, b)}, {PD(M, N, K, 1, 0), PF(a, b)},                             \
        {PD(M, N, K, 0, 1), PF(a, b)}, {PD(M, N, K, 1, 1), PF(a, b)}
#define GEMM_SHAPE(M, N, K)                                                                   \
    GEMM_T(M, N, K, 1.0f, 0.0f), GEMM_T(M, N, K, 0.75f, -1.25f), GEMM_T(M, N, K, -2.0f, 1.0f)

static const struct parity_case GEMM_CASES[] = {
    GEMM_SHAPE(7, 13, 19), GEMM_SHAPE(1, 9, 33), GEMM_SHAPE(17, 1, 5), GEMM_SHAPE(24, 16, 40),
    /* An empty sum: C = beta C, and beta = 0 clears whatever C held. */
    {PD(5, 11, 0, 0, 0), PF(1.0f, 0.5f)}, {PD(5, 11, 0, 1, 1), PF(1.0f, 0.0f)},
};

const struct parity_op parity_gemm = {
    .name = "gemm",
    .args = {[G_C] = ARG("c", PA_ACC), [G_A] = ARG("a", PA_IN), [G_B] = ARG("b", PA_IN)},
    .layout = gemm_layout,
    .call = gemm_call,
    PARITY_CASES(GEMM_CASES),
};

/* ---- Linear forward, alone and with GELU ------------------------------------- */

enum { L_OUT, L_INP, L_W, L_BIAS, L_PRE };

static void linear_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                          int64_t *at)
{
    int64_t M = c->d[0], C = c->d[1], OC = c->d[2];
    n[L_OUT] = n[L_PRE] = M * OC;
    n[L_INP] = M * C;
    n[L_W] = OC * C;
    n[L_BIAS] = OC;
}

static double linear_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                          int step)
{
    k_linear_forward(ctx, t[L_OUT], t[L_INP], t[L_W], t[L_BIAS], c->d[0], c->d[1], c->d[2]);
    return 0;
}

static double linear_gelu_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    k_linear_gelu_forward(ctx, t[L_OUT], t[L_PRE], t[L_INP], t[L_W], t[L_BIAS], c->d[0],
                          c->d[1], c->d[2]);
    return 0;
}

/* Shapes: one row; nothing a multiple of 8; OC a multiple of 8 (the GELU
 * epilogue's condition) with ragged M and C; big enough for tiled kernels;
 * each with and without bias (absent bit 0), aligned and at offset 1. */
#define LINEAR_SHAPE(M, C, OC)                                                                \
    {PD(M, C, OC)}, {PD(M, C, OC), .absent = 1}, {PD(M, C, OC), .offset = 1},                 \
        {PD(M, C, OC), .offset = 1, .absent = 1}

static const struct parity_case LINEAR_CASES[] = {
    LINEAR_SHAPE(1, 5, 3), LINEAR_SHAPE(33, 19, 13), LINEAR_SHAPE(37, 40, 24),
    LINEAR_SHAPE(70, 72, 136),
    /* C = 0: out = bias (and gelu(bias)); M = 0: nothing. */
    {PD(6, 0, 16)}, {PD(0, 8, 16)},
};

#define LINEAR_ARGS                                                                           \
    [L_OUT] = ARG("out", PA_OUT), [L_INP] = ARG("inp", PA_IN),                                \
    [L_W] = ARG("weight", PA_IN, .scale = 0.3f), [L_BIAS] = ARG("bias", PA_IN | PA_OPT)

const struct parity_op parity_linear_forward = {
    .name = "linear_forward",
    .args = {LINEAR_ARGS},
    .layout = linear_layout,
    .call = linear_call,
    PARITY_CASES(LINEAR_CASES),
};

const struct parity_op parity_linear_gelu_forward = {
    .name = "linear_gelu_forward",
    .args = {LINEAR_ARGS, [L_PRE] = ARG("pre", PA_OUT)},
    .layout = linear_layout,
    .call = linear_gelu_call,
    PARITY_CASES(LINEAR_CASES),
};

/* ---- Linear backward ----------------------------------------------------------- */

enum { LB_DINP, LB_DW, LB_DB, LB_DOUT, LB_INP, LB_W };

static void linear_backward_layout(const struct kctx *ctx, const struct parity_case *c,
                                   int64_t *n, int64_t *at)
{
    int64_t M = c->d[0], C = c->d[1], OC = c->d[2];
    n[LB_DINP] = n[LB_INP] = M * C;
    n[LB_DW] = n[LB_W] = OC * C;
    n[LB_DB] = OC;
    n[LB_DOUT] = M * OC;
}

static double linear_backward_call(struct kctx *ctx, struct tensor *t,
                                   const struct parity_case *c, int step)
{
    k_linear_backward(ctx, t[LB_DINP], t[LB_DW], t[LB_DB], t[LB_DOUT], t[LB_INP], t[LB_W],
                      c->d[0], c->d[1], c->d[2]);
    return 0;
}

/* absent: bit 0 dinp, 1 dweight, 2 dbias */
#define EVERY_SUBSET(M, C, OC)                                                                \
    {PD(M, C, OC), .absent = 0}, {PD(M, C, OC), .absent = 1}, {PD(M, C, OC), .absent = 2},    \
        {PD(M, C, OC), .absent = 3}, {PD(M, C, OC), .absent = 4},                             \
        {PD(M, C, OC), .absent = 5}, {PD(M, C, OC), .absent = 6},                             \
        {PD(M, C, OC), .absent = 7}

static const struct parity_case LINEAR_BACKWARD_CASES[] = {
    {PD(1, 5, 3)}, {PD(33, 19, 13)}, {PD(37, 40, 24)}, {PD(70, 72, 136)},
    EVERY_SUBSET(21, 18, 11),
    /* dbias summed in several chunks of 256 rows, one of them short */
    {PD(600, 7, 37)},
    /* M = 0 adds nothing; OC = 0 clears dinp */
    {PD(0, 9, 5)}, {PD(6, 9, 0)},
};

const struct parity_op parity_linear_backward = {
    .name = "linear_backward",
    /* Parameter gradients are f32 sums of products of the same (rounded)
     * numbers on both sides: only the order of the sums differs, so they
     * are held to f32's tolerance in every dtype. */
    .args = {[LB_DINP] = ARG("dinp", PA_OUT | PA_OPT),
             [LB_DW] = ARG("dweight", PA_ACC | PA_OPT | PA_F32, .scale = 2.0f),
             [LB_DB] = ARG("dbias", PA_ACC | PA_OPT | PA_F32, .scale = 2.0f),
             [LB_DOUT] = ARG("dout", PA_IN),
             [LB_INP] = ARG("inp", PA_IN),
             [LB_W] = ARG("weight", PA_IN, .scale = 0.3f)},
    .layout = linear_backward_layout,
    .call = linear_backward_call,
    PARITY_CASES(LINEAR_BACKWARD_CASES),
};
