/* Laying out a model's activations in one arena per dtype, planned from the
 * configuration and the batch size before the first step (ops never
 * allocate): a bump allocator that, with no arena, only counts; and the
 * views a forward takes of the plan (the front of a buffer planned for the
 * largest batch and size; one chunk of a [B, k*C] modulation buffer). */
#ifndef DIT_NN_ARENA_H
#define DIT_NN_ARENA_H

#include "kernels/kernels.h"

#include <stdint.h>

struct nn_planner {
    struct tensor arena; /* data NULL: count only */
    int64_t off;         /* elements taken so far */
};

/* The next n elements, as a view; 256-byte aligned views (64 floats) for
 * vector loads. */
static inline struct tensor nn_plan_take(struct nn_planner *p, int64_t n)
{
    struct tensor t = tensor_view(p->arena, p->off, n);
    p->off += (n + 63) / 64 * 64;
    return t;
}

/* The first n elements of a view planned for more. */
static inline struct tensor nn_view_front(struct tensor t, int64_t n)
{
    return tensor_view(t, 0, n);
}

/* Chunk j (of C) of a [B, k*C] modulation buffer onwards, n its elements:
 * the view a strided op (rows k*C apart) takes. */
static inline struct tensor nn_view_chunk(struct tensor mod, int j, int C, int64_t n)
{
    return tensor_view(mod, (int64_t)j * C, n - (int64_t)j * C);
}

#endif
