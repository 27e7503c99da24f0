/* Parity spec of the conversion (tests/cuda/parity.h): every pair of
 * dtypes, the device's conversion bit for bit against the CPU's (which is
 * libcommon/half's round to nearest even), with values that round (ties
 * included: x.5 ulp of bf16), overflow f16 and are subnormal in f16, aligned
 * and at offset 1. */
#include "tests/cuda/parity.h"

enum { CV_DST, CV_SRC };

static void cv_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    n[CV_DST] = n[CV_SRC] = c->d[0];
}

static void cv_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i != CV_SRC || n < 5)
        return;
    x[0] = 1.0f + 1.0f / 256.0f; /* a bf16 tie: rounds to even (1.0) */
    x[1] = 1.0f + 3.0f / 256.0f; /* a bf16 tie: rounds up */
    x[2] = 70000.0f;             /* inf in f16 */
    x[3] = 3e-6f;                /* subnormal in f16 */
    x[4] = -0.0f;
}

static double cv_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    k_convert(ctx, t[CV_DST], t[CV_SRC], c->d[0]);
    return 0;
}

/* the call's dtype is the destination's, dt2 the source's */
static const struct parity_case CV_CASES[] = {
    {PD(1001), .dt2 = KDT_F32},  {PD(1001), .dt2 = KDT_F32, .offset = 1},
    {PD(1001), .dt2 = KDT_BF16}, {PD(1001), .dt2 = KDT_BF16, .offset = 1},
    {PD(1001), .dt2 = KDT_F16},  {PD(1001), .dt2 = KDT_F16, .offset = 1},
};

const struct parity_op parity_convert = {
    .name = "convert",
    .args = {[CV_DST] = ARG("dst", PA_OUT | PA_SAME | PA_EXACT),
             [CV_SRC] = ARG("src", PA_IN | PA_DT2, .scale = 3.0f)},
    .layout = cv_layout,
    .call = cv_call,
    .fill = cv_fill,
    PARITY_CASES(CV_CASES),
};

/* Accumulation: dst in the call's dtype on both sides (PA_SAME), src f32;
 * the sum is formed in f32 and rounded once, so the bits agree. */
enum { AC_DST, AC_SRC };

static double ac_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    k_accumulate(ctx, t[AC_DST], t[AC_SRC], c->d[0]);
    return 0;
}

static const struct parity_case AC_CASES[] = {{PD(1001)}, {PD(1001), .offset = 1}, {PD(7)}};

const struct parity_op parity_accumulate = {
    .name = "accumulate",
    .args = {[AC_DST] = ARG("dst", PA_ACC | PA_SAME | PA_EXACT),
             [AC_SRC] = ARG("src", PA_IN | PA_F32, .scale = 0.1f)},
    .layout = cv_layout,
    .call = ac_call,
    PARITY_CASES(AC_CASES),
};
