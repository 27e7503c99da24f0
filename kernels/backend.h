/* A backend: one table of entry points per device, set on the context by
 * kctx_init; the dispatchers (kernels/ops/) check a call once and go
 * through the table, so no dispatcher knows which backends exist.
 *
 * Entries take plain pointers the dispatcher has checked (devices, dtypes,
 * sizes): NULL for an absent tensor where kernels.h allows one, `dt` the
 * dtype of the call's activations. The CPU's table is kernels/cpu/backend.c,
 * CUDA's is in kernels/backends.c, which registers the backends this build
 * has. Internal to kernels/: models call kernels.h. */
#ifndef DIT_KERNELS_BACKEND_H
#define DIT_KERNELS_BACKEND_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

#define KDT_BIT(dt) (1u << (unsigned)(dt))

struct kbackend {
    const char *name; /* as device_name(): "cpu", "cuda" */
    enum device_kind device;
    unsigned act_dtypes; /* KDT_BIT of each dtype its kernels keep activations in */
    int host_memory;     /* tensors live in host memory, so the dispatcher may read them */
    int stateful;        /* ctx->backend holds its state: a context without one is unusable */
    /* The largest C / NH attention takes, forward and backward; 0: any. */
    int max_head_size_forward, max_head_size_backward;

    /* Devices visible; 0 without a driver or a device. */
    int (*device_count)(void);
    /* -1 with err_set(). */
    int (*ctx_init)(struct kctx *ctx);
    void (*ctx_free)(struct kctx *ctx);

    /* Memory: -1 with err_set() naming the size; free takes the bytes as
     * allocated (the running count needs them). */
    int (*mem_alloc)(struct kctx *ctx, void **ptr, size_t bytes);
    void (*mem_free)(struct kctx *ctx, void *ptr, size_t bytes);
    void (*mem_usage)(struct kctx *ctx, size_t *now, size_t *peak);
    void (*mem_upload)(struct kctx *ctx, void *dst, const void *host_src, size_t bytes);
    /* Waits for every earlier op first. */
    void (*mem_download)(struct kctx *ctx, void *host_dst, const void *src, size_t bytes);
    /* dst and src may overlap (memmove). */
    void (*mem_copy)(struct kctx *ctx, void *dst, const void *src, size_t bytes);
    void (*sync)(struct kctx *ctx);
    /* f32 elements of attention scratch, from the context's device and
     * threads only (planning asks before any context is set up). */
    int64_t (*attention_scratch)(const struct kctx *ctx, int B, int T, int NH);
    /* f32 elements of attention_bias_forward's scratch, likewise. */
    int64_t (*attention_bias_scratch)(const struct kctx *ctx, int B, int Tq, int Tk, int NH,
                                      int HS);
    /* f32 elements of attention_bias_backward's scratch, likewise. */
    int64_t (*attention_bias_backward_scratch)(const struct kctx *ctx, int B, int Tq, int Tk,
                                               int NH, int HS);
    /* f32 elements of conv2d_forward's im2col scratch, likewise. */
    int64_t (*conv2d_scratch)(const struct kctx *ctx, int C, int H, int W, int OC, int k,
                              int stride, int pad_lo, int pad_hi);

    /* The ops, one entry per line of kernels/ops.def. */
#define KOP(name, family, dtypes, ret, params) ret(*name) params;
#include "kernels/ops.def"
#undef KOP
};

extern const struct kbackend kbackend_cpu;

/* The backend of device in this build; NULL when the build has none. */
const struct kbackend *kbackend_for(enum device_kind device);

/* The first op of kernels/ops.def the table lacks; NULL when complete. */
const char *kbackend_missing(const struct kbackend *be);

#endif
