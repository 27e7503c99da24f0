/* Elementwise ops and the reductions behind losses and gradient norms. */
#include "kernels/ops/dispatch.h"

void k_add_broadcast_forward(struct kctx *ctx, struct tensor out, struct tensor a,
                             struct tensor b, int B, int T, int C)
{
    const char *op = "add_broadcast_forward";
    op_check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)B * T * C);
    void *pa = IN(a, (int64_t)B * T * C);
    void *pb = IN(b, (int64_t)T * C);
    ctx->ops->add_broadcast_forward(ctx, po, pa, pb, dt, B, T, C);
}

void k_add(struct kctx *ctx, struct tensor out, struct tensor a, struct tensor b, int64_t n)
{
    const char *op = "add";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    void *po = OUT(out, n);
    void *pa = IN(a, n);
    void *pb = IN(b, n);
    ctx->ops->add(ctx, po, pa, pb, dt, n);
}

void k_axpy(struct kctx *ctx, struct tensor y, float alpha, struct tensor x, int64_t n)
{
    const char *op = "axpy";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "y", y);
    void *py = OUT(y, n);
    void *px = IN(x, n);
    ctx->ops->axpy(ctx, py, alpha, px, dt, n);
}

void k_fill(struct kctx *ctx, struct tensor x, float value, int64_t n)
{
    const char *op = "fill";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "x", x);
    void *px = OUT(x, n);
    ctx->ops->fill(ctx, px, value, dt, n);
}

float k_mse_forward_backward(struct kctx *ctx, struct tensor dpred, struct tensor pred,
                             struct tensor target, int64_t n, float scale)
{
    const char *op = "mse_forward_backward";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "pred", pred);
    void *pd = GRAD(dpred, n);
    void *pp = IN(pred, n);
    void *pt = IN(target, n);
    float r;
    r = ctx->ops->mse_forward_backward(ctx, pd, pp, pt, dt, n, scale);
    return r;
}

double k_sum_squares(struct kctx *ctx, struct tensor x, int64_t n)
{
    const char *op = "sum_squares";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "x", x);
    void *px = IN(x, n);
    double r;
    r = ctx->ops->sum_squares(ctx, px, dt, n);
    return r;
}

void k_scale(struct kctx *ctx, struct tensor x, float s, int64_t n)
{
    const char *op = "scale";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    enum kdtype dt = op_act_dtype(ctx, op, "x", x);
    void *px = OUT(x, n);
    ctx->ops->scale(ctx, px, s, dt, n);
}
