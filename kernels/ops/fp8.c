/* fp8 weights: e4m3 codes with a scale per row, widened for a product. */
#include "kernels/ops/dispatch.h"

void k_fp8_rows_widen(struct kctx *ctx, struct tensor out, struct tensor codes, struct tensor scale, int rows,
                      int cols)
{
    const char *op = "fp8_rows_widen";
    op_check_ctx(ctx, op);
    op_check_dims(op, 2, (const int[]){rows, cols}, "rows, cols");
    const enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    const int64_t n = (int64_t)rows * cols;
    void *po = OUT(out, n);
    const uint8_t *pc = op_check_tensor(ctx, op, "codes", codes, n, REQUIRED, EXACT, KDT_U8);
    const float *ps = F32(scale, rows);
    if (n > 0)
        ctx->ops->fp8_rows_widen(ctx, po, pc, ps, dt, rows, cols);
}
