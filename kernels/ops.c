/* The dispatcher of kernels/kernels.h: checks every call against its shapes
 * and the context, then hands plain pointers to a backend.
 *
 * A failed check is a bug in the calling model code (a wrong shape, a tensor
 * left on the other device), never bad user input, and the arena it would
 * scribble over is shared by the whole step. So, unlike the rest of the
 * library, the dispatcher does not return an error: op_abort() names the op
 * and the problem on stderr and aborts, leaving a core at the faulty call.
 *
 * Gradient outputs (d...) may always be absent, meaning "no gradient wanted"
 * (a frozen weight, an input that needs none); then nothing is written. */
#include "kernels/kernels.h"
#include "kernels/cpu/cpu.h"
#include "libcommon/half.h"
#ifdef DIT_HAVE_CUDA
#include "kernels/cuda/cuda.h"
#endif
#include "libcommon/error.h"

#include <cblas.h>
#include <inttypes.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Noreturn void op_abort(const char *op, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static _Noreturn void op_abort(const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dit: kernel %s: ", op);
    vfprintf(stderr, fmt, ap);
    fputs(" (a bug in the caller)\n", stderr);
    va_end(ap);
    abort();
}

const char *kdtype_name(enum kdtype dt)
{
    switch (dt) {
    case KDT_F32: return "f32";
    case KDT_BF16: return "bf16";
    case KDT_F16: return "f16";
    }
    return "unknown dtype";
}

int kctx_init(struct kctx *ctx, enum device_kind device, int threads)
{
    ctx->device = device;
    ctx->threads = threads;
    ctx->backend = NULL;
    ctx->mem_now = ctx->mem_peak = 0;
    if (device == DEVICE_CUDA) {
#ifdef DIT_HAVE_CUDA
        return cuda_ctx_init(ctx);
#else
        err_set("this build has no CUDA backend (nvcc was not found at build time)");
        return -1;
#endif
    }
    if (device != DEVICE_CPU) {
        err_set("kernel context: unknown device %d", (int)device);
        return -1;
    }
    if (threads > 0)
        omp_set_num_threads(threads);
    /* One pool of threads, OpenMP's: the CPU backend splits every product
     * into per-thread sgemm calls itself (kernels/cpu/gemm.c), and OpenBLAS
     * threads of its own would only spin against those. */
    openblas_set_num_threads(1);
    return 0;
}

void kctx_free(struct kctx *ctx)
{
    if (!ctx)
        return;
#ifdef DIT_HAVE_CUDA
    if (ctx->device == DEVICE_CUDA) {
        cuda_ctx_free(ctx);
        return;
    }
#endif
    ctx->backend = NULL;
}

/* Runs the call of ctx's backend. */
#ifdef DIT_HAVE_CUDA
#define BACKEND(cuda_call, cpu_call)                                                          \
    do {                                                                                      \
        if (ctx->device == DEVICE_CUDA)                                                       \
            cuda_call;                                                                        \
        else                                                                                  \
            cpu_call;                                                                         \
    } while (0)
#else
#define BACKEND(cuda_call, cpu_call) cpu_call
#endif

/* Every call goes through here first. */
static void check_ctx(const struct kctx *ctx, const char *op)
{
    if (!ctx || (ctx->device == DEVICE_CUDA && !ctx->backend))
        op_abort(op, "no kernel context");
#ifndef DIT_HAVE_CUDA
    if (ctx->device != DEVICE_CPU)
        op_abort(op, "context on %s, which has no backend in this build",
                 device_name(ctx->device));
#endif
}

enum { OPTIONAL = 0, REQUIRED = 1 };
enum { EXACT = 0, AT_LEAST = 1 };

/* The dtype the activations of a call are kept in, taken from one of its
 * tensors: f32 on the CPU, any of f32, bf16, f16 on CUDA. */
static enum kdtype act_dtype(const struct kctx *ctx, const char *op, const char *name,
                             struct tensor t)
{
    if (t.dtype != KDT_F32 && t.dtype != KDT_BF16 && t.dtype != KDT_F16)
        op_abort(op, "%s has an unknown dtype %d", name, (int)t.dtype);
    if (ctx->device == DEVICE_CPU && t.dtype != KDT_F32)
        op_abort(op, "%s is %s; the cpu backend computes in f32 only", name,
                 kdtype_name(t.dtype));
    return t.dtype;
}

/* A tensor argument: present (or allowed absent), on the ctx's device, of
 * dtype dt, with n equal to (or, for views and scratch, at least) what the
 * shape needs. Returns the data pointer, NULL when absent. */
static void *check_tensor(const struct kctx *ctx, const char *op, const char *name,
                          struct tensor t, int64_t need, int required, int at_least,
                          enum kdtype dt)
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

/* Activations (dtype dt of the call) and f32-only tensors (statistics,
 * scratch, parameter gradients, optimizer state). */
#define IN(t, need) check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT, dt)
#define OUT(t, need) check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT, dt)
#define GRAD(t, need) check_tensor(ctx, op, #t, t, need, OPTIONAL, EXACT, dt)
#define F32(t, need) check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT, KDT_F32)
#define F32GRAD(t, need) check_tensor(ctx, op, #t, t, need, OPTIONAL, EXACT, KDT_F32)

static void check_dims(const char *op, int n, const int *dims, const char *names)
{
    for (int i = 0; i < n; i++)
        if (dims[i] < 0)
            op_abort(op, "negative dimension %d among (%s)", dims[i], names);
}

#define DIMS(names, ...)                                                                      \
    do {                                                                                      \
        const int dims_[] = {__VA_ARGS__};                                                    \
        check_dims(op, (int)(sizeof dims_ / sizeof dims_[0]), dims_, names);                 \
    } while (0)

/* Rows of a [B, k*C] modulation buffer: B rows of C values, mod_stride apart. */
static int64_t mod_extent(const char *op, int B, int C, int mod_stride)
{
    if (mod_stride < C)
        op_abort(op, "mod_stride %d is smaller than C %d", mod_stride, C);
    return B > 0 ? (int64_t)(B - 1) * mod_stride + C : 0;
}

#define MOD(t, need, required) check_tensor(ctx, op, #t, t, need, required, AT_LEAST, dt)

static void check_count(const char *op, int64_t n)
{
    if (n < 0)
        op_abort(op, "negative element count %" PRId64, n);
}

/* ---- memory --------------------------------------------------------------- */

int k_alloc(struct kctx *ctx, struct tensor *t, enum kdtype dt, int64_t n)
{
    const char *op = "alloc";
    check_ctx(ctx, op);
    check_count(op, n);
    size_t bytes = (size_t)n * kdtype_bytes(dt);
    t->dtype = dt;
    t->device = ctx->device;
    t->n = n;
    t->data = NULL;
#ifdef DIT_HAVE_CUDA
    if (ctx->device == DEVICE_CUDA)
        return cuda_mem_alloc(ctx, &t->data, bytes);
#endif
    if (bytes == 0)
        return 0;
    /* Rounded up to the alignment, as aligned_alloc wants. */
    t->data = aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!t->data) {
        err_set("out of memory: %.1f MiB wanted", bytes / 1048576.0);
        return -1;
    }
    ctx->mem_now += (int64_t)bytes;
    if (ctx->mem_now > ctx->mem_peak)
        ctx->mem_peak = ctx->mem_now;
    return 0;
}

void k_free(struct kctx *ctx, struct tensor *t)
{
    if (!t->data)
        return;
    size_t bytes = (size_t)t->n * kdtype_bytes(t->dtype);
#ifdef DIT_HAVE_CUDA
    if (ctx->device == DEVICE_CUDA)
        cuda_mem_free(ctx, t->data, bytes);
    else
#endif
    {
        free(t->data);
        ctx->mem_now -= (int64_t)bytes;
    }
    t->data = NULL;
    t->n = 0;
}

void k_mem_usage(struct kctx *ctx, int64_t *now, int64_t *peak)
{
#ifdef DIT_HAVE_CUDA
    if (ctx->device == DEVICE_CUDA) {
        size_t n, p;
        cuda_mem_usage(ctx, &n, &p);
        *now = (int64_t)n;
        *peak = (int64_t)p;
        return;
    }
#endif
    *now = ctx->mem_now;
    *peak = ctx->mem_peak;
}

/* A tensor of any dtype (for copies and conversions). */
static void *check_any(const struct kctx *ctx, const char *op, const char *name, struct tensor t,
                       int64_t n)
{
    if (t.dtype != KDT_F32 && t.dtype != KDT_BF16 && t.dtype != KDT_F16)
        op_abort(op, "%s has an unknown dtype %d", name, (int)t.dtype);
    return check_tensor(ctx, op, name, t, n, REQUIRED, AT_LEAST, t.dtype);
}

void k_upload(struct kctx *ctx, struct tensor dst, const void *host, int64_t n)
{
    const char *op = "upload";
    check_ctx(ctx, op);
    check_count(op, n);
    void *pd = check_any(ctx, op, "dst", dst, n);
    if (n > 0 && !host)
        op_abort(op, "host is NULL");
    size_t bytes = (size_t)n * kdtype_bytes(dst.dtype);
    if (bytes)
        BACKEND(cuda_mem_upload(ctx, pd, host, bytes), memcpy(pd, host, bytes));
}

void k_download(struct kctx *ctx, void *host, struct tensor src, int64_t n)
{
    const char *op = "download";
    check_ctx(ctx, op);
    check_count(op, n);
    void *ps = check_any(ctx, op, "src", src, n);
    if (n > 0 && !host)
        op_abort(op, "host is NULL");
    size_t bytes = (size_t)n * kdtype_bytes(src.dtype);
    if (bytes)
        BACKEND(cuda_mem_download(ctx, host, ps, bytes), memcpy(host, ps, bytes));
}

/* Host-side conversions for the f32 transfers, through libcommon/half. */
static void host_convert(void *dst, enum kdtype ddt, const void *src, enum kdtype sdt, int64_t n)
{
    if (ddt == sdt) {
        memcpy(dst, src, (size_t)n * kdtype_bytes(ddt));
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float v;
        switch (sdt) {
        case KDT_F32: v = ((const float *)src)[i]; break;
        case KDT_BF16: v = bf16_to_f32(((const uint16_t *)src)[i]); break;
        default: v = f16_to_f32(((const uint16_t *)src)[i]); break;
        }
        switch (ddt) {
        case KDT_F32: ((float *)dst)[i] = v; break;
        case KDT_BF16: ((uint16_t *)dst)[i] = f32_to_bf16(v); break;
        default: ((uint16_t *)dst)[i] = f32_to_f16(v); break;
        }
    }
}

void k_upload_f32(struct kctx *ctx, struct tensor dst, const float *host, int64_t n)
{
    if (dst.dtype == KDT_F32) {
        k_upload(ctx, dst, host, n);
        return;
    }
    uint16_t *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
    if (!tmp)
        op_abort("upload_f32", "out of host memory for %" PRId64 " values", n);
    host_convert(tmp, dst.dtype, host, KDT_F32, n);
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
    host_convert(host, KDT_F32, tmp, src.dtype, n);
    free(tmp);
}

void k_copy(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n)
{
    const char *op = "copy";
    check_ctx(ctx, op);
    check_count(op, n);
    void *pd = check_any(ctx, op, "dst", dst, n);
    void *ps = check_any(ctx, op, "src", src, n);
    if (dst.dtype != src.dtype)
        op_abort(op, "dst is %s but src is %s (k_convert converts)", kdtype_name(dst.dtype),
                 kdtype_name(src.dtype));
    size_t bytes = (size_t)n * kdtype_bytes(dst.dtype);
    if (bytes && pd != ps)
        BACKEND(cuda_mem_copy(ctx, pd, ps, bytes), memmove(pd, ps, bytes));
}

void k_convert(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n)
{
    const char *op = "convert";
    check_ctx(ctx, op);
    check_count(op, n);
    void *pd = check_any(ctx, op, "dst", dst, n);
    void *ps = check_any(ctx, op, "src", src, n);
    if (n > 0)
        BACKEND(cuda_convert(ctx, pd, dst.dtype, ps, src.dtype, n),
                host_convert(pd, dst.dtype, ps, src.dtype, n));
}

void k_sync(struct kctx *ctx)
{
    check_ctx(ctx, "sync");
#ifdef DIT_HAVE_CUDA
    if (ctx->device == DEVICE_CUDA)
        cuda_sync(ctx);
#endif
}

/* ---- matrix multiply ---------------------------------------------------- */

void k_gemm(struct kctx *ctx, struct tensor c, struct tensor a, struct tensor b, int M, int N,
            int K, int trans_a, int trans_b, float alpha, float beta)
{
    const char *op = "gemm";
    check_ctx(ctx, op);
    DIMS("M, N, K", M, N, K);
    enum kdtype dt = act_dtype(ctx, op, "c", c);
    void *pc = OUT(c, (int64_t)M * N);
    void *pa = IN(a, (int64_t)M * K);
    void *pb = IN(b, (int64_t)K * N);
    BACKEND(cuda_gemm(ctx, pc, pa, pb, dt, M, N, K, trans_a, trans_b, alpha, beta),
            cpu_gemm(pc, pa, pb, M, N, K, trans_a, trans_b, alpha, beta));
}

void k_linear_forward(struct kctx *ctx, struct tensor out, struct tensor inp, struct tensor weight,
                      struct tensor bias, int M, int C, int OC)
{
    const char *op = "linear_forward";
    check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    enum kdtype dt = act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)M * OC);
    void *pi = IN(inp, (int64_t)M * C);
    void *pw = IN(weight, (int64_t)OC * C);
    void *pb = check_tensor(ctx, op, "bias", bias, OC, OPTIONAL, EXACT, dt);
    BACKEND(cuda_linear_forward(ctx, po, pi, pw, pb, dt, M, C, OC),
            cpu_linear_forward(po, pi, pw, pb, M, C, OC));
}

void k_linear_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor pre,
                           struct tensor inp, struct tensor weight, struct tensor bias, int M,
                           int C, int OC)
{
    const char *op = "linear_gelu_forward";
    check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    enum kdtype dt = act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)M * OC);
    void *pp = OUT(pre, (int64_t)M * OC);
    void *pi = IN(inp, (int64_t)M * C);
    void *pw = IN(weight, (int64_t)OC * C);
    void *pb = check_tensor(ctx, op, "bias", bias, OC, OPTIONAL, EXACT, dt);
    BACKEND(cuda_linear_gelu_forward(ctx, po, pp, pi, pw, pb, dt, M, C, OC),
            (cpu_linear_forward(pp, pi, pw, pb, M, C, OC),
             cpu_gelu_forward(po, pp, (int64_t)M * OC)));
}

void k_linear_backward(struct kctx *ctx, struct tensor dinp, struct tensor dweight,
                       struct tensor dbias, struct tensor dout, struct tensor inp,
                       struct tensor weight, int M, int C, int OC)
{
    const char *op = "linear_backward";
    check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    enum kdtype dt = act_dtype(ctx, op, "dout", dout);
    void *pdi = GRAD(dinp, (int64_t)M * C);
    float *pdw = F32GRAD(dweight, (int64_t)OC * C);
    float *pdb = F32GRAD(dbias, OC);
    void *pdo = IN(dout, (int64_t)M * OC);
    void *pi = IN(inp, (int64_t)M * C);
    void *pw = IN(weight, (int64_t)OC * C);
    BACKEND(cuda_linear_backward(ctx, pdi, pdw, pdb, pdo, pi, pw, dt, M, C, OC),
            cpu_linear_backward(pdi, pdw, pdb, pdo, pi, pw, M, C, OC));
}

/* ---- normalisation and adaLN ------------------------------------------ */

void k_layernorm_forward(struct kctx *ctx, struct tensor out, struct tensor mean,
                         struct tensor rstd, struct tensor inp, int M, int C, float eps)
{
    const char *op = "layernorm_forward";
    check_ctx(ctx, op);
    DIMS("M, C", M, C);
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    enum kdtype dt = act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, (int64_t)M * C);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    void *pi = IN(inp, (int64_t)M * C);
    BACKEND(cuda_layernorm_forward(ctx, po, pm, pr, pi, dt, M, C, eps),
            cpu_layernorm_forward(po, pm, pr, pi, M, C, eps));
}

void k_layernorm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                          struct tensor inp, struct tensor mean, struct tensor rstd, int M, int C)
{
    const char *op = "layernorm_backward";
    check_ctx(ctx, op);
    DIMS("M, C", M, C);
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    enum kdtype dt = act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, (int64_t)M * C);
    void *pdo = IN(dout, (int64_t)M * C);
    void *pi = IN(inp, (int64_t)M * C);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    if (pdi)
        BACKEND(cuda_layernorm_backward(ctx, pdi, pdo, pi, pm, pr, dt, M, C),
                cpu_layernorm_backward(pdi, pdo, pi, pm, pr, M, C));
}

void k_modulate_forward(struct kctx *ctx, struct tensor out, struct tensor x, struct tensor shift,
                        struct tensor scale, int B, int T, int C, int mod_stride)
{
    const char *op = "modulate_forward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = act_dtype(ctx, op, "x", x);
    void *po = OUT(out, n);
    void *px = IN(x, n);
    void *psh = MOD(shift, ext, REQUIRED);
    void *psc = MOD(scale, ext, REQUIRED);
    BACKEND(cuda_modulate_forward(ctx, po, px, psh, psc, dt, B, T, C, mod_stride),
            cpu_modulate_forward(po, px, psh, psc, B, T, C, mod_stride));
}

void k_modulate_backward(struct kctx *ctx, struct tensor dx, struct tensor dshift,
                         struct tensor dscale, struct tensor dout, struct tensor x,
                         struct tensor scale, int B, int T, int C, int mod_stride)
{
    const char *op = "modulate_backward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = act_dtype(ctx, op, "x", x);
    void *pdx = GRAD(dx, n);
    void *pdsh = MOD(dshift, ext, OPTIONAL);
    void *pdsc = MOD(dscale, ext, OPTIONAL);
    void *pdo = IN(dout, n);
    void *px = IN(x, n);
    void *psc = MOD(scale, ext, REQUIRED);
    BACKEND(cuda_modulate_backward(ctx, pdx, pdsh, pdsc, pdo, px, psc, dt, B, T, C, mod_stride),
            cpu_modulate_backward(pdx, pdsh, pdsc, pdo, px, psc, B, T, C, mod_stride));
}

void k_adaln_forward(struct kctx *ctx, struct tensor out, struct tensor mean, struct tensor rstd,
                     struct tensor x, struct tensor shift, struct tensor scale, int B, int T,
                     int C, int mod_stride, float eps)
{
    const char *op = "adaln_forward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t M = (int64_t)B * T, n = M * C;
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    int64_t ext = mod_extent(op, B, C, mod_stride);
    enum kdtype dt = act_dtype(ctx, op, "x", x);
    void *po = OUT(out, n);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    void *px = IN(x, n);
    void *psh = MOD(shift, ext, REQUIRED);
    void *psc = MOD(scale, ext, REQUIRED);
    BACKEND(cuda_adaln_forward(ctx, po, pm, pr, px, psh, psc, dt, B, T, C, mod_stride, eps),
            cpu_adaln_forward(po, pm, pr, px, psh, psc, B, T, C, mod_stride, eps));
}

void k_adaln_backward(struct kctx *ctx, struct tensor dx, struct tensor dshift,
                      struct tensor dscale, struct tensor dout, struct tensor x,
                      struct tensor mean, struct tensor rstd, struct tensor scale, int B, int T,
                      int C, int mod_stride)
{
    const char *op = "adaln_backward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t M = (int64_t)B * T, n = M * C;
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    int64_t ext = mod_extent(op, B, C, mod_stride);
    enum kdtype dt = act_dtype(ctx, op, "x", x);
    void *pdx = GRAD(dx, n);
    void *pdsh = MOD(dshift, ext, OPTIONAL);
    void *pdsc = MOD(dscale, ext, OPTIONAL);
    void *pdo = IN(dout, n);
    void *px = IN(x, n);
    float *pm = F32(mean, M);
    float *pr = F32(rstd, M);
    void *psc = MOD(scale, ext, REQUIRED);
    if (pdx || pdsh || pdsc)
        BACKEND(cuda_adaln_backward(ctx, pdx, pdsh, pdsc, pdo, px, pm, pr, psc, dt, B, T, C,
                                    mod_stride),
                cpu_adaln_backward(pdx, pdsh, pdsc, pdo, px, pm, pr, psc, B, T, C, mod_stride));
}

void k_gated_residual_forward(struct kctx *ctx, struct tensor out, struct tensor res,
                              struct tensor y, struct tensor gate, int B, int T, int C,
                              int mod_stride)
{
    const char *op = "gated_residual_forward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = act_dtype(ctx, op, "res", res);
    void *po = OUT(out, n);
    void *pr = IN(res, n);
    void *py = IN(y, n);
    void *pg = MOD(gate, ext, REQUIRED);
    /* Elementwise, so in place is fine; a shifted overlap would read
     * elements already overwritten. */
    uintptr_t o = (uintptr_t)po, r = (uintptr_t)pr, bytes = (uintptr_t)n * kdtype_bytes(dt);
    if (o != r && n > 0 && o < r + bytes && r < o + bytes)
        op_abort(op, "out overlaps res without being the same tensor");
    BACKEND(cuda_gated_residual_forward(ctx, po, pr, py, pg, dt, B, T, C, mod_stride),
            cpu_gated_residual_forward(po, pr, py, pg, B, T, C, mod_stride));
}

void k_gated_residual_backward(struct kctx *ctx, struct tensor dy, struct tensor dgate,
                               struct tensor dres, struct tensor y, struct tensor gate, int B,
                               int T, int C, int mod_stride)
{
    const char *op = "gated_residual_backward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    enum kdtype dt = act_dtype(ctx, op, "dres", dres);
    void *pdy = GRAD(dy, n);
    void *pdg = MOD(dgate, ext, OPTIONAL);
    void *pdr = IN(dres, n);
    void *py = IN(y, n);
    void *pg = MOD(gate, ext, REQUIRED);
    BACKEND(cuda_gated_residual_backward(ctx, pdy, pdg, pdr, py, pg, dt, B, T, C, mod_stride),
            cpu_gated_residual_backward(pdy, pdg, pdr, py, pg, B, T, C, mod_stride));
}

/* ---- activations -------------------------------------------------------- */

void k_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n)
{
    const char *op = "gelu_forward";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    BACKEND(cuda_gelu_forward(ctx, po, pi, dt, n), cpu_gelu_forward(po, pi, n));
}

void k_gelu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n)
{
    const char *op = "gelu_backward";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, n);
    void *pdo = IN(dout, n);
    void *pi = IN(inp, n);
    if (pdi)
        BACKEND(cuda_gelu_backward(ctx, pdi, pdo, pi, dt, n), cpu_gelu_backward(pdi, pdo, pi, n));
}

void k_silu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n)
{
    const char *op = "silu_forward";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "inp", inp);
    void *po = OUT(out, n);
    void *pi = IN(inp, n);
    BACKEND(cuda_silu_forward(ctx, po, pi, dt, n), cpu_silu_forward(po, pi, n));
}

void k_silu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n)
{
    const char *op = "silu_backward";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "inp", inp);
    void *pdi = GRAD(dinp, n);
    void *pdo = IN(dout, n);
    void *pi = IN(inp, n);
    if (pdi)
        BACKEND(cuda_silu_backward(ctx, pdi, pdo, pi, dt, n), cpu_silu_backward(pdi, pdo, pi, n));
}

/* ---- attention ---------------------------------------------------------- */

int64_t k_attention_scratch(const struct kctx *ctx, int B, int T, int NH)
{
#ifdef DIT_HAVE_CUDA
    if (ctx->device == DEVICE_CUDA)
        return cuda_attention_scratch(B, T, NH);
#endif
    /* the CPU works one (batch, head) at a time per thread, on at most two
     * blocks of scores of 256 query rows by T keys */
    return cpu_attention_scratch(T, ctx->threads);
}

/* The CUDA kernels keep a head's row in registers and shared memory. */
#define CUDA_MAX_HEAD_SIZE 128

static void check_attention_dims(const struct kctx *ctx, const char *op, int B, int T, int C,
                                 int NH)
{
    DIMS("B, T, C, NH", B, T, C, NH);
    if (NH == 0 || C % NH != 0)
        op_abort(op, "C %d is not a multiple of NH %d", C, NH);
    if (ctx->device == DEVICE_CUDA && C / NH > CUDA_MAX_HEAD_SIZE)
        op_abort(op, "head size %d is above %d, the most the CUDA kernels take", C / NH,
                 CUDA_MAX_HEAD_SIZE);
}

void k_attention_forward(struct kctx *ctx, struct tensor out, struct tensor lse, struct tensor qkv,
                         struct tensor scratch, int B, int T, int C, int NH)
{
    const char *op = "attention_forward";
    check_ctx(ctx, op);
    check_attention_dims(ctx, op, B, T, C, NH);
    enum kdtype dt = act_dtype(ctx, op, "qkv", qkv);
    void *po = OUT(out, (int64_t)B * T * C);
    float *pl = F32(lse, (int64_t)B * NH * T);
    void *pq = IN(qkv, (int64_t)B * T * 3 * C);
    float *ps = check_tensor(ctx, op, "scratch", scratch, k_attention_scratch(ctx, B, T, NH),
                             REQUIRED, AT_LEAST, KDT_F32);
    BACKEND(cuda_attention_forward(ctx, po, pl, pq, ps, dt, B, T, C, NH),
            cpu_attention_forward(po, pl, pq, ps, scratch.n, B, T, C, NH));
}

void k_attention_backward(struct kctx *ctx, struct tensor dqkv, struct tensor dout,
                          struct tensor out, struct tensor lse, struct tensor qkv,
                          struct tensor scratch, int B, int T, int C, int NH)
{
    const char *op = "attention_backward";
    check_ctx(ctx, op);
    check_attention_dims(ctx, op, B, T, C, NH);
    enum kdtype dt = act_dtype(ctx, op, "qkv", qkv);
    void *pdq = GRAD(dqkv, (int64_t)B * T * 3 * C);
    void *pdo = IN(dout, (int64_t)B * T * C);
    void *po = IN(out, (int64_t)B * T * C);
    float *pl = F32(lse, (int64_t)B * NH * T);
    void *pq = IN(qkv, (int64_t)B * T * 3 * C);
    float *ps = check_tensor(ctx, op, "scratch", scratch, k_attention_scratch(ctx, B, T, NH),
                             REQUIRED, AT_LEAST, KDT_F32);
    if (pdq)
        BACKEND(cuda_attention_backward(ctx, pdq, pdo, po, pl, pq, ps, dt, B, T, C, NH),
                cpu_attention_backward(pdq, pdo, po, pl, pq, ps, scratch.n, B, T, C, NH));
}

/* ---- patches ------------------------------------------------------------ */

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
    check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W; /* a permutation: as many token values as pixels */
    enum kdtype dt = act_dtype(ctx, op, "img", img);
    void *po = OUT(out, n);
    void *pi = IN(img, n);
    BACKEND(cuda_patchify_forward(ctx, po, pi, dt, B, CH, H, W, p),
            cpu_patchify_forward(po, pi, B, CH, H, W, p));
}

void k_unpatchify_forward(struct kctx *ctx, struct tensor img, struct tensor tok, int B, int CH,
                          int H, int W, int p)
{
    const char *op = "unpatchify_forward";
    check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W;
    enum kdtype dt = act_dtype(ctx, op, "tok", tok);
    void *pi = OUT(img, n);
    void *pt = IN(tok, n);
    BACKEND(cuda_unpatchify_forward(ctx, pi, pt, dt, B, CH, H, W, p),
            cpu_unpatchify_forward(pi, pt, B, CH, H, W, p));
}

void k_unpatchify_backward(struct kctx *ctx, struct tensor dtok, struct tensor dimg, int B,
                           int CH, int H, int W, int p)
{
    const char *op = "unpatchify_backward";
    check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W;
    enum kdtype dt = act_dtype(ctx, op, "dimg", dimg);
    void *pdt = GRAD(dtok, n);
    void *pdi = IN(dimg, n);
    if (pdt)
        BACKEND(cuda_unpatchify_backward(ctx, pdt, pdi, dt, B, CH, H, W, p),
                cpu_unpatchify_backward(pdt, pdi, B, CH, H, W, p));
}

/* ---- embeddings --------------------------------------------------------- */

/* The table's row count follows from its size; every id must index a row.
 * Checking costs B reads, nothing next to the copy it guards; ids in device
 * memory are the model's to check before it uploads them. */
static void check_ids(const struct kctx *ctx, const char *op, const int32_t *ids, int B,
                      int64_t table_n, int C)
{
    if (B > 0 && !ids)
        op_abort(op, "ids is NULL");
    if (C == 0 && B > 0)
        op_abort(op, "C is 0");
    if (C > 0 && table_n % C != 0)
        op_abort(op, "table has %" PRId64 " elements, not a whole number of rows of %d", table_n,
                 C);
    if (ctx->device != DEVICE_CPU)
        return;
    int64_t rows = C > 0 ? table_n / C : 0;
    for (int b = 0; b < B; b++)
        if (ids[b] < 0 || ids[b] >= rows)
            op_abort(op, "ids[%d] = %" PRId32 " is outside the table's %" PRId64 " rows", b,
                     ids[b], rows);
}

void k_embedding_forward(struct kctx *ctx, struct tensor out, struct tensor table,
                         const int32_t *ids, int B, int C)
{
    const char *op = "embedding_forward";
    check_ctx(ctx, op);
    DIMS("B, C", B, C);
    enum kdtype dt = act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)B * C);
    void *pt = IN(table, table.n);
    check_ids(ctx, op, ids, B, table.n, C);
    BACKEND(cuda_embedding_forward(ctx, po, pt, ids, dt, B, C),
            cpu_embedding_forward(po, pt, ids, B, C));
}

void k_embedding_backward(struct kctx *ctx, struct tensor dtable, struct tensor dout,
                          const int32_t *ids, int B, int C)
{
    const char *op = "embedding_backward";
    check_ctx(ctx, op);
    DIMS("B, C", B, C);
    enum kdtype dt = act_dtype(ctx, op, "dout", dout);
    float *pdt = F32GRAD(dtable, dtable.n);
    void *pdo = IN(dout, (int64_t)B * C);
    if (!pdt)
        return;
    check_ids(ctx, op, ids, B, dtable.n, C);
    BACKEND(cuda_embedding_backward(ctx, pdt, pdo, ids, dt, B, C),
            cpu_embedding_backward(pdt, pdo, ids, B, C));
}

void k_timestep_embedding(struct kctx *ctx, struct tensor out, const float *t, int B, int D,
                          float max_period, float freq_shift)
{
    const char *op = "timestep_embedding";
    check_ctx(ctx, op);
    DIMS("B, D", B, D);
    if (D % 2 != 0)
        op_abort(op, "D %d is odd", D);
    if (B > 0 && !t)
        op_abort(op, "t is NULL");
    if (!(max_period > 0.0f))
        op_abort(op, "max_period %g is not positive", (double)max_period);
    if (D > 0 && (float)(D / 2) - freq_shift == 0.0f)
        op_abort(op, "freq_shift %g leaves a zero denominator for D %d", (double)freq_shift, D);
    enum kdtype dt = act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)B * D);
    BACKEND(cuda_timestep_embedding(ctx, po, t, dt, B, D, max_period, freq_shift),
            cpu_timestep_embedding(po, t, B, D, max_period, freq_shift));
}

/* ---- elementwise and reductions ---------------------------------------- */

void k_add_broadcast_forward(struct kctx *ctx, struct tensor out, struct tensor a,
                             struct tensor b, int B, int T, int C)
{
    const char *op = "add_broadcast_forward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    enum kdtype dt = act_dtype(ctx, op, "out", out);
    void *po = OUT(out, (int64_t)B * T * C);
    void *pa = IN(a, (int64_t)B * T * C);
    void *pb = IN(b, (int64_t)T * C);
    BACKEND(cuda_add_broadcast_forward(ctx, po, pa, pb, dt, B, T, C),
            cpu_add_broadcast_forward(po, pa, pb, B, T, C));
}

void k_add(struct kctx *ctx, struct tensor out, struct tensor a, struct tensor b, int64_t n)
{
    const char *op = "add";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "out", out);
    void *po = OUT(out, n);
    void *pa = IN(a, n);
    void *pb = IN(b, n);
    BACKEND(cuda_add(ctx, po, pa, pb, dt, n), cpu_add(po, pa, pb, n));
}

void k_axpy(struct kctx *ctx, struct tensor y, float alpha, struct tensor x, int64_t n)
{
    const char *op = "axpy";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "y", y);
    void *py = OUT(y, n);
    void *px = IN(x, n);
    BACKEND(cuda_axpy(ctx, py, alpha, px, dt, n), cpu_axpy(py, alpha, px, n));
}

void k_fill(struct kctx *ctx, struct tensor x, float value, int64_t n)
{
    const char *op = "fill";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "x", x);
    void *px = OUT(x, n);
    BACKEND(cuda_fill(ctx, px, value, dt, n), cpu_fill(px, value, n));
}

float k_mse_forward_backward(struct kctx *ctx, struct tensor dpred, struct tensor pred,
                             struct tensor target, int64_t n, float scale)
{
    const char *op = "mse_forward_backward";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "pred", pred);
    void *pd = GRAD(dpred, n);
    void *pp = IN(pred, n);
    void *pt = IN(target, n);
    float r;
    BACKEND(r = cuda_mse_forward_backward(ctx, pd, pp, pt, dt, n, scale),
            r = cpu_mse_forward_backward(pd, pp, pt, n, scale));
    return r;
}

double k_sum_squares(struct kctx *ctx, struct tensor x, int64_t n)
{
    const char *op = "sum_squares";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "x", x);
    void *px = IN(x, n);
    double r;
    BACKEND(r = cuda_sum_squares(ctx, px, dt, n), r = cpu_sum_squares(px, n));
    return r;
}

void k_scale(struct kctx *ctx, struct tensor x, float s, int64_t n)
{
    const char *op = "scale";
    check_ctx(ctx, op);
    check_count(op, n);
    enum kdtype dt = act_dtype(ctx, op, "x", x);
    void *px = OUT(x, n);
    BACKEND(cuda_scale(ctx, px, s, dt, n), cpu_scale(px, s, n));
}

/* ---- optimiser ---------------------------------------------------------- */

void k_adamw_update(struct kctx *ctx, struct tensor param, struct tensor grad, struct tensor m,
                    struct tensor v, struct tensor copy, int64_t n,
                    const struct adamw_params *hp)
{
    const char *op = "adamw_update";
    check_ctx(ctx, op);
    check_count(op, n);
    if (!hp)
        op_abort(op, "no hyperparameters");
    if (hp->step < 1)
        op_abort(op, "step %" PRId64 " is below 1: the bias corrections divide by zero",
                 hp->step);
    float *pp = F32(param, n);
    float *pg = F32(grad, n);
    float *pm = F32(m, n);
    float *pv = F32(v, n);
    void *pc = copy.data ? check_any(ctx, op, "copy", copy, n) : NULL;
    if (pc && copy.n != n)
        op_abort(op, "copy has %" PRId64 " elements, the shape needs %" PRId64, copy.n, n);
#ifdef DIT_HAVE_CUDA
    if (ctx->device == DEVICE_CUDA) {
        cuda_adamw_update(ctx, pp, pg, pm, pv, pc, copy.dtype, n, hp);
        return;
    }
#endif
    cpu_adamw_update(pp, pg, pm, pv, n, hp);
    if (pc)
        host_convert(pc, copy.dtype, pp, KDT_F32, n);
}

void k_ema_update(struct kctx *ctx, struct tensor ema, struct tensor param, float decay,
                  int64_t n)
{
    const char *op = "ema_update";
    check_ctx(ctx, op);
    check_count(op, n);
    float *pe = F32(ema, n);
    float *pp = F32(param, n);
    BACKEND(cuda_ema_update(ctx, pe, pp, decay, n),
            (cpu_scale(pe, decay, n), cpu_axpy(pe, 1.0f - decay, pp, n)));
}
