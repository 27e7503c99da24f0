/* The CPU backend: fp32, OpenMP, OpenBLAS; the reference every other
 * backend is checked against.
 *
 * Plain pointers: the dispatcher (kernels/ops/) has already checked
 * devices, dtypes and sizes, so these functions trust their arguments.
 * backend.c puts them behind the entry points of kernels/backend.h. NULL stands for an absent
 * tensor where kernels/kernels.h allows one. Shapes and the accumulate or
 * overwrite semantics are those of the k_* op of the same name.
 *
 * Every op except gemm and the Linear's two products gives bit-identical
 * results whatever the thread count: reductions run in a fixed order over a
 * fixed partition, never through float atomics or OpenMP reduction clauses
 * across threads (an `omp simd` reduction stays inside one thread's row).
 * Attention is included: each (batch, head) makes the same sequential sgemm
 * calls on any thread. The products that gemm.c splits between threads still
 * never sum across them, but OpenBLAS may round an edge tile differently. */
#ifndef DIT_KERNELS_CPU_H
#define DIT_KERNELS_CPU_H

#include "kernels/kernels.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

/* Loops shorter than this run on one thread: below it the fork-join costs
 * more than the work. */
#define CPU_PARALLEL_MIN 32768

/* The hot elementwise and row loops are compiled for AVX-512 and AVX2 besides
 * the baseline, and the loader picks one (GCC target_clones, an ifunc): the
 * Makefile builds for plain x86-64, whose 4-wide SSE does a quarter of what
 * these machines can. ISO C mode keeps -ffp-contract=off, so no clone fuses
 * a multiply-add and all of them round elementwise results alike; only the
 * lane count of an `omp simd` reduction differs. A clone must not contain an
 * OpenMP parallel region (its outlined body would not be cloned): callers
 * open the region and hand each thread its range. */
#if defined(__x86_64__) && defined(__GNUC__)
#define CPU_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_VECTOR_CLONES
#endif

/* This thread's share [*lo, *hi) of [0, n) inside a parallel region: equal
 * contiguous pieces starting on 16-element (cache line) boundaries. */
static inline void cpu_thread_range(int64_t n, int64_t *lo, int64_t *hi)
{
    int64_t parts = omp_get_num_threads(), k = omp_get_thread_num();
    int64_t units = (n + 15) / 16;
    *lo = units * k / parts * 16;
    *hi = units * (k + 1) / parts * 16;
    if (*lo > n)
        *lo = n;
    if (*hi > n)
        *hi = n;
}

/* e^x to within 1 ulp of the exact value (checked over every float), in
 * straight-line code that the compiler vectorises in `omp simd` loops, where
 * libm's expf is a call per element. e^x = 2^j e^r with j = round(x / ln 2),
 * r = x - j ln 2 in two parts (Cody-Waite: j * C1 is exact), e^r from the
 * Cephes expf polynomial, and 2^j applied as two normal powers of two so
 * that subnormal results come out right. The range checks are integer
 * masks, not float selects: under -ftrapping-math GCC will not if-convert a
 * float ?: and then leaves the loop scalar. x > ln(FLT_MAX) gives inf,
 * x < -104 gives 0, NaN stays NaN (the garbage j then only scales a NaN). */
static inline __attribute__((always_inline)) float cpu_expf(float x)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + shifter;
    float jf = t - shifter;
    float r = x - jf * 0.693359375f;
    r = r - jf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* t's low bits hold j + 2^22 exactly: j lies in [-150, 128] when in range */
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    int32_t j = (int32_t)(tb - 0x4B400000u);
    int32_t j1 = j / 2, j2 = j - j1;
    uint32_t b1 = (uint32_t)(j1 + 127) << 23, b2 = (uint32_t)(j2 + 127) << 23;
    float s1, s2, y;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    y = p * s1 * s2;
    uint32_t yb, over = -(uint32_t)(x > 88.72283935546875f), under = -(uint32_t)(x < -104.0f);
    memcpy(&yb, &y, sizeof yb);
    yb = (yb & ~(over | under)) | (0x7f800000u & over);
    memcpy(&y, &yb, sizeof y);
    return y;
}

/* gemm.c */
void cpu_gemm(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
              int trans_b, float alpha, float beta);
void cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int M, int C, int OC);
void cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int C, int OC);

/* norm.c: layernorm, adaLN modulate (alone and fused with the norm), gated residual */
void cpu_groupnorm_forward(float *out, const float *inp, const float *weight, const float *bias,
                           int B, int C, int HW, int G, float eps, int silu);
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, int M, int C,
                           float eps);
void cpu_layernorm_backward(float *dinp, const float *dout, const float *inp, const float *mean,
                            const float *rstd, int M, int C);
void cpu_modulate_forward(float *out, const float *x, const float *shift, const float *scale,
                          int B, int T, int C, int mod_stride);
void cpu_modulate_backward(float *dx, float *dshift, float *dscale, const float *dout,
                           const float *x, const float *scale, int B, int T, int C,
                           int mod_stride);
void cpu_adaln_forward(float *out, float *mean, float *rstd, const float *x, const float *shift,
                       const float *scale, int B, int T, int C, int mod_stride, float eps);
void cpu_adaln_backward(float *dx, float *dshift, float *dscale, const float *dout,
                        const float *x, const float *mean, const float *rstd, const float *scale,
                        int B, int T, int C, int mod_stride);
void cpu_gated_residual_forward(float *out, const float *res, const float *y, const float *gate,
                                int B, int T, int C, int mod_stride);
void cpu_gated_residual_backward(float *dy, float *dgate, const float *dres, const float *y,
                                 const float *gate, int B, int T, int C, int mod_stride);
/* T5's RMS norm; rstd and weight may be NULL; out may be inp */
void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int M,
                         int C, float eps);
/* its backward: dinp overwritten, dweight accumulated; dinp, dweight and weight may be NULL */
void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *rstd, const float *weight, int M, int C);

/* activation.c */
void cpu_gelu_forward(float *out, const float *inp, int64_t n);
void cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
void cpu_silu_forward(float *out, const float *inp, int64_t n);
void cpu_silu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
/* out[M,F] = gelu_tanh(inp[m, :F]) * inp[m, F:] */
void cpu_gated_gelu_forward(float *out, const float *inp, int M, int F);
/* The exact (erf) GELU and its derivative; out may be inp. */
void cpu_gelu_erf_forward(float *out, const float *inp, int64_t n);
void cpu_gelu_erf_backward(float *dinp, const float *dout, const float *inp, int64_t n);

/* attention.c: scratch holds scratch_n floats, cpu_attention_scratch(T, 1)
 * (2 min(T, 256) T) per thread; fewer threads run when it holds less. */
int64_t cpu_attention_scratch(int T, int threads);
void cpu_attention_forward(float *out, float *lse, const float *qkv, float *scratch,
                           int64_t scratch_n, int B, int T, int C, int NH);
void cpu_attention_backward(float *dqkv, const float *dout, const float *out, const float *lse,
                            const float *qkv, float *scratch, int64_t scratch_n, int B, int T,
                            int C, int NH);
/* Attention with a bias and a key mask (k_attention_bias_forward): one task
 * per (batch, head, block of up to 64 queries), cpu_attention_bias_tasks of
 * them, each holding a block of scores of its queries by Tk keys in scratch
 * (cpu_attention_bias_scratch(Tq, Tk, 1) floats per thread); fewer threads
 * run when it holds less. bias, key_mask and lse may be NULL. */
int64_t cpu_attention_bias_tasks(int B, int Tq, int NH);
int64_t cpu_attention_bias_scratch(int Tq, int Tk, int threads);
void cpu_attention_bias_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const float *bias, const float *key_mask,
                                float *scratch, int64_t scratch_n, int B, int Tq, int Tk, int NH,
                                int HS, int q_stride, int kv_stride, float scale);
/* Its backward (k_attention_bias_backward): one task per (batch, head),
 * cpu_attention_bias_backward_scratch(Tq, Tk, 1) floats per thread (P and
 * dS of a block of up to 64 queries by Tk keys); fewer threads run when
 * scratch_n holds less. dq, dk, dv (each may be NULL), bias and key_mask
 * may be NULL. */
int64_t cpu_attention_bias_backward_scratch(int Tq, int Tk, int threads);
void cpu_attention_bias_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const float *bias,
                                 const float *key_mask, float *scratch, int64_t scratch_n, int B,
                                 int Tq, int Tk, int NH, int HS, int q_stride, int kv_stride,
                                 float scale);

/* rope.c: F-Lite's rotary embedding and QK-norm (k_rope_norm_*); cos, sin
 * and rstd may be NULL */
void cpu_rope_norm_forward(float *out, float *rstd, const float *inp, const float *cos,
                           const float *sin, int B, int T, int NH, int HS, int in_stride,
                           int out_stride, float eps);
void cpu_rope_norm_backward(float *dinp, const float *dout, const float *inp, const float *rstd,
                            const float *cos, const float *sin, int B, int T, int NH, int HS,
                            int in_stride, int out_stride);

/* patch.c */
void cpu_patchify_forward(float *out, const float *img, int B, int CH, int H, int W, int p);
void cpu_unpatchify_forward(float *img, const float *tok, int B, int CH, int H, int W, int p);
void cpu_unpatchify_backward(float *dtok, const float *dimg, int B, int CH, int H, int W, int p);

/* conv.c: convolution (im2col by blocks of output rows into scratch, then
 * sgemm, or Winograd for 3x3 stride 1; scratch holds cpu_conv2d_scratch
 * floats) and resampling */
int64_t cpu_conv2d_scratch(int C, int H, int W, int OC, int k, int stride, int pad_lo,
                           int pad_hi);
/* conv_winograd.c: the 3x3 stride-1 convolutions of 8 or more input channels */
int cpu_conv3x3_winograd_applies(int C, int k, int stride, int pad_lo, int pad_hi);
int64_t cpu_conv3x3_winograd_scratch(int C, int H, int W, int OC, int pad_lo, int pad_hi);
void cpu_conv3x3_winograd(float *out, const float *inp, const float *weight, float *scratch,
                          int B, int C, int H, int W, int OC, int pad_lo, int pad_hi,
                          int accumulate);
void cpu_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                        float *scratch, int B, int C, int H, int W, int OC, int k, int stride,
                        int pad_lo, int pad_hi);
void cpu_upsample_nearest2x_forward(float *out, const float *inp, int B, int C, int H, int W);
void cpu_transpose_forward(float *out, const float *inp, int B, int M, int N);

/* embedding.c */
void cpu_embedding_forward(float *out, const float *table, const int32_t *ids, int B, int C);
void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int B, int C);
void cpu_timestep_embedding(float *out, const float *t, int B, int D, float max_period,
                            float freq_shift);

/* elementwise.c: elementwise ops and reductions */
void cpu_add_broadcast_forward(float *out, const float *a, const float *b, int B, int T, int C);
void cpu_add(float *out, const float *a, const float *b, int64_t n);
void cpu_axpy(float *y, float alpha, const float *x, int64_t n);
void cpu_fill(float *x, float value, int64_t n);
void cpu_scale(float *x, float s, int64_t n);
float cpu_mse_forward_backward(float *dpred, const float *pred, const float *target, int64_t n,
                               float scale);
double cpu_sum_squares(const float *x, int64_t n);
/* F-Lite's residual value mix (k_mix_forward, k_mix_backward): strided rows;
 * lam, b (lam absent), da, db and dlam may be NULL; dlam summed over fixed
 * chunks of rows. */
void cpu_mix_forward(float *out, const float *a, const float *b, const float *lam, int M, int C,
                     int out_stride, int a_stride, int b_stride);
void cpu_mix_backward(float *da, float *db, float *dlam, const float *dout, const float *a,
                      const float *b, const float *lam, int M, int C, int dout_stride,
                      int a_stride, int b_stride);

/* dropout.c: k_dropout_forward, ids in host memory; out may be inp */
void cpu_dropout_forward(float *out, const float *inp, float p, uint64_t seed, uint32_t purpose,
                         uint64_t step, const uint64_t *ids, int B, int64_t per);

/* fp8.c */
void cpu_fp8_rows_widen(float *out, const uint8_t *codes, const float *scale, int rows, int cols);
/* adamw8bit.c; cpu_qmap_quantize: qmap_quantize of x in [-1, 1] by table */
uint8_t cpu_qmap_quantize(int is_signed, float x);
void cpu_adamw8bit_update(float *param, const float *grad, uint8_t *state1, uint8_t *state2, float *absmax1,
                          float *absmax2, int64_t n, const struct adamw_params *hp);
/* adamw.c */
void cpu_adamw_update(float *param, const float *grad, float *m, float *v, int64_t n,
                      const struct adamw_params *hp);

/* convert.c: dst[n] = src[n] from one dtype to another, rounding to
 * nearest even; host memory (the f32 transfers of every backend use it). */
void cpu_convert(void *dst, enum kdtype ddt, const void *src, enum kdtype sdt, int64_t n);
/* dst[n] += src[n] (f32), rounded once to dst's dtype. */
void cpu_accumulate(void *dst, enum kdtype ddt, const float *src, int64_t n);

#endif
