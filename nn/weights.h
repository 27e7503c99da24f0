/* A model's parameters on a device, as every model keeps them: the f32
 * master copy the optimizer updates, the f32 gradients, and the compute
 * copy the ops read in the activations' dtype (the master itself in f32).
 * An inference model has no gradients and, in a low precision, no master
 * copy either. The buffers are laid out by the model's parameter table. */
#ifndef DIT_NN_WEIGHTS_H
#define DIT_NN_WEIGHTS_H

#include "kernels/kernels.h"

#include <stdint.h>

struct nn_weights {
    struct kctx *ctx;
    enum kdtype dt;
    int64_t n;             /* parameters */
    int inference;
    struct tensor params;  /* f32 master (absent for inference in bf16 / f16) */
    struct tensor grads;   /* f32, accumulated (absent for inference) */
    struct tensor weights; /* in dt, what the ops read; params itself when dt is f32 */
};

/* Bytes nn_weights_alloc takes for n parameters. */
int64_t nn_weights_bytes(int64_t n, enum kdtype dt, int inference);
/* Allocates the three buffers on ctx's device (gradients zeroed); -1 with
 * err_set() when the device is out of memory, nothing left allocated. */
int nn_weights_alloc(struct nn_weights *w, struct kctx *ctx, int64_t n, enum kdtype dt, int inference);
void nn_weights_free(struct nn_weights *w);

/* Host f32 parameters in (master and compute copy together) and out (an
 * inference model in a low precision gives back its compute weights). */
void nn_weights_upload(struct nn_weights *w, const float *host);
void nn_weights_download(const struct nn_weights *w, float *host);
/* After the master copy changed on the device: refresh the compute copy. */
void nn_weights_refresh(struct nn_weights *w);
/* The weights from an f32 buffer of n values on the same device (another
 * model's master weights, or the EMA). */
void nn_weights_set(struct nn_weights *w, struct tensor src);
void nn_weights_grads_download(const struct nn_weights *w, float *host);
void nn_weights_zero_grads(struct nn_weights *w);

/* Scales *bytes to MiB or GiB and names the unit, for messages. */
const char *nn_bytes_unit(double *bytes);

#endif
