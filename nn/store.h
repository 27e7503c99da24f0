/* The layouts apart of nn/weights.h, for nn/weights.c: a table's linears
 * stored apart from the compute copy, kept only in the master, or with
 * their gradients apart. Internal to nn/. */
#ifndef DIT_NN_STORE_H
#define DIT_NN_STORE_H

#include "nn/weights.h"

/* What a plan lays out apart. */
struct nn_apart {
    int frozen_store; /* a frozen base's linears in their own store (f32, bf16, e4m3) */
    int master_store; /* a training model's linears read from the f32 master, no compute copy */
    int grads;        /* the linears' weight gradients in their own buffer (bf16) */
};
void nn_apart_of(const struct nn_weights_plan *plan, struct nn_apart *a);
static inline int nn_apart_any(const struct nn_apart *a)
{
    return a->frozen_store || a->master_store || a->grads;
}

int64_t nn_store_bytes(const struct nn_params *t, const struct nn_weights_plan *plan);
/* Allocates w's buffers for a plan with something apart; -1 with err_set(). */
int nn_store_alloc(struct nn_weights *w, struct kctx *ctx, struct nn_params *t,
                   const struct nn_weights_plan *plan);
void nn_store_free(struct nn_weights *w);

/* A frozen base stored apart (no master): transfers entry by entry. */
void nn_store_upload(struct nn_weights *w, const float *host);
void nn_store_download(const struct nn_weights *w, float *host);
void nn_store_set(struct nn_weights *w, struct tensor src);
/* The compute copy of the entries left in it, from the master. */
void nn_store_refresh(struct nn_weights *w);
/* Gradients apart. */
void nn_store_grads_download(const struct nn_weights *w, float *host);
void nn_store_zero_grads(struct nn_weights *w);
double nn_store_grads_sum_squares(struct nn_weights *w);

#endif
