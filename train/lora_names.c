/* A LoRA file's module names between the naming it was written in and
 * the model's own: kohya's flattened names, and a kind's file naming
 * (kind->lora_alias: diffusers' DiT, whose to_q, to_k and to_v are the
 * model's one fused qkv). */
#include "train/lora.h"
#include "libcommon/error.h"
#include "libcommon/names.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The 2-D weights of a table as modules: name, rows (out) and columns (in). */
struct module_shape {
    char name[NN_NAME_MAX];
    int in, out;
};

static struct module_shape *module_shapes(const struct nn_params *t, size_t *n)
{
    struct module_shape *m = calloc(t->count ? t->count : 1, sizeof *m);
    size_t k = 0;
    for (size_t i = 0; m && i < t->count; i++) {
        const struct nn_param *p = &t->p[i];
        size_t len = strlen(p->name);
        if (p->ndim != 2 || !str_ends_with(p->name, ".weight") || len - 7 >= sizeof m[k].name)
            continue;
        memcpy(m[k].name, p->name, len - 7);
        m[k].name[len - 7] = 0;
        m[k].out = (int)p->shape[0], m[k].in = (int)p->shape[1];
        k++;
    }
    if (!m)
        err_set("out of memory");
    *n = k;
    return m;
}

static int parts_of(const struct denoiser_kind *kind, const struct module_shape *m, struct denoiser_alias *parts)
{
    return kind && kind->lora_alias ? kind->lora_alias(m->name, m->out, parts, DENOISER_ALIAS_MAX) : 0;
}

static int find_entry(const struct lora_file *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Kohya's flattened names against the model's names and their aliases. */
static int resolve_kohya(struct lora_file *f, const struct denoiser_kind *kind, const struct module_shape *m,
                         size_t nm)
{
    if (!f->kohya_names)
        return 0;
    char **names = calloc(nm * (1 + DENOISER_ALIAS_MAX) + 1, sizeof *names);
    size_t k = 0;
    int rc = names ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < nm; i++) {
        struct denoiser_alias parts[DENOISER_ALIAS_MAX];
        int np = parts_of(kind, &m[i], parts);
        rc = (names[k++] = strdup(m[i].name)) ? 0 : -1;
        for (int p = 0; rc == 0 && p < np; p++)
            rc = (names[k++] = strdup(parts[p].name)) ? 0 : -1;
    }
    if (rc == 0)
        rc = lora_file_resolve(f, (const char *const *)names, k);
    else
        err_set("out of memory");
    if (names)
        names_free(names, k);
    return rc;
}

/* The parts' entries (idx[p], -1 for a part the file does not adapt) as
 * one entry of the module: when every part is there with one rank, one
 * alpha and one A (as lora_file_export writes a fused module), that A and
 * the B's stacked, exactly the rank it was trained at; otherwise the parts'
 * ranks side by side with B block-diagonal and their scales folded in (so
 * scale 1), also exact. */
static int fuse(const struct lora_file *f, const struct module_shape *m, const struct denoiser_alias *parts, int np,
                const int *idx, struct lora_entry *out)
{
    const struct lora_entry *e0 = NULL;
    int shared = 1, total = 0;
    for (int p = 0; p < np; p++) {
        if (idx[p] < 0) {
            shared = 0;
            continue;
        }
        const struct lora_entry *e = &f->e[idx[p]];
        if (e->in != m->in || e->out != parts[p].rows) {
            err_set("module %s: a [%d, %d] adapter, the model's part has [%d, %d]", e->name, e->out, e->in,
                    parts[p].rows, m->in);
            return -1;
        }
        if (!e0)
            e0 = e;
        else if (e->rank != e0->rank || e->alpha != e0->alpha ||
                 memcmp(e->A, e0->A, (size_t)e->rank * e->in * sizeof *e->A) != 0)
            shared = 0;
        total += e->rank;
    }
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", m->name);
    out->in = m->in, out->out = m->out;
    out->rank = shared ? e0->rank : total;
    out->alpha = shared ? e0->alpha : f->rslora ? sqrtf((float)total) : (float)total;
    out->A = malloc((size_t)out->rank * out->in * sizeof *out->A);
    out->B = calloc((size_t)out->out * out->rank, sizeof *out->B);
    if (!out->A || !out->B) {
        free(out->A), free(out->B);
        err_set("out of memory");
        return -1;
    }
    if (shared)
        memcpy(out->A, e0->A, (size_t)out->rank * out->in * sizeof *out->A);
    int r0 = 0;
    for (int p = 0; p < np; p++) {
        if (idx[p] < 0)
            continue;
        const struct lora_entry *e = &f->e[idx[p]];
        const float s = shared ? 1.0f : lora_entry_scale(f, e);
        if (!shared)
            memcpy(out->A + (size_t)r0 * e->in, e->A, (size_t)e->rank * e->in * sizeof *e->A);
        for (int o = 0; o < e->out; o++)
            for (int r = 0; r < e->rank; r++)
                out->B[(size_t)(parts[p].row0 + o) * out->rank + r0 + r] = s * e->B[(size_t)o * e->rank + r];
        if (!shared)
            r0 += e->rank;
    }
    return 0;
}

int lora_file_adopt(struct lora_file *f, const struct denoiser_kind *kind, const struct nn_params *t)
{
    size_t nm;
    struct module_shape *m = module_shapes(t, &nm);
    if (!m || resolve_kohya(f, kind, m, nm) != 0) {
        free(m);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < nm; i++) {
        struct denoiser_alias parts[DENOISER_ALIAS_MAX];
        int np = parts_of(kind, &m[i], parts), idx[DENOISER_ALIAS_MAX], found = 0;
        for (int p = 0; p < np; p++)
            found += (idx[p] = find_entry(f, parts[p].name)) >= 0;
        if (!found)
            continue;
        if (find_entry(f, m[i].name) >= 0) {
            err_set("module %s is adapted twice: as %s and as %s", m[i].name, m[i].name, parts[0].name);
            rc = -1;
            break;
        }
        if (np == 1) {
            snprintf(f->e[idx[0]].name, sizeof f->e[idx[0]].name, "%s", m[i].name);
            continue;
        }
        struct lora_entry fused;
        if ((rc = fuse(f, &m[i], parts, np, idx, &fused)) != 0)
            break;
        /* the fused entry in the first part's place, the other parts dropped */
        int first = -1;
        for (int p = 0; p < np; p++)
            if (idx[p] >= 0 && (first < 0 || idx[p] < first))
                first = idx[p];
        free(f->e[first].A), free(f->e[first].B);
        f->e[first] = fused;
        size_t w = 0;
        for (size_t j = 0; j < f->n; j++) {
            int drop = 0;
            for (int p = 0; p < np; p++)
                drop |= idx[p] == (int)j && (int)j != first;
            if (drop)
                free(f->e[j].A), free(f->e[j].B);
            else
                f->e[w++] = f->e[j];
        }
        f->n = w;
    }
    free(m);
    return rc;
}

int lora_file_export(struct lora_file *f, const struct denoiser_kind *kind)
{
    if (!kind || !kind->lora_alias || f->n == 0)
        return 0;
    /* Only when the naming has every module: one file, one naming. */
    size_t total = 0;
    for (size_t i = 0; i < f->n; i++) {
        struct denoiser_alias parts[DENOISER_ALIAS_MAX];
        int np = kind->lora_alias(f->e[i].name, f->e[i].out, parts, DENOISER_ALIAS_MAX);
        if (np == 0)
            return 0;
        total += (size_t)np;
    }
    struct lora_entry *e = calloc(total, sizeof *e);
    if (!e) {
        err_set("out of memory");
        return -1;
    }
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < f->n; i++) {
        const struct lora_entry *s = &f->e[i];
        struct denoiser_alias parts[DENOISER_ALIAS_MAX];
        int np = kind->lora_alias(s->name, s->out, parts, DENOISER_ALIAS_MAX);
        /* each part the same A and its rows of B: exactly the fused product */
        for (int p = 0; rc == 0 && p < np; p++, k++) {
            struct lora_entry *d = &e[k];
            snprintf(d->name, sizeof d->name, "%s", parts[p].name);
            d->rank = s->rank, d->in = s->in, d->out = parts[p].rows, d->alpha = s->alpha;
            d->A = malloc((size_t)d->rank * d->in * sizeof *d->A);
            d->B = malloc((size_t)d->out * d->rank * sizeof *d->B);
            if (!d->A || !d->B) {
                err_set("out of memory");
                rc = -1;
                k++;
                break;
            }
            memcpy(d->A, s->A, (size_t)d->rank * d->in * sizeof *d->A);
            memcpy(d->B, s->B + (size_t)parts[p].row0 * s->rank, (size_t)d->out * d->rank * sizeof *d->B);
        }
    }
    if (rc != 0) {
        for (size_t i = 0; i < k; i++)
            free(e[i].A), free(e[i].B);
        free(e);
        return -1;
    }
    for (size_t i = 0; i < f->n; i++)
        free(f->e[i].A), free(f->e[i].B);
    free(f->e);
    f->e = e, f->n = total;
    return 1;
}
