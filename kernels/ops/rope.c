/* F-Lite's query/key path: the rotary embedding and the QK-norm of each
 * head, on row views of a fused qkv buffer. */
#include "kernels/ops/dispatch.h"

/* The elements `rows` rows `stride` apart, each `width` wide, span from the
 * first row's start: what a row view must hold. */
static int64_t rows_extent(int64_t rows, int stride, int64_t width)
{
    return rows > 0 ? (rows - 1) * stride + width : 0;
}

/* [a, a + an) and [b, b + bn) elements of dt share a byte. */
static int overlaps(const void *a, int64_t an, const void *b, int64_t bn, enum kdtype dt)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b, es = kdtype_bytes(dt);
    return a && b && an > 0 && bn > 0 && pa < pb + (uintptr_t)bn * es &&
           pb < pa + (uintptr_t)an * es;
}

/* What the forward and the backward share: the dimensions, the strides,
 * the rotation's tables (both or neither; HS even) and the norm's rows. */
static void check_rope_call(const char *op, struct tensor cos, struct tensor sin,
                            struct tensor rstd, int B, int T, int NH, int HS, int in_stride,
                            int out_stride)
{
    DIMS("B, T, NH, HS", B, T, NH, HS);
    const int64_t C = (int64_t)NH * HS;
    if (in_stride < C)
        op_abort(op, "in_stride %d is smaller than NH * HS = %lld", in_stride, (long long)C);
    if (out_stride < C)
        op_abort(op, "out_stride %d is smaller than NH * HS = %lld", out_stride, (long long)C);
    if (!cos.data != !sin.data)
        op_abort(op, "%s is absent but %s is not: the rotation needs both", cos.data ? "sin" : "cos",
                 cos.data ? "cos" : "sin");
    if (cos.data && HS % 2 != 0)
        op_abort(op, "head size %d is odd: the rotation pairs x[:HS/2] with x[HS/2:]", HS);
    if (rstd.data && HS == 0 && (int64_t)B * T * NH > 0)
        op_abort(op, "HS is 0: the mean of an empty head");
}

/* inp and out are row views (q or k of a fused qkv, or q and k together
 * as 2 NH heads), each checked for the extent its rows span. out may not
 * overlap inp: the backward needs the forward's inp. */
void k_rope_norm_forward(struct kctx *ctx, struct tensor out, struct tensor rstd,
                         struct tensor inp, struct tensor cos, struct tensor sin, int B, int T,
                         int NH, int HS, int in_stride, int out_stride, float eps)
{
    const char *op = "rope_norm_forward";
    op_check_ctx(ctx, op);
    check_rope_call(op, cos, sin, rstd, B, T, NH, HS, in_stride, out_stride);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    const int64_t rows = (int64_t)B * T, C = (int64_t)NH * HS;
    const int64_t nin = rows_extent(rows, in_stride, C), nout = rows_extent(rows, out_stride, C);
    const int64_t ntab = (int64_t)T * (HS / 2);
    void *po = op_check_tensor(ctx, op, "out", out, nout, REQUIRED, AT_LEAST, dt);
    float *pr = op_check_tensor(ctx, op, "rstd", rstd, rows * NH, OPTIONAL, EXACT, KDT_F32);
    void *pi = op_check_tensor(ctx, op, "inp", inp, nin, REQUIRED, AT_LEAST, dt);
    float *pc = op_check_tensor(ctx, op, "cos", cos, ntab, OPTIONAL, EXACT, KDT_F32);
    float *ps = op_check_tensor(ctx, op, "sin", sin, ntab, OPTIONAL, EXACT, KDT_F32);
    if (overlaps(po, nout, pi, nin, dt))
        op_abort(op, "out overlaps inp");
    ctx->ops->rope_norm_forward(ctx, po, pr, pi, pc, ps, dt, B, T, NH, HS, in_stride, out_stride,
                                eps);
}

/* dinp rows in_stride apart like inp, dout rows out_stride apart like out.
 * inp is needed only with the norm (rstd present). dinp may overlap neither
 * dout nor inp. */
void k_rope_norm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                          struct tensor inp, struct tensor rstd, struct tensor cos,
                          struct tensor sin, int B, int T, int NH, int HS, int in_stride,
                          int out_stride)
{
    const char *op = "rope_norm_backward";
    op_check_ctx(ctx, op);
    check_rope_call(op, cos, sin, rstd, B, T, NH, HS, in_stride, out_stride);
    enum kdtype dt = op_act_dtype(ctx, op, "dout", dout);
    const int64_t rows = (int64_t)B * T, C = (int64_t)NH * HS;
    const int64_t nin = rows_extent(rows, in_stride, C), nout = rows_extent(rows, out_stride, C);
    const int64_t ntab = (int64_t)T * (HS / 2);
    void *pdi = op_check_tensor(ctx, op, "dinp", dinp, nin, OPTIONAL, AT_LEAST, dt);
    void *pdo = op_check_tensor(ctx, op, "dout", dout, nout, REQUIRED, AT_LEAST, dt);
    float *pr = op_check_tensor(ctx, op, "rstd", rstd, rows * NH, OPTIONAL, EXACT, KDT_F32);
    void *pi = op_check_tensor(ctx, op, "inp", inp, nin, pr ? REQUIRED : OPTIONAL, AT_LEAST, dt);
    float *pc = op_check_tensor(ctx, op, "cos", cos, ntab, OPTIONAL, EXACT, KDT_F32);
    float *ps = op_check_tensor(ctx, op, "sin", sin, ntab, OPTIONAL, EXACT, KDT_F32);
    if (overlaps(pdi, nin, pdo, nout, dt) || overlaps(pdi, nin, pi, nin, dt))
        op_abort(op, "dinp overlaps dout or inp");
    if (pdi)
        ctx->ops->rope_norm_backward(ctx, pdi, pdo, pr ? pi : NULL, pr, pc, ps, dt, B, T, NH, HS,
                                     in_stride, out_stride);
}
