/* What a training run is asked to do: dit-train's options after parsing,
 * in one struct that train_run() takes (and, later, the porcelain that
 * prepares raw data first). */
#ifndef DIT_TRAIN_CONFIG_H
#define DIT_TRAIN_CONFIG_H

#include "kernels/kernels.h"
#include "nn/weights.h"
#include "train/lora.h"
#include "train/trainer.h"

#include <stdint.h>

struct train_config {
    const char *data, *val_data, *output;
    const char *model;      /* a preset name ("DiT-XL/2") */
    const char *pretrained; /* a model dir, or NULL */
    const char *resume;     /* a checkpoint dir, "latest", or NULL */
    int overwrite_output_dir; /* a fresh run replaces the run the output dir holds */
    enum device_kind device;
    enum kdtype dtype;      /* activations and compute weights (nn/precision.h) */
    int tensorboard;
    const char *sample_labels; /* "0,1,2" or NULL: the first 8 classes */
    const char *sample_prompts; /* text models: the prompts file of the samples */
    int batch, epochs, num_classes, image_size, threads, checkpointing, limit;
    int depth, hidden, heads, sample_steps;
    int eval_batch;           /* validation batch size (0: the training batch's) */
    double sample_cfg;
    int64_t max_steps, log_every, ckpt_every, eval_every, sample_every;
    int objective_auto;       /* no --objective: the model's (flow for text-to-image, else ddpm) */
    struct trainer_config tc; /* the step's hyperparameters; total_steps is derived */
    /* LoRA (--use-lora): the adapter's options; with train_only_lora the
     * model's weights are frozen (no gradients, no optimizer state). */
    int use_lora, train_only_lora;
    struct lora_options lora;
    enum lora_format lora_format; /* of the adapter files the checkpoints hold */
    /* --base-weight-dtype: what the model's linears are stored in: a frozen
     * model's (for the run and its samples) in bf16 or fp8, or a model that
     * trains in its f32 master only (NN_BASE_F32). --grad-accum-dtype bf16:
     * a model that trains accumulates its linears' weight gradients in bf16. */
    enum nn_base base;
    int grads_bf16;
};

/* Runs the whole training: data, model, resume, the loop with its log,
 * validation, sample and checkpoint cadences, signals (SIGINT/SIGTERM
 * checkpoint and stop) and the NaN stop. Returns the exit status (0, or 1
 * after a failure that is logged). */
int train_run(const struct train_config *cfg);

#endif
