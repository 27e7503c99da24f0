/* A model's parameters on a device, as every model keeps them: the f32
 * master copy the optimizer updates, the f32 gradients, and the compute
 * copy the ops read in the activations' dtype (the master itself in f32).
 * An inference model has no gradients and, in a low precision, no master
 * copy either. The buffers are laid out by the model's parameter table. */
#ifndef DIT_NN_WEIGHTS_H
#define DIT_NN_WEIGHTS_H

#include "kernels/kernels.h"
#include "nn/params.h"

#include <stdint.h>

/* What a frozen base's linear weights are stored in (--base-weight-dtype):
 * as the compute copy (the default), or apart from it in f32, bf16 or fp8
 * e4m3 with one f32 scale per output row, widened layer by layer as the
 * products read them. Biases, norms and embeddings stay in the compute
 * copy: they are a small part of any model. */
enum nn_base { NN_BASE_COMPUTE = 0, NN_BASE_F32, NN_BASE_BF16, NN_BASE_FP8 };
/* "fp32", "bf16", "fp8" (and "auto": as computed); -1 with err_set() else. */
int nn_base_parse(const char *name, enum nn_base *out);
const char *nn_base_name(enum nn_base b);
/* The dtype of the stored codes for compute dtype dt (KDT_U8 for fp8). */
enum kdtype nn_base_dtype(enum nn_base b, enum kdtype dt);
/* 0 when a model of compute dtype dt can keep its base in b: only a frozen
 * (or inference) model can store it apart; -1 with err_set() else. */
int nn_base_check(enum nn_base b, enum kdtype dt, int frozen);
/* A memory plan carries the base's storage in these bits (DENOISER_MEM_BASE). */
#define NN_MEM_BASE_SHIFT 9
#define NN_MEM_BASE_MASK (3 << NN_MEM_BASE_SHIFT)
#define NN_MEM_BASE(b) ((int)(b) << NN_MEM_BASE_SHIFT)
static inline enum nn_base nn_mem_base(int memory)
{
    return (enum nn_base)((memory & NN_MEM_BASE_MASK) >> NN_MEM_BASE_SHIFT);
}

/* The linears' weights of a table laid out apart (nn_params_set_apart). */
struct nn_store {
    struct tensor codes;   /* [store_total]: f32, bf16, or e4m3 codes (KDT_U8) */
    struct tensor scales;  /* f32 [store_rows] for fp8; absent otherwise */
    struct tensor widened; /* [widest] in the compute dtype: the one weight a product reads */
};

struct nn_weights {
    struct kctx *ctx;
    enum kdtype dt;
    int64_t n;             /* parameters */
    int inference;
    struct tensor params;  /* f32 master (absent for inference in bf16 / f16) */
    struct tensor grads;   /* f32, accumulated (absent for inference) */
    struct tensor weights; /* in dt, what the ops read; params itself when dt is f32 */
    /* A frozen base stored apart: the table's compute layout leaves the
     * linears' weights out of weights, and no master copy exists. */
    struct nn_params *table;
    struct nn_store store;
    uint8_t *host_codes; /* fp8: host scratch for one weight's codes, scales and values */
    float *host_scales, *host_f32;
};

/* Bytes nn_weights_alloc takes for n parameters. */
int64_t nn_weights_bytes(int64_t n, enum kdtype dt, int inference);
/* Allocates the three buffers on ctx's device (gradients zeroed); -1 with
 * err_set() when the device is out of memory, nothing left allocated. */
int nn_weights_alloc(struct nn_weights *w, struct kctx *ctx, int64_t n, enum kdtype dt, int inference);
void nn_weights_free(struct nn_weights *w);

/* A model's weights, laid out by its table t: as nn_weights_alloc for n =
 * t->total, unless the model is frozen (inference) and base asks for a
 * dtype other than dt, when t is laid out apart (nn_params_set_apart) and
 * the linears' weights go to the store. The table must outlive w. A base
 * that trains (not inference) cannot be stored apart: -1 with err_set(). */
int64_t nn_weights_model_bytes(const struct nn_params *t, enum kdtype dt, int inference, enum nn_base base);
int nn_weights_model_alloc(struct nn_weights *w, struct kctx *ctx, struct nn_params *t, enum kdtype dt,
                           int inference, enum nn_base base);

/* Host f32 parameters in (master and compute copy together) and out (an
 * inference model in a low precision gives back its compute weights, a
 * store apart its widened codes). */
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
