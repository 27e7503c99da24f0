#include "nn/lora.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int nn_lora_create(struct nn_lora *l, const struct nn_lora_module *mod, size_t n)
{
    memset(l, 0, sizeof *l);
    if (n == 0) {
        err_set("a LoRA without modules");
        return -1;
    }
    if (!(l->mod = malloc(n * sizeof *l->mod))) {
        err_set("out of memory for the LoRA");
        return -1;
    }
    memcpy(l->mod, mod, n * sizeof *mod);
    l->n = n;
    for (size_t i = 0; i < n; i++) {
        struct nn_lora_module *m = &l->mod[i];
        if (m->rank < 1 || m->in < 1 || m->out < 1) {
            err_set("LoRA module %s: rank %d of a [%d, %d] layer", m->name, m->rank, m->out, m->in);
            nn_lora_free(l);
            return -1;
        }
        m->a_id = l->table.count;
        nn_params_addf(&l->table, 2, (int64_t[]){m->rank, m->in}, "%s.lora_A.weight", m->name);
        m->b_id = l->table.count;
        nn_params_addf(&l->table, 2, (int64_t[]){m->out, m->rank}, "%s.lora_B.weight", m->name);
    }
    if (nn_params_done(&l->table) != 0) {
        nn_lora_free(l);
        return -1;
    }
    return 0;
}

int nn_lora_alloc(struct nn_lora *l, struct kctx *ctx, enum kdtype dt, int train)
{
    if (nn_weights_alloc(&l->w, ctx, l->table.total, dt, !train) != 0) {
        err_prefix("the LoRA's %lld parameters", (long long)l->table.total);
        return -1;
    }
    return 0;
}

void nn_lora_free(struct nn_lora *l)
{
    if (l->w.ctx)
        nn_weights_free(&l->w);
    nn_params_free(&l->table);
    free(l->mod);
    memset(l, 0, sizeof *l);
}

void nn_lora_init_weights(const struct nn_lora *l, float *host, enum nn_lora_init init, uint64_t seed)
{
    for (size_t i = 0; i < l->n; i++) {
        const struct nn_lora_module *m = &l->mod[i];
        const struct nn_param *a = &l->table.p[m->a_id], *b = &l->table.p[m->b_id];
        /* Each module's A from its own stream: the values do not depend on
         * which other modules are adapted. */
        struct rng_stream s = rng_stream(seed, RNG_PARAM_INIT, 0x10a0u, i);
        float *pa = host + a->offset;
        if (init == NN_LORA_INIT_GAUSSIAN) {
            rng_normal_f32(&s, 0, (size_t)a->n, pa);
            for (int64_t j = 0; j < a->n; j++)
                pa[j] *= 1.0f / (float)m->rank;
        } else {
            const float bound = 1.0f / sqrtf((float)m->in);
            rng_uniform_f32(&s, 0, (size_t)a->n, pa);
            for (int64_t j = 0; j < a->n; j++)
                pa[j] = (2.0f * pa[j] - 1.0f) * bound;
        }
        memset(host + b->offset, 0, (size_t)b->n * sizeof *host);
    }
}

const struct nn_lora_module *nn_lora_find(const struct nn_lora *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->mod[i].name, name) == 0)
            return &l->mod[i];
    return NULL;
}

int nn_lora_targets_match(const char *targets, const char *module)
{
    const size_t len = strlen(module);
    for (const char *t = targets; *t;) {
        const char *end = strchr(t, ',');
        size_t n = end ? (size_t)(end - t) : strlen(t);
        /* entries may carry spaces around them, as F-Lite's split does not */
        while (n && *t == ' ')
            t++, n--;
        while (n && t[n - 1] == ' ')
            n--;
        if (n && n <= len && memcmp(module + len - n, t, n) == 0 && (n == len || module[len - n - 1] == '.'))
            return 1;
        if (!end)
            break;
        t = end + 1;
    }
    return 0;
}

/* ---- the adapter -------------------------------------------------------- */

/* The input the adapter sees: x itself, or its dropout. */
static struct tensor adapter_input(const struct nn_lora_layer *ly, struct kctx *k, struct tensor inp, int M)
{
    const struct nn_lora_binding *b = ly->bind;
    const float p = b->lora->dropout;
    if (!b->training || p <= 0)
        return inp;
    const int64_t n = (int64_t)M * ly->mod->in;
    struct tensor xd = tensor_view(b->xd, 0, n);
    /* The stream of sample b in this layer: step = epoch and layer. */
    const uint64_t step = ((uint64_t)(b->epoch & 0xffff) << 16) | (uint64_t)(ly->index & 0xffff);
    k_dropout_forward(k, xd, inp, p, b->lora->seed, RNG_LORA_DROPOUT, step, (const uint64_t *)b->ids.data,
                      b->batch, n / b->batch);
    return xd;
}

/* out[M, out] += scale * xd A^T B^T: h = scale * xd A^T first (rank wide). */
static void adapter_forward(const struct nn_adapter *a, struct kctx *k, const struct nn_linear *l,
                            struct tensor out, struct tensor inp, int M)
{
    const struct nn_lora_layer *ly = a->ctx;
    const struct nn_lora_module *m = ly->mod;
    struct tensor x = adapter_input(ly, k, inp, M);
    struct tensor h = tensor_view(ly->bind->h, 0, (int64_t)M * m->rank);
    k_gemm(k, h, x, ly->A, M, m->rank, m->in, 0, 1, m->scale, 0.0f);
    k_gemm(k, out, h, ly->B, M, m->out, m->rank, 0, 1, 1.0f, 1.0f);
}

/* From dout[M, out]: dB += dout^T h, dA += (scale dout B)^T xd, and the
 * input's part dinp += dropout'(scale dout B A). h and the mask are
 * recomputed (the mask is a function of its address), not kept. */
static void adapter_backward(const struct nn_adapter *a, struct kctx *k, const struct nn_linear *l,
                             struct tensor dinp, struct tensor dout, struct tensor inp, int M)
{
    const struct nn_lora_layer *ly = a->ctx;
    const struct nn_lora_module *m = ly->mod;
    const struct nn_lora_binding *b = ly->bind;
    struct tensor x = adapter_input(ly, k, inp, M);
    struct tensor h = tensor_view(b->h, 0, (int64_t)M * m->rank);
    struct tensor dh = tensor_view(b->dh, 0, (int64_t)M * m->rank);
    k_gemm(k, h, x, ly->A, M, m->rank, m->in, 0, 1, m->scale, 0.0f);
    /* dh = dout B, dB += dout^T h (h already carries the scale) */
    k_linear_backward(k, dh, ly->dB, tensor_none(), dout, h, ly->B, M, m->rank, m->out);
    k_scale(k, dh, m->scale, (int64_t)M * m->rank);
    k_linear_backward(k, tensor_none(), ly->dA, tensor_none(), dh, x, ly->A, M, m->in, m->rank);
    if (!dinp.data)
        return;
    if (x.data == inp.data) {
        k_gemm(k, dinp, dh, ly->A, M, m->in, m->rank, 0, 0, 1.0f, 1.0f);
        return;
    }
    const int64_t n = (int64_t)M * m->in;
    struct tensor t = tensor_view(b->tmp, 0, n);
    k_gemm(k, t, dh, ly->A, M, m->in, m->rank, 0, 0, 1.0f, 0.0f);
    const uint64_t step = ((uint64_t)(b->epoch & 0xffff) << 16) | (uint64_t)(ly->index & 0xffff);
    k_dropout_forward(k, t, t, b->lora->dropout, b->lora->seed, RNG_LORA_DROPOUT, step,
                      (const uint64_t *)b->ids.data, b->batch, n / b->batch);
    k_add(k, dinp, dinp, t, n);
}

/* ---- binding ------------------------------------------------------------ */

static struct tensor entry(const struct nn_params *t, struct tensor buffer, size_t id)
{
    return buffer.data ? nn_params_view(t, buffer, id) : tensor_none();
}

static int find_linear(const struct nn_params *table, struct nn_linear *const *linears, size_t n, const char *name)
{
    char want[NN_NAME_MAX + 8];
    snprintf(want, sizeof want, "%s.weight", name);
    for (size_t i = 0; i < n; i++)
        if (strcmp(table->p[linears[i]->weight_id].name, want) == 0)
            return (int)i;
    return -1;
}

int nn_lora_bind(struct nn_lora_binding *b, struct nn_lora *l, struct kctx *ctx, const struct nn_params *table,
                 struct nn_linear *const *linears, const int64_t *max_rows, size_t n, int max_batch)
{
    memset(b, 0, sizeof *b);
    b->lora = l, b->ctx = ctx, b->max_batch = max_batch, b->batch = max_batch;
    int64_t h_n = 0, x_n = 0;
    int *at = malloc(l->n * sizeof *at);
    if (!at || !(b->layers = calloc(l->n, sizeof *b->layers))) {
        free(at);
        err_set("out of memory for the LoRA");
        return -1;
    }
    for (size_t i = 0; i < l->n; i++) {
        const struct nn_lora_module *m = &l->mod[i];
        at[i] = find_linear(table, linears, n, m->name);
        if (at[i] < 0) {
            err_set("LoRA module %s: the model has no linear layer of that name", m->name);
            goto fail;
        }
        const struct nn_linear *base = linears[at[i]];
        if (base->in != m->in || base->out != m->out) {
            err_set("LoRA module %s: the adapter is for a [%d, %d] layer, the model's is [%d, %d]", m->name,
                    m->out, m->in, base->out, base->in);
            goto fail;
        }
        if (base->adapter) {
            err_set("LoRA module %s: the layer already has an adapter", m->name);
            goto fail;
        }
        const int64_t rows = max_rows[at[i]];
        h_n = rows * m->rank > h_n ? rows * m->rank : h_n;
        x_n = rows * m->in > x_n ? rows * m->in : x_n;
    }
    const int dropout = l->dropout > 0 && l->w.grads.data;
    const enum kdtype dt = l->w.weights.dtype;
    if (k_alloc(ctx, &b->h, dt, h_n) != 0 || k_alloc(ctx, &b->dh, dt, h_n) != 0 ||
        k_alloc(ctx, &b->ids, KDT_F32, 2 * (int64_t)max_batch) != 0 ||
        (dropout && (k_alloc(ctx, &b->xd, dt, x_n) != 0 || k_alloc(ctx, &b->tmp, dt, x_n) != 0))) {
        err_prefix("the LoRA's scratch");
        goto fail;
    }
    for (size_t i = 0; i < l->n; i++) {
        struct nn_lora_layer *ly = &b->layers[i];
        const struct nn_lora_module *m = &l->mod[i];
        ly->bind = b, ly->mod = m, ly->base = linears[at[i]], ly->index = (int)i;
        ly->A = entry(&l->table, l->w.weights, m->a_id);
        ly->B = entry(&l->table, l->w.weights, m->b_id);
        ly->dA = entry(&l->table, l->w.grads, m->a_id);
        ly->dB = entry(&l->table, l->w.grads, m->b_id);
        ly->adapter = (struct nn_adapter){adapter_forward, adapter_backward, ly};
        ly->base->adapter = &ly->adapter;
    }
    b->n = l->n;
    free(at);
    return 0;
fail:
    free(at);
    nn_lora_unbind(b);
    return -1;
}

void nn_lora_unbind(struct nn_lora_binding *b)
{
    for (size_t i = 0; b->layers && i < b->n; i++)
        if (b->layers[i].base && b->layers[i].base->adapter == &b->layers[i].adapter)
            b->layers[i].base->adapter = NULL;
    if (b->ctx) {
        k_free(b->ctx, &b->h);
        k_free(b->ctx, &b->dh);
        k_free(b->ctx, &b->xd);
        k_free(b->ctx, &b->tmp);
        k_free(b->ctx, &b->ids);
    }
    free(b->layers);
    memset(b, 0, sizeof *b);
}

void nn_lora_binding_batch(struct nn_lora_binding *b, const uint64_t *records, int n, int64_t epoch, int training)
{
    b->batch = n;
    b->epoch = epoch;
    b->training = training && b->lora->dropout > 0 && b->xd.data;
    if (b->training)
        k_upload(b->ctx, b->ids, records, 2 * (int64_t)n);
}
