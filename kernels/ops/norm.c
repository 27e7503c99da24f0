/* LayerNorm, adaLN (modulate, and fused with the norm), the gated
 * residual of adaLN-Zero, and T5's RMS norm. */
#include "kernels/ops/dispatch.h"

void k_layernorm_forward(struct kctx *ctx, struct tensor out, struct tensor mean,
                         struct tensor rstd, struct tensor inp, int M, int C, float eps)
{
    const char *op = "layernorm_forward";
    op_check_ctx(ctx, op);
    DIMS("M, C", M, C);
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, (int64_t)M * C);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    void *pi = IN(inp, (int64_t)M * C);
    ctx->ops->layernorm_forward(ctx, po, pm, pr, pi, dt, M, C, eps);
}

void k_layernorm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                          struct tensor inp, struct tensor mean, struct tensor rstd, int M, int C)
{
    const char *op = "layernorm_backward";
    op_check_ctx(ctx, op);
    DIMS("M, C", M, C);
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, (int64_t)M * C);
    void *pdo = IN(dout, (int64_t)M * C);
    void *pi = IN(inp, (int64_t)M * C);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    if (pdi)
        ctx->ops->layernorm_backward(ctx, pdi, pdo, pi, pm, pr, dt, M, C);
}

/* In place is allowed (out == inp), any other overlap is a caller's bug:
 * the CUDA kernel reads a group three times and writes it on the last. */
void k_groupnorm_forward(struct kctx *ctx, struct tensor out, struct tensor inp,
                         struct tensor weight, struct tensor bias, int B, int C, int HW, int G,
                         float eps, int silu)
{
    const char *op = "groupnorm_forward";
    op_check_ctx(ctx, op);
    DIMS("B, C, HW, G", B, C, HW, G);
    if (G == 0 || C % G != 0)
        op_abort(op, "C %d is not a multiple of G %d", C, G);
    if ((C == 0 || HW == 0) && B > 0)
        op_abort(op, "C %d, HW %d: the mean of an empty group", C, HW);
    int64_t n = (int64_t)B * C * HW;
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    void *pw = IN(weight, C);
    void *pb = IN(bias, C);
    uintptr_t o = (uintptr_t)po, i = (uintptr_t)pi, bytes = (uintptr_t)n * kdtype_bytes(dt);
    if (o != i && n > 0 && o < i + bytes && i < o + bytes)
        op_abort(op, "out overlaps inp without being the same tensor");
    ctx->ops->groupnorm_forward(ctx, po, pi, pw, pb, dt, B, C, HW, G, eps, silu);
}

void k_modulate_forward(struct kctx *ctx, struct tensor out, struct tensor x, struct tensor shift,
                        struct tensor scale, int B, int T, int C, int mod_stride)
{
    const char *op = "modulate_forward";
    op_check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = op_mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = op_act_dtype(ctx, op, "x", x);
    void *po = OUT(out, n);
    void *px = IN(x, n);
    void *psh = MOD(shift, ext, REQUIRED);
    void *psc = MOD(scale, ext, REQUIRED);
    ctx->ops->modulate_forward(ctx, po, px, psh, psc, dt, B, T, C, mod_stride);
}

void k_modulate_backward(struct kctx *ctx, struct tensor dx, struct tensor dshift,
                         struct tensor dscale, struct tensor dout, struct tensor x,
                         struct tensor scale, int B, int T, int C, int mod_stride)
{
    const char *op = "modulate_backward";
    op_check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = op_mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = op_act_dtype(ctx, op, "x", x);
    void *pdx = GRAD(dx, n);
    void *pdsh = MOD(dshift, ext, OPTIONAL);
    void *pdsc = MOD(dscale, ext, OPTIONAL);
    void *pdo = IN(dout, n);
    void *px = IN(x, n);
    void *psc = MOD(scale, ext, REQUIRED);
    ctx->ops->modulate_backward(ctx, pdx, pdsh, pdsc, pdo, px, psc, dt, B, T, C, mod_stride);
}

void k_adaln_forward(struct kctx *ctx, struct tensor out, struct tensor mean, struct tensor rstd,
                     struct tensor x, struct tensor shift, struct tensor scale, int B, int T,
                     int C, int mod_stride, float eps)
{
    const char *op = "adaln_forward";
    op_check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t M = (int64_t)B * T, n = M * C;
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    int64_t ext = op_mod_extent(op, B, C, mod_stride);
    enum kdtype dt = op_act_dtype(ctx, op, "x", x);
    void *po = OUT(out, n);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    void *px = IN(x, n);
    void *psh = MOD(shift, ext, REQUIRED);
    void *psc = MOD(scale, ext, REQUIRED);
    ctx->ops->adaln_forward(ctx, po, pm, pr, px, psh, psc, dt, B, T, C, mod_stride, eps);
}

void k_adaln_backward(struct kctx *ctx, struct tensor dx, struct tensor dshift,
                      struct tensor dscale, struct tensor dout, struct tensor x,
                      struct tensor mean, struct tensor rstd, struct tensor scale, int B, int T,
                      int C, int mod_stride)
{
    const char *op = "adaln_backward";
    op_check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t M = (int64_t)B * T, n = M * C;
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    int64_t ext = op_mod_extent(op, B, C, mod_stride);
    enum kdtype dt = op_act_dtype(ctx, op, "x", x);
    void *pdx = GRAD(dx, n);
    void *pdsh = MOD(dshift, ext, OPTIONAL);
    void *pdsc = MOD(dscale, ext, OPTIONAL);
    void *pdo = IN(dout, n);
    void *px = IN(x, n);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    void *psc = MOD(scale, ext, REQUIRED);
    if (pdx || pdsh || pdsc)
        ctx->ops->adaln_backward(ctx, pdx, pdsh, pdsc, pdo, px, pm, pr, psc, dt, B, T, C,
                                 mod_stride);
}

void k_gated_residual_forward(struct kctx *ctx, struct tensor out, struct tensor res,
                              struct tensor y, struct tensor gate, int B, int T, int C,
                              int mod_stride)
{
    const char *op = "gated_residual_forward";
    op_check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = op_mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = op_act_dtype(ctx, op, "res", res);
    void *po = OUT(out, n);
    void *pr = IN(res, n);
    void *py = IN(y, n);
    void *pg = MOD(gate, ext, REQUIRED);
    /* Elementwise, so in place is fine; a shifted overlap would read
     * elements already overwritten. */
    uintptr_t o = (uintptr_t)po, r = (uintptr_t)pr, bytes = (uintptr_t)n * kdtype_bytes(dt);
    if (o != r && n > 0 && o < r + bytes && r < o + bytes)
        op_abort(op, "out overlaps res without being the same tensor");
    ctx->ops->gated_residual_forward(ctx, po, pr, py, pg, dt, B, T, C, mod_stride);
}

void k_gated_residual_backward(struct kctx *ctx, struct tensor dy, struct tensor dgate,
                               struct tensor dres, struct tensor y, struct tensor gate, int B,
                               int T, int C, int mod_stride)
{
    const char *op = "gated_residual_backward";
    op_check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = op_mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = op_act_dtype(ctx, op, "dres", dres);
    void *pdy = GRAD(dy, n);
    void *pdg = MOD(dgate, ext, OPTIONAL);
    void *pdr = IN(dres, n);
    void *py = IN(y, n);
    void *pg = MOD(gate, ext, REQUIRED);
    ctx->ops->gated_residual_backward(ctx, pdy, pdg, pdr, py, pg, dt, B, T, C, mod_stride);
}

/* T5's RMS norm. In place is allowed (out == inp: each row is read whole
 * before it is written, by the thread or warp that writes it), any other
 * overlap is a caller's bug. */
void k_rmsnorm_forward(struct kctx *ctx, struct tensor out, struct tensor rstd, struct tensor inp,
                       struct tensor weight, int M, int C, float eps)
{
    const char *op = "rmsnorm_forward";
    op_check_ctx(ctx, op);
    DIMS("M, C", M, C);
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    int64_t n = (int64_t)M * C;
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    float *pr = op_check_tensor(ctx, op, "rstd", rstd, M, OPTIONAL, EXACT, KDT_F32);
    void *pi = IN(inp, n);
    void *pw = op_check_tensor(ctx, op, "weight", weight, C, OPTIONAL, EXACT, dt);
    uintptr_t o = (uintptr_t)po, i = (uintptr_t)pi, bytes = (uintptr_t)n * kdtype_bytes(dt);
    if (o != i && n > 0 && o < i + bytes && i < o + bytes)
        op_abort(op, "out overlaps inp without being the same tensor");
    ctx->ops->rmsnorm_forward(ctx, po, pr, pi, pw, dt, M, C, eps);
}

/* [a, a + n) and [b, b + n) elements of dt share a byte. */
static int rows_overlap(const void *a, const void *b, int64_t n, enum kdtype dt)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b, bytes = (uintptr_t)n * kdtype_bytes(dt);
    return a && b && n > 0 && pa < pb + bytes && pb < pa + bytes;
}

/* The gradient of k_rmsnorm_forward. dinp may overlap neither dout nor inp:
 * dweight's pass reads both after dinp is written. */
void k_rmsnorm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dweight,
                        struct tensor dout, struct tensor inp, struct tensor rstd,
                        struct tensor weight, int M, int C)
{
    const char *op = "rmsnorm_backward";
    op_check_ctx(ctx, op);
    DIMS("M, C", M, C);
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    int64_t n = (int64_t)M * C;
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, n);
    float *pdw = F32GRAD(dweight, C);
    void *pdo = IN(dout, n);
    void *pi = IN(inp, n);
    float *pr = F32(rstd, M);
    void *pw = op_check_tensor(ctx, op, "weight", weight, C, OPTIONAL, EXACT, dt);
    if (rows_overlap(pdi, pdo, n, dt) || rows_overlap(pdi, pi, n, dt))
        op_abort(op, "dinp overlaps dout or inp");
    if (pdi || pdw)
        ctx->ops->rmsnorm_backward(ctx, pdi, pdw, pdo, pi, pr, pw, dt, M, C);
}
