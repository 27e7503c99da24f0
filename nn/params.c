#include "nn/params.h"
#include "libcommon/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nn_params_add(struct nn_params *t, const char *name, int ndim, const int64_t *shape)
{
    if (t->failed)
        return;
    if (ndim < 0 || ndim > NN_MAX_DIMS || strlen(name) >= NN_NAME_MAX) {
        t->failed = 2;
        return;
    }
    if (t->count == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        struct nn_param *p = realloc(t->p, cap * sizeof *p);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->p = p, t->cap = cap;
    }
    struct nn_param *q = &t->p[t->count++];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->ndim = ndim;
    q->n = 1;
    for (int i = 0; i < ndim; i++) {
        q->shape[i] = shape[i];
        q->n *= shape[i];
    }
    q->offset = q->coff = t->total;
    q->trainable = 1;
    t->total += q->n;
    t->compute_total = t->total;
}

void nn_params_addf(struct nn_params *t, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[NN_NAME_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (len < 0 || len >= NN_NAME_MAX) {
        t->failed = 2;
        return;
    }
    nn_params_add(t, name, ndim, shape);
}

int nn_params_done(struct nn_params *t)
{
    if (t->failed) {
        if (t->failed == 1)
            err_set("out of memory for the parameter table");
        else
            err_set("parameter table: a name over %d bytes or over %d dimensions", NN_NAME_MAX - 1, NN_MAX_DIMS);
        return -1;
    }
    return 0;
}

void nn_params_free(struct nn_params *t)
{
    free(t->p);
    memset(t, 0, sizeof *t);
}

const struct nn_param *nn_params_find(const struct nn_params *t, const char *name)
{
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->p[i].name, name) == 0)
            return &t->p[i];
    return NULL;
}

struct tensor nn_params_view(const struct nn_params *t, struct tensor buffer, size_t i)
{
    const struct nn_param *p = &t->p[i];
    /* The master, gradients and host copies hold every entry; only a compute
     * copy is ever compacted, and then it is the only copy of that size. */
    if (buffer.n == t->total)
        return tensor_view(buffer, p->offset, p->n);
    return p->coff < 0 ? tensor_none() : tensor_view(buffer, p->coff, p->n);
}

void nn_params_set_apart(struct nn_params *t)
{
    t->compute_total = t->store_total = t->store_rows = t->widest = 0;
    for (size_t i = 0; i < t->count; i++) {
        struct nn_param *p = &t->p[i];
        if (p->linear) {
            p->coff = -1;
            p->soff = t->store_total;
            p->row = t->store_rows;
            t->store_total += p->n;
            t->store_rows += p->shape[0];
            t->widest = p->n > t->widest ? p->n : t->widest;
        } else {
            p->coff = t->compute_total;
            t->compute_total += p->n;
        }
    }
}

int64_t nn_params_trainable(const struct nn_params *t)
{
    int64_t n = 0;
    for (size_t i = 0; i < t->count; i++)
        n += t->p[i].trainable ? t->p[i].n : 0;
    return n;
}
