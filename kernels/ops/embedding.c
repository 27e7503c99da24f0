/* Embeddings: label tables and the sinusoidal timestep embedding. */
#include "kernels/ops/dispatch.h"

#include <inttypes.h>

/* The table's row count follows from its size; every id must index a row.
 * Checking costs B reads, nothing next to the copy it guards; ids in device
 * memory are the model's to check before it uploads them. */
static void check_ids(const struct kctx *ctx, const char *op, const int32_t *ids, int B,
                      int64_t table_n, int C)
{
    if (B > 0 && !ids)
        op_abort(op, "ids is NULL");
    if (C == 0 && B > 0)
        op_abort(op, "C is 0");
    if (C > 0 && table_n % C != 0)
        op_abort(op, "table has %" PRId64 " elements, not a whole number of rows of %d", table_n,
                 C);
    if (!ctx->ops->host_memory)
        return;
    int64_t rows = C > 0 ? table_n / C : 0;
    for (int b = 0; b < B; b++)
        if (ids[b] < 0 || ids[b] >= rows)
            op_abort(op, "ids[%d] = %" PRId32 " is outside the table's %" PRId64 " rows", b,
                     ids[b], rows);
}

void k_embedding_forward(struct kctx *ctx, struct tensor out, struct tensor table,
                         const int32_t *ids, int B, int C)
{
    const char *op = "embedding_forward";
    op_check_ctx(ctx, op);
    DIMS("B, C", B, C);
    enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)B * C);
    void *pt = IN(table, table.n);
    check_ids(ctx, op, ids, B, table.n, C);
    ctx->ops->embedding_forward(ctx, po, pt, ids, dt, B, C);
}

void k_embedding_backward(struct kctx *ctx, struct tensor dtable, struct tensor dout,
                          const int32_t *ids, int B, int C)
{
    const char *op = "embedding_backward";
    op_check_ctx(ctx, op);
    DIMS("B, C", B, C);
    enum kdtype dt = op_act_dtype(ctx, op, "dout", dout);
    float *pdt = F32GRAD(dtable, dtable.n);
    void *pdo = IN(dout, (int64_t)B * C);
    if (!pdt)
        return;
    check_ids(ctx, op, ids, B, dtable.n, C);
    ctx->ops->embedding_backward(ctx, pdt, pdo, ids, dt, B, C);
}

void k_timestep_embedding(struct kctx *ctx, struct tensor out, const float *t, int B, int D,
                          float max_period, float freq_shift)
{
    const char *op = "timestep_embedding";
    op_check_ctx(ctx, op);
    DIMS("B, D", B, D);
    if (D % 2 != 0)
        op_abort(op, "D %d is odd", D);
    if (B > 0 && !t)
        op_abort(op, "t is NULL");
    if (!(max_period > 0.0f))
        op_abort(op, "max_period %g is not positive", (double)max_period);
    if (D > 0 && (float)(D / 2) - freq_shift == 0.0f)
        op_abort(op, "freq_shift %g leaves a zero denominator for D %d", (double)freq_shift, D);
    enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)B * D);
    ctx->ops->timestep_embedding(ctx, po, t, dt, B, D, max_period, freq_shift);
}
