/* The CUDA backend's entry points, the table of kernels/backend.h
 * (registered in kernels/backends.c) that the dispatchers (kernels/ops/)
 * call once they have checked shapes, devices and dtypes.
 *
 * Plain pointers into device memory, as in kernels/cpu/cpu.h; `dt` is the
 * storage dtype of the activations of the call (f32, bf16 or f16): every
 * activation, weight and activation gradient of one call shares it. Things
 * that stay fp32 whatever dt is are typed float *: the statistics saved for
 * backward (mean, rstd, lse), attention scratch, parameter gradients (the
 * master copy's gradients: dweight, dbias, dtable) and the optimizer's
 * tensors. Arithmetic is fp32 inside every kernel; a bf16 or f16 value is
 * rounded once, when it is stored.
 *
 * Everything is asynchronous on the context's stream except the calls that
 * return a value to the host (mse, sum_squares, download), which wait.
 *
 * A failing CUDA call here is not bad user input but a broken device or a
 * bug: cuda_check() prints the call, file and line and aborts, as the
 * dispatcher does for a bad shape.
 *
 * The same sources build twice: by nvcc for GPUs, and by g++ against the
 * CPU emulator of tests/cuda_emu (DIT_CUDA_EMU), which runs every kernel
 * thread by thread so that the tests check the kernels' indexing and
 * reductions in CI, where no GPU exists. */
#ifndef DIT_KERNELS_CUDA_H
#define DIT_KERNELS_CUDA_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* device_cuda.cu: GPUs visible; 0 without a driver (safe to call then). */
int cuda_device_count(void);

/* context.cu: a stream, the cuBLASLt handle and its workspace. */
int cuda_ctx_init(struct kctx *ctx);
void cuda_ctx_free(struct kctx *ctx);
/* Device memory; -1 with err_set() naming the size when it does not fit. */
int cuda_mem_alloc(struct kctx *ctx, void **ptr, size_t bytes);
/* bytes as allocated: the running count needs it. */
void cuda_mem_free(struct kctx *ctx, void *ptr, size_t bytes);
void cuda_mem_upload(struct kctx *ctx, void *dst, const void *host_src, size_t bytes);
/* Waits for the stream, then copies: the host sees every earlier op's result. */
void cuda_mem_download(struct kctx *ctx, void *host_dst, const void *src, size_t bytes);
void cuda_mem_copy(struct kctx *ctx, void *dst, const void *src, size_t bytes);
void cuda_sync(struct kctx *ctx);
/* Bytes of device memory the process has allocated now and at most so far. */
void cuda_mem_usage(struct kctx *ctx, size_t *now, size_t *peak);

/* convert.cu: dst[n] = src[n] from one dtype to another (round to nearest even). */
void cuda_accumulate(struct kctx *ctx, void *dst, enum kdtype ddt, const float *src, int64_t n);
void cuda_convert(struct kctx *ctx, void *dst, enum kdtype ddt, const void *src,
                  enum kdtype sdt, int64_t n);

/* matmul.cu, through cuBLASLt (lt.cu), fp32 accumulation. dt is the dtype of
 * a, b and (for gemm) c; parameter gradients are fp32. */
void cuda_gemm(struct kctx *ctx, void *c, const void *a, const void *b, enum kdtype dt, int M,
               int N, int K, int trans_a, int trans_b, float alpha, float beta);
void cuda_linear_forward(struct kctx *ctx, void *out, const void *inp, const void *weight,
                         const void *bias, enum kdtype dt, int M, int C, int OC);
/* pre = inp W^T + b, out = gelu_tanh(pre): one product with a GELU epilogue. */
void cuda_linear_gelu_forward(struct kctx *ctx, void *out, void *pre, const void *inp,
                              const void *weight, const void *bias, enum kdtype dt, int M, int C,
                              int OC);
void cuda_linear_backward(struct kctx *ctx, void *dinp, float *dweight, float *dbias,
                          const void *dout, const void *inp, const void *weight, enum kdtype dt,
                          int M, int C, int OC);

/* norm.cu */
void cuda_layernorm_forward(struct kctx *ctx, void *out, float *mean, float *rstd,
                            const void *inp, enum kdtype dt, int M, int C, float eps);
void cuda_layernorm_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                             const float *mean, const float *rstd, enum kdtype dt, int M, int C);
void cuda_groupnorm_forward(struct kctx *ctx, void *out, const void *inp, const void *weight,
                            const void *bias, enum kdtype dt, int B, int C, int HW, int G,
                            float eps, int silu);
void cuda_modulate_forward(struct kctx *ctx, void *out, const void *x, const void *shift,
                           const void *scale, enum kdtype dt, int B, int T, int C,
                           int mod_stride);
void cuda_modulate_backward(struct kctx *ctx, void *dx, void *dshift, void *dscale,
                            const void *dout, const void *x, const void *scale, enum kdtype dt,
                            int B, int T, int C, int mod_stride);
/* LayerNorm and modulate in one pass (ln not stored), and its backward
 * (dx accumulates; dshift, dscale accumulate; each may be NULL). */
void cuda_adaln_forward(struct kctx *ctx, void *out, float *mean, float *rstd, const void *x,
                        const void *shift, const void *scale, enum kdtype dt, int B, int T, int C,
                        int mod_stride, float eps);
void cuda_adaln_backward(struct kctx *ctx, void *dx, void *dshift, void *dscale,
                         const void *dout, const void *x, const float *mean, const float *rstd,
                         const void *scale, enum kdtype dt, int B, int T, int C, int mod_stride);
/* out = res + gate * y; out may be res. */
void cuda_gated_residual_forward(struct kctx *ctx, void *out, const void *res, const void *y,
                                 const void *gate, enum kdtype dt, int B, int T, int C,
                                 int mod_stride);
void cuda_gated_residual_backward(struct kctx *ctx, void *dy, void *dgate, const void *dres,
                                  const void *y, const void *gate, enum kdtype dt, int B, int T,
                                  int C, int mod_stride);
/* T5's RMS norm: out = inp * rsqrt(mean(inp^2) + eps) * weight; weight and
 * rstd may be NULL; out may be inp. */
void cuda_rmsnorm_forward(struct kctx *ctx, void *out, float *rstd, const void *inp,
                          const void *weight, enum kdtype dt, int M, int C, float eps);
/* Its backward: dinp (overwritten) and dweight (f32, accumulated), either
 * NULL; weight may be NULL. dweight is summed over rows in a fixed order. */
void cuda_rmsnorm_backward(struct kctx *ctx, void *dinp, float *dweight, const void *dout,
                           const void *inp, const float *rstd, const void *weight,
                           enum kdtype dt, int M, int C);

/* activation.cu */
void cuda_gelu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt, int64_t n);
void cuda_gelu_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                        enum kdtype dt, int64_t n);
void cuda_silu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt, int64_t n);
void cuda_silu_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                        enum kdtype dt, int64_t n);
/* out[M,F] = gelu_tanh(inp[m, :F]) * inp[m, F:] */
void cuda_gated_gelu_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt, int M,
                             int F);
/* The exact (erf) GELU and its derivative (dinp may be NULL); out may be inp. */
void cuda_gelu_erf_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt,
                           int64_t n);
void cuda_gelu_erf_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                            enum kdtype dt, int64_t n);

/* attention.cu: flash-style, never a T x T matrix in memory. scratch holds
 * cuda_attention_scratch(B, T, NH) floats. */
int64_t cuda_attention_scratch(int B, int T, int NH);
void cuda_attention_forward(struct kctx *ctx, void *out, float *lse, const void *qkv,
                            float *scratch, enum kdtype dt, int B, int T, int C, int NH);
void cuda_attention_backward(struct kctx *ctx, void *dqkv, const void *dout, const void *out,
                             const float *lse, const void *qkv, float *scratch, enum kdtype dt,
                             int B, int T, int C, int NH);
/* Attention with an additive bias [NH, Tq, Tk] and a key mask [B, Tk] (each
 * may be NULL), strided q, k, v rows, lse optional: flash-style too, so it
 * needs no scratch (cuda_attention_bias_scratch is 0). */
int64_t cuda_attention_bias_scratch(int B, int Tq, int Tk, int NH, int HS);
void cuda_attention_bias_forward(struct kctx *ctx, void *out, float *lse, const void *q,
                                 const void *k, const void *v, const float *bias,
                                 const float *key_mask, enum kdtype dt, int B, int Tq, int Tk,
                                 int NH, int HS, int q_stride, int kv_stride, float scale);
/* Its backward: dq, dk, dv (each may be NULL) on their heads' elements
 * only; scratch holds cuda_attention_bias_backward_scratch floats (D =
 * rowsum(dout * out) per query and head). Deterministic: no atomics. */
int64_t cuda_attention_bias_backward_scratch(int B, int Tq, int Tk, int NH, int HS);
void cuda_attention_bias_backward(struct kctx *ctx, void *dq, void *dk, void *dv,
                                  const void *dout, const void *out, const float *lse,
                                  const void *q, const void *k, const void *v, const float *bias,
                                  const float *key_mask, float *scratch, enum kdtype dt, int B,
                                  int Tq, int Tk, int NH, int HS, int q_stride, int kv_stride,
                                  float scale);

/* rope.cu: F-Lite's rotary embedding and QK-norm (k_rope_norm_*), a warp
 * per (row, head), any head size; cos, sin (f32 [T, HS/2]) and rstd may be
 * NULL, and inp too in the backward without rstd. */
void cuda_rope_norm_forward(struct kctx *ctx, void *out, float *rstd, const void *inp,
                            const float *cos, const float *sin, enum kdtype dt, int B, int T,
                            int NH, int HS, int in_stride, int out_stride, float eps);
void cuda_rope_norm_backward(struct kctx *ctx, void *dinp, const void *dout, const void *inp,
                             const float *rstd, const float *cos, const float *sin,
                             enum kdtype dt, int B, int T, int NH, int HS, int in_stride,
                             int out_stride);

/* patch.cu */
void cuda_patchify_forward(struct kctx *ctx, void *out, const void *img, enum kdtype dt, int B,
                           int CH, int H, int W, int p);
void cuda_unpatchify_forward(struct kctx *ctx, void *img, const void *tok, enum kdtype dt, int B,
                             int CH, int H, int W, int p);
void cuda_unpatchify_backward(struct kctx *ctx, void *dtok, const void *dimg, enum kdtype dt,
                              int B, int CH, int H, int W, int p);

/* conv.cu: im2col by blocks of output pixels into scratch, cuBLASLt
 * products with fp32 output there, then bias and one rounding into out;
 * scratch holds cuda_conv2d_scratch floats (0 for a 1x1 stride-1 conv, a
 * plain product per image). */
int64_t cuda_conv2d_scratch(int C, int H, int W, int k, int stride, int pad_lo, int pad_hi);
void cuda_conv2d_forward(struct kctx *ctx, void *out, const void *inp, const void *weight,
                         const void *bias, float *scratch, enum kdtype dt, int B, int C, int H,
                         int W, int OC, int k, int stride, int pad_lo, int pad_hi);
void cuda_upsample_nearest2x_forward(struct kctx *ctx, void *out, const void *inp,
                                     enum kdtype dt, int B, int C, int H, int W);
void cuda_transpose_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt, int B,
                            int M, int N);

/* embedding.cu: ids and t in device memory. */
void cuda_embedding_forward(struct kctx *ctx, void *out, const void *table, const int32_t *ids,
                            enum kdtype dt, int B, int C);
void cuda_embedding_backward(struct kctx *ctx, float *dtable, const void *dout,
                             const int32_t *ids, enum kdtype dt, int B, int C);
void cuda_timestep_embedding(struct kctx *ctx, void *out, const float *t, enum kdtype dt, int B,
                             int D, float max_period, float freq_shift);

/* elementwise.cu */
void cuda_add_broadcast_forward(struct kctx *ctx, void *out, const void *a, const void *b,
                                enum kdtype dt, int B, int T, int C);
void cuda_add(struct kctx *ctx, void *out, const void *a, const void *b, enum kdtype dt,
              int64_t n);
void cuda_axpy(struct kctx *ctx, void *y, float alpha, const void *x, enum kdtype dt, int64_t n);
void cuda_fill(struct kctx *ctx, void *x, float value, enum kdtype dt, int64_t n);
void cuda_scale(struct kctx *ctx, void *x, float s, enum kdtype dt, int64_t n);
/* Waits: returns mean((pred - target)^2), summed in fp32 per block, in
 * double across blocks. */
float cuda_mse_forward_backward(struct kctx *ctx, void *dpred, const void *pred,
                                const void *target, enum kdtype dt, int64_t n, float scale);
/* Waits: sum of squares, fp32 per block and double across blocks. */
double cuda_sum_squares(struct kctx *ctx, const void *x, enum kdtype dt, int64_t n);
/* F-Lite's residual value mix (k_mix_forward, k_mix_backward), lam on the
 * device in dt (NULL: a copy). The backward does not wait: dlam's per-block
 * fp32 partials go to the reduce scratch and a one-block pass adds them to
 * dlam in double, in a fixed order. */
void cuda_mix_forward(struct kctx *ctx, void *out, const void *a, const void *b, const void *lam,
                      enum kdtype dt, int M, int C, int out_stride, int a_stride, int b_stride);
void cuda_mix_backward(struct kctx *ctx, void *da, void *db, float *dlam, const void *dout,
                       const void *a, const void *b, const void *lam, enum kdtype dt, int M,
                       int C, int dout_stride, int a_stride, int b_stride);

/* dropout.cu: k_dropout_forward, ids in device memory; a thread per Philox
 * block (4 elements of a sample); out may be inp. */
void cuda_dropout_forward(struct kctx *ctx, void *out, const void *inp, enum kdtype dt, float p,
                          uint64_t seed, uint32_t purpose, uint64_t step, const uint64_t *ids,
                          int B, int64_t per);

/* adamw.cu: one fused pass; copy (may be NULL) receives the updated
 * parameters in copy_dt, the compute copy of mixed precision. */
void cuda_adamw_update(struct kctx *ctx, float *param, const float *grad, float *m, float *v,
                       void *copy, enum kdtype copy_dt, int64_t n,
                       const struct adamw_params *hp);
/* fp8.cu: out[rows, cols] in dt = e4m3 codes widened times scale[row]. */
void cuda_fp8_rows_widen(struct kctx *ctx, void *out, const uint8_t *codes, const float *scale, enum kdtype dt,
                         int rows, int cols);
/* adamw8bit.cu: bitsandbytes' blockwise 8-bit AdamW, a thread block per
 * block of the state; copy as cuda_adamw_update's. */
void cuda_adamw8bit_update(struct kctx *ctx, float *param, const float *grad, uint8_t *state1, uint8_t *state2,
                           float *absmax1, float *absmax2, void *copy, enum kdtype copy_dt, int64_t n,
                           const struct adamw_params *hp);
/* ema[n] = decay * ema + (1 - decay) * param. */
void cuda_ema_update(struct kctx *ctx, float *ema, const float *param, float decay, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
