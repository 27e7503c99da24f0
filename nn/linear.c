#include "nn/linear.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void nn_linear_addf(struct nn_linear *l, struct nn_params *t, int bias, int wdim,
                    const int64_t *wshape, const char *fmt, ...)
{
    char prefix[NN_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof prefix || wdim < 1) {
        t->failed = 2; /* reported by nn_params_done as a bad name or shape */
        return;
    }
    int64_t in = 1;
    for (int i = 1; i < wdim; i++)
        in *= wshape[i];
    size_t weight_id = t->count;
    nn_params_addf(t, wdim, wshape, "%s.weight", prefix);
    size_t bias_id = NN_NO_ENTRY;
    if (bias) {
        bias_id = t->count;
        nn_params_addf(t, 1, wshape, "%s.bias", prefix);
    }
    if (l) {
        memset(l, 0, sizeof *l);
        l->in = (int)in;
        l->out = (int)wshape[0];
        l->weight_id = weight_id;
        l->bias_id = bias_id;
        l->trainable = 1;
    }
}

static struct tensor entry_view(const struct nn_params *t, struct tensor buffer, size_t id)
{
    return id == NN_NO_ENTRY || !buffer.data ? tensor_none() : nn_params_view(t, buffer, id);
}

void nn_linear_bind(struct nn_linear *l, const struct nn_params *t, struct tensor weights,
                    struct tensor grads)
{
    l->weight = entry_view(t, weights, l->weight_id);
    l->bias = entry_view(t, weights, l->bias_id);
    l->dweight = entry_view(t, grads, l->weight_id);
    l->dbias = entry_view(t, grads, l->bias_id);
    l->trainable = t->p[l->weight_id].trainable &&
                   (l->bias_id == NN_NO_ENTRY || t->p[l->bias_id].trainable);
    l->storage = weights.dtype;
}

void nn_linear_forward(struct kctx *k, const struct nn_linear *l, struct tensor out,
                       struct tensor inp, int M)
{
    assert(l->weight.dtype == l->storage && "a linear's weight is not in its storage dtype");
    k_linear_forward(k, out, inp, l->weight, l->bias, M, l->in, l->out);
    if (l->adapter)
        l->adapter->forward(l->adapter, k, l, out, inp, M);
}

void nn_linear_gelu_forward(struct kctx *k, const struct nn_linear *l, struct tensor out,
                            struct tensor pre, struct tensor inp, int M)
{
    if (!l->adapter) {
        assert(l->weight.dtype == l->storage && "a linear's weight is not in its storage dtype");
        k_linear_gelu_forward(k, out, pre, inp, l->weight, l->bias, M, l->in, l->out);
        return;
    }
    nn_linear_forward(k, l, pre, inp, M);
    k_gelu_forward(k, out, pre, (int64_t)M * l->out);
}

void nn_linear_backward(struct kctx *k, const struct nn_linear *l, struct tensor dinp,
                        struct tensor dout, struct tensor inp, int M)
{
    /* A frozen layer still passes the gradient through to its input. */
    struct tensor dw = l->trainable ? l->dweight : tensor_none();
    struct tensor db = l->trainable ? l->dbias : tensor_none();
    if (dinp.data || dw.data || db.data)
        k_linear_backward(k, dinp, dw, db, dout, inp, l->weight, M, l->in, l->out);
    if (l->adapter)
        l->adapter->backward(l->adapter, k, l, dinp, dout, inp, M);
}
