/* The context: which backend a run's ops go to (its table, from
 * kernels/backends.c), threads, and the backend's own state. */
#include "kernels/ops/dispatch.h"
#include "libcommon/error.h"

const char *kdtype_name(enum kdtype dt)
{
    switch (dt) {
    case KDT_F32: return "f32";
    case KDT_BF16: return "bf16";
    case KDT_F16: return "f16";
    case KDT_U8: return "u8";
    }
    return "unknown dtype";
}

int kctx_init(struct kctx *ctx, enum device_kind device, int threads)
{
    ctx->device = device;
    ctx->threads = threads;
    ctx->backend = NULL;
    ctx->ops = NULL;
    ctx->mem_now = ctx->mem_peak = 0;
    if (device != DEVICE_CPU && device != DEVICE_CUDA) {
        err_set("kernel context: unknown device %d", (int)device);
        return -1;
    }
    /* The CPU's is always built in: only CUDA's can be missing. */
    const struct kbackend *be = kbackend_for(device);
    if (!be) {
        err_set("this build has no CUDA backend (nvcc was not found at build time)");
        return -1;
    }
    /* A table short of an op would crash at its first call; refuse it here,
     * naming the op. */
    const char *missing = kbackend_missing(be);
    if (missing) {
        err_set("the %s backend lacks %s", be->name, missing);
        return -1;
    }
    if (be->ctx_init(ctx) != 0)
        return -1;
    ctx->ops = be;
    return 0;
}

void kctx_free(struct kctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->ops)
        ctx->ops->ctx_free(ctx);
    ctx->backend = NULL;
}

void k_sync(struct kctx *ctx)
{
    op_check_ctx(ctx, "sync");
    ctx->ops->sync(ctx);
}
