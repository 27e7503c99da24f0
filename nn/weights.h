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

/* Where a model's linear weights live, beyond the plain layout (one
 * compute copy of every tensor, f32 gradients of every tensor):
 *
 *  - A frozen base (inference, or a LoRA run's frozen model) may store
 *    them apart from the compute copy (--base-weight-dtype): in f32, bf16,
 *    or fp8 e4m3 with one f32 scale per output row; no master copy exists.
 *  - A model that trains may keep them only in its f32 master
 *    (--base-weight-dtype fp32 with a low-precision compute dtype), with no
 *    compute copy of them.
 *  - A model that trains may accumulate their gradients in bf16
 *    (--grad-accum-dtype bf16), apart from the f32 gradients of the rest.
 *
 * Either way a product widens (or narrows) its weight into one scratch in
 * the compute dtype just before it reads it (nn/linear.c), and computes
 * its weight gradient in one f32 scratch before adding it in. Biases,
 * norms and embeddings stay in the compute copy and the f32 gradients:
 * they are a small part of any model. */
enum nn_base { NN_BASE_COMPUTE = 0, NN_BASE_F32, NN_BASE_BF16, NN_BASE_FP8 };
/* "fp32", "bf16", "fp8" (and "auto": as computed); -1 with err_set() else. */
int nn_base_parse(const char *name, enum nn_base *out);
const char *nn_base_name(enum nn_base b);
/* The dtype of the stored codes for compute dtype dt (KDT_U8 for fp8). */
enum kdtype nn_base_dtype(enum nn_base b, enum kdtype dt);
/* A memory plan carries the base's storage in these bits (DENOISER_MEM_BASE),
 * and bf16 gradients of the linears in NN_MEM_GRADS_BF16. */
#define NN_MEM_BASE_SHIFT 9
#define NN_MEM_BASE_MASK (3 << NN_MEM_BASE_SHIFT)
#define NN_MEM_BASE(b) ((int)(b) << NN_MEM_BASE_SHIFT)
#define NN_MEM_GRADS_BF16 (1 << 11)
#define NN_MEM_MASK (NN_MEM_BASE_MASK | NN_MEM_GRADS_BF16)
static inline enum nn_base nn_mem_base(int memory)
{
    return (enum nn_base)((memory & NN_MEM_BASE_MASK) >> NN_MEM_BASE_SHIFT);
}

/* What a model asks of its weights. */
struct nn_weights_plan {
    enum kdtype dt;      /* the compute dtype */
    int inference;       /* no gradients: sampling, or a frozen model */
    enum nn_base base;   /* the linears' weights */
    enum kdtype grad_dt; /* the linears' weight gradients: f32 or bf16 */
};
/* The plan of a memory plan's bits (NN_MEM_MASK) for a model computing in
 * dt: -1 with err_set() for one that cannot be (bf16 or fp8 weights for a
 * base that trains: its master is f32). */
int nn_weights_plan_of(struct nn_weights_plan *p, int memory, enum kdtype dt, int inference);

/* The linears of a table laid out apart (nn_params_set_apart). */
struct nn_store {
    struct tensor codes;   /* [store_total]: f32, bf16, or e4m3 codes (KDT_U8) of a frozen
                            * base; or the f32 master itself ([total], its own layout) */
    struct tensor scales;  /* f32 [store_rows] for fp8; absent otherwise */
    struct tensor widened; /* [widest] in the compute dtype: the one weight a product reads */
    struct tensor dgrads;  /* [store_total] in the gradients' dtype, when apart */
    struct tensor dwide;   /* f32 [widest]: a product's weight gradient before it is added
                            * in, and the optimizer's widened gradient */
};

struct nn_weights {
    struct kctx *ctx;
    enum kdtype dt;
    int64_t n;             /* parameters */
    int inference;
    struct tensor params;  /* f32 master (absent for inference in bf16 / f16, and for a
                            * frozen base stored apart) */
    struct tensor grads;   /* f32, accumulated (absent for inference); without the
                            * linears' weights when their gradients are apart */
    struct tensor weights; /* in dt, what the ops read; params itself when dt is f32;
                            * without the linears' weights when they are apart */
    /* The table, when anything is laid out apart (NULL: the plain layout). */
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

/* A model's weights, laid out by its table t as plan asks (as
 * nn_weights_alloc for n = t->total when nothing is apart; else t is laid
 * out apart, and must outlive w). -1 with err_set() when the device is out
 * of memory, nothing left allocated. */
int64_t nn_weights_model_bytes(const struct nn_params *t, const struct nn_weights_plan *plan);
int nn_weights_model_alloc(struct nn_weights *w, struct kctx *ctx, struct nn_params *t,
                           const struct nn_weights_plan *plan);

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
/* The gradients in the master's layout, as f32 (bf16 ones widened). */
void nn_weights_grads_download(const struct nn_weights *w, float *host);
void nn_weights_zero_grads(struct nn_weights *w);
/* The sum of the gradients' squares (for the norm clipping takes). */
double nn_weights_grads_sum_squares(struct nn_weights *w);

/* For an optimizer that goes tensor by tensor (nn_weights_split): 1 when
 * the gradients or the compute copy are not laid out as the master is. */
int nn_weights_split(const struct nn_weights *w);
/* Table entry i's gradient in f32: a view, or (bf16 apart) widened into
 * the store's scratch, valid until the next call. */
struct tensor nn_weights_grad_f32(struct nn_weights *w, size_t i);
/* Entry i's compute copy for the optimizer to refresh; absent when the
 * master is what the ops read, or when the entry is read from the master
 * layer by layer. */
struct tensor nn_weights_copy_of(const struct nn_weights *w, size_t i);

/* Scales *bytes to MiB or GiB and names the unit, for messages. */
const char *nn_bytes_unit(double *bytes);

#endif
