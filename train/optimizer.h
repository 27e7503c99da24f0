/* Optimizers behind one interface. An optimizer updates the f32 master
 * weights from their gradients and lists its state as named tensors, so a
 * checkpoint saves and restores whatever the optimizer holds (AdamW's
 * moments, 8-bit AdamW's codes and block maxima) without knowing which
 * optimizer it is.
 *
 *   adamw      torch.optim.AdamW, f32 moments
 *   adamw8bit  bitsandbytes' AdamW8bit: per tensor of the parameter table,
 *              blockwise 8-bit moments (k_adamw8bit_update) for tensors of
 *              at least ADAMW8BIT_MIN_SIZE elements, f32 AdamW for the
 *              smaller ones (bitsandbytes' min_8bit_size rule); state
 *              "adam8_state1", "adam8_state2" (u8 codes of the 8-bit
 *              tensors, one after another), "adam8_absmax1",
 *              "adam8_absmax2" (f32, a block of 256 each), "adam_m",
 *              "adam_v" (f32, the small tensors'). Where bitsandbytes' own
 *              32-bit kernel decays the weight after the step, the small
 *              tensors here take torch's order (decay first): a difference
 *              of lr^2 wd |update| per step. */
#ifndef DIT_TRAIN_OPTIMIZER_H
#define DIT_TRAIN_OPTIMIZER_H

#include "kernels/kernels.h"
#include "nn/params.h"
#include "nn/weights.h"

#include <stdint.h>

#define OPTIMIZER_MAX_STATE 8
#define ADAMW8BIT_MIN_SIZE 4096 /* bitsandbytes' min_8bit_size: smaller tensors keep f32 state */

struct optimizer_config {
    double beta1, beta2, eps, weight_decay;
};

/* One named state tensor on the optimizer's device (f32, or u8 codes). */
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
    /* The same for segment i alone: its parameters p, gradient g (f32) and
     * compute copy c (may be absent), each a tensor of seg[i].n. */
    void (*step_segment)(struct optimizer *o, size_t i, struct tensor p, struct tensor g, struct tensor c,
                         const struct adamw_params *hp);
};

/* One tensor of the flat buffer: entry `entry` of the table, its state at
 * state_at (and 8-bit blocks at block_at) in the optimizer's own order. */
struct optimizer_segment {
    int64_t offset, n;
    size_t entry;
    int64_t state_at, block_at;
};

struct optimizer {
    const struct optimizer_kind *kind;
    struct kctx *ctx;
    int64_t n;
    struct optimizer_config cfg;
    struct optimizer_segment *seg; /* the parameter tensors, in buffer order */
    size_t nseg;
    int nstate;
    struct optimizer_state state[OPTIMIZER_MAX_STATE];
};

/* "adamw" or "adamw8bit" for n parameters laid out by table (its entries
 * must tile [0, n); NULL: one tensor); -1 with err_set() for another name,
 * a table that does not tile, or a state that does not fit. */
int optimizer_create(struct optimizer *o, const char *name, struct kctx *ctx, int64_t n,
                     const struct optimizer_config *cfg, const struct nn_params *table);
void optimizer_free(struct optimizer *o);
static inline void optimizer_step(struct optimizer *o, struct tensor params, struct tensor grads, struct tensor copy,
                                  double lr, int64_t step)
{
    o->kind->step(o, params, grads, copy, lr, step);
}
/* One update of a model's weights w, the gradients first scaled by coef
 * (clipping, loss scaling): through `step` when w keeps the plain layout,
 * else tensor by tensor, each gradient widened to f32 if it is kept in
 * bf16 (nn_weights_grad_f32) and each compute copy refreshed where one is
 * kept. w's table must be the one the optimizer was created with. */
void optimizer_step_weights(struct optimizer *o, struct nn_weights *w, double coef, double lr, int64_t step);
/* The state tensor of that name, or NULL. */
struct optimizer_state *optimizer_state_find(struct optimizer *o, const char *name);
/* Bytes of state, for the start-up report. */
int64_t optimizer_state_bytes(const struct optimizer *o);

#endif
