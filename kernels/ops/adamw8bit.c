/* The optimizer: bitsandbytes' blockwise 8-bit AdamW. */
#include "kernels/ops/dispatch.h"

#include <inttypes.h>

void k_adamw8bit_update(struct kctx *ctx, struct tensor param, struct tensor grad, struct tensor state1,
                        struct tensor state2, struct tensor absmax1, struct tensor absmax2, struct tensor copy,
                        int64_t n, const struct adamw_params *hp)
{
    const char *op = "adamw8bit_update";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    if (!hp)
        op_abort(op, "no hyperparameters");
    if (hp->step < 1)
        op_abort(op, "step %" PRId64 " is below 1: the bias corrections divide by zero", hp->step);
    const int64_t blocks = (n + K_ADAMW8BIT_BLOCK - 1) / K_ADAMW8BIT_BLOCK;
    float *pp = F32(param, n);
    float *pg = F32(grad, n);
    uint8_t *s1 = op_check_tensor(ctx, op, "state1", state1, n, REQUIRED, EXACT, KDT_U8);
    uint8_t *s2 = op_check_tensor(ctx, op, "state2", state2, n, REQUIRED, EXACT, KDT_U8);
    float *a1 = F32(absmax1, blocks);
    float *a2 = F32(absmax2, blocks);
    void *pc = copy.data ? op_check_any(ctx, op, "copy", copy, n) : NULL;
    if (pc && (copy.n != n || copy.dtype == KDT_U8))
        op_abort(op, "copy is %s of %" PRId64 " elements, the shape needs %" PRId64 " values",
                 kdtype_name(copy.dtype), copy.n, n);
    if (n > 0)
        ctx->ops->adamw8bit_update(ctx, pp, pg, s1, s2, a1, a2, pc, copy.dtype, n, hp);
}
