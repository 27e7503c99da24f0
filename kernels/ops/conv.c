/* Convolution and resampling, forward only (the frozen VAE), and the
 * scratch the convolution needs. */
#include "kernels/ops/dispatch.h"

#include <limits.h>
#include <stdint.h>

/* The geometry of a convolution, checked; *Ho and *Wo its output size. */
static void check_conv_geometry(const char *op, int C, int H, int W, int k, int stride,
                                int pad_lo, int pad_hi, int *Ho, int *Wo)
{
    DIMS("C, H, W, k, stride, pad_lo, pad_hi", C, H, W, k, stride, pad_lo, pad_hi);
    if (k != 1 && k != 3)
        op_abort(op, "kernel size %d; 1 and 3 are the ones there are", k);
    if (stride != 1 && stride != 2)
        op_abort(op, "stride %d; 1 and 2 are the ones there are", stride);
    if (pad_lo > k || pad_hi > k)
        op_abort(op, "padding %d,%d is wider than the %dx%d kernel", pad_lo, pad_hi, k, k);
    if (C == 0 || H == 0 || W == 0)
        op_abort(op, "an empty input (C %d, H %d, W %d)", C, H, W);
    /* Checked before dividing: C's division truncates a negative toward 0. */
    if (H + pad_lo + pad_hi < k || W + pad_lo + pad_hi < k)
        op_abort(op, "the padded input %dx%d is smaller than the %dx%d kernel",
                 H + pad_lo + pad_hi, W + pad_lo + pad_hi, k, k);
    *Ho = (H + pad_lo + pad_hi - k) / stride + 1;
    *Wo = (W + pad_lo + pad_hi - k) / stride + 1;
    /* The products take a plane's pixels and a pixel's features as int. */
    if ((int64_t)H * W > INT_MAX || (int64_t)*Ho * *Wo > INT_MAX || (int64_t)C * k * k > INT_MAX)
        op_abort(op, "a %dx%d image of %d channels is past the int range of a product", H, W,
                 C);
}

/* out and inp are distinct buffers: these ops read inp after writing out. */
static void check_disjoint(const char *op, struct tensor out, struct tensor inp)
{
    if (!out.data || !inp.data)
        return;
    uintptr_t o = (uintptr_t)out.data, i = (uintptr_t)inp.data;
    uintptr_t o_end = o + (uintptr_t)out.n * kdtype_bytes(out.dtype);
    uintptr_t i_end = i + (uintptr_t)inp.n * kdtype_bytes(inp.dtype);
    if (o < i_end && i < o_end)
        op_abort(op, "out and inp overlap");
}

/* Planning asks before any context is set up (only ctx->device and
 * ctx->threads are read), so the table comes from the device, as for
 * k_attention_scratch. */
int64_t k_conv2d_scratch(const struct kctx *ctx, int C, int H, int W, int OC, int k, int stride,
                         int pad_lo, int pad_hi)
{
    int Ho, Wo;
    check_conv_geometry("conv2d_scratch", C, H, W, k, stride, pad_lo, pad_hi, &Ho, &Wo);
    const struct kbackend *be = kbackend_for(ctx->device);
    return (be ? be : &kbackend_cpu)->conv2d_scratch(ctx, C, H, W, OC, k, stride, pad_lo, pad_hi);
}

void k_conv2d_forward(struct kctx *ctx, struct tensor out, struct tensor inp, struct tensor weight,
                      struct tensor bias, struct tensor scratch, int B, int C, int H, int W,
                      int OC, int k, int stride, int pad_lo, int pad_hi)
{
    const char *op = "conv2d_forward";
    op_check_ctx(ctx, op);
    DIMS("B, OC", B, OC);
    int Ho, Wo;
    check_conv_geometry(op, C, H, W, k, stride, pad_lo, pad_hi, &Ho, &Wo);
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, (int64_t)B * OC * Ho * Wo);
    void *pi = IN(inp, (int64_t)B * C * H * W);
    void *pw = IN(weight, (int64_t)OC * C * k * k);
    void *pb = op_check_tensor(ctx, op, "bias", bias, OC, OPTIONAL, EXACT, dt);
    /* An empty scratch (a 1x1 stride-1 conv) may be absent. */
    float *ps = op_check_tensor(ctx, op, "scratch", scratch,
                                k_conv2d_scratch(ctx, C, H, W, OC, k, stride, pad_lo, pad_hi),
                                REQUIRED, AT_LEAST, KDT_F32);
    check_disjoint(op, out, inp);
    ctx->ops->conv2d_forward(ctx, po, pi, pw, pb, ps, dt, B, C, H, W, OC, k, stride, pad_lo,
                             pad_hi);
}

void k_upsample_nearest2x_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int B,
                                  int C, int H, int W)
{
    const char *op = "upsample_nearest2x_forward";
    op_check_ctx(ctx, op);
    DIMS("B, C, H, W", B, C, H, W);
    int64_t n = (int64_t)B * C * H * W;
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, 4 * n);
    void *pi = IN(inp, n);
    check_disjoint(op, out, inp);
    if (n > 0)
        ctx->ops->upsample_nearest2x_forward(ctx, po, pi, dt, B, C, H, W);
}

void k_transpose_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int B, int M,
                         int N)
{
    const char *op = "transpose_forward";
    op_check_ctx(ctx, op);
    DIMS("B, M, N", B, M, N);
    int64_t n = (int64_t)B * M * N;
    enum kdtype dt = op_act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    check_disjoint(op, out, inp);
    if (n > 0)
        ctx->ops->transpose_forward(ctx, po, pi, dt, B, M, N);
}
