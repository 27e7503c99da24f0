/* Memory: the arenas models allocate before the first step, and the moves
 * between host and device. */
#include "kernels/cpu/cpu.h"
#include "kernels/ops/dispatch.h"

#include <inttypes.h>
#include <stdlib.h>

int k_alloc(struct kctx *ctx, struct tensor *t, enum kdtype dt, int64_t n)
{
    const char *op = "alloc";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    t->dtype = dt;
    t->device = ctx->device;
    t->n = n;
    t->data = NULL;
    return ctx->ops->mem_alloc(ctx, &t->data, (size_t)n * kdtype_bytes(dt));
}

void k_free(struct kctx *ctx, struct tensor *t)
{
    if (!t->data)
        return;
    ctx->ops->mem_free(ctx, t->data, (size_t)t->n * kdtype_bytes(t->dtype));
    t->data = NULL;
    t->n = 0;
}

void k_mem_usage(struct kctx *ctx, int64_t *now, int64_t *peak)
{
    size_t n, p;
    ctx->ops->mem_usage(ctx, &n, &p);
    *now = (int64_t)n;
    *peak = (int64_t)p;
}

void k_upload(struct kctx *ctx, struct tensor dst, const void *host, int64_t n)
{
    const char *op = "upload";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    void *pd = op_check_any(ctx, op, "dst", dst, n);
    if (n > 0 && !host)
        op_abort(op, "host is NULL");
    size_t bytes = (size_t)n * kdtype_bytes(dst.dtype);
    if (bytes)
        ctx->ops->mem_upload(ctx, pd, host, bytes);
}

void k_download(struct kctx *ctx, void *host, struct tensor src, int64_t n)
{
    const char *op = "download";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    void *ps = op_check_any(ctx, op, "src", src, n);
    if (n > 0 && !host)
        op_abort(op, "host is NULL");
    size_t bytes = (size_t)n * kdtype_bytes(src.dtype);
    if (bytes)
        ctx->ops->mem_download(ctx, host, ps, bytes);
}

/* The f32 transfers convert on the host, through the CPU's conversion
 * (libcommon/half), whatever the device. */
void k_upload_f32(struct kctx *ctx, struct tensor dst, const float *host, int64_t n)
{
    if (dst.dtype == KDT_F32) {
        k_upload(ctx, dst, host, n);
        return;
    }
    uint16_t *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
    if (!tmp)
        op_abort("upload_f32", "out of host memory for %" PRId64 " values", n);
    cpu_convert(tmp, dst.dtype, host, KDT_F32, n);
    /* No wait before the free: an upload from pageable memory has copied
     * it out by the time the call returns (cudaMemcpyAsync's rule). */
    k_upload(ctx, dst, tmp, n);
    free(tmp);
}

void k_download_f32(struct kctx *ctx, float *host, struct tensor src, int64_t n)
{
    if (src.dtype == KDT_F32) {
        k_download(ctx, host, src, n);
        return;
    }
    uint16_t *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
    if (!tmp)
        op_abort("download_f32", "out of host memory for %" PRId64 " values", n);
    k_download(ctx, tmp, src, n);
    cpu_convert(host, KDT_F32, tmp, src.dtype, n);
    free(tmp);
}

void k_copy(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n)
{
    const char *op = "copy";
    op_check_ctx(ctx, op);
    op_check_count(op, n);
    void *pd = op_check_any(ctx, op, "dst", dst, n);
    void *ps = op_check_any(ctx, op, "src", src, n);
    if (dst.dtype != src.dtype)
        op_abort(op, "dst is %s but src is %s (k_convert converts)", kdtype_name(dst.dtype),
                 kdtype_name(src.dtype));
    size_t bytes = (size_t)n * kdtype_bytes(dst.dtype);
    if (bytes && pd != ps)
        ctx->ops->mem_copy(ctx, pd, ps, bytes);
}
