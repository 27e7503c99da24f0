/* The op interface every model is written against.
 *
 * One call per op, forward and backward as explicit pairs in the style of
 * llm.c, with the shapes in the comments. Every tensor argument carries its
 * dtype and device; the dispatcher (kernels/ops/, one file per family of
 * ops) checks the call and sends it through the context's backend table
 * (kernels/backend.h): the CPU backend (kernels/cpu/, the reference: fp32,
 * OpenMP, OpenBLAS) or the CUDA backend (kernels/cuda/). It refuses mixed
 * devices or a dtype a backend lacks with a message naming the op. Ops
 * never allocate: every buffer, scratch included, comes from arenas the
 * model plans before the first step.
 *
 * Conventions:
 *  - Row-major, contiguous. B batch, T tokens, C channels, NH heads,
 *    HS = C / NH head size, OC output channels.
 *  - Linear weights are [OC, C] as torch.nn.Linear stores them: y = x W^T + b.
 *  - Backward ops ACCUMULATE (+=) into parameter gradients (dweight, dbias,
 *    dtable...), so gradient accumulation needs no extra pass; they OVERWRITE
 *    activation gradients (dinp...) unless the comment says otherwise.
 *  - A NULL tensor (data == NULL) means "absent": allowed for a bias and for
 *    every gradient output (no gradient wanted: frozen weights, LoRA).
 */
#ifndef DIT_KERNELS_H
#define DIT_KERNELS_H

#include "kernels/device.h"

#include <stddef.h>
#include <stdint.h>

enum kdtype {
    KDT_F32 = 0,
    KDT_BF16 = 1,
    KDT_F16 = 2,
    KDT_U8 = 3, /* codes (8-bit optimizer state): no op computes in it */
};

struct tensor {
    void *data;
    enum kdtype dtype;
    enum device_kind device;
    int64_t n; /* elements; the op checks it against the shape it is given */
};

struct kbackend;

/* The context of a run: device, threads, and the backend's state. */
struct kctx {
    enum device_kind device;
    int threads; /* CPU threads for OpenMP and OpenBLAS; 0 = all */
    const struct kbackend *ops; /* the device's backend table, set by kctx_init */
    void *backend; /* backend-private state: CUDA's stream and handles */
    int64_t mem_now, mem_peak; /* bytes k_alloc holds on the CPU */
};

/* Sets up the backend for device; -1 with err_set(). */
int kctx_init(struct kctx *ctx, enum device_kind device, int threads);
void kctx_free(struct kctx *ctx);

static inline size_t kdtype_bytes(enum kdtype dt)
{
    return dt == KDT_F32 ? 4 : dt == KDT_U8 ? 1 : 2;
}
const char *kdtype_name(enum kdtype dt);

/* An fp32 host tensor over data[0..n). */
static inline struct tensor tensor_f32(float *data, int64_t n)
{
    struct tensor t = {data, KDT_F32, DEVICE_CPU, n};
    return t;
}

static inline struct tensor tensor_none(void)
{
    struct tensor t = {NULL, KDT_F32, DEVICE_CPU, 0};
    return t;
}

/* n elements starting at element offset of t. */
static inline struct tensor tensor_view(struct tensor t, int64_t offset, int64_t n)
{
    struct tensor v = t;
    v.data = t.data ? (char *)t.data + offset * (int64_t)kdtype_bytes(t.dtype) : NULL;
    v.n = n;
    return v;
}

/* ---- memory --------------------------------------------------------------
 *
 * Models allocate their arenas once, before the first step, with k_alloc;
 * ops never allocate. Host data moves with k_upload / k_download (for the
 * CPU these are copies). Precision: the CPU backend computes in f32 only;
 * the CUDA backend keeps activations in f32, bf16 or f16 (one dtype per op
 * call), and some tensors are f32 whatever that dtype is: statistics (mean,
 * rstd, lse), scratch, parameter gradients and optimizer state. */

/* t = n elements of dt in the device's memory, aligned to 256 bytes; -1 with
 * err_set() naming the size when it does not fit. */
int k_alloc(struct kctx *ctx, struct tensor *t, enum kdtype dt, int64_t n);
/* Frees what k_alloc gave (not a view); t becomes absent. */
void k_free(struct kctx *ctx, struct tensor *t);
/* dst[0..n) = host[0..n), the host values already in dst's dtype. */
void k_upload(struct kctx *ctx, struct tensor dst, const void *host, int64_t n);
/* host[0..n) = src[0..n) in src's dtype; waits for every earlier op. */
void k_download(struct kctx *ctx, void *host, struct tensor src, int64_t n);
/* The same from and to f32 host values, rounding to nearest even into a
 * bf16 or f16 tensor. */
void k_upload_f32(struct kctx *ctx, struct tensor dst, const float *host, int64_t n);
void k_download_f32(struct kctx *ctx, float *host, struct tensor src, int64_t n);
/* out[rows, cols] = e4m3_to_f32(codes[r, c]) * scale[r], rounded to out's
 * dtype: a weight stored in fp8 with one scale per output channel
 * (f32_to_e4m3_rows) widened for the product that reads it. codes u8,
 * scale f32. */
void k_fp8_rows_widen(struct kctx *ctx, struct tensor out, struct tensor codes, struct tensor scale, int rows,
                      int cols);
/* dst[0..n) = src[0..n), same dtype, both on ctx's device. */
void k_copy(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n);
/* dst[0..n) = src[0..n) converted (round to nearest even), on the device. */
void k_convert(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n);
/* dst[0..n) = dst + src, in f32 and rounded once (nearest even) to dst's
 * dtype, which may be any value dtype on any backend; src f32. What keeps
 * gradients in bf16: a product's f32 contribution added in. */
void k_accumulate(struct kctx *ctx, struct tensor dst, struct tensor src, int64_t n);
/* Waits for every op queued on ctx (a no-op on the CPU). */
void k_sync(struct kctx *ctx);
/* Bytes k_alloc holds now and held at most since kctx_init. */
void k_mem_usage(struct kctx *ctx, int64_t *now, int64_t *peak);

/* ---- matrix multiply ---------------------------------------------------- */

/* C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T as given.
 * A is [M,K] (or [K,M] when trans_a), B is [K,N] (or [N,K] when trans_b). */
void k_gemm(struct kctx *ctx, struct tensor c, struct tensor a, struct tensor b, int M, int N,
            int K, int trans_a, int trans_b, float alpha, float beta);

/* out[M,OC] = inp[M,C] weight[OC,C]^T + bias[OC] (bias may be absent). */
void k_linear_forward(struct kctx *ctx, struct tensor out, struct tensor inp, struct tensor weight,
                      struct tensor bias, int M, int C, int OC);
/* pre[M,OC] = inp weight^T + bias and out = gelu(pre) (GELU tanh, as
 * k_gelu_forward): the MLP's first Linear, one product with a GELU epilogue
 * on CUDA. pre is what k_gelu_backward needs. */
void k_linear_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor pre,
                           struct tensor inp, struct tensor weight, struct tensor bias, int M,
                           int C, int OC);
/* dinp[M,C] = dout[M,OC] weight[OC,C] (overwrites; may be absent)
 * dweight[OC,C] += dout^T inp; dbias[OC] += sum over M of dout (may be absent). */
void k_linear_backward(struct kctx *ctx, struct tensor dinp, struct tensor dweight,
                       struct tensor dbias, struct tensor dout, struct tensor inp,
                       struct tensor weight, int M, int C, int OC);

/* ---- normalisation and adaLN ------------------------------------------ */

/* LayerNorm without affine over the last dim: out[M,C], mean[M], rstd[M]
 * (saved for backward), rstd = 1/sqrt(var + eps), biased variance. */
void k_layernorm_forward(struct kctx *ctx, struct tensor out, struct tensor mean,
                         struct tensor rstd, struct tensor inp, int M, int C, float eps);
/* dinp[M,C] += d/dinp (accumulates: the input is usually a residual stream). */
void k_layernorm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                          struct tensor inp, struct tensor mean, struct tensor rstd, int M, int C);

/* out[B,C,HW] = GroupNorm(G groups of C/G channels, eps) of inp[B,C,HW]
 * with affine weight[C], bias[C] (both in the activations' dtype), then
 * SiLU when silu != 0; statistics in fp32 (mean and biased variance over
 * (C/G)*HW, as torch). out may equal inp (in place). */
void k_groupnorm_forward(struct kctx *ctx, struct tensor out, struct tensor inp,
                         struct tensor weight, struct tensor bias, int B, int C, int HW, int G,
                         float eps, int silu);

/* out[B,T,C] = x[B,T,C] * (1 + scale[B,C]) + shift[B,C]; shift and scale
 * are rows of a larger [B, k*C] buffer, so each has a row stride (in
 * elements), and a view's n counts from its first row's start: at least
 * (B - 1) * mod_stride + C. */
void k_modulate_forward(struct kctx *ctx, struct tensor out, struct tensor x, struct tensor shift,
                        struct tensor scale, int B, int T, int C, int mod_stride);
/* dx[B,T,C] = dout * (1 + scale) (overwrites);
 * dshift[B,C] += sum_t dout; dscale[B,C] += sum_t dout * x (rows at mod_stride). */
void k_modulate_backward(struct kctx *ctx, struct tensor dx, struct tensor dshift,
                         struct tensor dscale, struct tensor dout, struct tensor x,
                         struct tensor scale, int B, int T, int C, int mod_stride);

/* adaLN's norm and modulate in one pass, DiT's modulate(norm(x), shift,
 * scale): out[B,T,C] = LN(x) * (1 + scale[B,C]) + shift[B,C], LN as
 * k_layernorm_forward (no affine), mean[B*T] and rstd[B*T] saved (f32).
 * LN(x) itself is not stored: backward recomputes it as (x - mean) * rstd,
 * which saves a [B,T,C] activation per norm. shift and scale rows at
 * mod_stride as k_modulate_forward. */
void k_adaln_forward(struct kctx *ctx, struct tensor out, struct tensor mean, struct tensor rstd,
                     struct tensor x, struct tensor shift, struct tensor scale, int B, int T,
                     int C, int mod_stride, float eps);
/* With ln = (x - mean) * rstd and dln = dout * (1 + scale):
 * dx[B,T,C] += the LayerNorm backward of dln (ACCUMULATES, as
 * k_layernorm_backward: x is a residual stream); dshift[B,C] += sum_t dout;
 * dscale[B,C] += sum_t dout * ln (rows at mod_stride). Any of the three may
 * be absent. */
void k_adaln_backward(struct kctx *ctx, struct tensor dx, struct tensor dshift,
                      struct tensor dscale, struct tensor dout, struct tensor x,
                      struct tensor mean, struct tensor rstd, struct tensor scale, int B, int T,
                      int C, int mod_stride);

/* The gated residual of adaLN-Zero: out[B,T,C] = res[B,T,C] + gate[B,C] *
 * y[B,T,C] (gate rows at mod_stride). out may be res itself (in place on the
 * residual stream) but must not overlap it otherwise. */
void k_gated_residual_forward(struct kctx *ctx, struct tensor out, struct tensor res,
                              struct tensor y, struct tensor gate, int B, int T, int C,
                              int mod_stride);
/* dy[B,T,C] = dres * gate (overwrites); dgate[B,C] += sum_t dres * y.
 * dres flows to the residual unchanged, so it is not written. */
void k_gated_residual_backward(struct kctx *ctx, struct tensor dy, struct tensor dgate,
                               struct tensor dres, struct tensor y, struct tensor gate, int B,
                               int T, int C, int mod_stride);

/* out[M,C] = inp[M,C] * rsqrt(mean_c(inp^2) + eps) * weight[C] (T5LayerNorm / RMSNorm): the
 * mean of squares in fp32 whatever the dtype; weight in the activations' dtype, or absent
 * (no weight: plain RMS normalisation). rstd[M] f32, optional (absent: not written): kept for
 * a backward to come. out may equal inp. */
void k_rmsnorm_forward(struct kctx *ctx, struct tensor out, struct tensor rstd, struct tensor inp,
                       struct tensor weight, int M, int C, float eps);
/* dinp[M,C] (overwrites) from dout[M,C] for out = inp * rstd * weight, rstd from
 * k_rmsnorm_forward; weight absent: out = inp * rstd. dweight f32 [C], optional, accumulates
 * sum_m dout * inp * rstd (F-Lite's trainable norms). out may not equal inp. */
void k_rmsnorm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dweight,
                        struct tensor dout, struct tensor inp, struct tensor rstd,
                        struct tensor weight, int M, int C);

/* ---- activations -------------------------------------------------------- */

/* GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
void k_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n);
/* dinp = dout * gelu'(inp) (overwrites). */
void k_gelu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n);
/* SiLU: x * sigmoid(x). */
void k_silu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n);
/* dinp = dout * silu'(inp) (overwrites). */
void k_silu_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout, struct tensor inp,
                     int64_t n);

/* out[M,F] = gelu_tanh(inp[m, f]) * inp[m, F + f]: T5 v1.1's gated-GELU feed-forward
 * ("gelu_new", the tanh approximation), the two input projections wi_0 | wi_1 computed as
 * one [M, 2F] linear. */
void k_gated_gelu_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int M, int F);
/* GELU, exact: 0.5 x (1 + erf(x / sqrt 2)) (torch.nn.GELU(), F-Lite's MLP). out may equal inp. */
void k_gelu_erf_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int64_t n);
/* dinp = dout * gelu_erf'(inp) (overwrites). */
void k_gelu_erf_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                         struct tensor inp, int64_t n);

/* ---- attention ---------------------------------------------------------- */

/* Multi-head self-attention, no mask, softmax scale 1/sqrt(HS):
 * qkv[B,T,3C] holds q | k | v, each [NH, HS] per token (the layout of a fused
 * qkv Linear, and of to_q/to_k/to_v concatenated). out[B,T,C] with heads
 * concatenated; lse[B,NH,T] is the log-sum-exp of each softmax row, saved so
 * that backward recomputes the probabilities without storing a T x T matrix.
 * scratch: f32, at least k_attention_scratch(ctx, B, T, NH) elements. */
void k_attention_forward(struct kctx *ctx, struct tensor out, struct tensor lse, struct tensor qkv,
                         struct tensor scratch, int B, int T, int C, int NH);
/* dqkv[B,T,3C] (overwrites) from dout[B,T,C]. */
void k_attention_backward(struct kctx *ctx, struct tensor dqkv, struct tensor dout,
                          struct tensor out, struct tensor lse, struct tensor qkv,
                          struct tensor scratch, int B, int T, int C, int NH);
int64_t k_attention_scratch(const struct kctx *ctx, int B, int T, int NH);

/* Multi-head attention with an additive bias and a key mask, any query/key lengths:
 * for batch b, head h, query i: s_j = scale * q_i . k_j + bias[h, i, j] over keys j with
 * key_mask[b, j] != 0, out[b, i, h*HS:(h+1)*HS] = softmax(s) . v. Row (b, t) of q starts at
 * element (b*Tq + t) * q_stride of q, head h at + h*HS; k and v likewise with kv_stride and
 * Tk (so q, k, v may be views into one fused qkv buffer, or q from image tokens and k, v from
 * text: cross-attention). out[B, Tq, NH*HS] contiguous. bias f32 [NH, Tq, Tk] shared by the
 * batch, optional; key_mask f32 [B, Tk] (1 attend, 0 not), optional; a query whose keys are
 * all masked gets zeros (and lse = -inf). lse f32 [B, NH, Tq] = log-sum-exp of s, optional.
 * T5 uses scale 1 (unscaled scores). Never materialises more than the backend's scratch. */
void k_attention_bias_forward(struct kctx *ctx, struct tensor out, struct tensor lse,
                              struct tensor q, struct tensor k, struct tensor v, struct tensor bias,
                              struct tensor key_mask, struct tensor scratch, int B, int Tq, int Tk,
                              int NH, int HS, int q_stride, int kv_stride, float scale);
/* Floats of scratch k_attention_bias_forward needs (may be 0). */
int64_t k_attention_bias_scratch(const struct kctx *ctx, int B, int Tq, int Tk, int NH, int HS);
/* The gradient of k_attention_bias_forward, with the same bias and key_mask (the bias gets no
 * gradient): dq rows q_stride apart like q, dk and dv rows kv_stride apart like k and v, each
 * overwritten on its heads' elements only (so dq, dk, dv may be views into one fused dqkv
 * buffer; what lies between them is left as it was), from dout[B, Tq, NH*HS] contiguous and
 * the forward's out and lse. A key no query attends gets zero dk and dv. Deterministic: the
 * same inputs give the same bits on every run. scratch: f32, at least
 * k_attention_bias_backward_scratch() elements. */
void k_attention_bias_backward(struct kctx *ctx, struct tensor dq, struct tensor dk,
                               struct tensor dv, struct tensor dout, struct tensor out,
                               struct tensor lse, struct tensor q, struct tensor k,
                               struct tensor v, struct tensor bias, struct tensor key_mask,
                               struct tensor scratch, int B, int Tq, int Tk, int NH, int HS,
                               int q_stride, int kv_stride, float scale);
int64_t k_attention_bias_backward_scratch(const struct kctx *ctx, int B, int Tq, int Tk, int NH,
                                          int HS);

/* ---- rotary embedding and the query/key norm ----------------------------- */

/* F-Lite's query/key path, per head: the rotary embedding, then RMS normalisation over the
 * head (QK-norm, no weight), each optional. Row (b, t) of inp starts at element
 * (b*T + t) * in_stride, head h at + h*HS; out likewise with out_stride (so both may be
 * views into a fused qkv buffer). Rotation, F-Lite's pairing and sign: x1 = x[:HS/2],
 * x2 = x[HS/2:], r1 = x1 cos + x2 sin, r2 = -x1 sin + x2 cos, with cos and sin f32
 * [T, HS/2] of token t, shared by the batch and the heads; cos and sin absent: r = x.
 * Norm: y = r * rsqrt(mean(r^2) + eps), rstd f32 [B*T*NH] at (b*T + t)*NH + h saved for
 * backward; rstd absent: y = r. Math in f32 whatever the dtype. out may not equal inp. */
void k_rope_norm_forward(struct kctx *ctx, struct tensor out, struct tensor rstd,
                         struct tensor inp, struct tensor cos, struct tensor sin, int B, int T,
                         int NH, int HS, int in_stride, int out_stride, float eps);
/* dinp (rows in_stride apart; the heads' elements overwritten, the rest left as it was)
 * from dout (rows out_stride apart), with the forward's inp, rstd, cos and sin. */
void k_rope_norm_backward(struct kctx *ctx, struct tensor dinp, struct tensor dout,
                          struct tensor inp, struct tensor rstd, struct tensor cos,
                          struct tensor sin, int B, int T, int NH, int HS, int in_stride,
                          int out_stride);

/* ---- patches ------------------------------------------------------------ */

/* The im2col of a stride-p, kernel-p convolution: img[B,CH,H,W] ->
 * out[B, (H/p)(W/p), CH*p*p], tokens row by row, features in the order
 * (channel, ky, kx) of a Conv2d weight [OC, CH, p, p] flattened, so the patch
 * embedding is k_linear_forward with that weight viewed as [OC, CH*p*p]. */
void k_patchify_forward(struct kctx *ctx, struct tensor out, struct tensor img, int B, int CH,
                        int H, int W, int p);
/* The DiT final layer's unpatchify: tok[B, (H/p)(W/p), p*p*CH], features in
 * the order (ky, kx, channel) -> img[B,CH,H,W]. */
void k_unpatchify_forward(struct kctx *ctx, struct tensor img, struct tensor tok, int B, int CH,
                          int H, int W, int p);
/* dtok[B,T,p*p*CH] (overwrites) from dimg[B,CH,H,W]: the inverse permutation. */
void k_unpatchify_backward(struct kctx *ctx, struct tensor dtok, struct tensor dimg, int B,
                           int CH, int H, int W, int p);

/* ---- convolution and resampling (forward only: the frozen VAE) ---------- */

/* out[B,OC,Ho,Wo] = conv2d(inp[B,C,H,W], weight[OC,C,k,k]) + bias[OC] (bias
 * may be absent), torch's Conv2d layout; k is 1 or 3, stride 1 or 2; zero
 * padding pad_lo before and pad_hi after each spatial axis, so
 * Ho = (H + pad_lo + pad_hi - k) / stride + 1 and likewise Wo (diffusers:
 * 1,1 for a 3x3 conv; 0,1 for the stride-2 downsample after
 * F.pad(x,(0,1,0,1)); 0,0 for 1x1). weight and bias in the activations'
 * dtype. scratch: f32, at least k_conv2d_scratch(ctx, C, H, W, OC, k,
 * stride, pad_lo, pad_hi) elements (im2col or Winograd tiles by blocks, so
 * memory stays bounded for a 1024x1024 image with 512 channels; 0 for a 1x1
 * stride-1 conv). */
void k_conv2d_forward(struct kctx *ctx, struct tensor out, struct tensor inp, struct tensor weight,
                      struct tensor bias, struct tensor scratch, int B, int C, int H, int W,
                      int OC, int k, int stride, int pad_lo, int pad_hi);
int64_t k_conv2d_scratch(const struct kctx *ctx, int C, int H, int W, int OC, int k, int stride,
                         int pad_lo, int pad_hi);

/* out[B,C,2H,2W]: each pixel of inp[B,C,H,W] repeated 2x2
 * (F.interpolate(scale_factor=2, mode="nearest")). */
void k_upsample_nearest2x_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int B,
                                  int C, int H, int W);

/* out[B,N,M] = inp[B,M,N] transposed per batch: [B,C,HW] channel maps <->
 * [B,HW,C] tokens. out and inp must not overlap. */
void k_transpose_forward(struct kctx *ctx, struct tensor out, struct tensor inp, int B, int M,
                         int N);

/* ---- embeddings --------------------------------------------------------- */

/* out[B,C] = table[ids[b], :]; ids are int32 in the memory of ctx's device
 * (checked against the table on the CPU only: a model checks labels before
 * it uploads them). */
void k_embedding_forward(struct kctx *ctx, struct tensor out, struct tensor table,
                         const int32_t *ids, int B, int C);
/* dtable[ids[b], :] += dout[b, :] (dtable f32: a parameter gradient). */
void k_embedding_backward(struct kctx *ctx, struct tensor dtable, struct tensor dout,
                          const int32_t *ids, int B, int C);

/* Sinusoidal timestep embedding, dim D even, half = D/2:
 * freq[i] = exp(-ln(max_period) * i / (half - freq_shift)), arg = t[b] * freq[i],
 * out[b] = [cos(arg) | sin(arg)] (cos first, as DiT and diffusers'
 * flip_sin_to_cos=True give). DiT uses freq_shift 0, diffusers' DiT 1.
 * t[B] is f32 in the memory of ctx's device. */
void k_timestep_embedding(struct kctx *ctx, struct tensor out, const float *t, int B, int D,
                          float max_period, float freq_shift);

/* ---- elementwise and reductions ---------------------------------------- */

/* out[B,T,C] = a[B,T,C] + b[T,C] (a broadcast add, e.g. positional embedding). */
void k_add_broadcast_forward(struct kctx *ctx, struct tensor out, struct tensor a,
                             struct tensor b, int B, int T, int C);
/* out[n] = a[n] + b[n]. */
void k_add(struct kctx *ctx, struct tensor out, struct tensor a, struct tensor b, int64_t n);
/* y[n] += alpha * x[n]. */
void k_axpy(struct kctx *ctx, struct tensor y, float alpha, struct tensor x, int64_t n);
/* out[m, c] = lam a[m, c] + (1 - lam) b[m, c] for m < M, c < C: F-Lite's residual value
 * mix, lam = lam[0] in the activations' dtype on the device (a parameter of the compute
 * weights). Rows of out, a and b lie out_stride, a_stride, b_stride elements apart. lam
 * absent: out = a (a strided copy; b unused). Math in f32. */
void k_mix_forward(struct kctx *ctx, struct tensor out, struct tensor a, struct tensor b,
                   struct tensor lam, int M, int C, int out_stride, int a_stride, int b_stride);
/* Accumulates the gradient of k_mix_forward from dout (rows dout_stride apart):
 * da[m*a_stride + c] += lam dout (lam absent: += dout); db, optional, contiguous [M, C],
 * += (1 - lam) dout; dlam, optional, f32 [1], += sum over m, c of dout (a - b), summed in a
 * fixed order (the same bits on every run). */
void k_mix_backward(struct kctx *ctx, struct tensor da, struct tensor db, struct tensor dlam,
                    struct tensor dout, struct tensor a, struct tensor b, struct tensor lam,
                    int M, int C, int dout_stride, int a_stride, int b_stride);
void k_fill(struct kctx *ctx, struct tensor x, float value, int64_t n);

/* Inverted dropout, the same mask on every device, run and call: for B samples of `per`
 * elements, out[b*per + j] = inp[b*per + j] * s where value j of the Philox stream
 * rng_stream(seed, purpose, step, ids[b]) drawn as rng_uniform_f32 (libcommon/philox.h) is
 * >= p (compared in float), and +0 where it is below. s = 1.0f / (1.0f - p), rounded to f32
 * once per call (a multiply by it, not a division per element): every backend does the same
 * float operations, so f32 results are the same bits, and bf16/f16 ones are that f32 value
 * rounded once on store. p == 0 is a copy (nothing when out is inp).
 * ids: [B] uint64 sample indices in the memory of ctx's device, taken modulo 2^32 (as
 * rng_stream takes them); purpose below 2^16 (philox.h's limit). Because the mask is a
 * function of its address, gradient checkpointing's recomputation sees the forward's mask,
 * and the backward is this op applied to the gradient (dinp = dropout(dout)). p in [0, 1);
 * out may equal inp (any other overlap is the caller's bug). Math in f32. */
void k_dropout_forward(struct kctx *ctx, struct tensor out, struct tensor inp, float p,
                       uint64_t seed, uint32_t purpose, uint64_t step, const uint64_t *ids, int B,
                       int64_t per);

/* Mean squared error over n elements: returns mean((pred - target)^2); with
 * dpred present, dpred = scale * 2 (pred - target) / n (overwrites). */
float k_mse_forward_backward(struct kctx *ctx, struct tensor dpred, struct tensor pred,
                             struct tensor target, int64_t n, float scale);

/* Sum of squares, for grad norms: in double on the CPU; in fp32 per block
 * and double across blocks on CUDA. Waits. */
double k_sum_squares(struct kctx *ctx, struct tensor x, int64_t n);
/* x[n] *= s. */
void k_scale(struct kctx *ctx, struct tensor x, float s, int64_t n);

/* ---- optimiser ---------------------------------------------------------- */

/* Doubles, as torch keeps them in Python floats: 1 - beta2 for beta2 = 0.999
 * is then rounded once, as in torch, not computed from a float 0.999f. */
struct adamw_params {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step; /* 1 at the first update: bias corrections use it */
};

/* Decoupled weight decay as torch.optim.AdamW, on f32 tensors:
 * p -= lr * wd * p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
 * copy (may be absent) receives the updated p in its own dtype: the bf16 or
 * f16 weights mixed precision computes with, refreshed in the same pass. */
void k_adamw_update(struct kctx *ctx, struct tensor param, struct tensor grad, struct tensor m,
                    struct tensor v, struct tensor copy, int64_t n,
                    const struct adamw_params *hp);
/* bitsandbytes' blockwise 8-bit AdamW (AdamW8bit, its CUDA kernel
 * kOptimizerStatic8bit2StateBlockwise) on one tensor of n elements in
 * blocks of K_ADAMW8BIT_BLOCK: state1 and state2 [n] u8 codes into the
 * signed and unsigned maps (kernels/qmap.h), absmax1 and absmax2
 * [ceil(n / block)] f32. Per block: m = code1 * absmax1 and v = code2 *
 * absmax2 dequantised, m = m b1 + (1-b1) g and v = v b2 + (1-b2) g g in f32,
 * the new absmax the block's largest |m| and |v|, p += -lr c2/c1 * m /
 * (sqrt(v) + c2 eps) with c1 = 1 - b1^t and c2 = sqrt(1 - b2^t), then
 * (decoupled) p *= 1 - lr wd; m / absmax and v / absmax requantised to the
 * nearest code (bitsandbytes' binary search) with m's sign kept. A
 * non-finite gradient leaves its parameter alone and zeroes its moments;
 * a block whose absmax is 0 takes the zero codes (bitsandbytes divides
 * 0/0 there). copy (may be absent) receives the updated p in its dtype. */
#define K_ADAMW8BIT_BLOCK 256
void k_adamw8bit_update(struct kctx *ctx, struct tensor param, struct tensor grad, struct tensor state1,
                        struct tensor state2, struct tensor absmax1, struct tensor absmax2, struct tensor copy,
                        int64_t n, const struct adamw_params *hp);
/* The EMA of DiT's update_ema, f32: ema = decay * ema + (1 - decay) * param,
 * rounded as ema * decay, then plus (1 - decay) * param. */
void k_ema_update(struct kctx *ctx, struct tensor ema, struct tensor param, float decay,
                  int64_t n);

#endif
