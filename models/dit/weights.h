/* DiT weights on disk: the original facebookresearch/DiT state-dict names,
 * and diffusers' DiTTransformer2DModel layout (a model directory,
 * formats/model_dir.h). Both are derived from the parameter table. */
#ifndef DIT_MODEL_DIT_WEIGHTS_H
#define DIT_MODEL_DIT_WEIGHTS_H

#include "libcommon/safetensors.h"

#include <jansson.h>
#include "models/denoiser.h"
#include "models/dit/dit.h"

/* diffusers' class of the DiT, config.json's "_class_name". */
#define DIT_DIFFUSERS_CLASS "DiTTransformer2DModel"

enum dit_layout {
    DIT_LAYOUT_ORIGINAL, /* x_embedder, blocks.N.attn.qkv, final_layer ... */
    DIT_LAYOUT_DIFFUSERS, /* pos_embed.proj, transformer_blocks.N.attn1.to_q ... */
};

/* Which layout a set of tensors uses (by its names); -1 when neither. */
int dit_weights_layout(const struct st_set *set);

/* Copies every parameter of the configuration from set into params
 * (dit_param_count floats), converting BF16/F16 to fp32. Every missing or
 * mis-shaped tensor is named in the error; tensors the model does not use are
 * an error too, so a wrong configuration cannot load silently. In the
 * diffusers layout the per-block copies of the timestep and class embedders
 * must agree (the model has one of each). -1 with err_set(). */
int dit_weights_load(const struct dit_config *cfg, float *params, const struct st_set *set,
                     enum dit_layout layout);

/* Writes params in the given layout to path (one safetensors file, atomic).
 * The original layout includes the fixed pos_embed buffer as DiT's state
 * dict does; the diffusers layout writes the per-block embedder copies. */
int dit_weights_save(const struct dit_config *cfg, const float *params, const char *path,
                     enum dit_layout layout);

/* kind->lora_alias: a module's diffusers name(s); the fused qkv is to_q,
 * to_k and to_v, the embedders (one per block in diffusers) have none. */
int dit_diffusers_module(const char *module, int out, struct denoiser_alias *parts, int max);

/* diffusers' config.json for cfg (a new object), and the configuration read
 * back from one: the file's norm_eps is the pre-MLP norm's, the other norms
 * use 1e-6, and the timestep frequencies diffusers' shift of 1. */
json_t *dit_diffusers_config(const struct dit_config *cfg);
int dit_config_from_diffusers(struct dit_config *cfg, const char *config_path);

#endif

/* A model directory as dit-train writes it and diffusers reads it
 * (formats/model_dir.h): config.json (diffusers), dit.json (this model's
 * exact configuration, numerics included, since diffusers' own differ
 * slightly) and diffusion_pytorch_model.safetensors in the diffusers layout
 * (sharded past diffusers' 10 GB default, with its index). The directory
 * must exist. */
int dit_save_dir(const struct dit_config *cfg, const float *params, const char *dir);
/* Reads a model directory: the configuration from dit.json when present,
 * else from diffusers' config.json (diffusers numerics); the weights (either
 * layout) from diffusion_pytorch_model.safetensors or its sharded form with
 * the index. A pipeline folder (model_index.json and no config.json) is read
 * through its "transformer" component. *params is malloc'd (params NULL:
 * the configuration only). -1 with err_set(). */
int dit_load_dir(const char *dir, struct dit_config *cfg, float **params);
/* dit.json as an object, and back. */
json_t *dit_config_json(const struct dit_config *cfg);
int dit_config_from_json(struct dit_config *cfg, const json_t *j, const char *name);
