#include "train/optimizer.h"
#include "libcommon/error.h"

#include <stdlib.h>
#include <string.h>

/* AdamW as torch.optim.AdamW (decoupled weight decay), fused with the
 * refresh of the compute copy in the kernel. */
static int adamw_create(struct optimizer *o)
{
    static const char *const names[2] = {"adam_m", "adam_v"};
    for (int i = 0; i < 2; i++) {
        o->state[i].name = names[i];
        if (k_alloc(o->ctx, &o->state[i].t, KDT_F32, o->n) != 0)
            return -1;
        o->nstate = i + 1;
        k_fill(o->ctx, o->state[i].t, 0.0f, o->n);
    }
    return 0;
}

static void adamw_step(struct optimizer *o, struct tensor params, struct tensor grads, struct tensor copy, double lr,
                       int64_t step)
{
    struct adamw_params hp = {lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, o->cfg.weight_decay, step};
    k_adamw_update(o->ctx, params, grads, o->state[0].t, o->state[1].t, copy, o->n, &hp);
}

static void adamw_step_segment(struct optimizer *o, size_t i, struct tensor p, struct tensor g, struct tensor c,
                               const struct adamw_params *hp)
{
    const int64_t at = o->seg[i].state_at, n = o->seg[i].n;
    k_adamw_update(o->ctx, p, g, tensor_view(o->state[0].t, at, n), tensor_view(o->state[1].t, at, n), c, n, hp);
}

static const struct optimizer_kind adamw = {"adamw", adamw_create, adamw_step, adamw_step_segment};

/* ---- adamw8bit ------------------------------------------------------------ */

enum { A8_S1, A8_S2, A8_A1, A8_A2, A8_M, A8_V, A8_NSTATE };

static int is_8bit(const struct optimizer_segment *s)
{
    return s->n >= ADAMW8BIT_MIN_SIZE;
}

static int64_t blocks_of(int64_t n)
{
    return (n + K_ADAMW8BIT_BLOCK - 1) / K_ADAMW8BIT_BLOCK;
}

/* Zeroes a u8 tensor through a zero page (no fill op works on codes). */
static void zero_codes(struct kctx *ctx, struct tensor t)
{
    static const uint8_t zeros[1 << 16];
    for (int64_t at = 0; at < t.n; at += (int64_t)sizeof zeros) {
        int64_t len = t.n - at < (int64_t)sizeof zeros ? t.n - at : (int64_t)sizeof zeros;
        k_upload(ctx, tensor_view(t, at, len), zeros, len);
    }
    k_sync(ctx);
}

/* bitsandbytes initialises codes and maxima to 0 (a zero absmax makes any
 * code 0); the small tensors' moments to 0. Every state tensor exists,
 * empty ones with one element, so a checkpoint's list does not depend on
 * the model's sizes. */
static int adamw8bit_create(struct optimizer *o)
{
    static const char *const names[A8_NSTATE] = {"adam8_state1", "adam8_state2", "adam8_absmax1",
                                                 "adam8_absmax2", "adam_m", "adam_v"};
    int64_t n8 = 0, blocks = 0, n32 = 0;
    for (size_t i = 0; i < o->nseg; i++) {
        if (is_8bit(&o->seg[i]))
            n8 += o->seg[i].n, blocks += blocks_of(o->seg[i].n);
        else
            n32 += o->seg[i].n;
    }
    const int64_t count[A8_NSTATE] = {n8, n8, blocks, blocks, n32, n32};
    for (int i = 0; i < A8_NSTATE; i++) {
        o->state[i].name = names[i];
        const enum kdtype dt = i <= A8_S2 ? KDT_U8 : KDT_F32;
        const int64_t c = count[i] > 0 ? count[i] : 1;
        if (k_alloc(o->ctx, &o->state[i].t, dt, c) != 0)
            return -1;
        o->nstate = i + 1;
        if (dt == KDT_U8)
            zero_codes(o->ctx, o->state[i].t);
        else
            k_fill(o->ctx, o->state[i].t, 0.0f, c);
    }
    return 0;
}

static void adamw8bit_step_segment(struct optimizer *o, size_t i, struct tensor p, struct tensor g, struct tensor c,
                                   const struct adamw_params *hp)
{
    const struct optimizer_segment *s = &o->seg[i];
    const int64_t n = s->n, at = s->state_at;
    if (is_8bit(s)) {
        const int64_t nb = blocks_of(n), ab = s->block_at;
        k_adamw8bit_update(o->ctx, p, g, tensor_view(o->state[A8_S1].t, at, n), tensor_view(o->state[A8_S2].t, at, n),
                           tensor_view(o->state[A8_A1].t, ab, nb), tensor_view(o->state[A8_A2].t, ab, nb), c, n, hp);
    } else {
        k_adamw_update(o->ctx, p, g, tensor_view(o->state[A8_M].t, at, n), tensor_view(o->state[A8_V].t, at, n), c, n,
                       hp);
    }
}

static void adamw8bit_step(struct optimizer *o, struct tensor params, struct tensor grads, struct tensor copy,
                           double lr, int64_t step)
{
    struct adamw_params hp = {lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, o->cfg.weight_decay, step};
    for (size_t i = 0; i < o->nseg; i++) {
        const int64_t off = o->seg[i].offset, n = o->seg[i].n;
        struct tensor c = copy.data ? tensor_view(copy, off, n) : tensor_none();
        adamw8bit_step_segment(o, i, tensor_view(params, off, n), tensor_view(grads, off, n), c, &hp);
    }
}

static const struct optimizer_kind adamw8bit = {"adamw8bit", adamw8bit_create, adamw8bit_step,
                                                adamw8bit_step_segment};

static const struct optimizer_kind *const kinds[] = {&adamw, &adamw8bit, NULL};

/* The table's tensors in buffer order, which must tile [0, n). */
static int segments_of(struct optimizer *o, const struct nn_params *t)
{
    size_t count = t ? t->count : 1;
    if (!(o->seg = calloc(count ? count : 1, sizeof *o->seg))) {
        err_set("out of memory");
        return -1;
    }
    if (!t) {
        o->seg[0] = (struct optimizer_segment){0, o->n, 0, 0, 0};
        o->nseg = 1;
        return 0;
    }
    for (size_t i = 0; i < count; i++)
        o->seg[i] = (struct optimizer_segment){t->p[i].offset, t->p[i].n, i, 0, 0};
    for (size_t i = 1; i < count; i++) /* insertion sort: tables are in order already */
        for (size_t j = i; j > 0 && o->seg[j].offset < o->seg[j - 1].offset; j--) {
            struct optimizer_segment s = o->seg[j];
            o->seg[j] = o->seg[j - 1], o->seg[j - 1] = s;
        }
    int64_t at = 0;
    for (size_t i = 0; i < count; i++) {
        if (o->seg[i].offset != at) {
            err_set("the parameter table does not tile the buffer: a tensor at %lld, %lld expected",
                    (long long)o->seg[i].offset, (long long)at);
            return -1;
        }
        at += o->seg[i].n;
    }
    if (at != o->n) {
        err_set("the parameter table covers %lld of %lld parameters", (long long)at, (long long)o->n);
        return -1;
    }
    o->nseg = count;
    /* Where each tensor's state is: AdamW's moments in the buffer's layout;
     * 8-bit AdamW's codes and blocks of the 8-bit tensors one after another,
     * the small tensors' f32 moments one after another. */
    int64_t at8 = 0, atb = 0, at32 = 0;
    for (size_t i = 0; i < count; i++) {
        struct optimizer_segment *s = &o->seg[i];
        if (strcmp(o->kind->name, "adamw8bit") != 0) {
            s->state_at = s->offset;
        } else if (is_8bit(s)) {
            s->state_at = at8, s->block_at = atb;
            at8 += s->n, atb += blocks_of(s->n);
        } else {
            s->state_at = at32;
            at32 += s->n;
        }
    }
    return 0;
}

int optimizer_create(struct optimizer *o, const char *name, struct kctx *ctx, int64_t n,
                     const struct optimizer_config *cfg, const struct nn_params *table)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; kinds[i]; i++) {
        if (strcmp(kinds[i]->name, name) != 0)
            continue;
        o->kind = kinds[i];
        o->ctx = ctx;
        o->n = n;
        o->cfg = *cfg;
        if (segments_of(o, table) != 0) {
            optimizer_free(o);
            return -1;
        }
        if (o->kind->create(o) != 0) {
            err_prefix("the optimizer state");
            optimizer_free(o);
            return -1;
        }
        return 0;
    }
    err_set("optimizer '%s': this build has adamw and adamw8bit", name);
    return -1;
}

void optimizer_free(struct optimizer *o)
{
    for (int i = 0; i < o->nstate; i++)
        k_free(o->ctx, &o->state[i].t);
    free(o->seg);
    memset(o, 0, sizeof *o);
}

void optimizer_step_weights(struct optimizer *o, struct nn_weights *w, double coef, double lr, int64_t step)
{
    if (!nn_weights_split(w)) {
        if (coef != 1.0)
            k_scale(o->ctx, w->grads, (float)coef, w->n);
        /* The compute copy of mixed precision is refreshed in the same pass. */
        struct tensor copy = w->weights.data != w->params.data ? w->weights : tensor_none();
        optimizer_step(o, w->params, w->grads, copy, lr, step);
        return;
    }
    struct adamw_params hp = {lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, o->cfg.weight_decay, step};
    for (size_t i = 0; i < o->nseg; i++) {
        const struct optimizer_segment *s = &o->seg[i];
        struct tensor g = nn_weights_grad_f32(w, s->entry);
        if (coef != 1.0)
            k_scale(o->ctx, g, (float)coef, s->n);
        o->kind->step_segment(o, i, tensor_view(w->params, s->offset, s->n), g, nn_weights_copy_of(w, s->entry), &hp);
    }
}

struct optimizer_state *optimizer_state_find(struct optimizer *o, const char *name)
{
    for (int i = 0; i < o->nstate; i++)
        if (strcmp(o->state[i].name, name) == 0)
            return &o->state[i];
    return NULL;
}

int64_t optimizer_state_bytes(const struct optimizer *o)
{
    int64_t b = 0;
    for (int i = 0; i < o->nstate; i++)
        b += o->state[i].t.n * (int64_t)kdtype_bytes(o->state[i].t.dtype);
    return b;
}
