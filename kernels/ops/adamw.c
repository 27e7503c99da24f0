/* The optimizer: AdamW and the EMA of the weights. */
#include "kernels/ops/dispatch.h"

#include <inttypes.h>

void k_adamw_update(struct kctx *ctx, struct tensor param, struct tensor grad, struct tensor m,
                    struct tensor v, struct tensor copy, int64_t n, const struct adamw_params *hp)
{
    const char *op = "adamw_update";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    if (!hp)
        op_abort(op, "no hyperparameters");
    if (hp->step < 1)
        op_abort(op, "step %" PRId64 " is below 1: the bias corrections divide by zero",
                 hp->step);
    float *pp = F32(param, n);
    float *pg = F32(grad, n);
    float *pm = F32(m, n);
    float *pv = F32(v, n);
    void *pc = copy.data ? op_check_any(ctx, op, "copy", copy, n) : NULL;
    if (pc && copy.n != n)
        op_abort(op, "copy has %" PRId64 " elements, the shape needs %" PRId64, copy.n, n);
    if (pc && copy.dtype == KDT_U8)
        op_abort(op, "copy is u8");
    ctx->ops->adamw_update(ctx, pp, pg, pm, pv, pc, copy.dtype, n, hp);
}

void k_ema_update(struct kctx *ctx, struct tensor ema, struct tensor param, float decay,
                  int64_t n)
{
    const char *op = "ema_update";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    float *pe = F32(ema, n);
    float *pp = F32(param, n);
    ctx->ops->ema_update(ctx, pe, pp, decay, n);
}
