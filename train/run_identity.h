/* What determines a training run's result, recorded in every checkpoint's
 * checkpoint.json as "run" (dit-train(1)):
 *
 *   {"hash": xxh3-128 of "fixed" as sorted compact JSON,
 *    "fixed": the model (kind, configuration, initial weights' hash), the
 *             data (its manifest's hash), objective, seed, batch size,
 *             accumulation, compute dtype, optimizer and its
 *             hyperparameters, learning-rate schedule and warmup, clipping,
 *             EMA, the timestep law, condition dropout, LoRA (with the
 *             hash of the --lora-checkpoint it starts from),
 *    "free":  what may change on purpose between a run and its resume:
 *             learning rate, max steps, epochs, the log, checkpoint,
 *             validation and sample cadences, the checkpoint limit}
 *
 * A resume whose "fixed" differs from the checkpoint's would not continue
 * that run exactly, so it is refused with each difference named; changes
 * of "free" are logged. */
#ifndef DIT_TRAIN_RUN_IDENTITY_H
#define DIT_TRAIN_RUN_IDENTITY_H

#include "train/config.h"

#include <jansson.h>

/* The facts a train_config does not hold by itself. */
struct run_facts {
    json_t *model_config;      /* the kind's configuration JSON (taken) */
    const char *model_kind;
    const char *initial_weights; /* hex xxh3 of the f32 weights the run starts from */
    const char *data;            /* hex xxh3 of the shard set's manifest.tsv */
    const char *objective;
    const char *lora_targets;    /* --lora-target-modules or the model's (NULL without LoRA) */
    const char *lora_modules;    /* hex xxh3 of the adapted modules' names and ranks */
};

/* A new object; NULL with err_set(). */
json_t *run_identity_new(const struct train_config *c, struct run_facts *f);

/* recorded (a checkpoint's "run"; NULL for a checkpoint written before
 * runs had one: allowed, with a warning) against now: -1 with err_set()
 * naming every "fixed" difference, each with the option that sets it;
 * "free" differences are logged. checkpoint names the checkpoint in
 * messages. */
int run_identity_check(const json_t *recorded, const json_t *now, const char *checkpoint);

#endif
