/* Parity specs of the elementwise ops and reductions (tests/cuda/parity.h):
 * add, axpy, scale and fill bit for bit (fp32 arithmetic, one rounding on
 * store), on sizes from one element past the vector width, aligned and only
 * 2 or 4 bytes aligned; the broadcast add; the MSE (its fp32 sum in every
 * dtype, dpred bit for bit in f32) and the sum of squares (the same bits on
 * a second call) over several blocks of the reductions; F-Lite's residual
 * value mix, bit for bit, on row views of fused buffers (dlam within
 * tolerance, and the same bits on a second call). */
#include "tests/cuda/parity.h"

/* ---- add_broadcast: B, T, C ---------------------------------------------------- */

enum { AB_OUT, AB_A, AB_B };

static void add_broadcast_layout(const struct kctx *ctx, const struct parity_case *c,
                                 int64_t *n, int64_t *at)
{
    n[AB_OUT] = n[AB_A] = (int64_t)c->d[0] * c->d[1] * c->d[2];
    n[AB_B] = (int64_t)c->d[1] * c->d[2];
}

static double add_broadcast_call(struct kctx *ctx, struct tensor *t,
                                 const struct parity_case *c, int step)
{
    k_add_broadcast_forward(ctx, t[AB_OUT], t[AB_A], t[AB_B], c->d[0], c->d[1], c->d[2]);
    return 0;
}

static const struct parity_case ADD_BROADCAST_CASES[] = {
    {PD(2, 16, 64)}, {PD(3, 5, 37)}, {PD(2, 16, 64), .offset = 1}, {PD(1, 1, 8)}};

const struct parity_op parity_add_broadcast_forward = {
    .name = "add_broadcast_forward",
    .args = {[AB_OUT] = ARG("out", PA_OUT | PA_EXACT), [AB_A] = ARG("a", PA_IN),
             [AB_B] = ARG("b", PA_IN)},
    .layout = add_broadcast_layout,
    .call = add_broadcast_call,
    PARITY_CASES(ADD_BROADCAST_CASES),
};

/* ---- add, axpy, scale, fill: n ----------------------------------------------------- */

static void n3_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                      int64_t *at)
{
    n[0] = n[1] = n[2] = c->d[0];
}

static double add_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    k_add(ctx, t[0], t[1], t[2], c->d[0]);
    return 0;
}

static double axpy_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                        int step)
{
    k_axpy(ctx, t[0], -0.37f, t[1], c->d[0]);
    return 0;
}

static double scale_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                         int step)
{
    k_scale(ctx, t[0], 1.7f, c->d[0]);
    return 0;
}

static double fill_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                        int step)
{
    k_fill(ctx, t[0], -2.5f, c->d[0]);
    return 0;
}

static const struct parity_case N_CASES[] = {
    {PD(1)},    {PD(1), .offset = 1},    {PD(13)},   {PD(13), .offset = 1},
    {PD(1000)}, {PD(1000), .offset = 1}, {PD(4099)}, {PD(4099), .offset = 1},
};

const struct parity_op parity_add = {
    .name = "add",
    .args = {ARG("out", PA_OUT | PA_EXACT), ARG("a", PA_IN), ARG("b", PA_IN)},
    .layout = n3_layout,
    .call = add_call,
    PARITY_CASES(N_CASES),
};

const struct parity_op parity_axpy = {
    .name = "axpy",
    .args = {ARG("y", PA_ACC | PA_EXACT), ARG("x", PA_IN)},
    .layout = n3_layout,
    .call = axpy_call,
    PARITY_CASES(N_CASES),
};

const struct parity_op parity_scale = {
    .name = "scale",
    .args = {ARG("x", PA_ACC | PA_EXACT)},
    .layout = n3_layout,
    .call = scale_call,
    PARITY_CASES(N_CASES),
};

const struct parity_op parity_fill = {
    .name = "fill",
    .args = {ARG("x", PA_OUT | PA_EXACT)},
    .layout = n3_layout,
    .call = fill_call,
    PARITY_CASES(N_CASES),
};

/* ---- reductions ---------------------------------------------------------------------- */

enum { MSE_DPRED, MSE_PRED, MSE_TARGET };

static double mse_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step)
{
    return k_mse_forward_backward(ctx, t[MSE_DPRED], t[MSE_PRED], t[MSE_TARGET], c->d[0], 0.5f);
}

/* 50000 values span several blocks of the reduction in every dtype;
 * absent bit 0: no dpred. */
static const struct parity_case MSE_CASES[] = {
    {PD(1)},
    {PD(1), .absent = 1},
    {PD(1000)},
    {PD(1000), .absent = 1},
    {PD(50000)},
    {PD(50000), .absent = 1},
    {PD(1003), .offset = 1, .dts = PARITY_BIT(KDT_F32)},
    {PD(20001), .offset = 1, .dts = PARITY_BIT(KDT_BF16)},
};

const struct parity_op parity_mse_forward_backward = {
    .name = "mse_forward_backward",
    .args = {[MSE_DPRED] = ARG("dpred", PA_OUT | PA_OPT | PA_EXACT_F32),
             [MSE_PRED] = ARG("pred", PA_IN), [MSE_TARGET] = ARG("target", PA_IN)},
    .layout = n3_layout,
    .call = mse_call,
    .result = 1,
    PARITY_CASES(MSE_CASES),
};

static double sum_squares_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    return k_sum_squares(ctx, t[0], c->d[0]);
}

static const struct parity_case SUM_SQUARES_CASES[] = {
    {PD(0)},    {PD(0), .offset = 1},    {PD(1)},     {PD(1), .offset = 1},
    {PD(1000)}, {PD(1000), .offset = 1}, {PD(70001)}, {PD(70001), .offset = 1},
};

const struct parity_op parity_sum_squares = {
    .name = "sum_squares",
    .args = {ARG("x", PA_IN, .scale = 1.5f)},
    .layout = n3_layout,
    .call = sum_squares_call,
    .result = 1,
    .repeat = 1,
    PARITY_CASES(SUM_SQUARES_CASES),
};

/* ---- F-Lite's residual value mix -------------------------------------------------- */

/* d: M, C, and where the rows lie (d[2]): 0, contiguous [M, C]; 1, F-Lite's
 * v, column 2C of [M, 3C] rows, for out, a, b and dout alike; 2, odd strides
 * (C + 3, C + 1, 2C + 5, C + 2) from odd starts. Each view lies in a buffer
 * of its own that ends one element past it (lay 1, 2), and the whole buffer
 * is compared: what lies between and around the rows must be left as it
 * was. */
struct mix_geom {
    int out_stride, a_stride, b_stride, dout_stride;
    int out_at, a_at, b_at, dout_at;
};

static struct mix_geom mix_geom_of(const struct parity_case *c)
{
    const int C = c->d[1];
    if (c->d[2] == 1)
        return (struct mix_geom){3 * C, 3 * C, 3 * C, 3 * C, 2 * C, 2 * C, 2 * C, 2 * C};
    if (c->d[2] == 2)
        return (struct mix_geom){C + 3, C + 1, 2 * C + 5, C + 2, 1, 2, 3, 1};
    return (struct mix_geom){C, C, C, C, 0, 0, 0, 0};
}

/* view i at `at` with rows `stride` apart into buffer buf */
static void mix_view(const struct parity_case *c, int64_t *n, int64_t *at, int buf, int i,
                     int stride, int start)
{
    const int64_t M = c->d[0], C = c->d[1];
    n[i] = M > 0 ? (M - 1) * stride + C : 0;
    at[i] = start;
    n[buf] = start + n[i] + (c->d[2] != 0);
}

enum { MX_OBUF, MX_OUT, MX_ABUF, MX_A, MX_BBUF, MX_B, MX_LAM };

static void mix_forward_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                               int64_t *at)
{
    struct mix_geom g = mix_geom_of(c);
    mix_view(c, n, at, MX_OBUF, MX_OUT, g.out_stride, g.out_at);
    mix_view(c, n, at, MX_ABUF, MX_A, g.a_stride, g.a_at);
    mix_view(c, n, at, MX_BBUF, MX_B, g.b_stride, g.b_at);
    n[MX_LAM] = 1;
}

static double mix_forward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                               int step)
{
    struct mix_geom g = mix_geom_of(c);
    k_mix_forward(ctx, t[MX_OUT], t[MX_A], t[MX_B], t[MX_LAM], c->d[0], c->d[1], g.out_stride,
                  g.a_stride, g.b_stride);
    return 0;
}

/* C whole vectors (64, 256) and ragged (1, 37, 40: whole f32 vectors, not
 * bf16 ones); F-Lite's layout and odd strides; M = 0; absent (bit 0): no
 * lam, a strided copy; views only 2 or 4 bytes aligned. */
static const struct parity_case MIX_FORWARD_CASES[] = {
    {PD(5, 64, 0)},  {PD(7, 37, 0)},  {PD(1, 1, 0)},   {PD(33, 64, 1)},
    {PD(6, 40, 1)},  {PD(9, 40, 2)},  {PD(40, 256, 1)}, {PD(0, 8, 1)},
    {PD(5, 64, 0), .absent = 1},      {PD(33, 64, 1), .absent = 1},
    {PD(9, 37, 2), .absent = 1},      {PD(33, 64, 1), .offset = 1},
    {PD(7, 37, 0), .offset = 1},      {PD(9, 40, 2), .offset = 1, .absent = 1},
};

/* lam near F-Lite's 0.5 start */
const struct parity_op parity_mix_forward = {
    .name = "mix_forward",
    .args = {[MX_OBUF] = ARG("obuf", PA_OUT | PA_EXACT),
             [MX_OUT] = ARG("out", PA_OUT, .view = "obuf"),
             [MX_ABUF] = ARG("abuf", PA_IN),
             [MX_A] = ARG("a", PA_IN, .view = "abuf"),
             [MX_BBUF] = ARG("bbuf", PA_IN),
             [MX_B] = ARG("b", PA_IN, .view = "bbuf"),
             [MX_LAM] = ARG("lam", PA_IN | PA_OPT, .scale = 0.3f, .shift = 0.5f)},
    .layout = mix_forward_layout,
    .call = mix_forward_call,
    PARITY_CASES(MIX_FORWARD_CASES),
};

enum { MB_DABUF, MB_DA, MB_DB, MB_DLAM, MB_DOBUF, MB_DOUT, MB_ABUF, MB_A, MB_BBUF, MB_B, MB_LAM };

static void mix_backward_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                                int64_t *at)
{
    struct mix_geom g = mix_geom_of(c);
    mix_view(c, n, at, MB_DABUF, MB_DA, g.a_stride, g.a_at);
    mix_view(c, n, at, MB_DOBUF, MB_DOUT, g.dout_stride, g.dout_at);
    mix_view(c, n, at, MB_ABUF, MB_A, g.a_stride, g.a_at);
    mix_view(c, n, at, MB_BBUF, MB_B, g.b_stride, g.b_at);
    n[MB_DB] = (int64_t)c->d[0] * c->d[1];
    n[MB_DLAM] = n[MB_LAM] = 1;
}

/* The call, and then dlam alone twice more from 0 into tensors of its own:
 * the same bits both times on either backend (the sum's order is fixed). */
static double mix_backward_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                                int step)
{
    struct mix_geom g = mix_geom_of(c);
    const int M = c->d[0], C = c->d[1];
    k_mix_backward(ctx, t[MB_DA], t[MB_DB], t[MB_DLAM], t[MB_DOUT], t[MB_A], t[MB_B], t[MB_LAM],
                   M, C, g.dout_stride, g.a_stride, g.b_stride);
    if (!t[MB_DLAM].data)
        return 0;
    const float zero = 0.0f;
    float got[2];
    for (int r = 0; r < 2; r++) {
        struct tensor d = test_tensor(ctx, KDT_F32, &zero, 1);
        k_mix_backward(ctx, tensor_none(), tensor_none(), d, t[MB_DOUT], t[MB_A], t[MB_B],
                       t[MB_LAM], M, C, g.dout_stride, g.a_stride, g.b_stride);
        k_download_f32(ctx, &got[r], d, 1);
        k_free(ctx, &d);
    }
    if (memcmp(&got[0], &got[1], sizeof got[0]) != 0)
        test_fail(__FILE__, __LINE__, "mix_backward on %s: dlam %.9g, then %.9g",
                  ctx->device == DEVICE_CPU ? "cpu" : "cuda", (double)got[0], (double)got[1]);
    return 0;
}

/* As the forward's, and rows enough for several blocks of dlam's partials
 * (300 x 256) in every dtype; absent: bit 0 da, bit 1 db, bit 2 dlam, bit 3
 * lam (then db and dlam too: da += dout), only dlam, nothing but da. */
static const struct parity_case MIX_BACKWARD_CASES[] = {
    {PD(5, 64, 0)},  {PD(7, 37, 0)},  {PD(1, 1, 0)},    {PD(33, 64, 1)},
    {PD(6, 40, 1)},  {PD(9, 40, 2)},  {PD(300, 256, 1)}, {PD(0, 8, 1)},
    {PD(33, 64, 1), .absent = 1},     {PD(33, 64, 1), .absent = 2},
    {PD(33, 64, 1), .absent = 4},     {PD(33, 64, 1), .absent = 3},
    {PD(33, 64, 1), .absent = 6},     {PD(33, 64, 1), .absent = 0xe},
    {PD(9, 37, 2), .absent = 0xe},    {PD(33, 64, 1), .offset = 1},
    {PD(7, 37, 0), .offset = 1},      {PD(9, 40, 2), .offset = 1, .absent = 2},
};

const struct parity_op parity_mix_backward = {
    .name = "mix_backward",
    .args = {[MB_DABUF] = ARG("dabuf", PA_ACC | PA_EXACT),
             [MB_DA] = ARG("da", PA_ACC | PA_OPT, .view = "dabuf"),
             [MB_DB] = ARG("db", PA_ACC | PA_OPT | PA_EXACT),
             [MB_DLAM] = ARG("dlam", PA_ACC | PA_OPT | PA_F32),
             [MB_DOBUF] = ARG("dobuf", PA_IN),
             [MB_DOUT] = ARG("dout", PA_IN, .view = "dobuf"),
             [MB_ABUF] = ARG("abuf", PA_IN),
             [MB_A] = ARG("a", PA_IN, .view = "abuf"),
             [MB_BBUF] = ARG("bbuf", PA_IN),
             [MB_B] = ARG("b", PA_IN, .view = "bbuf"),
             [MB_LAM] = ARG("lam", PA_IN | PA_OPT, .scale = 0.3f, .shift = 0.5f)},
    .layout = mix_backward_layout,
    .call = mix_backward_call,
    PARITY_CASES(MIX_BACKWARD_CASES),
};
