#include "nn/weights.h"
#include "libcommon/error.h"
#include "libcommon/half.h"

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
    if (w->ctx) {
        if (w->weights.data != w->params.data)
            k_free(w->ctx, &w->weights);
        k_free(w->ctx, &w->params);
        k_free(w->ctx, &w->grads);
        k_free(w->ctx, &w->store.codes);
        k_free(w->ctx, &w->store.scales);
        k_free(w->ctx, &w->store.widened);
    }
    if (w->table)
        w->table->store = NULL;
    free(w->host_codes), free(w->host_scales), free(w->host_f32);
    memset(w, 0, sizeof *w);
}

int nn_base_check(enum nn_base base, enum kdtype dt, int frozen)
{
    if (frozen || nn_base_dtype(base, dt) == dt)
        return 0;
    err_set("the model's weights train, so they stay in their f32 master copy: --base-weight-dtype %s "
            "is for a frozen base (LoRA with --train-only-lora, and sampling)",
            nn_base_name(base));
    return -1;
}

static int stored_apart(enum kdtype dt, int inference, enum nn_base base)
{
    return inference && nn_base_dtype(base, dt) != dt;
}

int64_t nn_weights_model_bytes(const struct nn_params *t, enum kdtype dt, int inference, enum nn_base base)
{
    if (!stored_apart(dt, inference, base))
        return nn_weights_bytes(t->total, dt, inference);
    /* as nn_params_set_apart will lay it out */
    int64_t compute = 0, store = 0, rows = 0, widest = 0;
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        if (p->linear) {
            store += p->n, rows += p->shape[0];
            widest = p->n > widest ? p->n : widest;
        } else {
            compute += p->n;
        }
    }
    const enum kdtype sd = nn_base_dtype(base, dt);
    const int64_t db = (int64_t)kdtype_bytes(dt);
    return (compute + widest) * db + store * (int64_t)kdtype_bytes(sd) + (sd == KDT_U8 ? 4 * rows : 0);
}

int nn_weights_model_alloc(struct nn_weights *w, struct kctx *ctx, struct nn_params *t, enum kdtype dt,
                           int inference, enum nn_base base)
{
    if (nn_base_check(base, dt, inference) != 0)
        return -1;
    if (!stored_apart(dt, inference, base))
        return nn_weights_alloc(w, ctx, t->total, dt, inference);
    memset(w, 0, sizeof *w);
    nn_params_set_apart(t);
    const enum kdtype sd = nn_base_dtype(base, dt);
    w->ctx = ctx, w->dt = dt, w->n = t->total, w->inference = 1, w->table = t;
    /* Host scratch for one weight's fp8 codes, scales and f32 values, so
     * that the transfers have nothing left to fail. */
    int64_t rows = 0;
    for (size_t i = 0; i < t->count; i++)
        rows = t->p[i].linear && t->p[i].shape[0] > rows ? t->p[i].shape[0] : rows;
    if (sd == KDT_U8 && (!(w->host_codes = malloc((size_t)t->widest)) ||
                         !(w->host_scales = malloc((size_t)rows * sizeof(float))) ||
                         !(w->host_f32 = malloc((size_t)t->widest * sizeof(float))))) {
        nn_weights_free(w);
        err_set("out of host memory for the fp8 codes of a %lld-value weight", (long long)t->widest);
        return -1;
    }
    if (k_alloc(ctx, &w->weights, dt, t->compute_total) != 0 ||
        k_alloc(ctx, &w->store.codes, sd, t->store_total) != 0 ||
        (sd == KDT_U8 && k_alloc(ctx, &w->store.scales, KDT_F32, t->store_rows) != 0) ||
        k_alloc(ctx, &w->store.widened, dt, t->widest) != 0) {
        nn_weights_free(w);
        return -1;
    }
    t->store = &w->store;
    return 0;
}

static void stored_upload(const struct nn_weights *w, const struct nn_param *p, const float *host)
{
    struct tensor codes = tensor_view(w->store.codes, p->soff, p->n);
    if (codes.dtype != KDT_U8) {
        k_upload_f32(w->ctx, codes, host, p->n);
        return;
    }
    const int rows = (int)p->shape[0];
    f32_to_e4m3_rows(host, rows, (int)(p->n / rows), w->host_codes, w->host_scales);
    k_upload(w->ctx, codes, w->host_codes, p->n);
    k_upload(w->ctx, tensor_view(w->store.scales, p->row, rows), w->host_scales, rows);
    k_sync(w->ctx); /* before the scratch is reused */
}

static void apart_upload(struct nn_weights *w, const float *host)
{
    const struct nn_params *t = w->table;
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        if (p->coff >= 0)
            k_upload_f32(w->ctx, tensor_view(w->weights, p->coff, p->n), host + p->offset, p->n);
        else
            stored_upload(w, p, host + p->offset);
    }
}

static void apart_download(const struct nn_weights *w, float *host)
{
    const struct nn_params *t = w->table;
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        float *out = host + p->offset;
        if (p->coff >= 0) {
            k_download_f32(w->ctx, out, tensor_view(w->weights, p->coff, p->n), p->n);
            continue;
        }
        struct tensor codes = tensor_view(w->store.codes, p->soff, p->n);
        if (codes.dtype != KDT_U8) {
            k_download_f32(w->ctx, out, codes, p->n);
            continue;
        }
        /* as k_fp8_rows_widen computes it: e4m3_to_f32(code) * scale in f32 */
        const int64_t rows = p->shape[0], cols = p->n / rows;
        k_download(w->ctx, w->host_codes, codes, p->n);
        k_download(w->ctx, w->host_scales, tensor_view(w->store.scales, p->row, rows), rows);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++)
                out[r * cols + c] = e4m3_to_f32(w->host_codes[r * cols + c]) * w->host_scales[r];
    }
}

/* Another model's f32 weights (full layout) into a store apart: converted
 * on the device, except fp8, whose per-row scales are found on the host. */
static void apart_set(struct nn_weights *w, struct tensor src)
{
    const struct nn_params *t = w->table;
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        struct tensor from = tensor_view(src, p->offset, p->n);
        if (p->coff >= 0) {
            k_convert(w->ctx, tensor_view(w->weights, p->coff, p->n), from, p->n);
            continue;
        }
        struct tensor codes = tensor_view(w->store.codes, p->soff, p->n);
        if (codes.dtype != KDT_U8) {
            k_convert(w->ctx, codes, from, p->n);
            continue;
        }
        k_download(w->ctx, w->host_f32, from, p->n);
        stored_upload(w, p, w->host_f32);
    }
}

void nn_weights_upload(struct nn_weights *w, const float *host)
{
    if (w->table) {
        apart_upload(w, host);
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
    if (w->table)
        apart_download(w, host);
    else if (w->params.data)
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
    if (w->table) {
        apart_set(w, src);
    } else if (w->params.data) {
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
