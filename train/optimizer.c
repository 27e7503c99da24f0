#include "train/optimizer.h"
#include "libcommon/error.h"

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

static const struct optimizer_kind adamw = {"adamw", adamw_create, adamw_step};

static const struct optimizer_kind *const kinds[] = {&adamw, NULL};

int optimizer_create(struct optimizer *o, const char *name, struct kctx *ctx, int64_t n,
                     const struct optimizer_config *cfg)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; kinds[i]; i++) {
        if (strcmp(kinds[i]->name, name) != 0)
            continue;
        o->kind = kinds[i];
        o->ctx = ctx;
        o->n = n;
        o->cfg = *cfg;
        if (o->kind->create(o) != 0) {
            err_prefix("the optimizer state");
            optimizer_free(o);
            return -1;
        }
        return 0;
    }
    err_set("optimizer '%s': this build has adamw", name);
    return -1;
}

void optimizer_free(struct optimizer *o)
{
    for (int i = 0; i < o->nstate; i++)
        k_free(o->ctx, &o->state[i].t);
    memset(o, 0, sizeof *o);
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
