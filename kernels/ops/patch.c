/* Patches: the patch embedding's im2col and the final layer's unpatchify. */
#include "kernels/ops/dispatch.h"

static void check_patch_dims(const char *op, int B, int CH, int H, int W, int p)
{
    DIMS("B, CH, H, W, p", B, CH, H, W, p);
    if (p == 0 || H % p != 0 || W % p != 0)
        op_abort(op, "image %dx%d is not a whole number of %dx%d patches", H, W, p, p);
}

void k_patchify_forward(struct kctx *ctx, struct tensor out, struct tensor img, int B, int CH,
                        int H, int W, int p)
{
    const char *op = "patchify_forward";
    op_check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W; /* a permutation: as many token values as pixels */
    enum kdtype dt = op_act_dtype(ctx, op, "img", img);
    void *po = OUT(out, n);
    void *pi = IN(img, n);
    ctx->ops->patchify_forward(ctx, po, pi, dt, B, CH, H, W, p);
}

void k_unpatchify_forward(struct kctx *ctx, struct tensor img, struct tensor tok, int B, int CH,
                          int H, int W, int p)
{
    const char *op = "unpatchify_forward";
    op_check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W;
    enum kdtype dt = op_act_dtype(ctx, op, "tok", tok);
    void *pi = OUT(img, n);
    void *pt = IN(tok, n);
    ctx->ops->unpatchify_forward(ctx, pi, pt, dt, B, CH, H, W, p);
}

void k_unpatchify_backward(struct kctx *ctx, struct tensor dtok, struct tensor dimg, int B,
                           int CH, int H, int W, int p)
{
    const char *op = "unpatchify_backward";
    op_check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W;
    enum kdtype dt = op_act_dtype(ctx, op, "dimg", dimg);
    void *pdt = GRAD(dtok, n);
    void *pdi = IN(dimg, n);
    if (pdt)
        ctx->ops->unpatchify_backward(ctx, pdt, pdi, dt, B, CH, H, W, p);
}
