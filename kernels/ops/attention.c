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

/* As k_attention_scratch: planning asks before a context exists. */
int64_t k_attention_bias_backward_scratch(const struct kctx *ctx, int B, int Tq, int Tk, int NH,
                                          int HS)
{
    const struct kbackend *be = kbackend_for(ctx->device);
    return (be ? be : &kbackend_cpu)->attention_bias_backward_scratch(ctx, B, Tq, Tk, NH, HS);
}

/* Two row views of one stride (a fused buffer's): rows of width C at a and
 * b, n_a and n_b elements spanned, write a common element. */
static int rows_collide(const void *a, int64_t n_a, const void *b, int64_t n_b, int stride,
                        int64_t C, enum kdtype dt)
{
    if (!overlaps(a, n_a, b, n_b, dt))
        return 0;
    const int64_t es = (int64_t)kdtype_bytes(dt);
    const int64_t diff = ((intptr_t)b - (intptr_t)a) / es;
    const int64_t r = (diff % stride + stride) % stride; /* b's column within a's row */
    return r < C || stride - r < C;
}

/* The forward's checks, and the gradients': row views like q (dq) and like
 * k and v (dk, dv), each absent when not wanted, overlapping none of the
 * inputs (other heads and query blocks still read them while they are
 * written). dq, dk and dv may interleave in one buffer (a fused dqkv),
 * each writing its heads' elements only, but no two may write the same
 * element. The head size is the forward's limit: the bias backward takes
 * every head its forward takes (CUDA's 512), where the self-attention
 * backward stops at max_head_size_backward. */
void k_attention_bias_backward(struct kctx *ctx, struct tensor dq, struct tensor dk,
                               struct tensor dv, struct tensor dout, struct tensor out,
                               struct tensor lse, struct tensor q, struct tensor k,
                               struct tensor v, struct tensor bias, struct tensor key_mask,
                               struct tensor scratch, int B, int Tq, int Tk, int NH, int HS,
                               int q_stride, int kv_stride, float scale)
{
    const char *op = "attention_bias_backward";
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
    void *pdq = op_check_tensor(ctx, op, "dq", dq, nq, OPTIONAL, AT_LEAST, dt);
    void *pdk = op_check_tensor(ctx, op, "dk", dk, nkv, OPTIONAL, AT_LEAST, dt);
    void *pdv = op_check_tensor(ctx, op, "dv", dv, nkv, OPTIONAL, AT_LEAST, dt);
    void *pdo = IN(dout, no);
    void *po = IN(out, no);
    float *pl = F32(lse, (int64_t)B * NH * Tq);
    void *pq = op_check_tensor(ctx, op, "q", q, nq, REQUIRED, AT_LEAST, dt);
    void *pk = op_check_tensor(ctx, op, "k", k, nkv, REQUIRED, AT_LEAST, dt);
    void *pv = op_check_tensor(ctx, op, "v", v, nkv, REQUIRED, AT_LEAST, dt);
    float *pb = op_check_tensor(ctx, op, "bias", bias, (int64_t)NH * Tq * Tk, OPTIONAL, EXACT,
                                KDT_F32);
    float *pm = op_check_tensor(ctx, op, "key_mask", key_mask, (int64_t)B * Tk, OPTIONAL, EXACT,
                                KDT_F32);
    float *ps = op_check_tensor(ctx, op, "scratch", scratch,
                                k_attention_bias_backward_scratch(ctx, B, Tq, Tk, NH, HS),
                                REQUIRED, AT_LEAST, KDT_F32);
    const void *in[5] = {pq, pk, pv, pdo, po};
    const int64_t nin[5] = {nq, nkv, nkv, no, no};
    const void *grad[3] = {pdq, pdk, pdv};
    const int64_t ngrad[3] = {nq, nkv, nkv};
    static const char *const gname[3] = {"dq", "dk", "dv"};
    for (int g = 0; g < 3; g++)
        for (int i = 0; i < 5; i++)
            if (grad[g] && in[i] && overlaps(grad[g], ngrad[g], in[i], nin[i], dt))
                op_abort(op, "%s overlaps q, k, v, dout or out", gname[g]);
    if (pdk && pdv && rows_collide(pdk, nkv, pdv, nkv, kv_stride, C, dt))
        op_abort(op, "dk and dv write the same elements");
    if (pdq && q_stride == kv_stride &&
        ((pdk && rows_collide(pdq, nq, pdk, nkv, q_stride, C, dt)) ||
         (pdv && rows_collide(pdq, nq, pdv, nkv, q_stride, C, dt))))
        op_abort(op, "dq writes the elements of dk or dv");
    if (pdq || pdk || pdv)
        ctx->ops->attention_bias_backward(ctx, pdq, pdk, pdv, pdo, po, pl, pq, pk, pv, pb, pm, ps,
                                          scratch.n, dt, B, Tq, Tk, NH, HS, q_stride, kv_stride,
                                          scale);
}
