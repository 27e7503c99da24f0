/* Parity specs of the patch ops (tests/cuda/parity.h): patchify,
 * unpatchify and its backward are permutations, so bit for bit in every
 * dtype; patches of 1 to 4, non-square images, one channel, and views only
 * 2 or 4 bytes aligned. */
#include "tests/cuda/parity.h"

enum { P_OUT, P_INP };

/* B, CH, H, W, p: as many token values as pixels */
static void patch_layout(const struct kctx *ctx, const struct parity_case *c, int64_t *n,
                         int64_t *at)
{
    n[P_OUT] = n[P_INP] = (int64_t)c->d[0] * c->d[1] * c->d[2] * c->d[3];
}

static double patchify_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                            int step)
{
    k_patchify_forward(ctx, t[P_OUT], t[P_INP], c->d[0], c->d[1], c->d[2], c->d[3], c->d[4]);
    return 0;
}

static double unpatchify_call(struct kctx *ctx, struct tensor *t, const struct parity_case *c,
                              int step)
{
    k_unpatchify_forward(ctx, t[P_OUT], t[P_INP], c->d[0], c->d[1], c->d[2], c->d[3], c->d[4]);
    return 0;
}

static double unpatchify_backward_call(struct kctx *ctx, struct tensor *t,
                                       const struct parity_case *c, int step)
{
    k_unpatchify_backward(ctx, t[P_OUT], t[P_INP], c->d[0], c->d[1], c->d[2], c->d[3],
                          c->d[4]);
    return 0;
}

#define PATCH_CASES                                                                           \
    {PD(2, 3, 8, 12, 2)}, {PD(1, 4, 8, 8, 4)}, {PD(3, 1, 6, 2, 1)}, {PD(1, 5, 3, 3, 3)},      \
        {PD(2, 3, 8, 12, 2), .offset = 1}

static const struct parity_case PATCH_FORWARD_CASES[] = {PATCH_CASES};
static const struct parity_case PATCH_BACKWARD_CASES[] = {PATCH_CASES,
                                                          {PD(2, 3, 8, 12, 2), .absent = 1}};

const struct parity_op parity_patchify_forward = {
    .name = "patchify_forward",
    .args = {[P_OUT] = ARG("out", PA_OUT | PA_EXACT), [P_INP] = ARG("img", PA_IN)},
    .layout = patch_layout,
    .call = patchify_call,
    PARITY_CASES(PATCH_FORWARD_CASES),
};

const struct parity_op parity_unpatchify_forward = {
    .name = "unpatchify_forward",
    .args = {[P_OUT] = ARG("img", PA_OUT | PA_EXACT), [P_INP] = ARG("tok", PA_IN)},
    .layout = patch_layout,
    .call = unpatchify_call,
    PARITY_CASES(PATCH_FORWARD_CASES),
};

const struct parity_op parity_unpatchify_backward = {
    .name = "unpatchify_backward",
    .args = {[P_OUT] = ARG("dtok", PA_OUT | PA_EXACT | PA_OPT), [P_INP] = ARG("dimg", PA_IN)},
    .layout = patch_layout,
    .call = unpatchify_backward_call,
    PARITY_CASES(PATCH_BACKWARD_CASES),
};
