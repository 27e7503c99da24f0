/* F-Lite, the text-to-image DiT of Freepik and fal (fal-ai/f-lite,
 * f_lite/model.py), with an explicit forward and backward per layer on the
 * ops of kernels/kernels.h.
 *
 * Tokens: 16 learned register tokens, then the image patches row by row
 * (T = 16 + N). Each block: RMS norm + adaLN modulation, self-attention with
 * 2D RoPE and QK RMS-norm after it (and, with residual_v, the value mixed
 * with block 0's by a learned lambda), a gated residual; the same for the
 * cross-attention to the text embeddings (q from the image tokens, k and v
 * from context_kv over the text, QK-norm, no RoPE); then the erf-GELU MLP.
 * The 9-way modulation comes from silu(c), c the timestep embedding's MLP.
 * Parameters live in one fp32 buffer in the order of the parameter table,
 * under F-Lite's state-dict names. */
#ifndef DIT_MODELS_FLITE_H
#define DIT_MODELS_FLITE_H

#include "kernels/kernels.h"
#include "models/denoiser.h"
#include "libcommon/safetensors.h"
#include "nn/linear.h"
#include "nn/params.h"
#include "nn/weights.h"

#include <jansson.h>
#include <stdint.h>

#define FLITE_REGISTERS 16 /* hard-coded in F-Lite's forward */
#define FLITE_MAX_DEPTH 64
#define FLITE_ROPE_GRID 512 /* F-Lite's rotary table covers 512 x 512 patches */
#define FLITE_NORM_EPS 1e-6f

struct flite_config {
    int in_channels;
    int patch_size;
    int hidden_size;
    int depth;
    int num_heads;
    float mlp_ratio;
    int cross_attn_input_size; /* the text embeddings' width (T5-XXL: 4096) */
    int residual_v;            /* mix each block's value with block 0's */
    int train_bias_and_rms;    /* qkv / q / context_kv biases and norm weights exist */
    int rope_base;
    /* What the memory is planned for: the largest latent (height, width)
     * and text length a batch may have. */
    int height, width, text_len;
    float cond_dropout; /* the probability of the zero text embedding in training */
};

/* "F-Lite" (the released 10B: width 3072, depth 40, 12 heads of 256, text
 * 4096, residual_v, no biases or norm weights) and "F-Lite-7B" (depth 28);
 * latents of height x width, text of text_len tokens. -1 with err_set(). */
int flite_config_by_name(struct flite_config *cfg, const char *name, int height, int width,
                         int text_len);
int flite_config_check(const struct flite_config *cfg);

static inline int flite_head_size(const struct flite_config *c)
{
    return c->hidden_size / c->num_heads;
}
static inline int flite_mlp_hidden(const struct flite_config *c)
{
    return (int)(c->hidden_size * c->mlp_ratio);
}
/* Tokens of a latent h x w: the registers and the patches. */
static inline int flite_tokens(const struct flite_config *c, int h, int w)
{
    return FLITE_REGISTERS + (h / c->patch_size) * (w / c->patch_size);
}

struct flite_block_layers {
    size_t norm1_id, norm2_id, norm3_id, lambda_id; /* NN_NO_ENTRY when absent */
    struct tensor norm1, norm2, norm3, lambda;      /* [C], [C], [C], [1] in the compute dtype */
    struct tensor dnorm1, dnorm2, dnorm3, dlambda;  /* f32 gradients; absent without */
    struct nn_linear qkv, proj;                     /* self_attn.qkv [3C, C], .proj [C, C] */
    struct nn_linear q, kv, cproj;                  /* cross_attn.q [C, C], .context_kv [2C, Dc], .proj */
    struct nn_linear fc1, fc2;                      /* mlp.0 [MH, C], mlp.2 [C, MH] */
    struct nn_linear ada;                           /* adaLN_modulation.1 [9C, C] */
};

struct flite_layers {
    struct nn_linear patch;          /* patch_embed.patch_proj [C, CI, P, P] */
    size_t reg_id;                   /* register_tokens [1, 16, C] */
    struct tensor reg, dreg;
    struct nn_linear t1, t2;         /* time_embed.0 [4C, C], time_embed.2 [C, 4C] */
    struct flite_block_layers blocks[FLITE_MAX_DEPTH];
    struct nn_linear f_mod;          /* final_modulation.1 [2C, C] */
    size_t fnorm_id;                 /* final_norm.weight [C], or NN_NO_ENTRY */
    struct tensor fnorm, dfnorm;
    struct nn_linear f_out;          /* final_proj [P*P*CI, C] */
};

/* The parameter table in F-Lite's state-dict names (the rotary buffers are
 * not parameters: they are computed). -1 with err_set(). */
int flite_param_table(const struct flite_config *cfg, struct nn_params *table,
                      struct flite_layers *layers);
int64_t flite_param_count(const struct flite_config *cfg);
void flite_layers_bind(struct flite_layers *layers, const struct flite_config *cfg,
                       const struct nn_params *table, struct tensor weights, struct tensor grads);

/* F-Lite's initialisation (torch's defaults for Linear and Conv2d: weights
 * and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); norm weights 1; register
 * tokens N(0, 1); lambda 0.5; adaLN, final modulation and final projection
 * zero), from the Philox stream (seed, RNG_PARAM_INIT). Host memory. */
void flite_init(const struct flite_config *cfg, float *params, uint64_t seed);

/* The rotary tables of a grid of gh x gw patches with the registers in
 * front: cos and sin [16 + gh*gw, HS/2], rows of the registers 1 and 0,
 * row 16 + r*gw + s: angles r * inv_freq[k] for k < HS/4 and s * inv_freq[k - HS/4]
 * after, inv_freq[k] = 1 / base^(2k / (HS/2)), in f32 as F-Lite's buffers. */
void flite_rope_tables(const struct flite_config *cfg, int gh, int gw, float *cos_t, float *sin_t);


struct flite_model {
    struct flite_config cfg;
    struct kctx *ctx;
    enum kdtype dt;
    int B;
    int checkpointing, inference;
    int frozen; /* DENOISER_MEM_FROZEN: weights without gradients, backward through them */
    struct nn_weights_plan wplan; /* DENOISER_MEM_BASE, _GRADS_BF16: where the linears live */
    int64_t n_params;
    struct nn_weights w;                  /* owns params, grads and weights, its views: host
                                           * transfers, the EMA and the gradients go through it */
    struct tensor params, grads, weights; /* f32 master, f32 gradients, the compute copy */
    struct nn_params table;
    struct flite_layers layers;
    struct tensor rope_cos, rope_sin;   /* f32 [T, HS/2] of the last latent size */
    int rope_h, rope_w;                 /* the size they are for (0: none yet) */
    struct tensor reg_ids;              /* int32 [16]: 0..15, the registers as table rows */
    struct tensor io_x, io_out, io_ctx; /* [B,CI,H,W], [B,CI,H,W], [B,L,Dc] in dt */
    struct tensor io_t;                 /* [B] f32: T = 1000 t */
    struct tensor arena, arena32;
    void *acts;
    /* The last forward's sizes, for backward. */
    int cur_h, cur_w, text_len;
};

int flite_model_create(struct flite_model *m, const struct flite_config *cfg, struct kctx *ctx,
                       int B, enum denoiser_memory memory, enum kdtype dt);
void flite_model_free(struct flite_model *m);
int flite_model_plan_bytes(const struct flite_config *cfg, enum device_kind device, int B,
                           enum denoiser_memory memory, enum kdtype dt, int64_t *param_bytes,
                           int64_t *activation_bytes);
void flite_model_sizes(const struct flite_model *m, int64_t *param_bytes,
                       int64_t *activation_bytes);

/* out[b, CI, h, w] = F-Lite(x[b, CI, h, w], T[b], text[b, L, Dc])
 * for b <= B samples, host f32; T = 1000 t for the flow time t in [0, 1]
 * (F-Lite's timestep_embedding argument, and the seam's scale, which the
 * trainer and the samplers compute); h and w multiples of the patch size within
 * the planned size, L within the planned text length; null[i] != 0 (null
 * may be NULL) replaces sample i's text by zeros (F-Lite's unconditional
 * input). Every text token is attended, as F-Lite was trained (no mask).
 * -1 with err_set() for sizes outside the plan. */
/* Whether latents of h x w fit the model's plan: multiples of the patch,
 * at most the planned tokens, at most 512 patches a side. */
int flite_size_fits(const struct flite_model *m, int h, int w);
int flite_forward(struct flite_model *m, float *out, const float *x, const float *t,
                  const float *text, const uint8_t *null, int L, int b, int h, int w);
/* Accumulates into m->grads the gradient for dout[b, CI, h, w] of the last
 * forward. */
void flite_backward(struct flite_model *m, const float *dout, int b);

/* Weights on disk: F-Lite's own names in one safetensors file or a
 * diffusers model folder (config.json with _class_name "DiT", the
 * safetensors single or sharded with an index; a pipeline folder is read
 * through its dit_model component). The rotary buffers in the file are
 * checked against the computed ones' shape and otherwise ignored. */
#define FLITE_CLASS "DiT"
/* Every parameter of cfg from a set of tensors in F-Lite's names, BF16/F16
 * widened; missing, mis-shaped and unexplained tensors are all named. */
int flite_weights_load(const struct flite_config *cfg, float *params, const struct st_set *set);
/* params NULL: the configuration only. */
int flite_load_dir(const char *dir, struct flite_config *cfg, float **params);
int flite_save_dir(const struct flite_config *cfg, const float *params, const char *dir);
json_t *flite_config_json(const struct flite_config *cfg);
int flite_config_from_json(struct flite_config *cfg, const json_t *j, const char *name);

#endif
