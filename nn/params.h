/* The parameter table: every parameter tensor of a model, by name, in the
 * order it lives in one flat buffer. A model writes its table once
 * (nn_params_add per tensor); everything else is derived from it: the
 * buffer's size, the views (nn_params_view), the state-dict names the
 * weight files use, and which tensors train (LoRA freezes the base, and
 * an optimizer allocates state only for what trains). */
#ifndef DIT_NN_PARAMS_H
#define DIT_NN_PARAMS_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdint.h>

#define NN_NAME_MAX 96
#define NN_MAX_DIMS 4

struct nn_param {
    char name[NN_NAME_MAX]; /* the reference's state-dict name */
    int ndim;
    int64_t shape[NN_MAX_DIMS];
    int64_t offset, n;      /* elements into the flat buffer (the master, gradients, host copies) */
    int trainable;          /* 1 unless frozen */
    /* A linear's weight [out, in...] (nn_linear_addf): a frozen base may
     * store it apart from the compute copy, in bf16 or fp8 (nn/weights.h). */
    int linear;
    int64_t coff;           /* elements into the compute copy; -1: stored apart */
    int64_t soff, row;      /* into the store and its per-row scales, when apart */
};

struct nn_store;

struct nn_params {
    struct nn_param *p;
    size_t count, cap;
    int64_t total;          /* elements of the flat buffer */
    int failed;             /* an allocation failed while adding */
    /* The compute copy's layout: total elements with every entry at its
     * offset, unless nn_params_set_apart moved the linears' weights to a
     * store (then these count what is left, and what was moved). */
    int64_t compute_total;
    int64_t store_total, store_rows, widest; /* elements, rows, the largest moved weight */
    const struct nn_store *store;            /* where the moved weights are (set by nn_weights) */
};

/* Appends a tensor of ndim dimensions (shape[0..ndim)); trainable. Errors
 * are kept until nn_params_done, so a table is written as a plain list. */
void nn_params_add(struct nn_params *t, const char *name, int ndim, const int64_t *shape);
/* The same, with the name made by a printf format. */
void nn_params_addf(struct nn_params *t, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 0 when every add succeeded; -1 with err_set() otherwise. */
int nn_params_done(struct nn_params *t);
void nn_params_free(struct nn_params *t);

/* The entry of that name, or NULL. */
const struct nn_param *nn_params_find(const struct nn_params *t, const char *name);
/* A view of entry i of a buffer laid out by the table (the master, gradient
 * or compute copy). An entry stored apart has no view in the compute copy
 * (absent); a linear's weight is read through its layer (nn_linear_bind). */
struct tensor nn_params_view(const struct nn_params *t, struct tensor buffer, size_t i);
/* Lays the compute copy out without the linears' weights, which move to a
 * store of store_total elements (store_rows output rows); nn_weights does
 * this for a frozen base kept in another dtype. */
void nn_params_set_apart(struct nn_params *t);
/* Elements of the trainable entries. */
int64_t nn_params_trainable(const struct nn_params *t);

#endif
