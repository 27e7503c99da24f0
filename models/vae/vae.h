/* diffusers' AutoencoderKL (the SD and FLUX VAEs), frozen, forward only:
 * the encoder from an image in [-1, 1] to its latent distribution (mean and
 * std, unscaled, as diffusers' latent_dist gives them) and the decoder from
 * z back to the image in [-1, 1].
 *
 * Weights are read from any of the layouts these models ship in (weights.c):
 * a diffusers folder (config.json + diffusion_pytorch_model*.safetensors),
 * the same with the legacy attention names (query/key/value/proj_attn), or
 * one ldm/BFL single file (encoder.down.i.block.j..., decoder.up in reverse
 * order, 1x1-conv attention weights), with or without a first_stage_model.
 * or vae. prefix, in F32, BF16 or F16.
 *
 * A single file carries no config. vae_open then takes it from config_path
 * (a config.json or a folder holding one) or, without one, infers it from
 * the tensor shapes: block_out_channels, layers_per_block, latent channels,
 * the quant convs and the mid-block attention come from the shapes;
 * norm_num_groups is 32 (every released VAE); scaling, shift and
 * sample_size are SD's (0.18215, 0, 256) for 4 latent channels with quant
 * convs, FLUX's (0.3611, 0.1159, 1024) for 16 without, and any other file
 * needs a config. */
#ifndef DIT_MODELS_VAE_H
#define DIT_MODELS_VAE_H

#include "kernels/kernels.h"
#include "models/encoder.h"
#include "libcommon/safetensors.h"

#include <pthread.h>
#include <stdint.h>

#define VAE_MAX_BLOCKS 8
#define VAE_DIFFUSERS_CLASS "AutoencoderKL"

struct vae_config {
    int in_channels, out_channels, latent_channels;
    int n_blocks; /* len(block_out_channels) */
    int block_out_channels[VAE_MAX_BLOCKS];
    int layers_per_block, norm_num_groups;
    int use_quant_conv, use_post_quant_conv, mid_block_add_attention;
    int sample_size;
    float scaling_factor, shift_factor;
};

/* Reads a diffusers AutoencoderKL config.json; anything the forward does not
 * implement is an error naming the file, the key and the value. 0 or -1. */
int vae_config_read(struct vae_config *c, const char *path);
/* Checks the numbers (positive, groups dividing every channel count). */
int vae_config_check(const struct vae_config *c, const char *where);
/* The spatial factor 2^(n_blocks - 1). */
int vae_factor(const struct vae_config *c);
/* A canonical text of the config, for hashes and messages. */
void vae_config_text(const struct vae_config *c, char *buf, size_t size);

/* ---- the parameter table (weights.c) ----------------------------------- */

enum vae_layout { VAE_LAYOUT_DIFFUSERS, VAE_LAYOUT_LEGACY_ATTN, VAE_LAYOUT_LDM };

struct vae_param {
    char name[96];     /* diffusers name */
    char ldm[96];      /* ldm/BFL name */
    char legacy[96];   /* diffusers name before the attention renaming */
    int ndim;
    int64_t shape[4];
    int64_t offset, n; /* in the flat parameter buffer */
    int linear;        /* a Linear weight [OC, C]: [OC, C, 1, 1] is accepted too */
};

struct vae_params {
    struct vae_param *p;
    size_t count, cap;
    int64_t total; /* elements */
};

/* The table of every parameter of c, in buffer order; -1 when out of memory. */
int vae_param_table(const struct vae_config *c, struct vae_params *t);
void vae_params_free(struct vae_params *t);
const struct vae_param *vae_params_find(const struct vae_params *t, const char *name);

/* Which layout set holds, and the prefix its names carry ("" or
 * "first_stage_model." or "vae."). -1 with err_set() naming the file when
 * it is none of them. */
int vae_weights_layout(const struct st_set *set, enum vae_layout *layout, const char **prefix);
/* params[t->total] in f32 from set; a missing or mis-shaped tensor, a
 * tensor the config does not explain, or a dtype other than F32/BF16/F16 is
 * an error naming the file, the tensor and the shapes. */
int vae_weights_load(const struct vae_params *t, float *params, const struct st_set *set);
/* The config of a single file from its tensor shapes (see the top). */
int vae_config_infer(struct vae_config *c, const struct st_set *set);

/* ---- the model (vae.c) ------------------------------------------------- */

struct vae {
    struct vae_config cfg;
    struct vae_params table;
    struct kctx *ctx;
    enum kdtype dt;
    struct tensor weights; /* every parameter in dt, at the table's offsets */
    struct tensor buf[4], qkv, lse, scratch; /* the arena */
    int64_t planned_hw; /* the image size (H * W) the arena is planned for */
    char hash[33]; /* xxh128 of the config text and the f32 weights */
    pthread_mutex_t lock; /* one forward at a time: the arena is shared */
};

/* Opens path: an AutoencoderKL folder, a pipeline folder with vae/, or a
 * single .safetensors file (config_path, may be NULL: see the top). The
 * weights go to ctx's device in dt (fp32 on the CPU). 0 or -1. */
int vae_open(struct vae *v, const char *path, const char *config_path, struct kctx *ctx, enum kdtype dt);
/* From f32 parameters already in table order (tests). */
int vae_create(struct vae *v, const struct vae_config *c, const float *params, struct kctx *ctx, enum kdtype dt);
void vae_close(struct vae *v);

/* x[3][h][w] in [-1, 1] to mean[L][h/f][w/f] and std (may be NULL), h and w
 * multiples of the factor. Thread-safe. 0 or -1. */
int vae_encode(struct vae *v, const float *x, int w, int h, float *mean, float *std);
/* z[L][h/f][w/f] (unscaled) to out[3][h][w], the decoder's raw output. */
int vae_decode(struct vae *v, const float *z, int w, int h, float *out);

/* diffusers' tiling (enable_tiling(), tiling.c): an image wider or taller
 * than the tile (config sample_size) is encoded in overlapping tiles of
 * sample_size, a latent larger than sample_size / f decoded in tiles of
 * that, overlap 0.25, neighbours blended linearly over a quarter tile as
 * blend_v/blend_h do; smaller ones go the untiled way. sample_size must be
 * a multiple of 4 f. Thread-safe. */
int vae_encode_tiled(struct vae *v, const float *x, int w, int h, float *mean, float *std);
int vae_decode_tiled(struct vae *v, const float *z, int w, int h, float *out);

/* The pieces the tiled forms share (v->lock held by the caller):
 * moments[2L][h/f][w/f] before the Gaussian, the decoder on one tile, and
 * the Gaussian itself (std may be NULL). */
int vae_encode_moments_locked(struct vae *v, const float *x, int w, int h, float *moments);
int vae_decode_locked(struct vae *v, const float *z, int w, int h, float *out);
void vae_gaussian(const float *moments, int64_t nl, float *mean, float *std);

/* The encoder kind "vae" (encoder.c): specs and identity described there. */
extern const struct encoder_kind vae_encoder_kind;

#endif
