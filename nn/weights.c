#include "nn/weights.h"

#include <string.h>

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
    if (w->params.data) {
        k_upload(w->ctx, w->params, host, w->n);
        nn_weights_refresh(w);
    } else {
        k_upload_f32(w->ctx, w->weights, host, w->n);
    }
    k_sync(w->ctx);
}

void nn_weights_download(const struct nn_weights *w, float *host)
{
    if (w->params.data)
        k_download(w->ctx, host, w->params, w->n);
    else
        k_download_f32(w->ctx, host, w->weights, w->n);
}

void nn_weights_refresh(struct nn_weights *w)
{
    if (w->params.data && w->weights.data != w->params.data)
        k_convert(w->ctx, w->weights, w->params, w->n);
}

void nn_weights_set(struct nn_weights *w, struct tensor src)
{
    if (w->params.data) {
        k_copy(w->ctx, w->params, src, w->n);
        nn_weights_refresh(w);
    } else {
        k_convert(w->ctx, w->weights, src, w->n);
    }
}

void nn_weights_grads_download(const struct nn_weights *w, float *host)
{
    if (w->grads.data)
        k_download(w->ctx, host, w->grads, w->n);
}

void nn_weights_zero_grads(struct nn_weights *w)
{
    if (w->grads.data)
        k_fill(w->ctx, w->grads, 0.0f, w->n);
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
