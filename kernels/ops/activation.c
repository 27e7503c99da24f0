/* Activations: GELU (tanh) and SiLU, T5's gated GELU, and the exact (erf) GELU. */
#include "kernels/ops/dispatch.h"

void k_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n)
{
    const char *op = "gelu_forward";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    ctx->ops->gelu_forward(ctx, po, pi, dt, n);
}

void k_gelu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n)
{
    const char *op = "gelu_backward";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, n);
    void *pdo = IN(dout, n);
    void *pi = IN(inp, n);
    if (pdi)
        ctx->ops->gelu_backward(ctx, pdi, pdo, pi, dt, n);
}

void k_silu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n)
{
    const char *op = "silu_forward";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    ctx->ops->silu_forward(ctx, po, pi, dt, n);
}

void k_silu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n)
{
    const char *op = "silu_backward";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, n);
    void *pdo = IN(dout, n);
    void *pi = IN(inp, n);
    if (pdi)
        ctx->ops->silu_backward(ctx, pdi, pdo, pi, dt, n);
}

/* Every output element reads two inputs of its row, so out may not overlap
 * inp at all: a row written in place would clobber rows still to be read. */
void k_gated_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int M, int F)
{
    const char *op = "gated_gelu_forward";
    op_check_ctx(ctx, op);
    DIMS("M, F", M, F);
    int64_t n = (int64_t)M * F;
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, 2 * n);
    uintptr_t o = (uintptr_t)po, i = (uintptr_t)pi, bytes = (uintptr_t)n * kdtype_bytes(dt);
    if (n > 0 && o < i + 2 * bytes && i < o + bytes)
        op_abort(op, "out overlaps inp");
    ctx->ops->gated_gelu_forward(ctx, po, pi, dt, M, F);
}

void k_gelu_erf_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n)
{
    const char *op = "gelu_erf_forward";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    ctx->ops->gelu_erf_forward(ctx, po, pi, dt, n);
}

void k_gelu_erf_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                         struct tensor inp, int64_t n)
{
    const char *op = "gelu_erf_backward";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, n);
    void *pdo = IN(dout, n);
    void *pi = IN(inp, n);
    if (pdi)
        ctx->ops->gelu_erf_backward(ctx, pdi, pdo, pi, dt, n);
}
