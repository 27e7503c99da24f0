/* The CPU backend: fp32, OpenMP, OpenBLAS; the reference every other
 * backend is checked against.
 *
 * Plain pointers: kernels/ops.c has already checked devices, dtypes and
 * sizes, so these functions trust their arguments. NULL stands for an absent
 * tensor where kernels/kernels.h allows one. Shapes and the accumulate or
 * overwrite semantics are those of the k_* op of the same name.
 *
 * Every op except the OpenBLAS calls gives bit-identical results whatever the
 * thread count: reductions run in a fixed order over a fixed partition, never
 * through float atomics or OpenMP reduction clauses. */
#ifndef DIT_KERNELS_CPU_H
#define DIT_KERNELS_CPU_H

#include "kernels/kernels.h"

#include <stdint.h>

/* Loops shorter than this run on one thread: below it the fork-join costs
 * more than the work. */
#define CPU_PARALLEL_MIN 32768

/* gemm.c */
void cpu_gemm(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
              int trans_b, float alpha, float beta);
void cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int M, int C, int OC);
void cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int C, int OC);

/* norm.c: layernorm, adaLN modulate, gated residual */
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, int M, int C,
                           float eps);
void cpu_layernorm_backward(float *dinp, const float *dout, const float *inp, const float *mean,
                            const float *rstd, int M, int C);
void cpu_modulate_forward(float *out, const float *x, const float *shift, const float *scale,
                          int B, int T, int C, int mod_stride);
void cpu_modulate_backward(float *dx, float *dshift, float *dscale, const float *dout,
                           const float *x, const float *scale, int B, int T, int C,
                           int mod_stride);
void cpu_gated_residual_forward(float *res, const float *y, const float *gate, int B, int T,
                                int C, int mod_stride);
void cpu_gated_residual_backward(float *dy, float *dgate, const float *dres, const float *y,
                                 const float *gate, int B, int T, int C, int mod_stride);

/* activation.c */
void cpu_gelu_forward(float *out, const float *inp, int64_t n);
void cpu_gelu_backward(float *dinp, const float *dout, const float *inp, int64_t n);
void cpu_silu_forward(float *out, const float *inp, int64_t n);
void cpu_silu_backward(float *dinp, const float *dout, const float *inp, int64_t n);

/* attention.c: scratch holds scratch_n floats, cpu_attention_scratch(T, 1)
 * per thread; fewer threads run when it holds fewer rows. */
int64_t cpu_attention_scratch(int T, int threads);
void cpu_attention_forward(float *out, float *lse, const float *qkv, float *scratch,
                           int64_t scratch_n, int B, int T, int C, int NH);
void cpu_attention_backward(float *dqkv, const float *dout, const float *out, const float *lse,
                            const float *qkv, float *scratch, int64_t scratch_n, int B, int T,
                            int C, int NH);

/* patch.c */
void cpu_patchify_forward(float *out, const float *img, int B, int CH, int H, int W, int p);
void cpu_unpatchify_forward(float *img, const float *tok, int B, int CH, int H, int W, int p);
void cpu_unpatchify_backward(float *dtok, const float *dimg, int B, int CH, int H, int W, int p);

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

/* adamw.c */
void cpu_adamw_update(float *param, const float *grad, float *m, float *v, int64_t n,
                      const struct adamw_params *hp);

#endif
