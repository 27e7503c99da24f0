/* A table's linears laid out apart (nn/store.h): the frozen store, the
 * master as the only copy, the gradients apart. Everything here goes
 * entry by entry through the table; the products' side is nn/linear.c. */
#include "nn/store.h"
#include "libcommon/error.h"
#include "libcommon/half.h"

#include <stdlib.h>
#include <string.h>

int nn_weights_plan_of(struct nn_weights_plan *p, int memory, enum kdtype dt, int inference)
{
    p->dt = dt;
    p->inference = inference;
    p->base = nn_mem_base(memory);
    p->grad_dt = memory & NN_MEM_GRADS_BF16 ? KDT_BF16 : KDT_F32;
    const enum kdtype sd = nn_base_dtype(p->base, dt);
    if (!inference && (p->base == NN_BASE_BF16 || p->base == NN_BASE_FP8) && sd != dt) {
        err_set("the model's weights train, so they stay in their f32 master copy: --base-weight-dtype %s "
                "is for a frozen base (LoRA with --train-only-lora, and sampling)",
                nn_base_name(p->base));
        return -1;
    }
    return 0;
}

void nn_apart_of(const struct nn_weights_plan *plan, struct nn_apart *a)
{
    const enum kdtype sd = nn_base_dtype(plan->base, plan->dt);
    a->frozen_store = plan->inference && sd != plan->dt;
    a->master_store = !plan->inference && plan->base == NN_BASE_F32 && plan->dt != KDT_F32;
    a->grads = !plan->inference && plan->grad_dt != KDT_F32;
}

/* As nn_params_set_apart lays it out, without changing t. */
struct apart_sizes {
    int64_t compute, store, rows, widest, widest_rows;
};

static void apart_sizes(const struct nn_params *t, struct apart_sizes *z)
{
    memset(z, 0, sizeof *z);
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        if (p->linear) {
            z->store += p->n, z->rows += p->shape[0];
            z->widest = p->n > z->widest ? p->n : z->widest;
            z->widest_rows = p->shape[0] > z->widest_rows ? p->shape[0] : z->widest_rows;
        } else {
            z->compute += p->n;
        }
    }
}

int64_t nn_store_bytes(const struct nn_params *t, const struct nn_weights_plan *plan)
{
    struct nn_apart a;
    struct apart_sizes z;
    nn_apart_of(plan, &a);
    apart_sizes(t, &z);
    const int64_t db = (int64_t)kdtype_bytes(plan->dt), n = t->total;
    const enum kdtype sd = nn_base_dtype(plan->base, plan->dt);
    int64_t b = 0;
    if (a.frozen_store) {
        b += (z.compute + z.widest) * db + z.store * (int64_t)kdtype_bytes(sd) + (sd == KDT_U8 ? 4 * z.rows : 0);
    } else {
        /* the master, and a compute copy of what it is not read from */
        b += 4 * n + (a.master_store ? (z.compute + z.widest) * db : plan->dt != KDT_F32 ? n * db : 0);
    }
    if (!plan->inference)
        b += a.grads ? 4 * (z.compute + z.widest) + z.store * (int64_t)kdtype_bytes(plan->grad_dt) : 4 * n;
    return b;
}

int nn_store_alloc(struct nn_weights *w, struct kctx *ctx, struct nn_params *t,
                   const struct nn_weights_plan *plan)
{
    struct nn_apart a;
    nn_apart_of(plan, &a);
    memset(w, 0, sizeof *w);
    nn_params_set_apart(t);
    const enum kdtype dt = plan->dt, sd = nn_base_dtype(plan->base, dt);
    w->ctx = ctx, w->dt = dt, w->n = t->total, w->inference = plan->inference, w->table = t;
    int rc = 0;
    if (a.frozen_store) {
        /* Host scratch for one weight's fp8 codes, scales and f32 values, so
         * that the transfers have nothing left to fail. */
        struct apart_sizes z;
        apart_sizes(t, &z);
        if (sd == KDT_U8 && (!(w->host_codes = malloc((size_t)t->widest)) ||
                             !(w->host_scales = malloc((size_t)z.widest_rows * sizeof(float))) ||
                             !(w->host_f32 = malloc((size_t)t->widest * sizeof(float))))) {
            nn_weights_free(w);
            err_set("out of host memory for the fp8 codes of a %lld-value weight", (long long)t->widest);
            return -1;
        }
        rc = k_alloc(ctx, &w->weights, dt, t->compute_total) != 0 ||
             k_alloc(ctx, &w->store.codes, sd, t->store_total) != 0 ||
             (sd == KDT_U8 && k_alloc(ctx, &w->store.scales, KDT_F32, t->store_rows) != 0);
    } else {
        rc = k_alloc(ctx, &w->params, KDT_F32, t->total) != 0;
        if (!rc && a.master_store)
            rc = k_alloc(ctx, &w->weights, dt, t->compute_total) != 0;
        else if (!rc && dt != KDT_F32)
            rc = k_alloc(ctx, &w->weights, dt, t->total) != 0;
        else
            w->weights = w->params;
        if (a.master_store)
            w->store.codes = w->params; /* the linears are read from the master itself */
    }
    if (!rc && (a.frozen_store || a.master_store))
        rc = k_alloc(ctx, &w->store.widened, dt, t->widest) != 0;
    if (!rc && !plan->inference)
        rc = k_alloc(ctx, &w->grads, KDT_F32, a.grads ? t->compute_total : t->total) != 0 ||
             (a.grads && (k_alloc(ctx, &w->store.dgrads, plan->grad_dt, t->store_total) != 0 ||
                          k_alloc(ctx, &w->store.dwide, KDT_F32, t->widest) != 0));
    if (rc) {
        nn_weights_free(w);
        return -1;
    }
    t->store = &w->store;
    nn_weights_zero_grads(w);
    return 0;
}

void nn_store_free(struct nn_weights *w)
{
    if (w->ctx) {
        if (w->store.codes.data != w->params.data)
            k_free(w->ctx, &w->store.codes);
        struct tensor *own[] = {&w->store.scales, &w->store.widened, &w->store.dgrads, &w->store.dwide};
        for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
            k_free(w->ctx, own[i]);
    }
    if (w->table)
        w->table->store = NULL;
    free(w->host_codes), free(w->host_scales), free(w->host_f32);
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

void nn_store_upload(struct nn_weights *w, const float *host)
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

void nn_store_download(const struct nn_weights *w, float *host)
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
void nn_store_set(struct nn_weights *w, struct tensor src)
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

void nn_store_refresh(struct nn_weights *w)
{
    const struct nn_params *t = w->table;
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        if (p->coff >= 0)
            k_convert(w->ctx, tensor_view(w->weights, p->coff, p->n), tensor_view(w->params, p->offset, p->n), p->n);
    }
}

void nn_store_grads_download(const struct nn_weights *w, float *host)
{
    const struct nn_params *t = w->table;
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        struct tensor g = p->coff >= 0 ? tensor_view(w->grads, p->coff, p->n)
                                       : tensor_view(w->store.dgrads, p->soff, p->n);
        k_download_f32(w->ctx, host + p->offset, g, p->n);
    }
}

/* No fill takes a bf16 tensor on every backend: zeros are converted in. */
void nn_store_zero_grads(struct nn_weights *w)
{
    const struct nn_params *t = w->table;
    k_fill(w->ctx, w->store.dwide, 0.0f, w->store.dwide.n);
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        if (p->coff < 0)
            k_convert(w->ctx, tensor_view(w->store.dgrads, p->soff, p->n), tensor_view(w->store.dwide, 0, p->n),
                      p->n);
    }
}

double nn_store_grads_sum_squares(struct nn_weights *w)
{
    const struct nn_params *t = w->table;
    double sq = k_sum_squares(w->ctx, w->grads, w->grads.n);
    for (size_t i = 0; i < t->count; i++)
        if (t->p[i].coff < 0)
            sq += k_sum_squares(w->ctx, nn_weights_grad_f32(w, i), t->p[i].n);
    return sq;
}
