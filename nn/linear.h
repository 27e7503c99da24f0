/* The linear layer every model uses: y[M, out] = x[M, in] W^T + b, W stored
 * [out, in] as torch.nn.Linear stores it, then the contribution of an
 * adapter when one is attached.
 *
 * A model lists each linear once in its parameter table (nn_linear_addf),
 * binds it to its buffers (nn_linear_bind) and calls nn_linear_forward /
 * nn_linear_backward. What comes from outside the model goes through the
 * layer, not the model's code: an adapter (LoRA, issue 17, adds
 * y += scale * B(A(x))), a frozen base (no weight or bias gradient, only
 * the input gradient), and the dtype a frozen base is stored in. */
#ifndef DIT_NN_LINEAR_H
#define DIT_NN_LINEAR_H

#include "kernels/kernels.h"
#include "nn/params.h"

#include <stddef.h>

#define NN_NO_ENTRY ((size_t)-1)

struct nn_linear;

/* A contribution added to a linear's output by code the model does not know.
 * forward adds its part into out[M, out] (which already holds x W^T + b).
 * backward receives dout[M, out] and the layer's input inp[M, in], adds its
 * part of the input gradient into dinp[M, in] (absent: no input gradient is
 * wanted, as for the patch embedding) and accumulates its own parameter
 * gradients wherever it keeps them. An adapter plans its own scratch before
 * the first step (ops never allocate) and must be deterministic: gradient
 * checkpointing calls forward again during backward. */
struct nn_adapter {
    void (*forward)(const struct nn_adapter *a, struct kctx *k, const struct nn_linear *l,
                    struct tensor out, struct tensor inp, int M);
    void (*backward)(const struct nn_adapter *a, struct kctx *k, const struct nn_linear *l,
                     struct tensor dinp, struct tensor dout, struct tensor inp, int M);
    void *ctx; /* the adapter's own state */
};

struct nn_linear {
    int in, out;                  /* features */
    size_t weight_id, bias_id;    /* entries of the parameter table; bias_id NN_NO_ENTRY: no bias */
    struct tensor weight, bias;   /* [out, in] and [out]: views of the compute copy */
    struct tensor dweight, dbias; /* views of the f32 gradient buffer; absent without one */
    int trainable;                /* 0: backward writes no weight or bias gradient */
    /* What the weight is stored in: the compute dtype, or apart from the
     * compute copy (--base-weight-dtype): a frozen base's store (f32, bf16,
     * or KDT_U8 for fp8 e4m3 codes with one f32 scale per output row), or a
     * training model's f32 master. Apart, weight is the shared scratch each
     * product widens the stored values into just before it reads them, so
     * only one layer's weight is ever held in the compute dtype. */
    enum kdtype storage;
    struct tensor stored, scales; /* [out * in] codes and [out] scales; absent: weight holds it */
    /* The weight gradient kept apart (bf16, --grad-accum-dtype): dweight is
     * then an f32 scratch each backward fills before adding it in. */
    struct tensor dstored;
    struct nn_adapter *adapter;   /* NULL: none */
};

/* Appends the layer's tensors to the table: "PREFIX.weight" of wdim
 * dimensions wshape (wshape[0] = out features, the product of the rest = in
 * features: a convolution's kernel [out, CH, P, P] is a linear over its
 * flattened patch), then "PREFIX.bias" [out] when bias. l may be NULL when
 * only the table is wanted; else its features and entries are set and the
 * rest cleared. Errors are kept in the table until nn_params_done. */
void nn_linear_addf(struct nn_linear *l, struct nn_params *t, int bias, int wdim,
                    const int64_t *wshape, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Views of the layer's entries in weights (the compute copy) and grads (the
 * f32 gradient buffer; absent tensors give absent views), or of the table's
 * store when its weight was laid out apart. The layer trains when its table
 * entries do. The adapter is kept. */
void nn_linear_bind(struct nn_linear *l, const struct nn_params *t, struct tensor weights,
                    struct tensor grads);

/* out[M, out] = inp[M, in] W^T + b, plus the adapter's contribution. */
void nn_linear_forward(struct kctx *k, const struct nn_linear *l, struct tensor out,
                       struct tensor inp, int M);
/* pre = inp W^T + b (+ adapter), out = gelu(pre) (GELU tanh): one product
 * with a GELU epilogue on CUDA. With an adapter the GELU is a separate op
 * after the adapter's contribution (it must act on the sum). */
void nn_linear_gelu_forward(struct kctx *k, const struct nn_linear *l, struct tensor out,
                            struct tensor pre, struct tensor inp, int M);
/* dinp[M, in] = dout W (overwrites; may be absent), then the adapter's part
 * added; when trainable, dweight += dout^T inp and dbias += column sums of
 * dout (accumulate). */
void nn_linear_backward(struct kctx *k, const struct nn_linear *l, struct tensor dinp,
                        struct tensor dout, struct tensor inp, int M);

#endif
