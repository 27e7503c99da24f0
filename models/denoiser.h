/* The denoiser seam: what the trainer, the samplers and the tools know of a
 * diffusion network. A model (models/dit/, later models/flite/) fills one
 * struct denoiser_kind and registers it in models/registry.c; nothing
 * outside its folder knows its structs.
 *
 * A denoiser maps noisy latents x[b, C, H, W] at timesteps t[b] under a
 * condition to out[b, CO, H, W] (CO = 2C when it learns the variance). Its
 * parameters live in flat f32 buffers on the device (master, gradients)
 * with a compute copy in the activation dtype; the table of names and
 * shapes is the model's. Inputs and outputs cross as host f32, as the
 * samplers and losses around the model run on the host. */
#ifndef DIT_MODELS_DENOISER_H
#define DIT_MODELS_DENOISER_H

#include "kernels/kernels.h"
#include "nn/linear.h"
#include "nn/lora.h"
#include "nn/params.h"

#include <jansson.h>
#include <stdint.h>

/* What a denoiser is conditioned on. */
enum cond_kind {
    COND_LABELS, /* class ids; the null condition is the extra label row (DiT) */
    COND_TEXT,   /* text embeddings with a mask; the null condition is the zero embedding */
};

/* One batch's condition, host memory; fields of the other kind are NULL. */
struct cond {
    const int32_t *labels;   /* [b] class ids */
    const float *text;       /* [b, text_len, text_dim] */
    const float *text_mask;  /* [b, text_len]: 1 token, 0 padding; NULL: all tokens */
    int text_len, text_dim;
    const uint8_t *null;     /* [b] 1: this sample takes the null condition (guidance dropout, the
                                unconditional half of guided sampling); NULL: none does */
};

/* What the activation memory keeps (see the model's own header for sizes). */
enum denoiser_memory {
    DENOISER_MEM_TRAIN,      /* every layer's activations for backward */
    DENOISER_MEM_CHECKPOINT, /* gradient checkpointing: recompute in backward */
    DENOISER_MEM_INFERENCE,  /* forward only: no gradients, no saved activations */
};
/* Or'ed into a training plan: the model's own weights do not train (LoRA's
 * --train-only-lora). They get no gradients and, in a low precision, no f32
 * master copy; backward still gives every layer's input gradient, so that
 * adapters on the layers train. */
#define DENOISER_MEM_FROZEN 0x100
/* Or'ed in: where the linears' weights live (--base-weight-dtype; enum
 * nn_base, nn/weights.h): for a frozen or inference plan, stored apart from
 * the compute copy in bf16 or fp8 (a base that trains is refused); for a
 * training plan, NN_BASE_F32 keeps them in the f32 master only. Both are
 * widened layer by layer. DENOISER_MEM_GRADS_BF16: a training plan's
 * linears accumulate their weight gradients in bf16 (--grad-accum-dtype). */
#define DENOISER_MEM_BASE(b) NN_MEM_BASE(b)
#define DENOISER_MEM_GRADS_BF16 NN_MEM_GRADS_BF16

/* What the generic code needs to know of a configuration. */
struct denoiser_info {
    int in_channels, out_channels;
    int learned_sigma;  /* out_channels = 2 in_channels: eps then the variance values */
    int height, width;  /* the latent size it takes; 0: any multiple of `multiple` */
    int multiple;       /* latent sides must be multiples of this (the patch size) */
    enum cond_kind cond;
    int num_classes;    /* COND_LABELS */
    int text_dim;       /* COND_TEXT: the width of the text embeddings */
    float cond_dropout; /* the probability of the null condition in training (0: never) */
    int64_t n_params;
};

/* A model's configuration: its kind and its own config struct. */
struct denoiser_config {
    const struct denoiser_kind *kind;
    void *impl; /* kind->config_size bytes, malloc'd */
};

/* What the data and the command line say, for a configuration by name. */
struct denoiser_spec {
    int channels, height, width;       /* latents of the data */
    int num_classes;                   /* 0: the model's default */
    int depth, hidden_size, num_heads; /* 0: the preset's */
    int text_len, text_dim;            /* COND_TEXT: the data's text embeddings [len, dim] (0: the model's) */
};

struct denoiser;

/* One part of a module under another naming (kind->lora_alias). */
#define DENOISER_ALIAS_MAX 4
struct denoiser_alias {
    char name[NN_NAME_MAX];
    int row0, rows;
};

struct denoiser_kind {
    const char *name;       /* the family: "dit" */
    const char *class_name; /* diffusers' _class_name of its model dir */
    const char *class_alias; /* another _class_name it reads (NULL: none) */
    const char *presets;    /* for messages: "DiT-S/2 ... DiT-XL/8" */
    size_t config_size;

    /* A preset by --model name ("DiT-XL/2"): 1 when the name is not this
     * kind's, 0 done, -1 with err_set() for a bad spec. */
    int (*config_preset)(void *cfg, const char *name, const struct denoiser_spec *spec);
    /* For a kind whose weights do not fix the sizes it runs at (F-Lite:
     * any latent size, any text length), the sizes to plan memory for,
     * from the data; -1 with err_set() when the spec cannot be met. NULL:
     * the sizes are the configuration's own. */
    int (*config_fit)(void *cfg, const struct denoiser_spec *spec);
    void (*config_info)(const void *cfg, struct denoiser_info *info);
    int (*config_equal)(const void *a, const void *b);
    json_t *(*config_to_json)(const void *cfg);
    /* The model dir (diffusers layout; formats/model_dir): configuration and
     * host f32 parameters (*params malloc'd). */
    int (*load_dir)(const char *dir, void *cfg, float **params); /* params NULL: config only */
    /* A bare safetensors state dict in this kind's tensor names into the
     * preset configuration cfg, which it may adjust to what the file says
     * (a layout's numerics); *params malloc'd. NULL: the kind is read from
     * model dirs only. */
    int (*load_file)(const char *path, void *cfg, float **params);
    int (*save_dir)(const void *cfg, const float *params, const char *dir);
    /* The reference's initialisation, host f32. */
    void (*init)(const void *cfg, float *params, uint64_t seed);
    int (*plan_bytes)(const void *cfg, enum device_kind device, int B, enum denoiser_memory mem,
                      enum kdtype dt, int64_t *param_bytes, int64_t *activation_bytes);

    /* The model on a device for batch size B; fills d->impl and the tensors. */
    int (*create)(struct denoiser *d, const void *cfg, struct kctx *ctx, int B, enum denoiser_memory mem,
                  enum kdtype dt);
    void (*destroy)(struct denoiser *d);
    void (*forward)(struct denoiser *d, float *out, const float *x, const float *t, const struct cond *c, int b);
    void (*backward)(struct denoiser *d, const float *dout, int b);
    void (*params_upload)(struct denoiser *d, const float *host);
    void (*params_download)(struct denoiser *d, float *host);
    void (*weights_set)(struct denoiser *d, struct tensor src);
    void (*zero_grads)(struct denoiser *d);
    void (*sizes)(const struct denoiser *d, int64_t *param_bytes, int64_t *activation_bytes);
    /* Whether latents of h x w fit the instance's plan, for a kind that
     * takes several sizes (F-Lite); NULL: only the configuration's own. */
    int (*size_fits)(const struct denoiser *d, int h, int w);
    /* The instance's i-th linear layer (any order, each once), NULL past the
     * last; *max_rows: the most rows it is ever given (B x tokens, B for the
     * per-sample layers), for an adapter to plan its scratch. Its name is
     * the table's name of its weight without ".weight". */
    struct nn_linear *(*linear)(struct denoiser *d, size_t i, int64_t *max_rows);
    /* The configuration's parameter table (names, shapes, offsets in the
     * flat buffer) without a model: what merging edits on the host. */
    int (*table)(const void *cfg, struct nn_params *t);
    /* The modules LoRA adapts by default (--lora-target-modules), as PEFT's
     * target_modules suffixes: "qkv,proj". */
    const char *lora_targets;
    /* A module's name in the naming the kind's LoRA files use when that is
     * not the model's own (the DiT: diffusers' DiTTransformer2DModel, the
     * layout its model directories are written in): up to max parts, part
     * p the output rows [row0, row0 + rows) of the module's out (the fused
     * qkv is diffusers' to_q, to_k and to_v); 0 when that naming has no
     * such module. NULL: the files use the model's own names. */
    int (*lora_alias)(const char *module, int out, struct denoiser_alias *parts, int max);
};

struct denoiser {
    const struct denoiser_kind *kind;
    struct denoiser_info info;
    void *impl;            /* the model's own struct */
    struct kctx *ctx;
    enum kdtype dt;        /* activations and compute weights */
    int B;                 /* the batch size its memory was planned for */
    int height, width;     /* the latents of the next forward: info's, or another size that
                              fits the plan (denoiser_set_size: resolution buckets) */
    int inference;
    int64_t n_params;
    struct tensor params;  /* f32 master weights (absent for inference in a low precision) */
    struct tensor grads;   /* f32, accumulated (absent for inference) */
    struct tensor weights; /* the compute copy the ops read (params itself in f32) */
    const struct nn_params *table;
    struct nn_weights *w;  /* the model's, which owns the three above (and any store apart) */
};

/* Configurations. */
int denoiser_config_preset(struct denoiser_config *c, const char *name, const struct denoiser_spec *spec);
/* A model dir: the kind from config.json's _class_name; *params malloc'd
 * (params NULL: the configuration only, no weights read). */
int denoiser_config_load_dir(struct denoiser_config *c, const char *dir, float **params);
/* A bare state-dict file of the preset name (--model) with the spec's
 * sizes: -2 with err_set() for an unknown preset or a kind that reads no
 * bare files, -1 for the file. *params malloc'd. */
int denoiser_config_load_file(struct denoiser_config *c, const char *path, const char *name,
                              const struct denoiser_spec *spec, float **params);
/* Plans a configuration for the data's sizes (kind->config_fit; 0 when the
 * kind has none). */
int denoiser_config_fit(struct denoiser_config *c, const struct denoiser_spec *spec);
int denoiser_config_copy(struct denoiser_config *dst, const struct denoiser_config *src);
void denoiser_config_free(struct denoiser_config *c);
void denoiser_config_info(const struct denoiser_config *c, struct denoiser_info *info);
int denoiser_config_equal(const struct denoiser_config *a, const struct denoiser_config *b);
int denoiser_save_dir(const struct denoiser_config *c, const float *params, const char *dir);

/* Instances. -1 with err_set() (an out-of-memory message names sizes). */
int denoiser_create(struct denoiser *d, const struct denoiser_config *c, struct kctx *ctx, int B,
                    enum denoiser_memory mem, enum kdtype dt);
void denoiser_free(struct denoiser *d);

/* The latent size of the following forwards (and of their backward); -1
 * with err_set() when it does not fit the instance's plan. */
int denoiser_set_size(struct denoiser *d, int height, int width);

/* LoRA on an instance. The modules PEFT's target_modules (comma-separated
 * suffixes) selects among d's linear layers of 2-D weights, each of rank
 * and alpha (scale alpha / rank, or alpha / sqrt(rank) with rslora):
 * *mods malloc'd, *n of them; -1 with err_set() when none matches. */
int denoiser_lora_targets(struct denoiser *d, const char *targets, int rank, float alpha, int rslora,
                          struct nn_lora_module **mods, size_t *n);
/* Attaches l's adapters to d's layers (nn_lora_bind) for batches up to d->B. */
int denoiser_lora_bind(struct denoiser *d, struct nn_lora *l, struct nn_lora_binding *b);
/* The configuration's parameter table (kind->table); -1 with err_set(). */
int denoiser_config_table(const struct denoiser_config *c, struct nn_params *t);

/* out[b, CO, H, W] for b <= B samples of d->height x d->width; keeps what
 * backward needs. */
static inline void denoiser_forward(struct denoiser *d, float *out, const float *x, const float *t,
                                    const struct cond *c, int b)
{
    d->kind->forward(d, out, x, t, c, b);
}
/* Accumulates into d->grads the gradient for dout[b, CO, H, W]. */
static inline void denoiser_backward(struct denoiser *d, const float *dout, int b)
{
    d->kind->backward(d, dout, b);
}
static inline void denoiser_zero_grads(struct denoiser *d)
{
    d->kind->zero_grads(d);
}
/* Host f32 parameters in and out (master and compute copy together). */
static inline void denoiser_params_upload(struct denoiser *d, const float *host)
{
    d->kind->params_upload(d, host);
}
static inline void denoiser_params_download(struct denoiser *d, float *host)
{
    d->kind->params_download(d, host);
}
/* The weights from an f32 buffer on the same device (EMA for samples). */
static inline void denoiser_weights_set(struct denoiser *d, struct tensor src)
{
    d->kind->weights_set(d, src);
}
static inline void denoiser_sizes(const struct denoiser *d, int64_t *param_bytes, int64_t *activation_bytes)
{
    d->kind->sizes(d, param_bytes, activation_bytes);
}

#endif
