#include "nn/linear.h"
#include "nn/weights.h"

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
    if (t->count == weight_id + 1)
        t->p[weight_id].linear = 1;
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
    const struct nn_param *w = &t->p[l->weight_id];
    l->weight = entry_view(t, weights, l->weight_id);
    l->bias = entry_view(t, weights, l->bias_id);
    l->dweight = entry_view(t, grads, l->weight_id);
    l->dbias = entry_view(t, grads, l->bias_id);
    l->trainable = w->trainable && (l->bias_id == NN_NO_ENTRY || t->p[l->bias_id].trainable);
    l->storage = weights.dtype;
    l->stored = l->scales = l->dstored = tensor_none();
    const struct nn_store *s = t->store;
    if (w->coff < 0 && weights.data && weights.n != t->total) {
        assert(s && "a table laid out apart without its store");
        /* a frozen store, or the master (in its own, full layout) */
        l->stored = tensor_view(s->codes, s->codes.n == t->total ? w->offset : w->soff, w->n);
        if (s->scales.data)
            l->scales = tensor_view(s->scales, w->row, l->out);
        l->weight = tensor_view(s->widened, 0, w->n);
        l->storage = s->codes.dtype;
    }
    if (w->coff < 0 && grads.data && grads.n != t->total) {
        assert(s && s->dgrads.data && "gradients laid out apart without their buffer");
        l->dstored = tensor_view(s->dgrads, w->soff, w->n);
        l->dweight = tensor_view(s->dwide, 0, w->n);
    }
}

/* A weight stored apart, in the compute dtype for the product that reads
 * it next (forward, its recomputation and backward each widen again: the
 * scratch is shared by every layer). */
static void weight_widen(struct kctx *k, const struct nn_linear *l)
{
    if (!l->stored.data)
        return;
    if (l->scales.data)
        k_fp8_rows_widen(k, l->weight, l->stored, l->scales, l->out, l->in);
    else
        k_convert(k, l->weight, l->stored, (int64_t)l->out * l->in);
}

void nn_linear_forward(struct kctx *k, const struct nn_linear *l, struct tensor out,
                       struct tensor inp, int M)
{
    weight_widen(k, l);
    k_linear_forward(k, out, inp, l->weight, l->bias, M, l->in, l->out);
    if (l->adapter)
        l->adapter->forward(l->adapter, k, l, out, inp, M);
}

void nn_linear_gelu_forward(struct kctx *k, const struct nn_linear *l, struct tensor out,
                            struct tensor pre, struct tensor inp, int M)
{
    if (!l->adapter) {
        weight_widen(k, l);
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
    /* A weight gradient kept apart (bf16) is this product's alone in f32,
     * then added in with one rounding. */
    const int64_t nw = (int64_t)l->out * l->in;
    if (dw.data && l->dstored.data)
        k_fill(k, dw, 0.0f, nw);
    if (dinp.data || dw.data || db.data) {
        weight_widen(k, l);
        k_linear_backward(k, dinp, dw, db, dout, inp, l->weight, M, l->in, l->out);
    }
    if (dw.data && l->dstored.data)
        k_accumulate(k, l->dstored, dw, nw);
    if (l->adapter)
        l->adapter->backward(l->adapter, k, l, dinp, dout, inp, M);
}
