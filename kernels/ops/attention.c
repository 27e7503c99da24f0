/* Multi-head self-attention, and the scratch it needs. */
#include "kernels/ops/dispatch.h"

#include <ctype.h>

/* Planning asks before any context is set up (only ctx->device and
 * ctx->threads are read), so the table comes from the device. A device this
 * build has no backend for is counted as the CPU counts, as planning always
 * did: dit_model_plan_bytes answers for CUDA in a build without it. */
int64_t k_attention_scratch(const struct kctx *ctx, int B, int T, int NH)
{
    const struct kbackend *be = kbackend_for(ctx->device);
    return (be ? be : &kbackend_cpu)->attention_scratch(ctx, B, T, NH);
}

/* most: the backend's largest head size for this direction (0: any). */
static void check_attention_dims(const struct kctx *ctx, const char *op, int B, int T, int C,
                                 int NH, int most)
{
    DIMS("B, T, C, NH", B, T, C, NH);
    if (NH == 0 || C % NH != 0)
        op_abort(op, "C %d is not a multiple of NH %d", C, NH);
    if (most > 0 && C / NH > most) {
        char name[16];
        size_t i = 0;
        for (; ctx->ops->name[i] && i + 1 < sizeof name; i++)
            name[i] = (char)toupper((unsigned char)ctx->ops->name[i]);
        name[i] = '\0';
        op_abort(op, "head size %d is above %d, the most the %s kernels take", C / NH, most,
                 name);
    }
}

void k_attention_forward(struct kctx *ctx, struct tensor out, struct tensor lse,
                         struct tensor qkv, struct tensor scratch, int B, int T, int C, int NH)
{
    const char *op = "attention_forward";
    op_check_ctx(ctx, op);
    check_attention_dims(ctx, op, B, T, C, NH, ctx->ops->max_head_size_forward);
    enum kdtype dt = op_act_dtype(ctx, op, "qkv", qkv);
    void *po = OUT(out, (int64_t)B * T * C);
    float *pl = F32(lse, (int64_t)B * NH * T);
    void *pq = IN(qkv, (int64_t)B * T * 3 * C);
    float *ps = op_check_tensor(ctx, op, "scratch", scratch, k_attention_scratch(ctx, B, T, NH),
                                REQUIRED, AT_LEAST, KDT_F32);
    ctx->ops->attention_forward(ctx, po, pl, pq, ps, scratch.n, dt, B, T, C, NH);
}

void k_attention_backward(struct kctx *ctx, struct tensor dqkv, struct tensor dout,
                          struct tensor out, struct tensor lse, struct tensor qkv,
                          struct tensor scratch, int B, int T, int C, int NH)
{
    const char *op = "attention_backward";
    op_check_ctx(ctx, op);
    check_attention_dims(ctx, op, B, T, C, NH, ctx->ops->max_head_size_backward);
    enum kdtype dt = op_act_dtype(ctx, op, "qkv", qkv);
    void *pdq = GRAD(dqkv, (int64_t)B * T * 3 * C);
    void *pdo = IN(dout, (int64_t)B * T * C);
    void *po = IN(out, (int64_t)B * T * C);
    float *pl = F32(lse, (int64_t)B * NH * T);
    void *pq = IN(qkv, (int64_t)B * T * 3 * C);
    float *ps = op_check_tensor(ctx, op, "scratch", scratch, k_attention_scratch(ctx, B, T, NH),
                                REQUIRED, AT_LEAST, KDT_F32);
    if (pdq)
        ctx->ops->attention_backward(ctx, pdq, pdo, po, pl, pq, ps, scratch.n, dt, B, T, C, NH);
}
