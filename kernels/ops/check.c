/* The dispatchers' contract checks (kernels/ops/dispatch.h). */
#include "kernels/ops/dispatch.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

_Noreturn void op_abort(const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dit: kernel %s: ", op);
    vfprintf(stderr, fmt, ap);
    fputs(" (a bug in the caller)\n", stderr);
    va_end(ap);
    abort();
}

void op_check_ctx(const struct kctx *ctx, const char *op)
{
    if (!ctx)
        op_abort(op, "no kernel context");
    if (!ctx->ops) {
        if (!kbackend_for(ctx->device))
            op_abort(op, "context on %s, which has no backend in this build",
                     device_name(ctx->device));
        op_abort(op, "no kernel context");
    }
    if (ctx->ops->stateful && !ctx->backend)
        op_abort(op, "no kernel context");
}

/* "f32 only", "f32, bf16, f16": the dtypes of a mask, for messages. */
static void dtype_list(unsigned mask, char *buf, size_t size)
{
    size_t at = 0;
    int count = 0;
    buf[0] = '\0';
    for (int dt = KDT_F32; dt <= KDT_F16; dt++)
        if (mask & KDT_BIT(dt)) {
            at += (size_t)snprintf(buf + at, at < size ? size - at : 0, "%s%s",
                                   count++ ? ", " : "", kdtype_name((enum kdtype)dt));
            if (at >= size)
                return;
        }
    if (count == 1)
        snprintf(buf + at, size - at, " only");
}

enum kdtype op_act_dtype(const struct kctx *ctx, const char *op, const char *name,
                         struct tensor t)
{
    if (t.dtype != KDT_F32 && t.dtype != KDT_BF16 && t.dtype != KDT_F16)
        op_abort(op, "%s has an unknown dtype %d", name, (int)t.dtype);
    if (!(ctx->ops->act_dtypes & KDT_BIT(t.dtype))) {
        char list[32];
        dtype_list(ctx->ops->act_dtypes, list, sizeof list);
        op_abort(op, "%s is %s; the %s backend computes in %s", name, kdtype_name(t.dtype),
                 ctx->ops->name, list);
    }
    return t.dtype;
}

void *op_check_tensor(const struct kctx *ctx, const char *op, const char *name, struct tensor t,
                      int64_t need, int required, int at_least, enum kdtype dt)
{
    if (!t.data) {
        /* An empty required tensor may have no buffer at all. */
        if (required && need > 0)
            op_abort(op, "%s is absent", name);
        return NULL;
    }
    if (t.device != ctx->device)
        op_abort(op, "%s is on %s but the context is on %s", name, device_name(t.device),
                 device_name(ctx->device));
    if (t.dtype != dt)
        op_abort(op, "%s is %s where this call needs %s", name, kdtype_name(t.dtype),
                 kdtype_name(dt));
    if (at_least ? t.n < need : t.n != need)
        op_abort(op, "%s has %" PRId64 " elements, the shape needs %s%" PRId64, name, t.n,
                 at_least ? "at least " : "", need);
    return t.data;
}

void *op_check_any(const struct kctx *ctx, const char *op, const char *name, struct tensor t,
                   int64_t n)
{
    if (t.dtype != KDT_F32 && t.dtype != KDT_BF16 && t.dtype != KDT_F16 && t.dtype != KDT_U8)
        op_abort(op, "%s has an unknown dtype %d", name, (int)t.dtype);
    return op_check_tensor(ctx, op, name, t, n, REQUIRED, AT_LEAST, t.dtype);
}

void op_check_dims(const char *op, int n, const int *dims, const char *names)
{
    for (int i = 0; i < n; i++)
        if (dims[i] < 0)
            op_abort(op, "negative dimension %d among (%s)", dims[i], names);
}

void op_check_count(const char *op, int64_t n)
{
    if (n < 0)
        op_abort(op, "negative element count %" PRId64, n);
}

int64_t op_mod_extent(const char *op, int B, int C, int mod_stride)
{
    if (mod_stride < C)
        op_abort(op, "mod_stride %d is smaller than C %d", mod_stride, C);
    return B > 0 ? (int64_t)(B - 1) * mod_stride + C : 0;
}
