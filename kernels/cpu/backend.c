/* The CPU backend's table (kernels/backend.h): host memory, OpenMP threads,
 * and the kernels of this folder behind the entry points every backend
 * shares. The CPU computes in f32 only, so `dt` is always f32 here and the
 * entries drop it; ctx is needed only for threads and the memory count. */
#include "kernels/backend.h"
#include "kernels/cpu/cpu.h"
#include "libcommon/error.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ---- context and memory ------------------------------------------------- */

static int be_no_devices(void)
{
    return 0;
}

static int be_ctx_init(struct kctx *ctx)
{
    if (ctx->threads > 0)
        omp_set_num_threads(ctx->threads);
    /* One pool of threads, OpenMP's: the CPU backend splits every product
     * into per-thread sgemm calls itself (gemm.c), and OpenBLAS threads of
     * its own would only spin against those. */
    openblas_set_num_threads(1);
    return 0;
}

/* No state: the context's memory count lives in the kctx itself. */
static void be_ctx_free(struct kctx *ctx)
{
}

static int be_mem_alloc(struct kctx *ctx, void **ptr, size_t bytes)
{
    *ptr = NULL;
    if (bytes == 0)
        return 0;
    /* Rounded up to the alignment, as aligned_alloc wants. */
    *ptr = aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!*ptr) {
        err_set("out of memory: %.1f MiB wanted", bytes / 1048576.0);
        return -1;
    }
    ctx->mem_now += (int64_t)bytes;
    if (ctx->mem_now > ctx->mem_peak)
        ctx->mem_peak = ctx->mem_now;
    return 0;
}

static void be_mem_free(struct kctx *ctx, void *ptr, size_t bytes)
{
    free(ptr);
    ctx->mem_now -= (int64_t)bytes;
}

static void be_mem_usage(struct kctx *ctx, size_t *now, size_t *peak)
{
    *now = (size_t)ctx->mem_now;
    *peak = (size_t)ctx->mem_peak;
}

static void be_mem_upload(struct kctx *ctx, void *dst, const void *host_src, size_t bytes)
{
    memcpy(dst, host_src, bytes);
}

static void be_mem_download(struct kctx *ctx, void *host_dst, const void *src, size_t bytes)
{
    memcpy(host_dst, src, bytes);
}

static void be_mem_copy(struct kctx *ctx, void *dst, const void *src, size_t bytes)
{
    memmove(dst, src, bytes);
}

static void be_sync(struct kctx *ctx)
{
}

/* The CPU works one (batch, head, query block) at a time per thread, on at
 * most two blocks of scores of 256 query rows by T keys: linear in T, no
 * more threads' worth than there are such tasks, which the kernels never
 * exceed, and no more than 2^25 floats (128 MiB) once one thread has its
 * share: a VAE's one head at T = 16384 takes 8M floats a thread, so 4
 * threads of a 64-core machine run its attention, not 64 of them. */
#define ATTENTION_SCRATCH_BUDGET ((int64_t)1 << 25)
static int64_t be_attention_scratch(const struct kctx *ctx, int B, int T, int NH)
{
    int64_t threads = ctx->threads > 0 ? ctx->threads : omp_get_max_threads();
    int64_t tasks = (int64_t)B * NH * ((T + 255) / 256);
    if (tasks < threads)
        threads = tasks > 1 ? tasks : 1;
    const int64_t per = cpu_attention_scratch(T, 1);
    if (per > 0 && threads > 1 && threads * per > ATTENTION_SCRATCH_BUDGET)
        threads = ATTENTION_SCRATCH_BUDGET / per > 1 ? ATTENTION_SCRATCH_BUDGET / per : 1;
    return cpu_attention_scratch(T, (int)threads);
}

/* One block of scores a thread, at most 64 queries by Tk keys (T5-base at
 * 512 tokens: 128 KiB), and no more threads' worth than there are (batch,
 * head, query block) tasks. */
static int64_t be_attention_bias_scratch(const struct kctx *ctx, int B, int Tq, int Tk, int NH,
                                         int HS)
{
    int64_t threads = ctx->threads > 0 ? ctx->threads : omp_get_max_threads();
    int64_t tasks = cpu_attention_bias_tasks(B, Tq, NH);
    if (tasks < threads)
        threads = tasks > 1 ? tasks : 1;
    return cpu_attention_bias_scratch(Tq, Tk, (int)threads);
}

/* Its backward: P and dS of a block of at most 64 queries by Tk keys a
 * thread (F-Lite's 4112 tokens: 2 MiB), no more threads' worth than there
 * are (batch, head) tasks, and within ATTENTION_SCRATCH_BUDGET once one
 * thread has its share. */
static int64_t be_attention_bias_backward_scratch(const struct kctx *ctx, int B, int Tq, int Tk,
                                                  int NH, int HS)
{
    int64_t threads = ctx->threads > 0 ? ctx->threads : omp_get_max_threads();
    int64_t tasks = (int64_t)(B > 0 ? B : 0) * (NH > 0 ? NH : 0);
    if (tasks < threads)
        threads = tasks > 1 ? tasks : 1;
    const int64_t per = cpu_attention_bias_backward_scratch(Tq, Tk, 1);
    if (per > 0 && threads > 1 && threads * per > ATTENTION_SCRATCH_BUDGET)
        threads = ATTENTION_SCRATCH_BUDGET / per > 1 ? ATTENTION_SCRATCH_BUDGET / per : 1;
    return cpu_attention_bias_backward_scratch(Tq, Tk, (int)threads);
}

static int64_t be_conv2d_scratch(const struct kctx *ctx, int C, int H, int W, int OC, int k,
                                 int stride, int pad_lo, int pad_hi)
{
    return cpu_conv2d_scratch(C, H, W, OC, k, stride, pad_lo, pad_hi);
}

/* ---- gemm --------------------------------------------------------------- */

static void be_gemm(struct kctx *ctx, void *c, const void *a, const void *b, enum kdtype dt,
                    int M, int N, int K, int trans_a, int trans_b, float alpha, float beta)
{
    cpu_gemm(c, a, b, M, N, K, trans_a, trans_b, alpha, beta);
}

static void be_linear_forward(struct kctx *ctx, void *out, const void *inp, const void *weight,
                              const void *bias, enum kdtype dt, int M, int C, int OC)
{
    cpu_linear_forward(out, inp, weight, bias, M, C, OC);
}

/* No fused epilogue on the CPU: the product, then GELU over it. */
static void be_linear_gelu_forward(struct kctx *ctx, void *out, void *pre, const void *inp,
                                   const void *weight, const void *bias, enum kdtype dt, int M,
                                   int C, int OC)
{
    cpu_linear_forward(pre, inp, weight, bias, M, C, OC);
    cpu_gelu_forward(out, pre, (int64_t)M * OC);
}

static void be_linear_backward(struct kctx *ctx, void *dinp, float *dweight, float *dbias,
                               const void *dout, const void *inp, const void *weight,
                               enum kdtype dt, int M, int C, int OC)
{
    cpu_linear_backward(dinp, dweight, dbias, dout, inp, weight, M, C, OC);
}

/* ---- norm --------------------------------------------------------------- */

static void be_layernorm_forward(struct kctx *ctx, void *out, float *mean, float *rstd,
                                 const void *inp, enum kdtype dt, int M, int C, float eps)
{
    cpu_layernorm_forward(out, mean, rstd, inp, M, C, eps);
}

static void be_layernorm_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                                  const float *mean, const float *rstd, enum kdtype dt, int M,
                                  int C)
{
    cpu_layernorm_backward(dinp, dout, inp, mean, rstd, M, C);
}

static void be_groupnorm_forward(struct kctx *ctx, void *out, const void *inp, const void *weight,
                                 const void *bias, enum kdtype dt, int B, int C, int HW, int G,
                                 float eps, int silu)
{
    cpu_groupnorm_forward(out, inp, weight, bias, B, C, HW, G, eps, silu);
}

static void be_modulate_forward(struct kctx *ctx, void *out, const void *x, const void *shift,
                                const void *scale, enum kdtype dt, int B, int T, int C,
                                int mod_stride)
{
    cpu_modulate_forward(out, x, shift, scale, B, T, C, mod_stride);
}

static void be_modulate_backward(struct kctx *ctx, void *dx, void *dshift, void *dscale,
                                 const void *dout, const void *x, const void *scale,
                                 enum kdtype dt, int B, int T, int C, int mod_stride)
{
    cpu_modulate_backward(dx, dshift, dscale, dout, x, scale, B, T, C, mod_stride);
}

static void be_adaln_forward(struct kctx *ctx, void *out, float *mean, float *rstd, const void *x,
                             const void *shift, const void *scale, enum kdtype dt, int B, int T,
                             int C, int mod_stride, float eps)
{
    cpu_adaln_forward(out, mean, rstd, x, shift, scale, B, T, C, mod_stride, eps);
}

static void be_adaln_backward(struct kctx *ctx, void *dx, void *dshift, void *dscale,
                              const void *dout, const void *x, const float *mean,
                              const float *rstd, const void *scale, enum kdtype dt, int B, int T,
                              int C, int mod_stride)
{
    cpu_adaln_backward(dx, dshift, dscale, dout, x, mean, rstd, scale, B, T, C, mod_stride);
}

static void be_gated_residual_forward(struct kctx *ctx, void *out, const void *res, const void *y,
                                      const void *gate, enum kdtype dt, int B, int T, int C,
                                      int mod_stride)
{
    cpu_gated_residual_forward(out, res, y, gate, B, T, C, mod_stride);
}

static void be_gated_residual_backward(struct kctx *ctx, void *dy, void *dgate, const void *dres,
                                       const void *y, const void *gate, enum kdtype dt, int B,
                                       int T, int C, int mod_stride)
{
    cpu_gated_residual_backward(dy, dgate, dres, y, gate, B, T, C, mod_stride);
}

static void be_rmsnorm_forward(struct kctx *ctx, void *out, float *rstd, const void *inp,
                               const void *weight, enum kdtype dt, int M, int C, float eps)
{
    cpu_rmsnorm_forward(out, rstd, inp, weight, M, C, eps);
}

static void be_rmsnorm_backward(struct kctx *ctx, void *dinp, float *dweight, const void *dout,
                                const void *inp, const float *rstd, const void *weight,
                                enum kdtype dt, int M, int C)
{
    cpu_rmsnorm_backward(dinp, dweight, dout, inp, rstd, weight, M, C);
}

/* ---- activation --------------------------------------------------------- */

static void be_gelu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                            int64_t n)
{
    cpu_gelu_forward(out, inp, n);
}

static void be_gelu_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                             enum kdtype dt, int64_t n)
{
    cpu_gelu_backward(dinp, dout, inp, n);
}

static void be_silu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                            int64_t n)
{
    cpu_silu_forward(out, inp, n);
}

static void be_silu_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                             enum kdtype dt, int64_t n)
{
    cpu_silu_backward(dinp, dout, inp, n);
}

static void be_gated_gelu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                                  int M, int F)
{
    cpu_gated_gelu_forward(out, inp, M, F);
}

static void be_gelu_erf_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                                int64_t n)
{
    cpu_gelu_erf_forward(out, inp, n);
}

static void be_gelu_erf_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                                 enum kdtype dt, int64_t n)
{
    cpu_gelu_erf_backward(dinp, dout, inp, n);
}

/* ---- attention ---------------------------------------------------------- */

static void be_attention_forward(struct kctx *ctx, void *out, float *lse, const void *qkv,
                                 float *scratch, int64_t scratch_n, enum kdtype dt, int B, int T,
                                 int C, int NH)
{
    cpu_attention_forward(out, lse, qkv, scratch, scratch_n, B, T, C, NH);
}

static void be_attention_backward(struct kctx *ctx, void *dqkv, const void *dout, const void *out,
                                  const float *lse, const void *qkv, float *scratch,
                                  int64_t scratch_n, enum kdtype dt, int B, int T, int C, int NH)
{
    cpu_attention_backward(dqkv, dout, out, lse, qkv, scratch, scratch_n, B, T, C, NH);
}

static void be_attention_bias_forward(struct kctx *ctx, void *out, float *lse, const void *q,
                                      const void *k, const void *v, const float *bias,
                                      const float *key_mask, float *scratch, int64_t scratch_n,
                                      enum kdtype dt, int B, int Tq, int Tk, int NH, int HS,
                                      int q_stride, int kv_stride, float scale)
{
    cpu_attention_bias_forward(out, lse, q, k, v, bias, key_mask, scratch, scratch_n, B, Tq, Tk,
                               NH, HS, q_stride, kv_stride, scale);
}

static void be_attention_bias_backward(struct kctx *ctx, void *dq, void *dk, void *dv,
                                       const void *dout, const void *out, const float *lse,
                                       const void *q, const void *k, const void *v,
                                       const float *bias, const float *key_mask, float *scratch,
                                       int64_t scratch_n, enum kdtype dt, int B, int Tq, int Tk,
                                       int NH, int HS, int q_stride, int kv_stride, float scale)
{
    cpu_attention_bias_backward(dq, dk, dv, dout, out, lse, q, k, v, bias, key_mask, scratch,
                                scratch_n, B, Tq, Tk, NH, HS, q_stride, kv_stride, scale);
}

/* ---- rope --------------------------------------------------------------- */

static void be_rope_norm_forward(struct kctx *ctx, void *out, float *rstd, const void *inp,
                                 const float *cos, const float *sin, enum kdtype dt, int B, int T,
                                 int NH, int HS, int in_stride, int out_stride, float eps)
{
    cpu_rope_norm_forward(out, rstd, inp, cos, sin, B, T, NH, HS, in_stride, out_stride, eps);
}

static void be_rope_norm_backward(struct kctx *ctx, void *dinp, const void *dout,
                                  const void *inp, const float *rstd, const float *cos,
                                  const float *sin, enum kdtype dt, int B, int T, int NH, int HS,
                                  int in_stride, int out_stride)
{
    cpu_rope_norm_backward(dinp, dout, inp, rstd, cos, sin, B, T, NH, HS, in_stride, out_stride);
}

/* ---- patch -------------------------------------------------------------- */

static void be_patchify_forward(struct kctx *ctx, void *out, const void *img, enum kdtype dt,
                                int B, int CH, int H, int W, int p)
{
    cpu_patchify_forward(out, img, B, CH, H, W, p);
}

static void be_unpatchify_forward(struct kctx *ctx, void *img, const void *tok, enum kdtype dt,
                                  int B, int CH, int H, int W, int p)
{
    cpu_unpatchify_forward(img, tok, B, CH, H, W, p);
}

static void be_unpatchify_backward(struct kctx *ctx, void *dtok, const void *dimg, enum kdtype dt,
                                   int B, int CH, int H, int W, int p)
{
    cpu_unpatchify_backward(dtok, dimg, B, CH, H, W, p);
}

/* ---- conv --------------------------------------------------------------- */

static void be_conv2d_forward(struct kctx *ctx, void *out, const void *inp, const void *weight,
                              const void *bias, float *scratch, enum kdtype dt, int B, int C,
                              int H, int W, int OC, int k, int stride, int pad_lo, int pad_hi)
{
    cpu_conv2d_forward(out, inp, weight, bias, scratch, B, C, H, W, OC, k, stride, pad_lo,
                       pad_hi);
}

static void be_upsample_nearest2x_forward(struct kctx *ctx, void *out, const void *inp,
                                          enum kdtype dt, int B, int C, int H, int W)
{
    cpu_upsample_nearest2x_forward(out, inp, B, C, H, W);
}

static void be_transpose_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                                 int B, int M, int N)
{
    cpu_transpose_forward(out, inp, B, M, N);
}

/* ---- embedding ---------------------------------------------------------- */

static void be_embedding_forward(struct kctx *ctx, void *out, const void *table,
                                 const int32_t *ids, enum kdtype dt, int B, int C)
{
    cpu_embedding_forward(out, table, ids, B, C);
}

static void be_embedding_backward(struct kctx *ctx, float *dtable, const void *dout,
                                  const int32_t *ids, enum kdtype dt, int B, int C)
{
    cpu_embedding_backward(dtable, dout, ids, B, C);
}

static void be_timestep_embedding(struct kctx *ctx, void *out, const float *t, enum kdtype dt,
                                  int B, int D, float max_period, float freq_shift)
{
    cpu_timestep_embedding(out, t, B, D, max_period, freq_shift);
}

/* ---- elementwise -------------------------------------------------------- */

static void be_add_broadcast_forward(struct kctx *ctx, void *out, const void *a, const void *b,
                                     enum kdtype dt, int B, int T, int C)
{
    cpu_add_broadcast_forward(out, a, b, B, T, C);
}

static void be_add(struct kctx *ctx, void *out, const void *a, const void *b, enum kdtype dt,
                   int64_t n)
{
    cpu_add(out, a, b, n);
}

static void be_axpy(struct kctx *ctx, void *y, float alpha, const void *x, enum kdtype dt,
                    int64_t n)
{
    cpu_axpy(y, alpha, x, n);
}

static void be_fill(struct kctx *ctx, void *x, float value, enum kdtype dt, int64_t n)
{
    cpu_fill(x, value, n);
}

static void be_scale(struct kctx *ctx, void *x, float s, enum kdtype dt, int64_t n)
{
    cpu_scale(x, s, n);
}

static float be_mse_forward_backward(struct kctx *ctx, void *dpred, const void *pred,
                                     const void *target, enum kdtype dt, int64_t n, float s)
{
    return cpu_mse_forward_backward(dpred, pred, target, n, s);
}

static double be_sum_squares(struct kctx *ctx, const void *x, enum kdtype dt, int64_t n)
{
    return cpu_sum_squares(x, n);
}

static void be_mix_forward(struct kctx *ctx, void *out, const void *a, const void *b,
                           const void *lam, enum kdtype dt, int M, int C, int out_stride,
                           int a_stride, int b_stride)
{
    cpu_mix_forward(out, a, b, lam, M, C, out_stride, a_stride, b_stride);
}

static void be_mix_backward(struct kctx *ctx, void *da, void *db, float *dlam, const void *dout,
                            const void *a, const void *b, const void *lam, enum kdtype dt, int M,
                            int C, int dout_stride, int a_stride, int b_stride)
{
    cpu_mix_backward(da, db, dlam, dout, a, b, lam, M, C, dout_stride, a_stride, b_stride);
}

/* ---- dropout ------------------------------------------------------------ */

static void be_dropout_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                               float p, uint64_t seed, uint32_t purpose, uint64_t step,
                               const uint64_t *ids, int B, int64_t per)
{
    cpu_dropout_forward(out, inp, p, seed, purpose, step, ids, B, per);
}

/* ---- adamw -------------------------------------------------------------- */

/* The update, then the compute copy converted from the new parameters. */
static void be_adamw_update(struct kctx *ctx, float *param, const float *grad, float *m, float *v,
                            void *copy, enum kdtype copy_dt, int64_t n,
                            const struct adamw_params *hp)
{
    cpu_adamw_update(param, grad, m, v, n, hp);
    if (copy)
        cpu_convert(copy, copy_dt, param, KDT_F32, n);
}

static void be_adamw8bit_update(struct kctx *ctx, float *param, const float *grad, uint8_t *state1,
                                uint8_t *state2, float *absmax1, float *absmax2, void *copy, enum kdtype copy_dt,
                                int64_t n, const struct adamw_params *hp)
{
    cpu_adamw8bit_update(param, grad, state1, state2, absmax1, absmax2, n, hp);
    if (copy)
        cpu_convert(copy, copy_dt, param, KDT_F32, n);
}

/* As DiT rounds it: ema * decay, then plus (1 - decay) * param. */
static void be_ema_update(struct kctx *ctx, float *ema, const float *param, float decay,
                          int64_t n)
{
    cpu_scale(ema, decay, n);
    cpu_axpy(ema, 1.0f - decay, param, n);
}

/* ---- fp8 ------------------------------------------------------------------ */

static void be_fp8_rows_widen(struct kctx *ctx, void *out, const uint8_t *codes, const float *scale, enum kdtype dt,
                              int rows, int cols)
{
    cpu_fp8_rows_widen(out, codes, scale, rows, cols);
}

/* ---- convert ------------------------------------------------------------ */

static void be_convert(struct kctx *ctx, void *dst, enum kdtype ddt, const void *src,
                       enum kdtype sdt, int64_t n)
{
    cpu_convert(dst, ddt, src, sdt, n);
}

static void be_accumulate(struct kctx *ctx, void *dst, enum kdtype ddt, const float *src, int64_t n)
{
    cpu_accumulate(dst, ddt, src, n);
}

const struct kbackend kbackend_cpu = {
    .name = "cpu",
    .device = DEVICE_CPU,
    .act_dtypes = KDT_BIT(KDT_F32),
    .host_memory = 1,
    .stateful = 0,
    .max_head_size_forward = 0,
    .max_head_size_backward = 0,
    .device_count = be_no_devices,
    .ctx_init = be_ctx_init,
    .ctx_free = be_ctx_free,
    .mem_alloc = be_mem_alloc,
    .mem_free = be_mem_free,
    .mem_usage = be_mem_usage,
    .mem_upload = be_mem_upload,
    .mem_download = be_mem_download,
    .mem_copy = be_mem_copy,
    .sync = be_sync,
    .attention_scratch = be_attention_scratch,
    .attention_bias_scratch = be_attention_bias_scratch,
    .attention_bias_backward_scratch = be_attention_bias_backward_scratch,
    .conv2d_scratch = be_conv2d_scratch,
    .gemm = be_gemm,
    .linear_forward = be_linear_forward,
    .linear_gelu_forward = be_linear_gelu_forward,
    .linear_backward = be_linear_backward,
    .layernorm_forward = be_layernorm_forward,
    .layernorm_backward = be_layernorm_backward,
    .groupnorm_forward = be_groupnorm_forward,
    .modulate_forward = be_modulate_forward,
    .modulate_backward = be_modulate_backward,
    .adaln_forward = be_adaln_forward,
    .adaln_backward = be_adaln_backward,
    .gated_residual_forward = be_gated_residual_forward,
    .gated_residual_backward = be_gated_residual_backward,
    .rmsnorm_forward = be_rmsnorm_forward,
    .rmsnorm_backward = be_rmsnorm_backward,
    .gelu_forward = be_gelu_forward,
    .gelu_backward = be_gelu_backward,
    .silu_forward = be_silu_forward,
    .silu_backward = be_silu_backward,
    .gated_gelu_forward = be_gated_gelu_forward,
    .gelu_erf_forward = be_gelu_erf_forward,
    .gelu_erf_backward = be_gelu_erf_backward,
    .attention_forward = be_attention_forward,
    .attention_backward = be_attention_backward,
    .attention_bias_forward = be_attention_bias_forward,
    .rope_norm_forward = be_rope_norm_forward,
    .rope_norm_backward = be_rope_norm_backward,
    .attention_bias_backward = be_attention_bias_backward,
    .patchify_forward = be_patchify_forward,
    .unpatchify_forward = be_unpatchify_forward,
    .unpatchify_backward = be_unpatchify_backward,
    .embedding_forward = be_embedding_forward,
    .embedding_backward = be_embedding_backward,
    .timestep_embedding = be_timestep_embedding,
    .add_broadcast_forward = be_add_broadcast_forward,
    .add = be_add,
    .axpy = be_axpy,
    .mix_forward = be_mix_forward,
    .mix_backward = be_mix_backward,
    .fill = be_fill,
    .scale = be_scale,
    .mse_forward_backward = be_mse_forward_backward,
    .sum_squares = be_sum_squares,
    .dropout_forward = be_dropout_forward,
    .adamw_update = be_adamw_update,
    .adamw8bit_update = be_adamw8bit_update,
    .fp8_rows_widen = be_fp8_rows_widen,
    .ema_update = be_ema_update,
    .conv2d_forward = be_conv2d_forward,
    .upsample_nearest2x_forward = be_upsample_nearest2x_forward,
    .transpose_forward = be_transpose_forward,
    .convert = be_convert,
    .accumulate = be_accumulate,
};
