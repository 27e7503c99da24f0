/* Parity spec of the fp8 widening (tests/cuda/parity.h): every e4m3 code
 * but the NaNs, scales of both signs' rows including tiny and large ones,
 * into every activation dtype, bit for bit once rounded to it. */
#include "tests/cuda/parity.h"

#include <math.h>

enum { F8_OUT, F8_CODES, F8_SCALE };

static void f8_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n, int64_t *at)
{
    n[F8_OUT] = n[F8_CODES] = (int64_t)c->d[0] * c->d[1];
    n[F8_SCALE] = c->d[0];
}

static void f8_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == F8_CODES)
        for (size_t k = 0; k < n; k++) {
            unsigned code = (unsigned)k * 37u % 256u;
            x[k] = (float)((code & 0x7fu) == 0x7fu ? code - 1 : code); /* no NaN codes */
        }
    if (i == F8_SCALE)
        for (size_t k = 0; k < n; k++)
            x[k] = fabsf(x[k]) * (k % 3 == 0 ? 1e-4f : k % 3 == 1 ? 1.0f : 3.0f) / 448.0f;
}

static double f8_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    k_fp8_rows_widen(ctx, t[F8_OUT], t[F8_CODES], t[F8_SCALE], c->d[0], c->d[1]);
    return 0;
}

static const struct parity_case F8_CASES[] = {
    {PD(1, 1)}, {PD(7, 37)}, {PD(16, 256)}, {PD(33, 100), .offset = 1},
};

const struct parity_op parity_fp8_rows_widen = {
    .name = "fp8_rows_widen",
    .args = {[F8_OUT] = ARG("out", PA_OUT | PA_EXACT),
             [F8_CODES] = ARG("codes", PA_IN | PA_U8),
             [F8_SCALE] = ARG("scale", PA_IN | PA_F32)},
    .layout = f8_layout,
    .call = f8_call,
    .fill = f8_fill,
    PARITY_CASES(F8_CASES),
};
