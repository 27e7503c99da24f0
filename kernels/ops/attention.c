/* Multi-head self-attention, attention with a bias and a key mask (T5's),
 * and the scratch they need. */
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
static void check_head_size(const struct kctx *ctx, const char *op, int HS, int most)
{
    if (most > 0 && HS > most) {
        char name[16];
        size_t i = 0;
        for (; ctx->ops->name[i] && i + 1 < sizeof name; i++)
            name[i] = (char)toupper((unsigned char)ctx->ops->name[i]);
        name[i] = '\0';
        op_abort(op, "head size %d is above %d, the most the %s kernels take", HS, most, name);
    }
}

static void check_attention_dims(const struct kctx *ctx, const char *op, int B, int T, int C,
                                 int NH, int most)
{
    DIMS("B, T, C, NH", B, T, C, NH);
    if (NH == 0 || C % NH != 0)
        op_abort(op, "C %d is not a multiple of NH %d", C, NH);
    check_head_size(ctx, op, C / NH, most);
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

/* As k_attention_scratch: planning asks before a context exists. */
int64_t k_attention_bias_scratch(const struct kctx *ctx, int B, int Tq, int Tk, int NH, int HS)
{
    const struct kbackend *be = kbackend_for(ctx->device);
    return (be ? be : &kbackend_cpu)->attention_bias_scratch(ctx, B, Tq, Tk, NH, HS);
}

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
    return an > 0 && bn > 0 && pa < pb + (uintptr_t)bn * es && pb < pa + (uintptr_t)an * es;
}

/* q, k and v are row views (of a fused qkv buffer, or of separate ones),
 * so each is checked for the extent its rows span; out is written while
 * other queries of the same heads still read k and v, so it must overlap
 * none of them. */
void k_attention_bias_forward(struct kctx *ctx, struct tensor out, struct tensor lse,
                              struct tensor q, struct tensor k, struct tensor v, struct tensor bias,
                              struct tensor key_mask, struct tensor scratch, int B, int Tq, int Tk,
                              int NH, int HS, int q_stride, int kv_stride, float scale)
{
    const char *op = "attention_bias_forward";
    op_check_ctx(ctx, op);
    DIMS("B, Tq, Tk, NH, HS", B, Tq, Tk, NH, HS);
    int64_t C = (int64_t)NH * HS;
    if (q_stride < C)
        op_abort(op, "q_stride %d is smaller than NH * HS = %lld", q_stride, (long long)C);
    if (kv_stride < C)
        op_abort(op, "kv_stride %d is smaller than NH * HS = %lld", kv_stride, (long long)C);
    check_head_size(ctx, op, HS, ctx->ops->max_head_size_forward);
    enum kdtype dt = op_act_dtype(ctx, op, "q", q);
    int64_t nq = rows_extent((int64_t)B * Tq, q_stride, C);
    int64_t nkv = rows_extent((int64_t)B * Tk, kv_stride, C);
    int64_t no = (int64_t)B * Tq * C;
    void *po = OUT(out, no);
    float *pl = op_check_tensor(ctx, op, "lse", lse, (int64_t)B * NH * Tq, OPTIONAL, EXACT,
                                KDT_F32);
    void *pq = op_check_tensor(ctx, op, "q", q, nq, REQUIRED, AT_LEAST, dt);
    void *pk = op_check_tensor(ctx, op, "k", k, nkv, REQUIRED, AT_LEAST, dt);
    void *pv = op_check_tensor(ctx, op, "v", v, nkv, REQUIRED, AT_LEAST, dt);
    float *pb = op_check_tensor(ctx, op, "bias", bias, (int64_t)NH * Tq * Tk, OPTIONAL, EXACT,
                                KDT_F32);
    float *pm = op_check_tensor(ctx, op, "key_mask", key_mask, (int64_t)B * Tk, OPTIONAL, EXACT,
                                KDT_F32);
    float *ps = op_check_tensor(ctx, op, "scratch", scratch,
                                k_attention_bias_scratch(ctx, B, Tq, Tk, NH, HS), REQUIRED,
                                AT_LEAST, KDT_F32);
    if (overlaps(po, no, pq, nq, dt) || overlaps(po, no, pk, nkv, dt) ||
        overlaps(po, no, pv, nkv, dt))
        op_abort(op, "out overlaps q, k or v");
    ctx->ops->attention_bias_forward(ctx, po, pl, pq, pk, pv, pb, pm, ps, scratch.n, dt, B, Tq,
                                     Tk, NH, HS, q_stride, kv_stride, scale);
}
