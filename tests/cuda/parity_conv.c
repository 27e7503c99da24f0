/* Parity specs of the conv family (tests/cuda/parity.h): conv2d for 3x3
 * stride 1 (pad 1,1 and 0,0), 3x3 stride 2 after diffusers' F.pad (pad 0,1,
 * odd and even sizes), 1x1 (the plain product, no scratch) with and without
 * bias, channels 3 -> 8, 8 -> 12 and past one 256-channel product (264), two
 * images (two pixel blocks), tensors only 2 or 4 bytes aligned; nearest 2x
 * upsampling and the per-batch transpose, which are permutations, so bit
 * for bit. Shapes stay tiny: the emulator runs every CUDA thread. */
#include "tests/cuda/parity.h"

enum { CV_OUT, CV_INP, CV_WEIGHT, CV_BIAS, CV_SCRATCH };

/* A case's dims: B, C, H, W, OC, k, stride, and both pads in one (the
 * case holds 8 dims). */
#define PADS(lo, hi) ((lo) * 8 + (hi))
#define PAD_LO(c) ((c)->d[7] / 8)
#define PAD_HI(c) ((c)->d[7] % 8)

static int conv_out_size(int n, const struct parity_case *c)
{
    return (n + PAD_LO(c) + PAD_HI(c) - c->d[5]) / c->d[6] + 1;
}

static void conv_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                        int64_t *at)
{
    int64_t B = c->d[0], C = c->d[1], H = c->d[2], W = c->d[3], OC = c->d[4], k = c->d[5];
    n[CV_OUT] = B * OC * conv_out_size((int)H, c) * conv_out_size((int)W, c);
    n[CV_INP] = B * C * H * W;
    n[CV_WEIGHT] = OC * C * k * k;
    n[CV_BIAS] = OC;
    n[CV_SCRATCH] = k_conv2d_scratch(ctx, (int)C, (int)H, (int)W, (int)OC, (int)k, c->d[6], PAD_LO(c),
                                     PAD_HI(c));
}

static double conv_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                        int step)
{
    k_conv2d_forward(ctx, t[CV_OUT], t[CV_INP], t[CV_WEIGHT], t[CV_BIAS], t[CV_SCRATCH], c->d[0],
                     c->d[1], c->d[2], c->d[3], c->d[4], c->d[5], c->d[6], PAD_LO(c), PAD_HI(c));
    return 0;
}

/* B, C, H, W, OC, k, stride, pads */
static const struct parity_case CONV_CASES[] = {
    /* 3x3 stride 1, pad 1,1: the VAE's convs; conv_in's 3 channels */
    {PD(2, 3, 7, 5, 8, 3, 1, PADS(1, 1))},
    {PD(1, 8, 6, 6, 12, 3, 1, PADS(1, 1))},
    /* no padding: the output shrinks */
    {PD(1, 4, 6, 7, 5, 3, 1, PADS(0, 0))},
    /* the downsample: stride 2 after F.pad(x, (0, 1, 0, 1)), even and odd */
    {PD(2, 4, 8, 6, 8, 3, 2, PADS(0, 1))},
    {PD(1, 3, 7, 9, 8, 3, 2, PADS(0, 1))},
    /* 1x1: one product per image, no scratch; and without bias */
    {PD(2, 8, 5, 7, 12, 1, 1, PADS(0, 0))},
    {PD(2, 8, 5, 7, 12, 1, 1, PADS(0, 0)), .absent = 1},
    {PD(2, 3, 7, 5, 8, 3, 1, PADS(1, 1)), .absent = 1},
    /* two products of output channels, 256 and 8 */
    {PD(1, 2, 3, 4, 264, 3, 1, PADS(1, 1))},
    /* tensors 2 or 4 bytes aligned */
    {PD(2, 3, 7, 5, 8, 3, 1, PADS(1, 1)), .offset = 1},
    {PD(2, 8, 5, 7, 12, 1, 1, PADS(0, 0)), .offset = 1},
};

/* Weights of about 1/sqrt(fan-in), so outputs stay of unit size and the
 * bias is not lost in them. */
const struct parity_op parity_conv2d_forward = {
    .name = "conv2d_forward",
    .args = {[CV_OUT] = ARG("out", PA_OUT),
             [CV_INP] = ARG("inp", PA_IN),
             [CV_WEIGHT] = ARG("weight", PA_IN, .scale = 0.25f),
             [CV_BIAS] = ARG("bias", PA_IN | PA_OPT, .scale = 0.5f),
             [CV_SCRATCH] = ARG("scratch", PA_SCRATCH)},
    .layout = conv_layout,
    .call = conv_call,
    PARITY_CASES(CONV_CASES),
};

enum { RS_OUT, RS_INP };

/* B, C, H, W */
static void upsample_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                            int64_t *at)
{
    n[RS_INP] = (int64_t)c->d[0] * c->d[1] * c->d[2] * c->d[3];
    n[RS_OUT] = 4 * n[RS_INP];
}

static double upsample_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                            int step)
{
    k_upsample_nearest2x_forward(ctx, t[RS_OUT], t[RS_INP], c->d[0], c->d[1], c->d[2], c->d[3]);
    return 0;
}

static const struct parity_case UPSAMPLE_CASES[] = {
    {PD(2, 3, 4, 5)},
    {PD(1, 1, 1, 1)},
    {PD(1, 2, 3, 7), .offset = 1},
};

const struct parity_op parity_upsample_nearest2x_forward = {
    .name = "upsample_nearest2x_forward",
    .args = {[RS_OUT] = ARG("out", PA_OUT | PA_EXACT), [RS_INP] = ARG("inp", PA_IN)},
    .layout = upsample_layout,
    .call = upsample_call,
    PARITY_CASES(UPSAMPLE_CASES),
};

/* B, M, N */
static void transpose_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                             int64_t *at)
{
    n[RS_OUT] = n[RS_INP] = (int64_t)c->d[0] * c->d[1] * c->d[2];
}

static double transpose_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                             int step)
{
    k_transpose_forward(ctx, t[RS_OUT], t[RS_INP], c->d[0], c->d[1], c->d[2]);
    return 0;
}

static const struct parity_case TRANSPOSE_CASES[] = {
    /* one tile, partial */
    {PD(2, 8, 12)},
    /* 3 x 3 tiles, the last ones partial */
    {PD(1, 70, 33)},
    /* whole tiles */
    {PD(1, 64, 32)},
    /* a row, a column */
    {PD(3, 1, 5)},
    {PD(2, 5, 1)},
    {PD(2, 40, 3), .offset = 1},
};

const struct parity_op parity_transpose_forward = {
    .name = "transpose_forward",
    .args = {[RS_OUT] = ARG("out", PA_OUT | PA_EXACT), [RS_INP] = ARG("inp", PA_IN)},
    .layout = transpose_layout,
    .call = transpose_call,
    PARITY_CASES(TRANSPOSE_CASES),
};
