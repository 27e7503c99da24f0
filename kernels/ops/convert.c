/* Conversion between dtypes on the device (the only op whose tensors may
 * be of any dtype on any backend). */
#include "kernels/ops/dispatch.h"

void k_convert(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n)
{
    const char *op = "convert";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    void *pd = op_check_any(ctx, op, "dst", dst, n);
    void *ps = op_check_any(ctx, op, "src", src, n);
    if (dst.dtype == KDT_U8 || src.dtype == KDT_U8)
        op_abort(op, "u8 codes are not values: nothing converts them");
    if (n > 0)
        ctx->ops->convert(ctx, pd, dst.dtype, ps, src.dtype, n);
}

void k_accumulate(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n)
{
    const char *op = "accumulate";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    void *pd = op_check_any(ctx, op, "dst", dst, n);
    void *ps = op_check_any(ctx, op, "src", src, n);
    if (dst.dtype == KDT_U8)
        op_abort(op, "u8 codes are not values: nothing adds into them");
    if (src.dtype != KDT_F32)
        op_abort(op, "src is %s, not f32", kdtype_name(src.dtype));
    if (n > 0)
        ctx->ops->accumulate(ctx, pd, dst.dtype, ps, n);
}
