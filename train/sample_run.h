/* Sampling as one call: dit-sample(1) is this behind its options. A model
 * is read from a training checkpoint (its EMA weights unless no_ema, and
 * the objective and encoder that checkpoint.json records), a model
 * directory, or a bare safetensors state dict of a named DiT; images are
 * generated for the requested classes (or, for a text-to-image model, from
 * prompts encoded by a text encoder) with DDPM, DDIM or Euler and
 * classifier-free guidance (or F-Lite's APG), decoded by the encoder, and written as PNGs
 * carrying their parameters, optionally with a grid and the latents.
 *
 * The returns are the data stages' (data/stage.h): 0 done, -1 an error
 * (err_get() says which file or value), -2 a configuration that cannot run
 * (the tool's usage error). Nothing is written before the model is read and
 * checked.
 *
 * With decode set no model is read: the latents of a file (as latents_out
 * writes it, or any safetensors file with a "latents" tensor) become PNGs,
 * named NNNNNN.png (NNNNNN-classL.png with labels). */
#ifndef DIT_TRAIN_SAMPLE_RUN_H
#define DIT_TRAIN_SAMPLE_RUN_H

#include "kernels/kernels.h"
#include "nn/weights.h"

#include <stdint.h>

struct sample_config {
    const char *model_path;  /* a checkpoint, a model directory or a safetensors file */
    const char *model_name;  /* for a safetensors file: "DiT-XL/2" ... */
    int latent_size;         /* for a safetensors file: the latent side */
    int num_classes;         /* for a safetensors file; 0: the preset's */
    int no_ema;              /* a checkpoint's raw weights */
    const char *objective;   /* "ddpm" or "flow"; NULL: the checkpoint's, else ddpm */
    const char *sampler;     /* "ddpm", "ddim" or "euler"; NULL: ddpm, euler for flow */
    const char *reference;   /* "dit" (sample.py) or "diffusers" (DiTPipeline); NULL: dit */
    int steps;               /* 0: 250 ddpm, 50 ddim, 28 euler */
    double eta, cfg_scale;   /* DDIM's eta; guidance (1: none; 0: the model's, 4 DiT, 6 F-Lite) */
    int cfg_channels;        /* guided latent channels; -1: dit 3, diffusers all */
    const char *labels;      /* comma-separated ids or names; NULL: "0" */
    const char *classes_file; /* ids or names, one per line (instead of labels) */
    const char *class_names; /* dit-index --classes-out, to resolve names */
    int per_class;           /* images per label */
    uint64_t seed;
    int batch;               /* images per model call */
    int width, height;       /* 0, or must be the model's size */
    const char *decoder;     /* encoder spec; NULL: the checkpoint's, else pixel */
    const char *output_dir;  /* the PNGs, created when missing */
    int overwrite;           /* replace files of another invocation (else refused) */
    const char *grid;        /* NULL, or a PNG of all images */
    const char *latents_out; /* NULL, or a safetensors file of latents and labels */
    const char *decode;      /* instead of sampling: decode this file's latents[N,C,H,W]
                              * (and labels[N] when present, for the names) with
                              * decoder, else the encoder its metadata names */
    /* Text-to-image models (F-Lite): */
    const char *prompt;          /* one prompt, or */
    const char *prompts_file;    /* one per line */
    const char *negative_prompt; /* NULL: the zero embedding, as F-Lite */
    const char *text_encoder;    /* its spec (text_encoder_spec_t5) */
    int apg, apg_batch;          /* APG instead of plain guidance; its statistics over the batch */
    double apg_threshold;        /* 0.03 */
    const char *init_noise;      /* a safetensors file whose "noise" (or "latents") [N, C, H, W] F32 is the
                                  * starting noise of the N images, in order; NULL: drawn from the seed */
    /* LoRA files applied on the fly, each "FILE" or "FILE:SCALE" (strength,
     * 1 by default), several at once; the base is never merged or copied. */
    const char *const *loras;
    int n_loras;
    enum device_kind device;
    enum kdtype dtype;       /* the compute dtype */
    enum nn_base base;       /* what the model's linears are stored in (--base-weight-dtype) */
    int threads;             /* 0: all cores */
};

/* The defaults of dit-sample(1): output "samples", batch 16, one image per
 * class, guidance 4, cfg_channels -1. */
void sample_config_init(struct sample_config *c);

int sample_run(const struct sample_config *c);

#endif
