/* What a training checkpoint holds, for any denoiser and optimizer:
 *   transformer/   the model dir of the trained weights (the model's save_dir)
 *   ema/           the same for the EMA weights, when the run keeps them
 *   checkpoint.json  how to use the model: objective, encoder identity, model, step
 *   pytorch_lora_weights.safetensors  a LoRA run's adapter (in its
 *                  --lora-format: adapter_model.safetensors for PEFT,
 *                  lora_kohya.safetensors for kohya), with _ema beside
 *                  when the run keeps an EMA; transformer/ only when the
 *                  model's own weights train too
 *   training_state.safetensors  every optimizer state tensor by its own
 *                  name, and in the metadata "state" the step, data position,
 *                  seed, log accumulators and loss-scaling state
 * written through formats/checkpoint.h, so a checkpoint is complete or
 * absent. dit-train(1) documents the layout. */
#ifndef DIT_TRAIN_CHECKPOINT_H
#define DIT_TRAIN_CHECKPOINT_H

#include "models/denoiser.h"
#include "formats/lora_file.h"
#include "train/trainer.h"

#include <jansson.h>
#include <stdint.h>

/* Where a run stands, beyond the trainer's own step. */
struct train_position {
    int64_t step, epoch, index;
    double loss_sum; /* the losses since the last log line, so that a */
    int64_t loss_n;  /* resumed run logs the same averages */
};

/* What the checkpoint records about the run. */
struct checkpoint_info {
    const char *objective, *encoder, *model;
    uint64_t seed;
    int grad_accum;
    const char *text_encoder; /* the identity of the text encoder of the captions; NULL: none */
    enum lora_format lora_format; /* of the adapter file of a LoRA run */
    const char *lora_targets;     /* the target_modules it records (NULL: the module names) */
    const json_t *run;            /* the run's identity (train/run_identity.h); NULL: none */
};

/* Writes OUT/checkpoint-<step> (then keeps the newest `limit`, 0: all). */
int train_checkpoint_save(const char *out, int limit, const struct denoiser_config *mc, struct trainer *tr,
                          const struct train_position *pos, const struct checkpoint_info *info);
/* Loads a checkpoint's weights, EMA and optimizer state into tr (whose
 * model must have the checkpoint's configuration); fills *pos. */
int train_checkpoint_load(const char *dir, const struct denoiser_config *mc, struct trainer *tr,
                          struct train_position *pos);
/* A checkpoint's checkpoint.json fields (malloc'd strings, NULL when absent;
 * text_encoder may be NULL when not wanted). */
int train_checkpoint_info(const char *dir, char **objective, char **encoder, char **text_encoder);

#endif
