/* Dropout: the mask is Philox's (libcommon/philox.h), a function of
 * (seed, purpose, step, sample id, offset), so every backend draws the same one. */
#include "kernels/ops/dispatch.h"

#include <inttypes.h>
#include <stdint.h>

/* What rng_stream can address: a purpose of 2^16 or more would meet the
 * retries of rng_below (philox.h), so it is a caller's bug here too. The
 * ids live in device memory and any value is a valid sample index (taken
 * modulo 2^32), so only their presence is checked. */
static void check_stream(const char *op, uint32_t purpose, const uint64_t *ids, int B,
                         int64_t per)
{
    if (purpose >= 1u << 16)
        op_abort(op, "purpose %" PRIu32 " is not below 2^16", purpose);
    if (B > 0 && per > 0 && !ids)
        op_abort(op, "ids is NULL");
}

void k_dropout_forward(struct kctx *ctx, struct tensor out, struct tensor inp, float p,
                       uint64_t seed, uint32_t purpose, uint64_t step, const uint64_t *ids, int B,
                       int64_t per)
{
    const char *op = "dropout_forward";
    op_check_ctx(ctx, op);
    DIMS("B", B);
    op_check_count(op, per);
    if (B > 0 && per > INT64_MAX / B)
        op_abort(op, "B %d times per %" PRId64 " overflows", B, per);
    /* Written so that NaN fails too; p = 1 would scale by infinity. */
    if (!(p >= 0.0f && p < 1.0f))
        op_abort(op, "p %g is outside [0, 1)", (double)p);
    check_stream(op, purpose, ids, B, per);
    enum kdtype dt = op_act_dtype(ctx, op, "out", out);
    const int64_t n = (int64_t)B * per;
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    ctx->ops->dropout_forward(ctx, po, pi, dt, p, seed, purpose, step, ids, B, per);
}
