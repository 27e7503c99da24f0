#include "nn/weights.h"
#include "libcommon/error.h"
#include "nn/store.h"

#include <stdlib.h>
#include <string.h>

int nn_base_parse(const char *name, enum nn_base *out)
{
    static const struct {
        const char *name;
        enum nn_base b;
    } names[] = {{"auto", NN_BASE_COMPUTE}, {"fp32", NN_BASE_F32}, {"f32", NN_BASE_F32},
                 {"bf16", NN_BASE_BF16},    {"fp8", NN_BASE_FP8},  {"e4m3", NN_BASE_FP8}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].b;
            return 0;
        }
    err_set("unknown base weight dtype '%s' (fp32, bf16, fp8 or auto)", name);
    return -1;
}

const char *nn_base_name(enum nn_base b)
{
    return b == NN_BASE_F32 ? "fp32" : b == NN_BASE_BF16 ? "bf16" : b == NN_BASE_FP8 ? "fp8" : "auto";
}

enum kdtype nn_base_dtype(enum nn_base b, enum kdtype dt)
{
    return b == NN_BASE_F32 ? KDT_F32 : b == NN_BASE_BF16 ? KDT_BF16 : b == NN_BASE_FP8 ? KDT_U8 : dt;
}

static int wants_params(enum kdtype dt, int inference)
{
    return !inference || dt == KDT_F32;
}

int64_t nn_weights_bytes(int64_t n, enum kdtype dt, int inference)
{
    int64_t per = 4 * (wants_params(dt, inference) + !inference) + (dt != KDT_F32 ? (int64_t)kdtype_bytes(dt) : 0);
    return n * per;
}

int nn_weights_alloc(struct nn_weights *w, struct kctx *ctx, int64_t n, enum kdtype dt, int inference)
{
    memset(w, 0, sizeof *w);
    w->ctx = ctx, w->dt = dt, w->n = n, w->inference = inference;
    if ((wants_params(dt, inference) && k_alloc(ctx, &w->params, KDT_F32, n) != 0) ||
        (!inference && k_alloc(ctx, &w->grads, KDT_F32, n) != 0) ||
        (dt != KDT_F32 && k_alloc(ctx, &w->weights, dt, n) != 0)) {
        nn_weights_free(w);
        return -1;
    }
    if (dt == KDT_F32)
        w->weights = w->params;
    nn_weights_zero_grads(w);
    return 0;
}

void nn_weights_free(struct nn_weights *w)
{
    nn_store_free(w); /* first: its codes may be the master */
    if (w->ctx) {
        if (w->weights.data != w->params.data)
            k_free(w->ctx, &w->weights);
        k_free(w->ctx, &w->params);
        k_free(w->ctx, &w->grads);
    }
    memset(w, 0, sizeof *w);
}

void nn_weights_upload(struct nn_weights *w, const float *host)
{
    if (!w->params.data && w->table) {
        nn_store_upload(w, host);
    } else if (w->params.data) {
        k_upload(w->ctx, w->params, host, w->n);
        nn_weights_refresh(w);
    } else {
        k_upload_f32(w->ctx, w->weights, host, w->n);
    }
    k_sync(w->ctx);
}

void nn_weights_download(const struct nn_weights *w, float *host)
{
    if (!w->params.data && w->table)
        nn_store_download(w, host);
    else if (w->params.data)
        k_download(w->ctx, host, w->params, w->n);
    else
        k_download_f32(w->ctx, host, w->weights, w->n);
}

void nn_weights_refresh(struct nn_weights *w)
{
    if (!w->params.data || w->weights.data == w->params.data)
        return;
    if (w->weights.n != w->n)
        nn_store_refresh(w);
    else
        k_convert(w->ctx, w->weights, w->params, w->n);
}

void nn_weights_set(struct nn_weights *w, struct tensor src)
{
    if (!w->params.data && w->table) {
        nn_store_set(w, src);
    } else if (w->params.data) {
        k_copy(w->ctx, w->params, src, w->n);
        nn_weights_refresh(w);
    } else {
        k_convert(w->ctx, w->weights, src, w->n);
    }
}

void nn_weights_grads_download(const struct nn_weights *w, float *host)
{
    if (w->grads.data && w->grads.n != w->n)
        nn_store_grads_download(w, host);
    else if (w->grads.data)
        k_download(w->ctx, host, w->grads, w->n);
}

void nn_weights_zero_grads(struct nn_weights *w)
{
    if (w->grads.data)
        k_fill(w->ctx, w->grads, 0.0f, w->grads.n);
    if (w->store.dgrads.data)
        nn_store_zero_grads(w);
}

double nn_weights_grads_sum_squares(struct nn_weights *w)
{
    if (!w->grads.data)
        return 0.0;
    if (w->store.dgrads.data)
        return nn_store_grads_sum_squares(w);
    return k_sum_squares(w->ctx, w->grads, w->grads.n);
}

int nn_weights_split(const struct nn_weights *w)
{
    return (w->grads.data && w->grads.n != w->n) ||
           (w->params.data && w->weights.data != w->params.data && w->weights.n != w->n);
}

struct tensor nn_weights_grad_f32(struct nn_weights *w, size_t i)
{
    const struct nn_param *p = w->table ? &w->table->p[i] : NULL;
    if (!p || w->grads.n == w->n)
        return p ? tensor_view(w->grads, p->offset, p->n) : w->grads;
    if (p->coff >= 0)
        return tensor_view(w->grads, p->coff, p->n);
    struct tensor g = tensor_view(w->store.dwide, 0, p->n);
    k_convert(w->ctx, g, tensor_view(w->store.dgrads, p->soff, p->n), p->n);
    return g;
}

struct tensor nn_weights_copy_of(const struct nn_weights *w, size_t i)
{
    if (!w->table || !w->params.data || w->weights.data == w->params.data)
        return tensor_none();
    const struct nn_param *p = &w->table->p[i];
    if (w->weights.n == w->n)
        return tensor_view(w->weights, p->offset, p->n);
    return p->coff >= 0 ? tensor_view(w->weights, p->coff, p->n) : tensor_none();
}

int64_t nn_weights_model_bytes(const struct nn_params *t, const struct nn_weights_plan *plan)
{
    struct nn_apart a;
    nn_apart_of(plan, &a);
    return nn_apart_any(&a) ? nn_store_bytes(t, plan) : nn_weights_bytes(t->total, plan->dt, plan->inference);
}

int nn_weights_model_alloc(struct nn_weights *w, struct kctx *ctx, struct nn_params *t,
                           const struct nn_weights_plan *plan)
{
    struct nn_apart a;
    nn_apart_of(plan, &a);
    if (!nn_apart_any(&a))
        return nn_weights_alloc(w, ctx, t->total, plan->dt, plan->inference);
    return nn_store_alloc(w, ctx, t, plan);
}

const char *nn_bytes_unit(double *bytes)
{
    const double mib = 1024.0 * 1024.0;
    if (*bytes >= 1024.0 * mib) {
        *bytes /= 1024.0 * mib;
        return "GiB";
    }
    *bytes /= mib;
    return "MiB";
}
