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

/* The elements `rows` rows `stride` apart, each C wide, span: what a row view
 * of a fused buffer (F-Lite's v within its [B*T, 3C] qkv) must hold. */
static int64_t mix_extent(const char *op, const char *name, int rows, int C, int stride)
{
    if (stride < C)
        op_abort(op, "%s %d is smaller than C %d", name, stride, C);
    return rows > 0 ? (int64_t)(rows - 1) * stride + C : 0;
}

/* Each element is read and written at the same place, so out may be a or b
 * itself (the same rows); any other overlap is the caller's bug. b is read
 * only when lam is given. */
void k_mix_forward(struct kctx *ctx, struct tensor out, struct tensor a, struct tensor b,
                   struct tensor lam, int M, int C, int out_stride, int a_stride, int b_stride)
{
    const char *op = "mix_forward";
    op_check_ctx(ctx, op);
    DIMS("M, C", M, C);
    enum kdtype dt = op_act_dtype(ctx, op, "a", a);
    int64_t no = mix_extent(op, "out_stride", M, C, out_stride);
    int64_t na = mix_extent(op, "a_stride", M, C, a_stride);
    int64_t nb = mix_extent(op, "b_stride", M, C, b_stride);
    void *pl = op_check_tensor(ctx, op, "lam", lam, 1, OPTIONAL, EXACT, dt);
    void *po = op_check_tensor(ctx, op, "out", out, no, REQUIRED, AT_LEAST, dt);
    void *pa = op_check_tensor(ctx, op, "a", a, na, REQUIRED, AT_LEAST, dt);
    void *pb = op_check_tensor(ctx, op, "b", b, nb, pl != NULL, AT_LEAST, dt);
    ctx->ops->mix_forward(ctx, po, pa, pl ? pb : NULL, pl, dt, M, C, out_stride, a_stride,
                          b_stride);
}

/* Without lam the forward was a copy: there is no b or lam to have a
 * gradient, so db or dlam then is a bug. a and b are read for dlam only. */
void k_mix_backward(struct kctx *ctx, struct tensor da, struct tensor db, struct tensor dlam,
                    struct tensor dout, struct tensor a, struct tensor b, struct tensor lam,
                    int M, int C, int dout_stride, int a_stride, int b_stride)
{
    const char *op = "mix_backward";
    op_check_ctx(ctx, op);
    DIMS("M, C", M, C);
    enum kdtype dt = op_act_dtype(ctx, op, "dout", dout);
    int64_t ndo = mix_extent(op, "dout_stride", M, C, dout_stride);
    int64_t na = mix_extent(op, "a_stride", M, C, a_stride);
    int64_t nb = mix_extent(op, "b_stride", M, C, b_stride);
    void *pda = op_check_tensor(ctx, op, "da", da, na, OPTIONAL, AT_LEAST, dt);
    void *pdb = GRAD(db, (int64_t)M * C);
    float *pdl = F32GRAD(dlam, 1);
    void *pdo = op_check_tensor(ctx, op, "dout", dout, ndo, REQUIRED, AT_LEAST, dt);
    void *pl = op_check_tensor(ctx, op, "lam", lam, 1, OPTIONAL, EXACT, dt);
    void *pa = op_check_tensor(ctx, op, "a", a, na, pdl != NULL, AT_LEAST, dt);
    void *pb = op_check_tensor(ctx, op, "b", b, nb, pdl != NULL, AT_LEAST, dt);
    if (!pl && (pdb || pdl))
        op_abort(op, "%s given without lam (the forward was a copy of a)", pdb ? "db" : "dlam");
    if (!pda && !pdb && !pdl)
        return;
    ctx->ops->mix_backward(ctx, pda, pdb, pdl, pdo, pdl ? pa : NULL, pdl ? pb : NULL, pl, dt, M,
                           C, dout_stride, a_stride, b_stride);
}
