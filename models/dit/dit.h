/* The class-conditional DiT of Peebles & Xie (facebookresearch/DiT), with an
 * explicit forward and backward per layer on the ops of kernels/kernels.h.
 *
 * Parameters live in one fp32 buffer in the order of the parameter table
 * (dit_param_table, nn/params.h), so one AdamW call updates them all and
 * checkpoints are plain copies; names are the original DiT's state-dict
 * names. Every linear goes through nn/linear.h. Activations live in one arena planned
 * from the configuration and the batch size before the first step. */
#ifndef DIT_MODEL_DIT_H
#define DIT_MODEL_DIT_H

#include "kernels/kernels.h"
#include "nn/linear.h"
#include "nn/params.h"
#include "nn/weights.h"

#include <stddef.h>
#include <stdint.h>

#define DIT_FREQ_DIM 256      /* sinusoidal timestep features */
#define DIT_MAX_PERIOD 10000.0f
#define DIT_MAX_DEPTH 64

struct dit_config {
    int input_size;   /* latent height = width */
    int patch_size;
    int in_channels;
    int hidden_size;
    int depth;
    int num_heads;
    float mlp_ratio;
    int num_classes;
    float class_dropout_prob; /* > 0 adds the null-class row used by guidance */
    int learn_sigma;          /* output channels = 2 * in_channels */
    /* Where implementations differ numerically; set from the weights' origin. */
    float norm_eps;     /* the attention and final LayerNorms: 1e-6 in both */
    float mlp_norm_eps; /* the pre-MLP LayerNorm: 1e-6 in DiT, the config's
                           norm_eps (default 1e-5) in diffusers */
    float freq_shift;   /* timestep frequencies: 0 in DiT, 1 in diffusers */
};

/* Fills cfg for "DiT-XL/2" and the other names of the paper (S, B, L, XL
 * with patch 2, 4, 8), at latent size input_size; -1 with err_set() for an
 * unknown name. The rest takes DiT's defaults: 4 channels, mlp ratio 4,
 * 1000 classes, dropout 0.1, learned sigma, eps 1e-6 everywhere, shift 0. */
int dit_config_by_name(struct dit_config *cfg, const char *name, int input_size);
/* Checks a configuration; -1 with err_set() naming the problem. */
int dit_config_check(const struct dit_config *cfg);

static inline int dit_out_channels(const struct dit_config *c)
{
    return c->learn_sigma ? 2 * c->in_channels : c->in_channels;
}
static inline int dit_tokens(const struct dit_config *c)
{
    int g = c->input_size / c->patch_size;
    return g * g;
}
static inline int dit_mlp_hidden(const struct dit_config *c)
{
    return (int)(c->hidden_size * c->mlp_ratio);
}
static inline int dit_table_rows(const struct dit_config *c)
{
    return c->num_classes + (c->class_dropout_prob > 0);
}

/* The layers of a DiT, each bound to its entries of the parameter table:
 * every linear is an nn_linear (so adapters, frozen bases and their storage
 * dtype reach every one), the label table is a plain entry. */
struct dit_block_layers {
    struct nn_linear qkv, proj;  /* attn.qkv: [3C, C]; attn.proj: [C, C] */
    struct nn_linear fc1, fc2;   /* mlp.fc1: [MH, C]; mlp.fc2: [C, MH] */
    struct nn_linear ada;        /* adaLN_modulation.1: [6C, C] */
};

struct dit_layers {
    struct nn_linear x_embed;    /* x_embedder.proj: [C, CI, P, P], a Linear over flattened patches */
    struct nn_linear t1, t2;     /* t_embedder.mlp.0 / .2: [C, F], [C, C] */
    size_t y_table_id;           /* y_embedder.embedding_table: [NC(+1), C] */
    struct tensor y_table, dy_table; /* dy_table absent without gradients or when frozen */
    struct dit_block_layers blocks[DIT_MAX_DEPTH];
    struct nn_linear f_ada;      /* final_layer.adaLN_modulation.1: [2C, C] */
    struct nn_linear f_out;      /* final_layer.linear: [P*P*CO, C] */
};

/* The parameter table, the one place the DiT's tensors are listed: the
 * original DiT's state-dict names in buffer order, into *table (freed with
 * nn_params_free), and each layer's entries into *layers (NULL when only the
 * table is wanted). -1 with err_set(). */
int dit_param_table(const struct dit_config *cfg, struct nn_params *table, struct dit_layers *layers);
/* Elements of the flat buffer (the table's total); -1 when out of memory. */
int64_t dit_param_count(const struct dit_config *cfg);
/* Binds every layer to views of weights (the compute copy, or any buffer
 * laid out by the table) and grads (absent: no gradient views). Layers
 * train as their table entries say: bind again after freezing entries.
 * Adapters stay attached. */
void dit_layers_bind(struct dit_layers *layers, const struct dit_config *cfg,
                     const struct nn_params *table, struct tensor weights, struct tensor grads);

/* DiT's initialisation: Xavier-uniform Linear weights (the patch embedding
 * as a Linear over its flattened kernel), zero biases, normal(0.02) label
 * table and timestep MLP weights, zero adaLN and final layers. Random numbers
 * from the Philox stream (seed, RNG_PARAM_INIT). params is host memory. */
void dit_init(const struct dit_config *cfg, float *params, uint64_t seed);

/* The fixed 2D sin-cos positional embedding [grid*grid, C], computed in
 * double as DiT's get_2d_sincos_pos_embed does. */
void dit_pos_embed(float *out, int C, int grid);

/* What the activation arena keeps, chosen at creation.
 *  DIT_MEM_TRAIN: every block's activations, for backward (DiT-XL/2 at
 *    256 px: about 233 MiB of bf16 per sample; GELU's
 *    output is one buffer that backward refills from its input).
 *  DIT_MEM_CHECKPOINT: the residual stream only; backward recomputes each
 *    block, in one block's worth of memory.
 *  DIT_MEM_INFERENCE: forward only (samplers): one residual stream that
 *    every block updates in place, one block's scratch, no gradients and no
 *    backward buffers (about 11 MiB per sample for DiT-XL/2); in a low
 *    precision the f32 master copy is not kept either. */
enum dit_memory { DIT_MEM_TRAIN = 0, DIT_MEM_CHECKPOINT = 1, DIT_MEM_INFERENCE = 2 };
/* Or'ed into DIT_MEM_TRAIN or _CHECKPOINT: the weights are frozen (no
 * gradients, no f32 master in a low precision), as DENOISER_MEM_FROZEN. */
#define DIT_MEM_FROZEN 0x100
/* Or'ed in: where the linears' weights and gradients live
 * (NN_MEM_BASE(NN_BASE_FP8), NN_MEM_GRADS_BF16; nn/weights.h). */
#define DIT_MEM_BASE(b) NN_MEM_BASE(b)
#define DIT_MEM_GRADS_BF16 NN_MEM_GRADS_BF16

/* The model with its planned memory for a batch size, all of it on the
 * context's device: fp32 master parameters and their gradients, the
 * weights in the compute dtype, and the activations. The inputs and
 * outputs of dit_forward / dit_backward are host memory (f32): a batch of
 * latents is small next to the step, and the samplers and losses that
 * surround the model run on the host. */
struct dit_model {
    struct dit_config cfg;
    struct kctx *ctx;
    enum kdtype dt;        /* activations and compute weights: f32, or bf16 / f16 on CUDA */
    int B;                 /* batch size the arena was planned for */
    int checkpointing;     /* recompute each block during backward */
    int inference;         /* DIT_MEM_INFERENCE: forward only */
    int frozen;            /* DIT_MEM_FROZEN: weights without gradients, backward through them */
    struct nn_weights_plan wplan; /* DIT_MEM_BASE, _GRADS_BF16: where the linears live */
    int64_t n_params;
    struct nn_weights w;   /* owns the three below, which are its views */
    struct tensor params;  /* f32 master weights (absent for inference in bf16 / f16) */
    struct tensor grads;   /* f32, accumulate (absent for inference) */
    struct tensor weights; /* params in dt, what the ops read; params itself when dt is f32 */
    struct nn_params table;  /* the parameter table, built once at creation */
    struct dit_layers layers; /* bound to weights and grads */
    struct tensor pos_embed; /* [T, C] in dt */
    struct tensor io_x, io_out; /* [B, CI, H, W] and [B, CO, H, W] in dt: inputs, outputs, dout */
    struct tensor io_t, io_y;   /* [B] f32 timesteps and [B] int32 labels (4-byte elements) */
    struct tensor arena;   /* activations in dt */
    struct tensor arena32; /* f32: statistics and attention scratch */
    void *acts;            /* the views into the arenas (dit.c) */
};

/* Allocates parameters, gradients and the activations for batch size B on
 * ctx's device, computing in dt (f32 on the CPU), keeping what `memory`
 * says; the parameters are not initialised. -1 with err_set(). */
int dit_model_create(struct dit_model *m, const struct dit_config *cfg, struct kctx *ctx, int B,
                     enum dit_memory memory, enum kdtype dt);
void dit_model_free(struct dit_model *m);
/* What dit_model_create would allocate, without allocating: bytes of
 * parameters (master and compute copy) with gradients, and of activations,
 * for batch B on a device. -1 with err_set() for what create refuses. */
int dit_model_plan_bytes(const struct dit_config *cfg, enum device_kind device, int B,
                         enum dit_memory memory, enum kdtype dt, int64_t *param_bytes,
                         int64_t *activation_bytes);
/* Bytes of parameters (master and compute copy), gradients and activations,
 * for the start-up report. */
void dit_model_sizes(const struct dit_model *m, int64_t *param_bytes, int64_t *activation_bytes);

/* Host f32 parameters in and out of the model (the master copy and the
 * compute copy together; an inference model in a low precision gives back
 * its compute weights, rounded). */
void dit_params_upload(struct dit_model *m, const float *host);
void dit_params_download(struct dit_model *m, float *host);
/* After the master copy changed on the device: refresh the compute copy. */
void dit_weights_refresh(struct dit_model *m);
/* Sets the model's weights from an f32 parameter buffer on the same device
 * (another model's master weights or its EMA), n_params values. */
void dit_weights_set(struct dit_model *m, struct tensor src);
/* The gradients as host f32 (tests, reports). */
void dit_grads_download(struct dit_model *m, float *host);

/* out[B, CO, H, W] = DiT(x[B, CI, H, W], t[B], y[B]) for the first b <= B
 * samples, host memory in and out. t are timesteps as floats (DiT passes
 * integers); y are class ids in [0, rows of the label table). Keeps what
 * backward needs. */
void dit_forward(struct dit_model *m, float *out, const float *x, const float *t,
                 const int32_t *y, int b);
/* Accumulates into m->grads the gradient of a loss whose gradient with
 * respect to the last forward's output is dout[b, CO, H, W] (host). Not for
 * an inference model. */
void dit_backward(struct dit_model *m, const float *dout, int b);
void dit_zero_grads(struct dit_model *m);

#endif
