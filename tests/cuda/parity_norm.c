/* Parity specs of the norm family (tests/cuda/parity.h): LayerNorm,
 * adaLN's modulate, the two fused (k_adaln_*), the gated residual, and
 * T5's RMS norm (with and without weight and rstd, in place).
 * Rows from under one 16-byte group per lane to past the register tile
 * (4104), ragged C (37, 1, 6), M = 1 and M not a multiple of a block's rows,
 * inputs with a large mean (the variance must not cancel), modulation rows
 * as views of a [B, 6C] buffer at row stride 6C, every subset of the
 * gradient outputs, in place and not, and views only 2 or 4 bytes aligned
 * (the scalar paths). Backward runs from the CPU's saved statistics on both
 * sides, so that it is tested alone. */
#include "tests/cuda/parity.h"

#define EPS 1e-6f

/* n for a [B, T, C] activation, and the views of a [B, 6C] buffer. */
static int64_t btc(const struct parity_case *c)
{
    return (int64_t)c->d[0] * c->d[1] * c->d[2];
}

static int64_t mod_n(const struct parity_case *c)
{
    return (int64_t)c->d[0] * 6 * c->d[2];
}

static int64_t mod_view_n(const struct parity_case *c)
{
    return (int64_t)(c->d[0] - 1) * 6 * c->d[2] + c->d[2];
}

/* ---- LayerNorm --------------------------------------------------------------- */

enum { LN_OUT, LN_MEAN, LN_RSTD, LN_INP, LN_DINP = 0, LN_DOUT = 4 };

static void ln_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    int64_t M = c->d[0], C = c->d[1];
    n[LN_OUT] = n[LN_INP] = n[LN_DOUT] = M * C;
    n[LN_MEAN] = n[LN_RSTD] = M;
}

static double ln_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                              int step)
{
    k_layernorm_forward(ctx, t[LN_OUT], t[LN_MEAN], t[LN_RSTD], t[LN_INP], c->d[0], c->d[1],
                        EPS);
    return 0;
}

static double ln_backward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    k_layernorm_backward(ctx, t[LN_DINP], t[LN_DOUT], t[LN_INP], t[LN_MEAN], t[LN_RSTD],
                         c->d[0], c->d[1]);
    return 0;
}

/* mean and rstd from the forward on the CPU */
static void ln_prepare(struct kctx *cpu, struct tensor *t, const struct parity_case *c)
{
    struct tensor out = test_tensor(cpu, KDT_F32, NULL, (size_t)t[LN_INP].n);
    k_layernorm_forward(cpu, out, t[LN_MEAN], t[LN_RSTD], t[LN_INP], c->d[0], c->d[1], EPS);
    k_free(cpu, &out);
}

/* C: a multiple of the 16-byte group, from under one group per lane to the
 * register tile's largest (2048 f32 and 3072 bf16 take 16 groups per lane)
 * and beyond it (4104); ragged (37, 1, 6). M = 1 and M not a multiple of the
 * 8 rows of a block. Then views at offset 1. */
#define LN_COMMON                                                                             \
    {PD(5, 64)}, {PD(11, 96)}, {PD(4, 37)}, {PD(1, 288)}, {PD(3, 1)}, {PD(9, 6)},             \
        {PD(2, 1040)}, {PD(2, 2048)}, {PD(2, 3072)}, {PD(2, 4104)}, {PD(17, 40)},             \
        {PD(5, 64), .offset = 1}, {PD(3, 1040), .offset = 1}

static const struct parity_case LN_FORWARD_CASES[] = {LN_COMMON};
static const struct parity_case LN_BACKWARD_CASES[] = {LN_COMMON, {PD(5, 64), .absent = 1}};

const struct parity_op parity_layernorm_forward = {
    .name = "layernorm_forward",
    .args = {[LN_OUT] = ARG("out", PA_OUT),
             [LN_MEAN] = ARG("mean", PA_OUT | PA_F32 | PA_ALIGNED),
             [LN_RSTD] = ARG("rstd", PA_OUT | PA_F32 | PA_ALIGNED),
             [LN_INP] = ARG("inp", PA_IN, .scale = 2.0f, .shift = 5.0f)},
    .layout = ln_layout,
    .call = ln_forward_call,
    PARITY_CASES(LN_FORWARD_CASES),
};

const struct parity_op parity_layernorm_backward = {
    .name = "layernorm_backward",
    .args = {[LN_DINP] = ARG("dinp", PA_ACC | PA_OPT, .scale = 0.5f),
             [LN_MEAN] = ARG("mean", PA_IN | PA_F32 | PA_ALIGNED | PA_PREP),
             [LN_RSTD] = ARG("rstd", PA_IN | PA_F32 | PA_ALIGNED | PA_PREP),
             [LN_INP] = ARG("inp", PA_IN, .scale = 2.0f, .shift = 5.0f),
             [LN_DOUT] = ARG("dout", PA_IN)},
    .layout = ln_layout,
    .call = ln_backward_call,
    .prepare = ln_prepare,
    PARITY_CASES(LN_BACKWARD_CASES),
};

/* ---- modulate ------------------------------------------------------------------ */

/* The shapes of the adaLN ops: C ragged (37: no vectors, and the scale view
 * misaligned), not a multiple of the 32-column tile (40), several tiles
 * (96), T above the 32 rows of a block, B = 1, a batch of 9. */
#define ADALN_SHAPES(...)                                                                     \
    {PD(2, 16, 96), __VA_ARGS__}, {PD(2, 40, 37), __VA_ARGS__},                               \
        {PD(1, 70, 40), __VA_ARGS__}, {PD(9, 5, 64), __VA_ARGS__}

/* absent: every subset of three optional outputs */
#define EVERY_SUBSET3(B, T, C, ...)                                                           \
    {PD(B, T, C), .absent = 0, __VA_ARGS__}, {PD(B, T, C), .absent = 1, __VA_ARGS__},         \
        {PD(B, T, C), .absent = 2, __VA_ARGS__}, {PD(B, T, C), .absent = 3, __VA_ARGS__},     \
        {PD(B, T, C), .absent = 4, __VA_ARGS__}, {PD(B, T, C), .absent = 5, __VA_ARGS__},     \
        {PD(B, T, C), .absent = 6, __VA_ARGS__}, {PD(B, T, C), .absent = 7, __VA_ARGS__}

#define F32_ONLY .dts = PARITY_BIT(KDT_F32)
#define BF16_ONLY .dts = PARITY_BIT(KDT_BF16)

enum { MF_OUT, MF_X, MF_MOD, MF_SHIFT, MF_SCALE };

static void modulate_forward_layout(const struct kctx *ctx, const struct parity_case *c,
                                    int64_t *n, int64_t *at)
{
    n[MF_OUT] = n[MF_X] = btc(c);
    n[MF_MOD] = mod_n(c);
    n[MF_SHIFT] = n[MF_SCALE] = mod_view_n(c);
    at[MF_SCALE] = c->d[2];
}

static double modulate_forward_call(struct kctx *ctx, struct tensor *t,
                                    const struct parity_case *c, int step)
{
    k_modulate_forward(ctx, t[MF_OUT], t[MF_X], t[MF_SHIFT], t[MF_SCALE], c->d[0], c->d[1],
                       c->d[2], 6 * c->d[2]);
    return 0;
}

static const struct parity_case MODULATE_FORWARD_CASES[] = {
    ADALN_SHAPES(.offset = 0), ADALN_SHAPES(.offset = 1), {PD(2, 24, 40)},
    {PD(2, 16, 64), .offset = 1}};

const struct parity_op parity_modulate_forward = {
    .name = "modulate_forward",
    .args = {[MF_OUT] = ARG("out", PA_OUT),
             [MF_X] = ARG("x", PA_IN),
             [MF_MOD] = ARG("mod", PA_IN | PA_ALIGNED, .scale = 0.5f),
             [MF_SHIFT] = ARG("shift", PA_IN, .view = "mod"),
             [MF_SCALE] = ARG("scale", PA_IN, .view = "mod")},
    .layout = modulate_forward_layout,
    .call = modulate_forward_call,
    PARITY_CASES(MODULATE_FORWARD_CASES),
};

enum { MB_DX, MB_DSHIFT, MB_DSCALE, MB_DMOD, MB_DOUT, MB_X, MB_MOD, MB_SCALE };

static void modulate_backward_layout(const struct kctx *ctx, const struct parity_case *c,
                                     int64_t *n, int64_t *at)
{
    n[MB_DX] = n[MB_DOUT] = n[MB_X] = btc(c);
    n[MB_DMOD] = n[MB_MOD] = mod_n(c);
    n[MB_DSHIFT] = n[MB_DSCALE] = n[MB_SCALE] = mod_view_n(c);
    at[MB_DSCALE] = at[MB_SCALE] = c->d[2];
}

static double modulate_backward_call(struct kctx *ctx, struct tensor *t,
                                     const struct parity_case *c, int step)
{
    k_modulate_backward(ctx, t[MB_DX], t[MB_DSHIFT], t[MB_DSCALE], t[MB_DOUT], t[MB_X],
                        t[MB_SCALE], c->d[0], c->d[1], c->d[2], 6 * c->d[2]);
    return 0;
}

/* absent: bit 0 dx, 1 dshift, 2 dscale; f32 and bf16 with every subset */
static const struct parity_case MODULATE_BACKWARD_CASES[] = {
    ADALN_SHAPES(.absent = 0),
    ADALN_SHAPES(.offset = 1),
    EVERY_SUBSET3(2, 24, 40, F32_ONLY),
    EVERY_SUBSET3(2, 24, 40, BF16_ONLY),
    {PD(2, 16, 64), .offset = 1},
    {PD(2, 16, 64), .offset = 1, .absent = 6},
};

/* The whole [B, 6C] dmod buffer is compared: the chunks beyond the views
 * must stay as they were. */
const struct parity_op parity_modulate_backward = {
    .name = "modulate_backward",
    .args = {[MB_DX] = ARG("dx", PA_OUT | PA_OPT),
             [MB_DSHIFT] = ARG("dshift", PA_ACC | PA_OPT, .view = "dmod"),
             [MB_DSCALE] = ARG("dscale", PA_ACC | PA_OPT, .view = "dmod"),
             [MB_DMOD] = ARG("dmod", PA_ACC | PA_ALIGNED),
             [MB_DOUT] = ARG("dout", PA_IN),
             [MB_X] = ARG("x", PA_IN),
             [MB_MOD] = ARG("mod", PA_IN | PA_ALIGNED, .scale = 0.5f),
             [MB_SCALE] = ARG("scale", PA_IN, .view = "mod")},
    .layout = modulate_backward_layout,
    .call = modulate_backward_call,
    PARITY_CASES(MODULATE_BACKWARD_CASES),
};

/* ---- adaLN: LayerNorm and modulate fused ------------------------------------------ */

/* The modulate shapes, plus rows on the register tile's vector path at
 * several groups per lane (1040) and C = 1 (one column, a warp mostly idle). */
#define FUSED_SHAPES(...)                                                                     \
    ADALN_SHAPES(__VA_ARGS__), {PD(2, 3, 1040), __VA_ARGS__}, {PD(3, 4, 1), __VA_ARGS__}

enum { AF_OUT, AF_MEAN, AF_RSTD, AF_X, AF_MOD, AF_SHIFT, AF_SCALE };

static void adaln_forward_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                                 int64_t *at)
{
    n[AF_OUT] = n[AF_X] = btc(c);
    n[AF_MEAN] = n[AF_RSTD] = (int64_t)c->d[0] * c->d[1];
    n[AF_MOD] = mod_n(c);
    n[AF_SHIFT] = n[AF_SCALE] = mod_view_n(c);
    at[AF_SCALE] = c->d[2];
}

static double adaln_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                                 int step)
{
    k_adaln_forward(ctx, t[AF_OUT], t[AF_MEAN], t[AF_RSTD], t[AF_X], t[AF_SHIFT], t[AF_SCALE],
                    c->d[0], c->d[1], c->d[2], 6 * c->d[2], EPS);
    return 0;
}

static const struct parity_case ADALN_FORWARD_CASES[] = {
    FUSED_SHAPES(.offset = 0), FUSED_SHAPES(.offset = 1), {PD(2, 24, 40)}, {PD(2, 24, 64)},
    {PD(2, 16, 64), .offset = 1}};

/* x with a mean far from 0 */
const struct parity_op parity_adaln_forward = {
    .name = "adaln_forward",
    .args = {[AF_OUT] = ARG("out", PA_OUT),
             [AF_MEAN] = ARG("mean", PA_OUT | PA_F32 | PA_ALIGNED),
             [AF_RSTD] = ARG("rstd", PA_OUT | PA_F32 | PA_ALIGNED),
             [AF_X] = ARG("x", PA_IN, .scale = 2.0f, .shift = 3.0f),
             [AF_MOD] = ARG("mod", PA_IN | PA_ALIGNED, .scale = 0.5f),
             [AF_SHIFT] = ARG("shift", PA_IN, .view = "mod"),
             [AF_SCALE] = ARG("scale", PA_IN, .view = "mod")},
    .layout = adaln_forward_layout,
    .call = adaln_forward_call,
    PARITY_CASES(ADALN_FORWARD_CASES),
};

enum {
    AB_DX, AB_DSHIFT, AB_DSCALE, AB_DMOD, AB_DOUT, AB_X, AB_MEAN, AB_RSTD, AB_MOD, AB_SHIFT,
    AB_SCALE
};

static void adaln_backward_layout(const struct kctx *ctx, const struct parity_case *c,
                                  int64_t *n, int64_t *at)
{
    n[AB_DX] = n[AB_DOUT] = n[AB_X] = btc(c);
    n[AB_DMOD] = n[AB_MOD] = mod_n(c);
    n[AB_MEAN] = n[AB_RSTD] = (int64_t)c->d[0] * c->d[1];
    n[AB_DSHIFT] = n[AB_DSCALE] = n[AB_SHIFT] = n[AB_SCALE] = mod_view_n(c);
    at[AB_DSCALE] = at[AB_SCALE] = c->d[2];
}

static double adaln_backward_call(struct kctx *ctx, struct tensor *t,
                                  const struct parity_case *c, int step)
{
    k_adaln_backward(ctx, t[AB_DX], t[AB_DSHIFT], t[AB_DSCALE], t[AB_DOUT], t[AB_X], t[AB_MEAN],
                     t[AB_RSTD], t[AB_SCALE], c->d[0], c->d[1], c->d[2], 6 * c->d[2]);
    return 0;
}

static void adaln_prepare(struct kctx *cpu, struct tensor *t, const struct parity_case *c)
{
    struct tensor out = test_tensor(cpu, KDT_F32, NULL, (size_t)t[AB_X].n);
    k_adaln_forward(cpu, out, t[AB_MEAN], t[AB_RSTD], t[AB_X], t[AB_SHIFT], t[AB_SCALE], c->d[0],
                    c->d[1], c->d[2], 6 * c->d[2], EPS);
    k_free(cpu, &out);
}

/* absent: bit 0 dx, 1 dshift, 2 dscale */
static const struct parity_case ADALN_BACKWARD_CASES[] = {
    FUSED_SHAPES(.absent = 0),
    FUSED_SHAPES(.offset = 1),
    EVERY_SUBSET3(2, 24, 40, F32_ONLY),
    {PD(2, 24, 64), .absent = 6, BF16_ONLY}, /* dx alone */
    {PD(2, 24, 64), .absent = 1, BF16_ONLY}, /* dshift and dscale */
    {PD(2, 16, 64), .offset = 1},
    {PD(2, 16, 64), .offset = 1, .absent = 6},
};

/* dx and the whole dmod buffer accumulate onto random values. */
const struct parity_op parity_adaln_backward = {
    .name = "adaln_backward",
    .args = {[AB_DX] = ARG("dx", PA_ACC | PA_OPT, .scale = 0.5f),
             [AB_DSHIFT] = ARG("dshift", PA_ACC | PA_OPT, .view = "dmod"),
             [AB_DSCALE] = ARG("dscale", PA_ACC | PA_OPT, .view = "dmod"),
             [AB_DMOD] = ARG("dmod", PA_ACC | PA_ALIGNED),
             [AB_DOUT] = ARG("dout", PA_IN),
             [AB_X] = ARG("x", PA_IN, .scale = 2.0f, .shift = 3.0f),
             [AB_MEAN] = ARG("mean", PA_IN | PA_F32 | PA_ALIGNED | PA_PREP),
             [AB_RSTD] = ARG("rstd", PA_IN | PA_F32 | PA_ALIGNED | PA_PREP),
             [AB_MOD] = ARG("mod", PA_IN | PA_ALIGNED, .scale = 0.5f),
             [AB_SHIFT] = ARG("shift", PA_IN, .view = "mod"),
             [AB_SCALE] = ARG("scale", PA_IN, .view = "mod")},
    .layout = adaln_backward_layout,
    .call = adaln_backward_call,
    .prepare = adaln_prepare,
    PARITY_CASES(ADALN_BACKWARD_CASES),
};

/* ---- gated residual ------------------------------------------------------------------ */

enum { GF_OUT, GF_RES, GF_Y, GF_MOD, GF_GATE };

static void gated_forward_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                                 int64_t *at)
{
    n[GF_OUT] = n[GF_RES] = n[GF_Y] = btc(c);
    n[GF_MOD] = mod_n(c);
    n[GF_GATE] = mod_view_n(c);
    at[GF_GATE] = 2 * c->d[2];
}

static double gated_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                                 int step)
{
    k_gated_residual_forward(ctx, t[GF_OUT], t[GF_RES], t[GF_Y], t[GF_GATE], c->d[0], c->d[1],
                             c->d[2], 6 * c->d[2]);
    return 0;
}

/* In place (out is res: the model's use), and into a separate out, where
 * res must come back unchanged. */
static const struct parity_case GATED_FORWARD_CASES[] = {
    ADALN_SHAPES(.inplace = 1), ADALN_SHAPES(.inplace = 0),
    ADALN_SHAPES(.inplace = 1, .offset = 1), {PD(2, 24, 40), .inplace = 1},
    {PD(2, 16, 64), .offset = 1, .inplace = 1}, {PD(2, 16, 64), .offset = 1, .inplace = 0},
};

const struct parity_op parity_gated_residual_forward = {
    .name = "gated_residual_forward",
    .args = {[GF_OUT] = ARG("out", PA_OUT, .alias = "res"),
             [GF_RES] = ARG("res", PA_IN),
             [GF_Y] = ARG("y", PA_IN),
             [GF_MOD] = ARG("mod", PA_IN | PA_ALIGNED, .scale = 0.5f),
             [GF_GATE] = ARG("gate", PA_IN, .view = "mod")},
    .layout = gated_forward_layout,
    .call = gated_forward_call,
    PARITY_CASES(GATED_FORWARD_CASES),
};

enum { GB_DY, GB_DGATE, GB_DMOD, GB_DRES, GB_Y, GB_MOD, GB_GATE };

static void gated_backward_layout(const struct kctx *ctx, const struct parity_case *c,
                                  int64_t *n, int64_t *at)
{
    n[GB_DY] = n[GB_DRES] = n[GB_Y] = btc(c);
    n[GB_DMOD] = n[GB_MOD] = mod_n(c);
    n[GB_DGATE] = n[GB_GATE] = mod_view_n(c);
    at[GB_DGATE] = at[GB_GATE] = 2 * c->d[2];
}

static double gated_backward_call(struct kctx *ctx, struct tensor *t,
                                  const struct parity_case *c, int step)
{
    k_gated_residual_backward(ctx, t[GB_DY], t[GB_DGATE], t[GB_DRES], t[GB_Y], t[GB_GATE],
                              c->d[0], c->d[1], c->d[2], 6 * c->d[2]);
    return 0;
}

/* absent: bit 0 dy, 1 dgate */
static const struct parity_case GATED_BACKWARD_CASES[] = {
    ADALN_SHAPES(.absent = 0),
    ADALN_SHAPES(.absent = 3),
    ADALN_SHAPES(.offset = 1),
    {PD(2, 24, 40), .absent = 1, F32_ONLY},
    {PD(2, 24, 40), .absent = 2, F32_ONLY},
    {PD(2, 24, 40), .absent = 0, F32_ONLY},
    {PD(2, 16, 64), .offset = 1},
    {PD(2, 16, 64), .offset = 1, .absent = 2},
};

const struct parity_op parity_gated_residual_backward = {
    .name = "gated_residual_backward",
    .args = {[GB_DY] = ARG("dy", PA_OUT | PA_OPT),
             [GB_DGATE] = ARG("dgate", PA_ACC | PA_OPT, .view = "dmod"),
             [GB_DMOD] = ARG("dmod", PA_ACC | PA_ALIGNED),
             [GB_DRES] = ARG("dres", PA_IN),
             [GB_Y] = ARG("y", PA_IN),
             [GB_MOD] = ARG("mod", PA_IN | PA_ALIGNED, .scale = 0.5f),
             [GB_GATE] = ARG("gate", PA_IN, .view = "mod")},
    .layout = gated_backward_layout,
    .call = gated_backward_call,
    PARITY_CASES(GATED_BACKWARD_CASES),
};

/* ---- GroupNorm ------------------------------------------------------------- */

enum { GN_OUT, GN_INP, GN_WEIGHT, GN_BIAS };

/* B, C, HW, G, silu */
static void gn_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    n[GN_OUT] = n[GN_INP] = (int64_t)c->d[0] * c->d[1] * c->d[2];
    n[GN_WEIGHT] = n[GN_BIAS] = c->d[1];
}

static double gn_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                              int step)
{
    k_groupnorm_forward(ctx, t[GN_OUT], t[GN_INP], t[GN_WEIGHT], t[GN_BIAS], c->d[0], c->d[1],
                        c->d[2], c->d[3], 1e-6f, c->d[4]);
    return 0;
}

/* With and without SiLU; G = 1 and G = C (one channel a group, HW values);
 * HW odd, HW = 1 (groups of C/G values); a group larger than the block's
 * 512 threads (1400 values: ragged strides); B above 1; in place; views at
 * offset 1. */
static const struct parity_case GN_FORWARD_CASES[] = {
    {PD(2, 8, 9, 4, 0)},    {PD(2, 8, 9, 4, 1)},   {PD(1, 6, 7, 1, 0)},
    {PD(1, 6, 7, 1, 1)},    {PD(2, 6, 5, 6, 1)},   {PD(2, 6, 5, 6, 0)},
    {PD(3, 4, 1, 2, 1)},    {PD(1, 4, 350, 2, 1)}, {PD(1, 32, 33, 8, 0)},
    {PD(2, 8, 9, 4, 1), .inplace = 1},             {PD(1, 6, 7, 1, 0), .inplace = 1},
    {PD(2, 8, 9, 4, 1), .offset = 1},              {PD(2, 6, 5, 6, 0), .offset = 1},
};

/* Inputs well off zero (mean 5, spread 2): the variance must not cancel. */
const struct parity_op parity_groupnorm_forward = {
    .name = "groupnorm_forward",
    .args = {[GN_OUT] = ARG("out", PA_OUT, .alias = "inp"),
             [GN_INP] = ARG("inp", PA_IN, .scale = 2.0f, .shift = 5.0f),
             [GN_WEIGHT] = ARG("weight", PA_IN, .scale = 0.5f, .shift = 1.0f),
             [GN_BIAS] = ARG("bias", PA_IN, .scale = 0.3f)},
    .layout = gn_layout,
    .call = gn_forward_call,
    PARITY_CASES(GN_FORWARD_CASES),
};

/* ---- RMS norm (T5LayerNorm) -------------------------------------------------- */

enum { RN_OUT, RN_RSTD, RN_INP, RN_WEIGHT };

/* M, C */
static void rn_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    int64_t M = c->d[0], C = c->d[1];
    n[RN_OUT] = n[RN_INP] = M * C;
    n[RN_RSTD] = M;
    n[RN_WEIGHT] = C;
}

static double rn_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                              int step)
{
    k_rmsnorm_forward(ctx, t[RN_OUT], t[RN_RSTD], t[RN_INP], t[RN_WEIGHT], c->d[0], c->d[1],
                      EPS);
    return 0;
}

/* C a multiple of the 16-byte group (64, 96, T5-base's 768, T5-XXL's 4096,
 * 4104) and ragged (37, 1, 6, 40: whole f32 vectors, not bf16 ones); M = 1
 * and M not a multiple of the 8 rows of a block; absent: bit 0 rstd, bit 1
 * weight; in place; views at offset 1 (scalar loads). */
static const struct parity_case RN_FORWARD_CASES[] = {
    {PD(5, 64)},   {PD(11, 96)},  {PD(4, 37)},  {PD(1, 768)},  {PD(3, 1)},
    {PD(9, 6)},    {PD(17, 40)},  {PD(3, 4096)}, {PD(2, 4104)},
    {PD(5, 64), .absent = 1},     {PD(5, 64), .absent = 2},     {PD(4, 37), .absent = 3},
    {PD(5, 64), .inplace = 1},    {PD(4, 37), .inplace = 1, .absent = 2},
    {PD(5, 64), .offset = 1},     {PD(4, 37), .offset = 1},     {PD(3, 1040), .offset = 1},
};

const struct parity_op parity_rmsnorm_forward = {
    .name = "rmsnorm_forward",
    .args = {[RN_OUT] = ARG("out", PA_OUT, .alias = "inp"),
             [RN_RSTD] = ARG("rstd", PA_OUT | PA_F32 | PA_ALIGNED | PA_OPT),
             [RN_INP] = ARG("inp", PA_IN, .scale = 3.0f, .shift = 0.5f),
             [RN_WEIGHT] = ARG("weight", PA_IN | PA_OPT, .scale = 0.5f, .shift = 1.0f)},
    .layout = rn_layout,
    .call = rn_forward_call,
    PARITY_CASES(RN_FORWARD_CASES),
};

/* ---- RMS norm backward (F-Lite's trainable norms) -------------------------------- */

enum { RB_DINP, RB_DWEIGHT, RB_DOUT, RB_INP, RB_RSTD, RB_WEIGHT };

/* M, C */
static void rb_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    int64_t M = c->d[0], C = c->d[1];
    n[RB_DINP] = n[RB_DOUT] = n[RB_INP] = M * C;
    n[RB_DWEIGHT] = n[RB_WEIGHT] = C;
    n[RB_RSTD] = M;
}

static double rb_backward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    k_rmsnorm_backward(ctx, t[RB_DINP], t[RB_DWEIGHT], t[RB_DOUT], t[RB_INP], t[RB_RSTD],
                       t[RB_WEIGHT], c->d[0], c->d[1]);
    return 0;
}

/* rstd from the forward on the CPU (the weight does not change it) */
static void rb_prepare(struct kctx *cpu, struct tensor *t, const struct parity_case *c)
{
    struct tensor out = test_tensor(cpu, KDT_F32, NULL, (size_t)t[RB_INP].n);
    k_rmsnorm_forward(cpu, out, t[RB_RSTD], t[RB_INP], tensor_none(), c->d[0], c->d[1], EPS);
    k_free(cpu, &out);
}

/* The forward's shapes (C 2, not 1: one value a row has a gradient of
 * rounding noise only, eps / (x^2 + eps)), and M past the 32 rows of
 * threads of a dweight block (70, 100: some rows of threads take one row
 * more); absent: bit 0 dinp, 1 dweight, 2 weight, every subset; views at
 * offset 1 (scalar loads). */
static const struct parity_case RB_BACKWARD_CASES[] = {
    {PD(5, 64)},   {PD(11, 96)},  {PD(4, 37)},  {PD(1, 768)},  {PD(3, 2)},
    {PD(9, 6)},    {PD(17, 40)},  {PD(70, 40)}, {PD(100, 33)}, {PD(2, 4104)},
    {PD(5, 64), .absent = 1, F32_ONLY},  {PD(5, 64), .absent = 2, F32_ONLY},
    {PD(5, 64), .absent = 3, F32_ONLY},  {PD(5, 64), .absent = 4},
    {PD(4, 37), .absent = 5, BF16_ONLY}, {PD(4, 37), .absent = 6, BF16_ONLY},
    {PD(70, 40), .absent = 4},           {PD(5, 64), .offset = 1},
    {PD(4, 37), .offset = 1},            {PD(3, 1040), .offset = 1, .absent = 4},
};

/* dweight accumulates onto random values; the inputs as the forward's. */
const struct parity_op parity_rmsnorm_backward = {
    .name = "rmsnorm_backward",
    .args = {[RB_DINP] = ARG("dinp", PA_OUT | PA_OPT),
             [RB_DWEIGHT] = ARG("dweight", PA_ACC | PA_F32 | PA_ALIGNED | PA_OPT),
             [RB_DOUT] = ARG("dout", PA_IN),
             [RB_INP] = ARG("inp", PA_IN, .scale = 3.0f, .shift = 0.5f),
             [RB_RSTD] = ARG("rstd", PA_IN | PA_F32 | PA_ALIGNED | PA_PREP),
             [RB_WEIGHT] = ARG("weight", PA_IN | PA_OPT, .scale = 0.5f, .shift = 1.0f)},
    .layout = rb_layout,
    .call = rb_backward_call,
    .prepare = rb_prepare,
    PARITY_CASES(RB_BACKWARD_CASES),
};
