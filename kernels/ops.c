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
#include "libcommon/error.h"

#include <cblas.h>
#include <inttypes.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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

static const char *dtype_name(enum kdtype dt)
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
    if (device == DEVICE_CUDA) {
        err_set("the CUDA backend is not built yet");
        return -1;
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
    if (ctx)
        ctx->backend = NULL;
}

/* Every call goes through here first; only the CPU backend exists so far. */
static void check_ctx(const struct kctx *ctx, const char *op)
{
    if (!ctx)
        op_abort(op, "no kernel context");
    if (ctx->device != DEVICE_CPU)
        op_abort(op, "context on %s, which has no backend in this build",
                 device_name(ctx->device));
}

enum { OPTIONAL = 0, REQUIRED = 1 };
enum { EXACT = 0, AT_LEAST = 1 };

/* A tensor argument: present (or allowed absent), on the ctx's device, in a
 * dtype the backend has, with n equal to (or, for views and scratch, at
 * least) what the shape needs. Returns the data pointer, NULL when absent. */
static float *check_tensor(const struct kctx *ctx, const char *op, const char *name,
                           struct tensor t, int64_t need, int required, int at_least)
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
    if (t.dtype != KDT_F32)
        op_abort(op, "%s is %s; the %s backend has f32 only", name, dtype_name(t.dtype),
                 device_name(ctx->device));
    if (at_least ? t.n < need : t.n != need)
        op_abort(op, "%s has %" PRId64 " elements, the shape needs %s%" PRId64, name, t.n,
                 at_least ? "at least " : "", need);
    return t.data;
}

#define IN(t, need) check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT)
#define OUT(t, need) check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT)
#define GRAD(t, need) check_tensor(ctx, op, #t, t, need, OPTIONAL, EXACT)

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

#define MOD(t, need, required) check_tensor(ctx, op, #t, t, need, required, AT_LEAST)

/* ---- matrix multiply ---------------------------------------------------- */

void k_gemm(struct kctx *ctx, struct tensor c, struct tensor a, struct tensor b, int M, int N,
            int K, int trans_a, int trans_b, float alpha, float beta)
{
    const char *op = "gemm";
    check_ctx(ctx, op);
    DIMS("M, N, K", M, N, K);
    float *pc = OUT(c, (int64_t)M * N);
    float *pa = IN(a, (int64_t)M * K);
    float *pb = IN(b, (int64_t)K * N);
    cpu_gemm(pc, pa, pb, M, N, K, trans_a, trans_b, alpha, beta);
}

void k_linear_forward(struct kctx *ctx, struct tensor out, struct tensor inp, struct tensor weight,
                      struct tensor bias, int M, int C, int OC)
{
    const char *op = "linear_forward";
    check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    float *po = OUT(out, (int64_t)M * OC);
    float *pi = IN(inp, (int64_t)M * C);
    float *pw = IN(weight, (int64_t)OC * C);
    float *pb = check_tensor(ctx, op, "bias", bias, OC, OPTIONAL, EXACT);
    cpu_linear_forward(po, pi, pw, pb, M, C, OC);
}

void k_linear_backward(struct kctx *ctx, struct tensor dinp, struct tensor dweight,
                       struct tensor dbias, struct tensor dout, struct tensor inp,
                       struct tensor weight, int M, int C, int OC)
{
    const char *op = "linear_backward";
    check_ctx(ctx, op);
    DIMS("M, C, OC", M, C, OC);
    float *pdi = GRAD(dinp, (int64_t)M * C);
    float *pdw = GRAD(dweight, (int64_t)OC * C);
    float *pdb = GRAD(dbias, OC);
    float *pdo = IN(dout, (int64_t)M * OC);
    float *pi = IN(inp, (int64_t)M * C);
    float *pw = IN(weight, (int64_t)OC * C);
    cpu_linear_backward(pdi, pdw, pdb, pdo, pi, pw, M, C, OC);
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
    float *po = OUT(out, (int64_t)M * C);
    float *pm = OUT(mean, M);
    float *pr = OUT(rstd, M);
    float *pi = IN(inp, (int64_t)M * C);
    cpu_layernorm_forward(po, pm, pr, pi, M, C, eps);
}

void k_layernorm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                          struct tensor inp, struct tensor mean, struct tensor rstd, int M, int C)
{
    const char *op = "layernorm_backward";
    check_ctx(ctx, op);
    DIMS("M, C", M, C);
    if (C == 0 && M > 0)
        op_abort(op, "C is 0: the mean of an empty row");
    float *pdi = GRAD(dinp, (int64_t)M * C);
    float *pdo = IN(dout, (int64_t)M * C);
    float *pi = IN(inp, (int64_t)M * C);
    float *pm = IN(mean, M);
    float *pr = IN(rstd, M);
    if (pdi)
        cpu_layernorm_backward(pdi, pdo, pi, pm, pr, M, C);
}

void k_modulate_forward(struct kctx *ctx, struct tensor out, struct tensor x, struct tensor shift,
                        struct tensor scale, int B, int T, int C, int mod_stride)
{
    const char *op = "modulate_forward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    float *po = OUT(out, n);
    float *px = IN(x, n);
    float *psh = MOD(shift, ext, REQUIRED);
    float *psc = MOD(scale, ext, REQUIRED);
    cpu_modulate_forward(po, px, psh, psc, B, T, C, mod_stride);
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
    float *pdx = GRAD(dx, n);
    float *pdsh = MOD(dshift, ext, OPTIONAL);
    float *pdsc = MOD(dscale, ext, OPTIONAL);
    float *pdo = IN(dout, n);
    float *px = IN(x, n);
    float *psc = MOD(scale, ext, REQUIRED);
    cpu_modulate_backward(pdx, pdsh, pdsc, pdo, px, psc, B, T, C, mod_stride);
}

void k_gated_residual_forward(struct kctx *ctx, struct tensor res, struct tensor y,
                              struct tensor gate, int B, int T, int C, int mod_stride)
{
    const char *op = "gated_residual_forward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    int64_t ext = mod_extent(op, B, C, mod_stride);
    int64_t n = (int64_t)B * T * C;
    float *pr = OUT(res, n);
    float *py = IN(y, n);
    float *pg = MOD(gate, ext, REQUIRED);
    cpu_gated_residual_forward(pr, py, pg, B, T, C, mod_stride);
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
    float *pdy = GRAD(dy, n);
    float *pdg = MOD(dgate, ext, OPTIONAL);
    float *pdr = IN(dres, n);
    float *py = IN(y, n);
    float *pg = MOD(gate, ext, REQUIRED);
    cpu_gated_residual_backward(pdy, pdg, pdr, py, pg, B, T, C, mod_stride);
}

/* ---- activations -------------------------------------------------------- */

static void check_count(const char *op, int64_t n)
{
    if (n < 0)
        op_abort(op, "negative element count %" PRId64, n);
}

void k_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n)
{
    const char *op = "gelu_forward";
    check_ctx(ctx, op);
    check_count(op, n);
    float *po = OUT(out, n);
    float *pi = IN(inp, n);
    cpu_gelu_forward(po, pi, n);
}

void k_gelu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n)
{
    const char *op = "gelu_backward";
    check_ctx(ctx, op);
    check_count(op, n);
    float *pdi = GRAD(dinp, n);
    float *pdo = IN(dout, n);
    float *pi = IN(inp, n);
    if (pdi)
        cpu_gelu_backward(pdi, pdo, pi, n);
}

void k_silu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n)
{
    const char *op = "silu_forward";
    check_ctx(ctx, op);
    check_count(op, n);
    float *po = OUT(out, n);
    float *pi = IN(inp, n);
    cpu_silu_forward(po, pi, n);
}

void k_silu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n)
{
    const char *op = "silu_backward";
    check_ctx(ctx, op);
    check_count(op, n);
    float *pdi = GRAD(dinp, n);
    float *pdo = IN(dout, n);
    float *pi = IN(inp, n);
    if (pdi)
        cpu_silu_backward(pdi, pdo, pi, n);
}

/* ---- attention ---------------------------------------------------------- */

int64_t k_attention_scratch(int T, int NH, int threads)
{
    (void)NH; /* the CPU works one (batch, head) at a time per thread, on at
               * most two blocks of scores of 256 query rows by T keys */
    return cpu_attention_scratch(T, threads);
}

static void check_attention_dims(const char *op, int B, int T, int C, int NH)
{
    DIMS("B, T, C, NH", B, T, C, NH);
    if (NH == 0 || C % NH != 0)
        op_abort(op, "C %d is not a multiple of NH %d", C, NH);
}

void k_attention_forward(struct kctx *ctx, struct tensor out, struct tensor lse, struct tensor qkv,
                         struct tensor scratch, int B, int T, int C, int NH)
{
    const char *op = "attention_forward";
    check_ctx(ctx, op);
    check_attention_dims(op, B, T, C, NH);
    float *po = OUT(out, (int64_t)B * T * C);
    float *pl = OUT(lse, (int64_t)B * NH * T);
    float *pq = IN(qkv, (int64_t)B * T * 3 * C);
    float *ps = check_tensor(ctx, op, "scratch", scratch,
                             k_attention_scratch(T, NH, ctx->threads), REQUIRED, AT_LEAST);
    cpu_attention_forward(po, pl, pq, ps, scratch.n, B, T, C, NH);
}

void k_attention_backward(struct kctx *ctx, struct tensor dqkv, struct tensor dout,
                          struct tensor out, struct tensor lse, struct tensor qkv,
                          struct tensor scratch, int B, int T, int C, int NH)
{
    const char *op = "attention_backward";
    check_ctx(ctx, op);
    check_attention_dims(op, B, T, C, NH);
    float *pdq = GRAD(dqkv, (int64_t)B * T * 3 * C);
    float *pdo = IN(dout, (int64_t)B * T * C);
    float *po = IN(out, (int64_t)B * T * C);
    float *pl = IN(lse, (int64_t)B * NH * T);
    float *pq = IN(qkv, (int64_t)B * T * 3 * C);
    float *ps = check_tensor(ctx, op, "scratch", scratch,
                             k_attention_scratch(T, NH, ctx->threads), REQUIRED, AT_LEAST);
    if (pdq)
        cpu_attention_backward(pdq, pdo, po, pl, pq, ps, scratch.n, B, T, C, NH);
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
    float *po = OUT(out, n);
    float *pi = IN(img, n);
    cpu_patchify_forward(po, pi, B, CH, H, W, p);
}

void k_unpatchify_forward(struct kctx *ctx, struct tensor img, struct tensor tok, int B, int CH,
                          int H, int W, int p)
{
    const char *op = "unpatchify_forward";
    check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W;
    float *pi = OUT(img, n);
    float *pt = IN(tok, n);
    cpu_unpatchify_forward(pi, pt, B, CH, H, W, p);
}

void k_unpatchify_backward(struct kctx *ctx, struct tensor dtok, struct tensor dimg, int B,
                           int CH, int H, int W, int p)
{
    const char *op = "unpatchify_backward";
    check_ctx(ctx, op);
    check_patch_dims(op, B, CH, H, W, p);
    int64_t n = (int64_t)B * CH * H * W;
    float *pdt = GRAD(dtok, n);
    float *pdi = IN(dimg, n);
    if (pdt)
        cpu_unpatchify_backward(pdt, pdi, B, CH, H, W, p);
}

/* ---- embeddings --------------------------------------------------------- */

/* The table's row count follows from its size; every id must index a row.
 * Checking costs B reads, nothing next to the copy it guards. */
static void check_ids(const char *op, const int32_t *ids, int B, int64_t table_n, int C)
{
    if (B > 0 && !ids)
        op_abort(op, "ids is NULL");
    if (C == 0 && B > 0)
        op_abort(op, "C is 0");
    if (C > 0 && table_n % C != 0)
        op_abort(op, "table has %" PRId64 " elements, not a whole number of rows of %d", table_n,
                 C);
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
    float *po = OUT(out, (int64_t)B * C);
    float *pt = IN(table, table.n);
    check_ids(op, ids, B, table.n, C);
    cpu_embedding_forward(po, pt, ids, B, C);
}

void k_embedding_backward(struct kctx *ctx, struct tensor dtable, struct tensor dout,
                          const int32_t *ids, int B, int C)
{
    const char *op = "embedding_backward";
    check_ctx(ctx, op);
    DIMS("B, C", B, C);
    float *pdt = GRAD(dtable, dtable.n);
    float *pdo = IN(dout, (int64_t)B * C);
    if (!pdt)
        return;
    check_ids(op, ids, B, dtable.n, C);
    cpu_embedding_backward(pdt, pdo, ids, B, C);
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
    float *po = OUT(out, (int64_t)B * D);
    cpu_timestep_embedding(po, t, B, D, max_period, freq_shift);
}

/* ---- elementwise and reductions ---------------------------------------- */

void k_add_broadcast_forward(struct kctx *ctx, struct tensor out, struct tensor a,
                             struct tensor b, int B, int T, int C)
{
    const char *op = "add_broadcast_forward";
    check_ctx(ctx, op);
    DIMS("B, T, C", B, T, C);
    float *po = OUT(out, (int64_t)B * T * C);
    float *pa = IN(a, (int64_t)B * T * C);
    float *pb = IN(b, (int64_t)T * C);
    cpu_add_broadcast_forward(po, pa, pb, B, T, C);
}

void k_add(struct kctx *ctx, struct tensor out, struct tensor a, struct tensor b, int64_t n)
{
    const char *op = "add";
    check_ctx(ctx, op);
    check_count(op, n);
    float *po = OUT(out, n);
    float *pa = IN(a, n);
    float *pb = IN(b, n);
    cpu_add(po, pa, pb, n);
}

void k_axpy(struct kctx *ctx, struct tensor y, float alpha, struct tensor x, int64_t n)
{
    const char *op = "axpy";
    check_ctx(ctx, op);
    check_count(op, n);
    float *py = OUT(y, n);
    float *px = IN(x, n);
    cpu_axpy(py, alpha, px, n);
}

void k_fill(struct kctx *ctx, struct tensor x, float value, int64_t n)
{
    const char *op = "fill";
    check_ctx(ctx, op);
    check_count(op, n);
    float *px = OUT(x, n);
    cpu_fill(px, value, n);
}

float k_mse_forward_backward(struct kctx *ctx, struct tensor dpred, struct tensor pred,
                             struct tensor target, int64_t n, float scale)
{
    const char *op = "mse_forward_backward";
    check_ctx(ctx, op);
    check_count(op, n);
    float *pd = GRAD(dpred, n);
    float *pp = IN(pred, n);
    float *pt = IN(target, n);
    return cpu_mse_forward_backward(pd, pp, pt, n, scale);
}

double k_sum_squares(struct kctx *ctx, struct tensor x, int64_t n)
{
    const char *op = "sum_squares";
    check_ctx(ctx, op);
    check_count(op, n);
    float *px = IN(x, n);
    return cpu_sum_squares(px, n);
}

void k_scale(struct kctx *ctx, struct tensor x, float s, int64_t n)
{
    const char *op = "scale";
    check_ctx(ctx, op);
    check_count(op, n);
    float *px = OUT(x, n);
    cpu_scale(px, s, n);
}

/* ---- optimiser ---------------------------------------------------------- */

void k_adamw_update(struct kctx *ctx, struct tensor param, struct tensor grad, struct tensor m,
                    struct tensor v, int64_t n, const struct adamw_params *hp)
{
    const char *op = "adamw_update";
    check_ctx(ctx, op);
    check_count(op, n);
    if (!hp)
        op_abort(op, "no hyperparameters");
    if (hp->step < 1)
        op_abort(op, "step %" PRId64 " is below 1: the bias corrections divide by zero",
                 hp->step);
    float *pp = OUT(param, n);
    float *pg = IN(grad, n);
    float *pm = OUT(m, n);
    float *pv = OUT(v, n);
    cpu_adamw_update(pp, pg, pm, pv, n, hp);
}
