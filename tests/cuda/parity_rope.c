/* Parity specs of the rope family (tests/cuda/parity.h): F-Lite's rotary
 * embedding and QK-norm, forward and backward, on row views.
 *
 * The heads lie in a larger buffer as the model holds them: q or k of a
 * fused [B, T, 3C] qkv (rows 3C, the head block at C), q and k together as
 * 2 NH heads, or rows of odd strides; the whole buffers are compared, so
 * the elements between the heads must come back as they were (junk in the
 * output buffer of the forward, random values in the gradient buffer of
 * the backward). Head sizes from 2 to 512 (F-Lite's 256; 8 and 40 leave
 * lanes idle, 6 and 5 are odd-sized rows), every optional piece left out
 * (no rotation, no norm, neither: a strided copy), B*T*NH not a multiple
 * of a block's 8 warps, and views only 2 or 4 bytes aligned. cos and sin
 * are cos(a) and sin(a) of angles that grow with the token, the first 16
 * tokens at 1 and 0 as F-Lite's register tokens. Backward runs from the
 * CPU forward's rstd on both sides. */
#include "tests/cuda/parity.h"

#include <math.h>

#define EPS 1e-6f
#define F32_ONLY .dts = PARITY_BIT(KDT_F32)
#define BF16_ONLY .dts = PARITY_BIT(KDT_BF16)
#define F16_ONLY .dts = PARITY_BIT(KDT_F16)

/* d: B, T, NH, HS, layout, where the heads lie: 0 contiguous (rows of
 * NH*HS); 1 the k block of a fused qkv (in and out rows 3C at C, C = NH*HS);
 * 2 q and k of a fused qkv in one call (2 NH heads, rows 3C at 0); 3 odd
 * strides (in rows C + 3 at 2, out rows C + 1 at 1). */
struct rope_geo {
    int NH, in_stride, out_stride; /* the call's */
    int64_t in_at, out_at;         /* the views' offsets in their buffers */
};

static struct rope_geo rope_geo_of(const struct parity_case *c)
{
    int NH = c->d[2], C = NH * c->d[3];
    struct rope_geo g = {NH, C, C, 0, 0};
    switch (c->d[4]) {
    case 1: g.in_stride = g.out_stride = 3 * C, g.in_at = g.out_at = C; break;
    case 2: g.NH = 2 * NH, g.in_stride = g.out_stride = 3 * C; break;
    case 3: g.in_stride = C + 3, g.out_stride = C + 1, g.in_at = 2, g.out_at = 1; break;
    }
    return g;
}

/* Elements `rows` rows `stride` apart, `width` wide, span. */
static int64_t span(int64_t rows, int stride, int64_t width)
{
    return rows > 0 ? (rows - 1) * stride + width : 0;
}

/* The views span their rows; the buffers hold every row whole past them. */
static void rope_views(const struct parity_case *c, int64_t *n, int64_t *at, int buf_in,
                       int view_in, int buf_out, int view_out)
{
    struct rope_geo g = rope_geo_of(c);
    int64_t rows = (int64_t)c->d[0] * c->d[1], C = (int64_t)g.NH * c->d[3];
    n[view_in] = span(rows, g.in_stride, C);
    n[view_out] = span(rows, g.out_stride, C);
    n[buf_in] = rows * g.in_stride + g.in_at;
    n[buf_out] = rows * g.out_stride + g.out_at;
    at[view_in] = g.in_at;
    at[view_out] = g.out_at;
}

/* cos and sin [T, HS/2] of angles a = (t - 16) (0.3 + 0.7 j / (HS/2)) for
 * tokens past the 16 register tokens, which get cos 1 and sin 0. */
static void rope_table(const struct parity_case *c, int is_sin, float *x, size_t n)
{
    int h2 = c->d[3] / 2;
    for (size_t k = 0; k < n; k++) {
        int t = (int)(k / (size_t)h2), j = (int)(k % (size_t)h2);
        double a = t < 16 ? 0.0 : (t - 16) * (0.3 + 0.7 * j / h2);
        x[k] = (float)(is_sin ? sin(a) : cos(a));
    }
}

/* ---- forward ------------------------------------------------------------------ */

enum { RF_OBUF, RF_OUT, RF_RSTD, RF_IBUF, RF_INP, RF_COS, RF_SIN };

static void rf_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    struct rope_geo g = rope_geo_of(c);
    rope_views(c, n, at, RF_IBUF, RF_INP, RF_OBUF, RF_OUT);
    n[RF_RSTD] = (int64_t)c->d[0] * c->d[1] * g.NH;
    n[RF_COS] = n[RF_SIN] = (int64_t)c->d[1] * (c->d[3] / 2);
}

static double rf_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    struct rope_geo g = rope_geo_of(c);
    k_rope_norm_forward(ctx, t[RF_OUT], t[RF_RSTD], t[RF_INP], t[RF_COS], t[RF_SIN], c->d[0],
                        c->d[1], g.NH, c->d[3], g.in_stride, g.out_stride, EPS);
    return 0;
}

static void rf_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == RF_COS || i == RF_SIN)
        rope_table(c, i == RF_SIN, x, n);
}

/* B, T, NH, HS, layout; absent: bit 0 rstd, 1 cos, 2 sin (6: no rotation,
 * 1: no norm, 7: neither) */
#define RF_EVERY_PIECE(B, T, NH, HS, lay, ...)                                                \
    {PD(B, T, NH, HS, lay), __VA_ARGS__}, {PD(B, T, NH, HS, lay), .absent = 1, __VA_ARGS__},  \
        {PD(B, T, NH, HS, lay), .absent = 6, __VA_ARGS__},                                    \
        {PD(B, T, NH, HS, lay), .absent = 7, __VA_ARGS__}

static const struct parity_case RF_CASES[] = {
    /* F-Lite's shape of call on a fused qkv, a smaller head */
    {PD(2, 20, 3, 64, 1)},
    {PD(2, 20, 2, 32, 2)},
    /* F-Lite's HS 256 and the 512 the op promises */
    {PD(1, 18, 2, 256, 1)},
    {PD(1, 17, 1, 512, 0)},
    /* heads narrower than a warp, odd strides; 21 (row, head) items */
    {PD(1, 7, 3, 8, 3)},
    {PD(2, 19, 2, 2, 3), F32_ONLY},
    {PD(2, 19, 2, 6, 3), F16_ONLY},
    {PD(3, 17, 2, 40, 0)},
    /* every optional piece left out */
    RF_EVERY_PIECE(2, 18, 2, 16, 1, F32_ONLY),
    RF_EVERY_PIECE(2, 18, 2, 16, 3, BF16_ONLY),
    /* odd head sizes without the rotation */
    {PD(2, 5, 3, 5, 3), .absent = 6},
    {PD(2, 5, 3, 5, 3), .absent = 7, F32_ONLY},
    /* views only 2 or 4 bytes aligned */
    {PD(2, 20, 2, 64, 1), .offset = 1},
    {PD(1, 9, 2, 6, 3), .offset = 1},
};

const struct parity_op parity_rope_norm_forward = {
    .name = "rope_norm_forward",
    .args = {[RF_OBUF] = ARG("obuf", PA_OUT),
             [RF_OUT] = ARG("out", PA_OUT, .view = "obuf"),
             [RF_RSTD] = ARG("rstd", PA_OUT | PA_F32 | PA_ALIGNED | PA_OPT),
             [RF_IBUF] = ARG("ibuf", PA_IN, .scale = 1.5f, .shift = 0.3f),
             [RF_INP] = ARG("inp", PA_IN, .view = "ibuf"),
             [RF_COS] = ARG("cos", PA_IN | PA_F32 | PA_ALIGNED | PA_OPT),
             [RF_SIN] = ARG("sin", PA_IN | PA_F32 | PA_ALIGNED | PA_OPT)},
    .layout = rf_layout,
    .call = rf_call,
    .fill = rf_fill,
    PARITY_CASES(RF_CASES),
};

/* ---- backward ----------------------------------------------------------------- */

enum { RBK_DBUF, RBK_DINP, RBK_GBUF, RBK_DOUT, RBK_IBUF, RBK_INP, RBK_RSTD, RBK_COS, RBK_SIN };

static void rbk_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                       int64_t *at)
{
    struct rope_geo g = rope_geo_of(c);
    rope_views(c, n, at, RBK_DBUF, RBK_DINP, RBK_GBUF, RBK_DOUT);
    n[RBK_IBUF] = n[RBK_DBUF];
    n[RBK_INP] = n[RBK_DINP];
    at[RBK_INP] = at[RBK_DINP];
    n[RBK_RSTD] = (int64_t)c->d[0] * c->d[1] * g.NH;
    n[RBK_COS] = n[RBK_SIN] = (int64_t)c->d[1] * (c->d[3] / 2);
}

static double rbk_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    struct rope_geo g = rope_geo_of(c);
    k_rope_norm_backward(ctx, t[RBK_DINP], t[RBK_DOUT], t[RBK_INP], t[RBK_RSTD], t[RBK_COS],
                         t[RBK_SIN], c->d[0], c->d[1], g.NH, c->d[3], g.in_stride, g.out_stride);
    return 0;
}

/* rstd from the CPU forward (into a contiguous out), with the rotation when
 * the case has it */
static void rbk_prepare(struct kctx *cpu, struct tensor *t, const struct parity_case *c)
{
    struct rope_geo g = rope_geo_of(c);
    const int rope = !(c->absent & 4), C = g.NH * c->d[3];
    struct tensor out = test_tensor(cpu, KDT_F32, NULL, (size_t)c->d[0] * c->d[1] * C);
    k_rope_norm_forward(cpu, out, t[RBK_RSTD], t[RBK_INP], rope ? t[RBK_COS] : tensor_none(),
                        rope ? t[RBK_SIN] : tensor_none(), c->d[0], c->d[1], g.NH, c->d[3],
                        g.in_stride, C, EPS);
    k_free(cpu, &out);
}

static void rbk_fill(const struct parity_case *c, int i, int step, float *x, size_t n)
{
    if (i == RBK_COS || i == RBK_SIN)
        rope_table(c, i == RBK_SIN, x, n);
}

/* absent: bit 0 dinp, 1 rstd, 2 cos, 3 sin (12: no rotation, 2: no norm,
 * 14: neither) */
#define RBK_EVERY_PIECE(B, T, NH, HS, lay, ...)                                               \
    {PD(B, T, NH, HS, lay), __VA_ARGS__}, {PD(B, T, NH, HS, lay), .absent = 2, __VA_ARGS__},  \
        {PD(B, T, NH, HS, lay), .absent = 12, __VA_ARGS__},                                   \
        {PD(B, T, NH, HS, lay), .absent = 14, __VA_ARGS__}

static const struct parity_case RBK_CASES[] = {
    {PD(2, 20, 3, 64, 1)},
    {PD(2, 20, 2, 32, 2)},
    {PD(1, 18, 2, 256, 1)},
    {PD(1, 17, 1, 512, 0)},
    {PD(1, 7, 3, 8, 3)},
    {PD(2, 19, 2, 2, 3), F32_ONLY},
    {PD(2, 19, 2, 6, 3), F16_ONLY},
    {PD(3, 17, 2, 40, 0)},
    RBK_EVERY_PIECE(2, 18, 2, 16, 1, F32_ONLY),
    RBK_EVERY_PIECE(2, 18, 2, 16, 3, BF16_ONLY),
    {PD(2, 5, 3, 5, 3), .absent = 12},
    {PD(2, 5, 3, 5, 3), .absent = 14, F32_ONLY},
    /* no dinp: nothing written */
    {PD(2, 18, 2, 16, 1), .absent = 1, F32_ONLY},
    {PD(2, 20, 2, 64, 1), .offset = 1},
    {PD(1, 9, 2, 6, 3), .offset = 1},
};

/* The gradient buffer starts random: what lies between the heads must stay. */
const struct parity_op parity_rope_norm_backward = {
    .name = "rope_norm_backward",
    .args = {[RBK_DBUF] = ARG("dbuf", PA_ACC),
             [RBK_DINP] = ARG("dinp", PA_ACC | PA_OPT, .view = "dbuf"),
             [RBK_GBUF] = ARG("gbuf", PA_IN),
             [RBK_DOUT] = ARG("dout", PA_IN, .view = "gbuf"),
             [RBK_IBUF] = ARG("ibuf", PA_IN, .scale = 1.5f, .shift = 0.3f),
             [RBK_INP] = ARG("inp", PA_IN, .view = "ibuf"),
             [RBK_RSTD] = ARG("rstd", PA_IN | PA_F32 | PA_ALIGNED | PA_OPT | PA_PREP),
             [RBK_COS] = ARG("cos", PA_IN | PA_F32 | PA_ALIGNED | PA_OPT),
             [RBK_SIN] = ARG("sin", PA_IN | PA_F32 | PA_ALIGNED | PA_OPT)},
    .layout = rbk_layout,
    .call = rbk_call,
    .prepare = rbk_prepare,
    .fill = rbk_fill,
    PARITY_CASES(RBK_CASES),
};
