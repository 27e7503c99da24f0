#include "train/lora.h"
#include "train/lora_merge.h"
#include "libcommon/error.h"
#include "libcommon/names.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The file's values into host, laid out by l's table: the same modules
 * with the same ranks, or the difference named. */
static int file_into(const struct lora_file *f, const struct nn_lora *l, const char *path, float *host)
{
    if (f->n != l->n) {
        err_set("%s: %zu adapted modules, this run's adapter has %zu", path, f->n, l->n);
        return -1;
    }
    for (size_t i = 0; i < f->n; i++) {
        const struct lora_entry *e = &f->e[i];
        const struct nn_lora_module *m = nn_lora_find(l, e->name);
        if (!m) {
            err_set("%s: module %s is not one of this run's adapted modules", path, e->name);
            return -1;
        }
        if (m->rank != e->rank || m->in != e->in || m->out != e->out) {
            err_set("%s: module %s has rank %d of a [%d, %d] layer, this run's rank %d of [%d, %d]", path, e->name,
                    e->rank, e->out, e->in, m->rank, m->out, m->in);
            return -1;
        }
        if (fabsf(lora_entry_scale(f, e) - m->scale) > 1e-6f * m->scale) {
            err_set("%s: module %s has scale %g, this run's %g (another alpha)", path, e->name,
                    lora_entry_scale(f, e), m->scale);
            return -1;
        }
        memcpy(host + l->table.p[m->a_id].offset, e->A, (size_t)e->rank * e->in * sizeof *host);
        memcpy(host + l->table.p[m->b_id].offset, e->B, (size_t)e->out * e->rank * sizeof *host);
    }
    return 0;
}

/* The modules of a file as the run's adapter (continuing from it). */
static int modules_of_file(const struct lora_file *f, struct nn_lora_module **mods)
{
    if (!(*mods = calloc(f->n, sizeof **mods))) {
        err_set("out of memory");
        return -1;
    }
    for (size_t i = 0; i < f->n; i++) {
        struct nn_lora_module *m = &(*mods)[i];
        const struct lora_entry *e = &f->e[i];
        snprintf(m->name, sizeof m->name, "%s", e->name);
        m->rank = e->rank, m->in = e->in, m->out = e->out, m->alpha = e->alpha;
        m->scale = lora_entry_scale(f, e);
    }
    return 0;
}

int train_lora_create(struct nn_lora *l, struct nn_lora_binding *b, struct denoiser *d,
                      const struct lora_options *o, uint64_t seed)
{
    struct nn_lora_module *mods = NULL;
    size_t n = 0;
    struct lora_file f = {0};
    int rc;
    if (o->checkpoint) {
        rc = lora_file_read(o->checkpoint, &f) != 0 || lora_file_adopt(&f, d->kind, d->table) != 0 ||
             modules_of_file(&f, &mods) != 0;
        if (rc)
            err_prefix("%s", o->checkpoint);
        n = f.n;
        if (rc) {
            lora_file_free(&f);
            return -1;
        }
    } else {
        const float alpha = o->alpha > 0 ? o->alpha : (float)o->rank;
        if (denoiser_lora_targets(d, o->targets ? o->targets : d->kind->lora_targets, o->rank, alpha, o->rslora,
                                  &mods, &n) != 0)
            return -1;
    }
    rc = nn_lora_create(l, mods, n);
    free(mods);
    float *host = NULL;
    if (rc == 0) {
        l->dropout = o->dropout;
        l->seed = seed;
        rc = nn_lora_alloc(l, d->ctx, d->dt, 1);
    }
    if (rc == 0 && !(host = malloc((size_t)l->table.total * sizeof *host))) {
        err_set("out of memory for the LoRA");
        rc = -1;
    }
    if (rc == 0) {
        if (o->checkpoint)
            rc = file_into(&f, l, o->checkpoint, host);
        else
            nn_lora_init_weights(l, host, o->init, seed);
    }
    if (rc == 0) {
        nn_weights_upload(&l->w, host);
        rc = denoiser_lora_bind(d, l, b);
    }
    free(host);
    lora_file_free(&f);
    if (rc != 0)
        nn_lora_free(l);
    return rc;
}

int train_lora_save(const struct nn_lora *l, const struct denoiser_kind *kind, struct tensor src, const char *path,
                    enum lora_format fmt, enum st_dtype dt, const char *targets)
{
    float *host = malloc((size_t)l->table.total * sizeof *host);
    if (!host) {
        err_set("%s: out of memory", path);
        return -1;
    }
    k_download(l->w.ctx, host, src, l->table.total);
    /* The table lays modules out as lora_to_file reads them (A then B); an
     * rsLoRA scale is written as the alpha that gives it with alpha / rank. */
    struct lora_file f;
    int rc = lora_to_file(l->mod, l->n, host, 0, &f);
    if (rc == 0) {
        f.dropout = l->dropout;
        int renamed = lora_file_export(&f, kind);
        rc = renamed < 0 ? -1 : lora_file_write(path, &f, fmt, dt, renamed ? NULL : targets);
        lora_file_free(&f);
    }
    free(host);
    return rc;
}

int train_lora_load(struct nn_lora *l, const struct denoiser_kind *kind, const struct nn_params *t, const char *path,
                    struct tensor dst)
{
    struct lora_file f;
    if (lora_file_read(path, &f) != 0)
        return -1;
    if (lora_file_adopt(&f, kind, t) != 0) {
        err_prefix("%s", path);
        lora_file_free(&f);
        return -1;
    }
    float *host = malloc((size_t)l->table.total * sizeof *host);
    int rc = !host ? (err_set("out of memory"), -1) : file_into(&f, l, path, host);
    if (rc == 0) {
        if (dst.data) {
            k_upload(l->w.ctx, dst, host, l->table.total);
            k_sync(l->w.ctx);
        } else {
            nn_weights_upload(&l->w, host);
        }
    }
    free(host);
    lora_file_free(&f);
    return rc;
}

int lora_files_combine(struct lora_file *files, const float *strengths, size_t nfiles,
                       const struct denoiser_kind *kind, const struct nn_params *t, struct nn_lora_module **mods,
                       size_t *nmods, float **host, int64_t *total)
{
    *mods = NULL, *host = NULL, *nmods = 0, *total = 0;
    size_t cap = 0;
    for (size_t k = 0; k < nfiles; k++)
        cap += files[k].n;
    struct nn_lora_module *m = calloc(cap ? cap : 1, sizeof *m);
    if (!m) {
        err_set("out of memory");
        return -1;
    }
    size_t n = 0;
    /* The modules and their combined ranks, in the order they first appear. */
    for (size_t k = 0; k < nfiles; k++) {
        if (t && lora_file_adopt(&files[k], kind, t) != 0) {
            free(m);
            return -1;
        }
        for (size_t i = 0; i < files[k].n; i++) {
            const struct lora_entry *e = &files[k].e[i];
            size_t j = 0;
            while (j < n && strcmp(m[j].name, e->name) != 0)
                j++;
            if (j == n) {
                snprintf(m[n].name, sizeof m[n].name, "%s", e->name);
                m[n].in = e->in, m[n].out = e->out, m[n].alpha = 1, m[n].scale = 1;
                n++;
            } else if (m[j].in != e->in || m[j].out != e->out) {
                err_set("module %s: one LoRA adapts it as a [%d, %d] layer, another as [%d, %d]", e->name, m[j].out,
                        m[j].in, e->out, e->in);
                free(m);
                return -1;
            }
            m[j].rank += e->rank;
        }
    }
    int64_t tot = 0;
    for (size_t j = 0; j < n; j++) {
        m[j].alpha = (float)m[j].rank; /* scale 1: the scales are in B */
        tot += (int64_t)m[j].rank * (m[j].in + m[j].out);
    }
    float *h = calloc((size_t)(tot ? tot : 1), sizeof *h);
    if (!h) {
        free(m);
        err_set("out of memory");
        return -1;
    }
    /* As nn_lora_create lays the table out: A [r, in] then B [out, r], by module. */
    int64_t off = 0;
    for (size_t j = 0; j < n; j++) {
        float *A = h + off, *B = A + (int64_t)m[j].rank * m[j].in;
        int r0 = 0;
        for (size_t k = 0; k < nfiles; k++)
            for (size_t i = 0; i < files[k].n; i++) {
                const struct lora_entry *e = &files[k].e[i];
                if (strcmp(e->name, m[j].name) != 0)
                    continue;
                const float s = strengths[k] * lora_entry_scale(&files[k], e);
                memcpy(A + (int64_t)r0 * e->in, e->A, (size_t)e->rank * e->in * sizeof *A);
                for (int o = 0; o < e->out; o++)
                    for (int r = 0; r < e->rank; r++)
                        B[(int64_t)o * m[j].rank + r0 + r] = s * e->B[(int64_t)o * e->rank + r];
                r0 += e->rank;
            }
        off += (int64_t)m[j].rank * (m[j].in + m[j].out);
    }
    *mods = m, *nmods = n, *host = h, *total = tot;
    return 0;
}

int lora_files_attach(struct nn_lora *l, struct nn_lora_binding *b, struct denoiser *d, struct lora_file *files,
                      const float *strengths, size_t nfiles)
{
    struct nn_lora_module *mods = NULL;
    size_t n = 0;
    float *host = NULL;
    int64_t total;
    int rc = lora_files_combine(files, strengths, nfiles, d->kind, d->table, &mods, &n, &host, &total);
    if (rc == 0 && (rc = nn_lora_create(l, mods, n)) == 0) {
        if ((rc = nn_lora_alloc(l, d->ctx, d->dt, 0)) == 0) {
            nn_weights_upload(&l->w, host);
            rc = denoiser_lora_bind(d, l, b);
        }
        if (rc != 0)
            nn_lora_free(l);
    }
    free(mods), free(host);
    return rc;
}

void lora_arg_parse(const char *arg, char *path, size_t size, float *scale)
{
    snprintf(path, size, "%s", arg);
    *scale = 1.0f;
    char *colon = strrchr(path, ':'), *end;
    if (!colon || !colon[1])
        return;
    double v = strtod(colon + 1, &end);
    if (*end == 0 && isfinite(v)) {
        *scale = (float)v;
        *colon = 0;
    }
}
