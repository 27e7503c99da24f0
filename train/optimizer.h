/* Optimizers behind one interface. An optimizer updates the f32 master
 * weights from their gradients and lists its state as named tensors, so a
 * checkpoint saves and restores whatever the optimizer holds (AdamW's
 * moments now; 8-bit AdamW's codes and block maxima next) without knowing
 * which optimizer it is. */
#ifndef DIT_TRAIN_OPTIMIZER_H
#define DIT_TRAIN_OPTIMIZER_H

#include "kernels/kernels.h"

#include <stdint.h>

#define OPTIMIZER_MAX_STATE 8

struct optimizer_config {
    double beta1, beta2, eps, weight_decay;
};

/* One named state tensor on the optimizer's device, f32. */
struct optimizer_state {
    const char *name; /* the tensor's name in training_state.safetensors */
    struct tensor t;
};

struct optimizer;

struct optimizer_kind {
    const char *name;
    /* Allocates and zeroes the state for o->n parameters; -1 with err_set(). */
    int (*create)(struct optimizer *o);
    /* One update at lr; `step` counts updates from 1. copy (may be absent)
     * receives the updated weights in its own dtype (the compute copy). */
    void (*step)(struct optimizer *o, struct tensor params, struct tensor grads, struct tensor copy, double lr,
                 int64_t step);
};

struct optimizer {
    const struct optimizer_kind *kind;
    struct kctx *ctx;
    int64_t n;
    struct optimizer_config cfg;
    int nstate;
    struct optimizer_state state[OPTIMIZER_MAX_STATE];
};

/* "adamw"; -1 with err_set() for another name or when the state does not fit. */
int optimizer_create(struct optimizer *o, const char *name, struct kctx *ctx, int64_t n,
                     const struct optimizer_config *cfg);
void optimizer_free(struct optimizer *o);
static inline void optimizer_step(struct optimizer *o, struct tensor params, struct tensor grads, struct tensor copy,
                                  double lr, int64_t step)
{
    o->kind->step(o, params, grads, copy, lr, step);
}
/* The state tensor of that name, or NULL. */
struct optimizer_state *optimizer_state_find(struct optimizer *o, const char *name);
/* Bytes of state, for the start-up report. */
int64_t optimizer_state_bytes(const struct optimizer *o);

#endif
