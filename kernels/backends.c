/* The backends this build has: the CPU's always (kernels/cpu/backend.c),
 * CUDA's where the build found nvcc (kernels/cuda/, whose entry points are
 * the table below). The only place outside kernels/cuda/ that knows
 * whether CUDA is built in. */
#include "kernels/backend.h"

#ifdef DIT_HAVE_CUDA
#include "kernels/cuda/cuda.h"

/* The CUDA kernels size their scratch from the shape alone and know it
 * without a context; the table's entries take one. */
static int64_t cuda_be_attention_scratch(const struct kctx *ctx, int B, int T, int NH)
{
    return cuda_attention_scratch(B, T, NH);
}

/* CUDA's attention was sized by cuda_attention_scratch, which it relies on;
 * scratch_n serves the CPU's thread count. */
static void cuda_be_attention_forward(struct kctx *ctx, void *out, float *lse, const void *qkv,
                                      float *scratch, int64_t scratch_n, enum kdtype dt, int B,
                                      int T, int C, int NH)
{
    cuda_attention_forward(ctx, out, lse, qkv, scratch, dt, B, T, C, NH);
}

static void cuda_be_attention_backward(struct kctx *ctx, void *dqkv, const void *dout,
                                       const void *out, const float *lse, const void *qkv,
                                       float *scratch, int64_t scratch_n, enum kdtype dt, int B,
                                       int T, int C, int NH)
{
    cuda_attention_backward(ctx, dqkv, dout, out, lse, qkv, scratch, dt, B, T, C, NH);
}

static int64_t cuda_be_attention_bias_scratch(const struct kctx *ctx, int B, int Tq, int Tk,
                                              int NH, int HS)
{
    return cuda_attention_bias_scratch(B, Tq, Tk, NH, HS);
}

static void cuda_be_attention_bias_forward(struct kctx *ctx, void *out, float *lse, const void *q,
                                           const void *k, const void *v, const float *bias,
                                           const float *key_mask, float *scratch,
                                           int64_t scratch_n, enum kdtype dt, int B, int Tq,
                                           int Tk, int NH, int HS, int q_stride, int kv_stride,
                                           float scale)
{
    cuda_attention_bias_forward(ctx, out, lse, q, k, v, bias, key_mask, dt, B, Tq, Tk, NH, HS,
                                q_stride, kv_stride, scale);
}

static int64_t cuda_be_attention_bias_backward_scratch(const struct kctx *ctx, int B, int Tq,
                                                       int Tk, int NH, int HS)
{
    return cuda_attention_bias_backward_scratch(B, Tq, Tk, NH, HS);
}

static void cuda_be_attention_bias_backward(struct kctx *ctx, void *dq, void *dk, void *dv,
                                            const void *dout, const void *out, const float *lse,
                                            const void *q, const void *k, const void *v,
                                            const float *bias, const float *key_mask,
                                            float *scratch, int64_t scratch_n, enum kdtype dt,
                                            int B, int Tq, int Tk, int NH, int HS, int q_stride,
                                            int kv_stride, float scale)
{
    cuda_attention_bias_backward(ctx, dq, dk, dv, dout, out, lse, q, k, v, bias, key_mask,
                                 scratch, dt, B, Tq, Tk, NH, HS, q_stride, kv_stride, scale);
}

static int64_t cuda_be_conv2d_scratch(const struct kctx *ctx, int C, int H, int W, int OC,
                                      int k, int stride, int pad_lo, int pad_hi)
{
    return cuda_conv2d_scratch(C, H, W, k, stride, pad_lo, pad_hi);
}

static const struct kbackend kbackend_cuda = {
    .name = "cuda",
    .device = DEVICE_CUDA,
    .act_dtypes = KDT_BIT(KDT_F32) | KDT_BIT(KDT_BF16) | KDT_BIT(KDT_F16),
    .host_memory = 0,
    .stateful = 1,
    /* The kernels keep a head's row in registers and shared memory. */
    /* a VAE's one head of 512 is forward only; training's heads stay <= 128 */
    .max_head_size_forward = 512,
    .max_head_size_backward = 128,
    .device_count = cuda_device_count,
    .ctx_init = cuda_ctx_init,
    .ctx_free = cuda_ctx_free,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .mem_usage = cuda_mem_usage,
    .mem_upload = cuda_mem_upload,
    .mem_download = cuda_mem_download,
    .mem_copy = cuda_mem_copy,
    .sync = cuda_sync,
    .attention_scratch = cuda_be_attention_scratch,
    .attention_bias_scratch = cuda_be_attention_bias_scratch,
    .attention_bias_backward_scratch = cuda_be_attention_bias_backward_scratch,
    .conv2d_scratch = cuda_be_conv2d_scratch,
    .gemm = cuda_gemm,
    .linear_forward = cuda_linear_forward,
    .linear_gelu_forward = cuda_linear_gelu_forward,
    .linear_backward = cuda_linear_backward,
    .layernorm_forward = cuda_layernorm_forward,
    .layernorm_backward = cuda_layernorm_backward,
    .groupnorm_forward = cuda_groupnorm_forward,
    .modulate_forward = cuda_modulate_forward,
    .modulate_backward = cuda_modulate_backward,
    .adaln_forward = cuda_adaln_forward,
    .adaln_backward = cuda_adaln_backward,
    .gated_residual_forward = cuda_gated_residual_forward,
    .gated_residual_backward = cuda_gated_residual_backward,
    .rmsnorm_forward = cuda_rmsnorm_forward,
    .rmsnorm_backward = cuda_rmsnorm_backward,
    .gelu_forward = cuda_gelu_forward,
    .gelu_backward = cuda_gelu_backward,
    .silu_forward = cuda_silu_forward,
    .silu_backward = cuda_silu_backward,
    .gated_gelu_forward = cuda_gated_gelu_forward,
    .gelu_erf_forward = cuda_gelu_erf_forward,
    .gelu_erf_backward = cuda_gelu_erf_backward,
    .attention_forward = cuda_be_attention_forward,
    .attention_backward = cuda_be_attention_backward,
    .attention_bias_forward = cuda_be_attention_bias_forward,
    .rope_norm_forward = cuda_rope_norm_forward,
    .rope_norm_backward = cuda_rope_norm_backward,
    .attention_bias_backward = cuda_be_attention_bias_backward,
    .patchify_forward = cuda_patchify_forward,
    .unpatchify_forward = cuda_unpatchify_forward,
    .unpatchify_backward = cuda_unpatchify_backward,
    .embedding_forward = cuda_embedding_forward,
    .embedding_backward = cuda_embedding_backward,
    .timestep_embedding = cuda_timestep_embedding,
    .add_broadcast_forward = cuda_add_broadcast_forward,
    .add = cuda_add,
    .axpy = cuda_axpy,
    .mix_forward = cuda_mix_forward,
    .mix_backward = cuda_mix_backward,
    .fill = cuda_fill,
    .scale = cuda_scale,
    .mse_forward_backward = cuda_mse_forward_backward,
    .sum_squares = cuda_sum_squares,
    .dropout_forward = cuda_dropout_forward,
    .adamw_update = cuda_adamw_update,
    .adamw8bit_update = cuda_adamw8bit_update,
    .fp8_rows_widen = cuda_fp8_rows_widen,
    .ema_update = cuda_ema_update,
    .conv2d_forward = cuda_conv2d_forward,
    .upsample_nearest2x_forward = cuda_upsample_nearest2x_forward,
    .transpose_forward = cuda_transpose_forward,
    .convert = cuda_convert,
    .accumulate = cuda_accumulate,
};
#endif

const struct kbackend *kbackend_for(enum device_kind device)
{
    switch (device) {
    case DEVICE_CPU: return &kbackend_cpu;
#ifdef DIT_HAVE_CUDA
    case DEVICE_CUDA: return &kbackend_cuda;
#else
    case DEVICE_CUDA: return NULL;
#endif
    }
    return NULL;
}

const char *kbackend_missing(const struct kbackend *be)
{
    if (!be->device_count || !be->ctx_init || !be->ctx_free || !be->mem_alloc || !be->mem_free ||
        !be->mem_usage || !be->mem_upload || !be->mem_download || !be->mem_copy || !be->sync ||
        !be->attention_scratch || !be->attention_bias_scratch ||
        !be->attention_bias_backward_scratch || !be->conv2d_scratch)
        return "a context or memory entry";
#define KOP(name, family, dtypes, ret, params)                                                   \
    if (!be->name)                                                                               \
        return #name;
#include "kernels/ops.def"
#undef KOP
    return NULL;
}
