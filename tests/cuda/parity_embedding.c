/* Parity specs of the embeddings (tests/cuda/parity.h): label rows by
 * int32 ids in the device's memory, repeated ids (the backward sums them
 * in the CPU's order, so bit for bit in f32), rows not a multiple of 4;
 * the sinusoidal timestep embedding at integer and fractional steps, DiT's
 * and diffusers' frequency shifts, a short period, D = 2. */
#include "tests/cuda/parity.h"

/* ---- label embedding: B, C, rows, first id ------------------------------------ */

enum { E_OUT, E_TABLE, E_IDS, E_DTABLE = 0, E_DOUT = 1 };

static const int32_t IDS[] = {3, 7, 3, 0, 3, 9, 7, 1};

static void emb_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                       int64_t *at)
{
    int64_t B = c->d[0], C = c->d[1], rows = c->d[2];
    n[E_IDS] = B;
    n[E_OUT] = B * C;
    n[E_TABLE] = rows * C;
}

static void dtable_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                          int64_t *at)
{
    int64_t B = c->d[0], C = c->d[1], rows = c->d[2];
    n[E_IDS] = B;
    n[E_DOUT] = B * C;
    n[E_DTABLE] = rows * C;
}

static void ids_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == E_IDS)
        for (size_t b = 0; b < n; b++)
            x[b] = (float)IDS[(size_t)c->d[3] + b];
}

static double emb_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    k_embedding_forward(ctx, t[E_OUT], t[E_TABLE], (const int32_t *)t[E_IDS].data, c->d[0],
                        c->d[1]);
    return 0;
}

static double emb_backward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                                int step)
{
    k_embedding_backward(ctx, t[E_DTABLE], t[E_DOUT], (const int32_t *)t[E_IDS].data, c->d[0],
                         c->d[1]);
    return 0;
}

static const struct parity_case EMB_CASES[] = {
    {PD(8, 37, 10, 0)}, {PD(5, 64, 10, 0)}, {PD(1, 8, 11, 5)}};
static const struct parity_case EMB_BACKWARD_CASES[] = {
    {PD(8, 37, 10, 0)}, {PD(5, 64, 10, 0)}, {PD(1, 8, 11, 5)}, {PD(8, 37, 10, 0), .absent = 1}};

const struct parity_op parity_embedding_forward = {
    .name = "embedding_forward",
    .args = {[E_OUT] = ARG("out", PA_OUT | PA_EXACT), [E_TABLE] = ARG("table", PA_IN),
             [E_IDS] = ARG("ids", PA_IN | PA_IDS)},
    .layout = emb_layout,
    .call = emb_forward_call,
    .fill = ids_fill,
    PARITY_CASES(EMB_CASES),
};

/* dtable f32 (a parameter gradient), accumulated onto random values. */
const struct parity_op parity_embedding_backward = {
    .name = "embedding_backward",
    .args = {[E_DTABLE] = ARG("dtable", PA_ACC | PA_F32 | PA_EXACT_F32 | PA_OPT),
             [E_DOUT] = ARG("dout", PA_IN), [E_IDS] = ARG("ids", PA_IN | PA_IDS)},
    .layout = dtable_layout,
    .call = emb_backward_call,
    .fill = ids_fill,
    PARITY_CASES(EMB_BACKWARD_CASES),
};

/* ---- timestep embedding: B, D, seed; max_period, freq_shift ----------------------- */

enum { TS_OUT, TS_T };

static void ts_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    n[TS_OUT] = (int64_t)c->d[0] * c->d[1];
    n[TS_T] = c->d[0];
}

/* integer and fractional steps up to 999 */
static void ts_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i != TS_T)
        return;
    for (size_t b = 0; b < n; b++)
        x[b] = b == 0   ? 0.0f
               : b == 1 ? 999.0f
                        : (float)(((int)b * 337 + c->d[2]) % 1000) + 0.25f * (float)b;
}

static double ts_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    k_timestep_embedding(ctx, t[TS_OUT], (const float *)t[TS_T].data, c->d[0], c->d[1],
                         c->f[0], c->f[1]);
    return 0;
}

static const struct parity_case TS_CASES[] = {
    {PD(5, 256, 1), PF(10000.0f, 0.0f)},
    {PD(3, 64, 2), PF(10000.0f, 1.0f)},
    {PD(1, 2, 3), PF(100.0f, 0.0f)},
};

/* t[B] is f32 in the device's memory */
const struct parity_op parity_timestep_embedding = {
    .name = "timestep_embedding",
    .args = {[TS_OUT] = ARG("out", PA_OUT), [TS_T] = ARG("t", PA_IN | PA_F32 | PA_ALIGNED)},
    .layout = ts_layout,
    .call = ts_call,
    .fill = ts_fill,
    PARITY_CASES(TS_CASES),
};
