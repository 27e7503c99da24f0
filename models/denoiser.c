/* The generic half of the denoiser seam: configurations found through the
 * registry, instances created through their kind. */
#include "models/denoiser.h"
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "models/registry.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int config_alloc(struct denoiser_config *c, const struct denoiser_kind *kind)
{
    c->kind = kind;
    c->impl = calloc(1, kind->config_size);
    if (!c->impl) {
        err_set("out of memory for a model configuration");
        return -1;
    }
    return 0;
}

int denoiser_config_preset(struct denoiser_config *c, const char *name, const struct denoiser_spec *spec)
{
    memset(c, 0, sizeof *c);
    const struct denoiser_kind *const *k = registry_denoisers();
    for (size_t i = 0; k[i]; i++) {
        if (config_alloc(c, k[i]) != 0)
            return -1;
        int rc = k[i]->config_preset(c->impl, name, spec);
        if (rc == 0)
            return 0;
        denoiser_config_free(c);
        if (rc < 0)
            return -1;
    }
    char known[512] = "";
    for (size_t i = 0; k[i]; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? "; " : "", k[i]->presets);
    err_set("--model '%s': not a model this build knows (%s)", name, known);
    return -1;
}

int denoiser_config_load_file(struct denoiser_config *c, const char *path, const char *name,
                              const struct denoiser_spec *spec, float **params)
{
    *params = NULL;
    if (denoiser_config_preset(c, name, spec) != 0)
        return -2;
    if (!c->kind->load_file) {
        err_set("%s: %s models are read from model directories, not bare files", path, c->kind->name);
        denoiser_config_free(c);
        return -2;
    }
    if (c->kind->load_file(path, c->impl, params) != 0) {
        denoiser_config_free(c);
        return -1;
    }
    return 0;
}

int denoiser_config_fit(struct denoiser_config *c, const struct denoiser_spec *spec)
{
    return c->kind->config_fit ? c->kind->config_fit(c->impl, spec) : 0;
}

int denoiser_config_load_dir(struct denoiser_config *c, const char *dir, float **params)
{
    memset(c, 0, sizeof *c);
    if (params)
        *params = NULL;
    char path[4096];
    /* A pipeline folder (model_index.json, no config.json of its own): the
     * denoiser is its transformer (diffusers' DiT, SD3, FLUX) or its
     * dit_model (F-Lite). */
    struct model_component comp = {0};
    snprintf(path, sizeof path, "%s/" MODEL_DIR_CONFIG, dir);
    if (access(path, F_OK) != 0) {
        char ipath[4096];
        snprintf(ipath, sizeof ipath, "%s/" MODEL_DIR_INDEX, dir);
        if (access(ipath, F_OK) == 0) {
            if (model_index_component(dir, "transformer", &comp) != 0 &&
                model_index_component(dir, "dit_model", &comp) != 0) {
                err_set("%s: a pipeline folder without a transformer or dit_model component", dir);
                return -1;
            }
            int rc = denoiser_config_load_dir(c, comp.folder, params);
            model_component_free(&comp);
            return rc;
        }
    }
    json_t *j = json_read_file(path);
    if (!j)
        return -1;
    const char *cls = json_string_value(json_object_get(j, "_class_name"));
    const struct denoiser_kind *kind = registry_denoiser_by_class(cls);
    if (!kind) {
        err_set("%s: _class_name '%s' is not a model this build knows", path, cls ? cls : "(none)");
        json_decref(j);
        return -1;
    }
    json_decref(j);
    if (config_alloc(c, kind) != 0)
        return -1;
    if (kind->load_dir(dir, c->impl, params) != 0) {
        denoiser_config_free(c);
        return -1;
    }
    return 0;
}

int denoiser_config_copy(struct denoiser_config *dst, const struct denoiser_config *src)
{
    if (config_alloc(dst, src->kind) != 0)
        return -1;
    memcpy(dst->impl, src->impl, src->kind->config_size);
    return 0;
}

void denoiser_config_free(struct denoiser_config *c)
{
    free(c->impl);
    memset(c, 0, sizeof *c);
}

void denoiser_config_info(const struct denoiser_config *c, struct denoiser_info *info)
{
    memset(info, 0, sizeof *info);
    c->kind->config_info(c->impl, info);
}

int denoiser_config_equal(const struct denoiser_config *a, const struct denoiser_config *b)
{
    return a->kind == b->kind && a->kind->config_equal(a->impl, b->impl);
}

int denoiser_save_dir(const struct denoiser_config *c, const float *params, const char *dir)
{
    return c->kind->save_dir(c->impl, params, dir);
}

int denoiser_create(struct denoiser *d, const struct denoiser_config *c, struct kctx *ctx, int B,
                    enum denoiser_memory mem, enum kdtype dt)
{
    memset(d, 0, sizeof *d);
    d->kind = c->kind;
    d->ctx = ctx;
    denoiser_config_info(c, &d->info);
    if (c->kind->create(d, c->impl, ctx, B, mem, dt) != 0)
        return -1;
    d->height = d->info.height, d->width = d->info.width;
    return 0;
}

int denoiser_set_size(struct denoiser *d, int height, int width)
{
    int fits = d->kind->size_fits ? d->kind->size_fits(d, height, width)
                                  : height == d->info.height && width == d->info.width;
    if (!fits) {
        err_set("latents of %dx%d do not fit the model planned for %dx%d (multiples of %d)", height, width,
                d->info.height, d->info.width, d->info.multiple);
        return -1;
    }
    d->height = height, d->width = width;
    return 0;
}

void denoiser_free(struct denoiser *d)
{
    if (d->kind && d->impl)
        d->kind->destroy(d);
    memset(d, 0, sizeof *d);
}

/* The instance's linears and their largest row counts, arrays malloc'd. */
static int linears_of(struct denoiser *d, struct nn_linear ***linears, int64_t **rows, size_t *n)
{
    *n = 0;
    *linears = NULL, *rows = NULL;
    if (!d->kind->linear || !d->table) {
        err_set("the %s model takes no adapters", d->kind->name);
        return -1;
    }
    int64_t r;
    size_t count = 0;
    while (d->kind->linear(d, count, &r))
        count++;
    *linears = malloc((count ? count : 1) * sizeof **linears);
    *rows = malloc((count ? count : 1) * sizeof **rows);
    if (!*linears || !*rows) {
        free(*linears), free(*rows);
        err_set("out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++)
        (*linears)[i] = d->kind->linear(d, i, &(*rows)[i]);
    *n = count;
    return 0;
}

static const char *leaf(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* The 2-D linear layers of d as modules (name, in, out): *m malloc'd. */
static int modules_of(struct denoiser *d, struct nn_lora_module **m, size_t *n)
{
    struct nn_linear **lin;
    int64_t *rows;
    size_t count;
    *m = NULL, *n = 0;
    if (linears_of(d, &lin, &rows, &count) != 0)
        return -1;
    struct nn_lora_module *o = calloc(count ? count : 1, sizeof *o);
    size_t k = 0;
    for (size_t i = 0; o && i < count; i++) {
        const struct nn_param *w = &d->table->p[lin[i]->weight_id];
        size_t len = strlen(w->name) - strlen(".weight");
        /* A convolution's kernel (the patch embedding) takes a LoRA of
         * convolutions in PEFT, which this toolkit does not make. */
        if (w->ndim != 2 || len >= sizeof o[k].name)
            continue;
        memcpy(o[k].name, w->name, len);
        o[k].name[len] = 0;
        o[k].in = lin[i]->in, o[k].out = lin[i]->out;
        k++;
    }
    free(lin), free(rows);
    if (!o) {
        err_set("out of memory");
        return -1;
    }
    *m = o, *n = k;
    return 0;
}

/* targets' entries split by the naming they use: an entry that selects
 * one of the model's own names is of its naming ("proj" is the DiT's
 * attention projection), any other is of the kind's file naming (the
 * DiT's "to_out.0"; there "proj" would also select ff.net.0.proj). */
static void targets_split(const char *targets, const struct nn_lora_module *m, size_t n, char *own, char *other,
                          size_t size)
{
    own[0] = other[0] = 0;
    char entry[NN_NAME_MAX];
    for (const char *s = targets; *s;) {
        size_t len = strcspn(s, ",");
        snprintf(entry, sizeof entry, "%.*s", (int)len, s);
        int mine = 0;
        for (size_t i = 0; i < n && !mine; i++)
            mine = nn_lora_targets_match(entry, m[i].name);
        char *to = mine ? own : other;
        snprintf(to + strlen(to), size - strlen(to), "%s%s", to[0] ? "," : "", entry);
        s += len + (s[len] == ',');
    }
}

/* Whether the module is selected, by its own name or by its name in the
 * kind's file naming: 1, 0, or -1 with err_set() when some parts of a
 * module the model computes as one layer are (the DiT's fused qkv and
 * diffusers' to_q alone), which one adapter cannot train apart. */
static int select_module(const struct denoiser_kind *kind, const char *targets, const char *own, const char *other,
                         const struct nn_lora_module *m)
{
    if (own[0] && nn_lora_targets_match(own, m->name))
        return 1;
    struct denoiser_alias parts[DENOISER_ALIAS_MAX];
    int n = kind->lora_alias && other[0] ? kind->lora_alias(m->name, m->out, parts, DENOISER_ALIAS_MAX) : 0, hit = 0;
    for (int p = 0; p < n; p++)
        hit += nn_lora_targets_match(other, parts[p].name);
    if (hit == 0 || hit == n)
        return hit > 0;
    char all[4 * NN_NAME_MAX] = "";
    for (int p = 0; p < n; p++)
        snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", p ? ", " : "", leaf(parts[p].name));
    err_set("--lora-target-modules '%s' selects part of %s, which the %s model computes as one layer: select all "
            "of %s, or %s", targets, m->name, kind->name, all, leaf(m->name));
    return -1;
}

int denoiser_lora_targets(struct denoiser *d, const char *targets, int rank, float alpha, int rslora,
                          struct nn_lora_module **mods, size_t *n)
{
    struct nn_lora_module *m;
    size_t count, k = 0;
    *mods = NULL, *n = 0;
    if (modules_of(d, &m, &count) != 0)
        return -1;
    size_t size = strlen(targets) + 2;
    char *own = malloc(size), *other = malloc(size);
    int rc = own && other ? 0 : (err_set("out of memory"), -1);
    if (rc == 0)
        targets_split(targets, m, count, own, other, size);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        int sel = select_module(d->kind, targets, own, other, &m[i]);
        if (sel < 0)
            rc = -1;
        if (sel <= 0)
            continue;
        struct nn_lora_module *o = &m[k++];
        *o = m[i];
        o->rank = rank, o->alpha = alpha;
        o->scale = rslora ? alpha / sqrtf((float)rank) : alpha / (float)rank;
    }
    free(own), free(other);
    if (rc == 0 && k == 0) {
        err_set("--lora-target-modules '%s' matches none of the %s model's linear layers", targets, d->kind->name);
        rc = -1;
    }
    if (rc != 0) {
        free(m);
        return -1;
    }
    *mods = m, *n = k;
    return 0;
}

int denoiser_lora_bind(struct denoiser *d, struct nn_lora *l, struct nn_lora_binding *b)
{
    struct nn_linear **lin;
    int64_t *rows;
    size_t count;
    if (linears_of(d, &lin, &rows, &count) != 0)
        return -1;
    int rc = nn_lora_bind(b, l, d->ctx, d->table, lin, rows, count, d->B);
    free(lin), free(rows);
    return rc;
}

int denoiser_config_table(const struct denoiser_config *c, struct nn_params *t)
{
    memset(t, 0, sizeof *t);
    if (!c->kind->table) {
        err_set("the %s model has no parameter table", c->kind->name);
        return -1;
    }
    return c->kind->table(c->impl, t);
}
