/* F-Lite weights on disk: F-Lite's own state-dict names (what torch.save,
 * diffusers' save_pretrained and our parameter table all use), in a
 * diffusers model folder (dit_model/ of the released pipeline) or one
 * safetensors file. */
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/problems.h"
#include "models/flite/flite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROPE_COS "rope.freqs_hw_cos"
#define ROPE_SIN "rope.freqs_hw_sin"

/* The persistent rotary buffers F-Lite's state dict carries; computed here,
 * so only their shape is checked. */
static int is_rope_buffer(const char *name)
{
    return strcmp(name, ROPE_COS) == 0 || strcmp(name, ROPE_SIN) == 0;
}

int flite_weights_load(const struct flite_config *cfg, float *params, const struct st_set *set)
{
    struct nn_params table;
    if (flite_param_table(cfg, &table, NULL) != 0)
        return -1;
    struct problems probs = {0};
    size_t used = 0;
    for (size_t i = 0; i < table.count; i++) {
        const struct nn_param *p = &table.p[i];
        const struct st_tensor *t = st_set_find(set, p->name, NULL);
        if (!t) {
            problems_add(&probs, "missing %s", p->name);
            continue;
        }
        used++;
        int same = t->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++)
            same = t->shape[k] == p->shape[k];
        if (!same) {
            char want[64], got[64];
            st_shape_text(want, sizeof want, p->ndim, p->shape);
            st_shape_text(got, sizeof got, t->ndim, t->shape);
            problems_add(&probs, "%s has shape %s, the configuration needs %s", p->name, got, want);
            continue;
        }
        if (st_tensor_to_f32(t, params + p->offset) != 0)
            problems_add(&probs, "%s is %s; weights must be F32, BF16 or F16", p->name, st_dtype_name(t->dtype));
        st_tensor_release(t);
    }
    const int64_t half = flite_head_size(cfg) / 2;
    for (size_t i = 0; i < set->n_tensors; i++) {
        const struct st_tensor *t = st_set_tensor(set, i, NULL);
        if (is_rope_buffer(t->name)) {
            if (t->ndim != 3 || t->shape[0] != FLITE_ROPE_GRID || t->shape[1] != FLITE_ROPE_GRID ||
                t->shape[2] != half)
                problems_add(&probs, "%s is not [%d, %d, %lld] (another head size?)", t->name, FLITE_ROPE_GRID,
                             FLITE_ROPE_GRID, (long long)half);
            used++;
        } else if (!nn_params_find(&table, t->name)) {
            /* The configuration does not explain it: a wrong configuration
             * must not load silently. */
            problems_add(&probs, "unexpected tensor %s%s", t->name,
                         strcmp(t->name, "positional_embedding") == 0
                             ? " (use_rope = false, which F-Lite's own forward cannot run)"
                             : " (a deeper or different model?)");
        }
    }
    (void)used;
    nn_params_free(&table);
    return problems_report(&probs, set->path);
}

json_t *flite_config_json(const struct flite_config *c)
{
    /* F-Lite's register_to_config arguments, so that DiT.from_pretrained
     * reads what we write; the plan sizes are ours (diffusers ignores keys
     * its __init__ does not take, with a warning). */
    return json_pack("{s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:b, s:b, s:b, s:b, s:b, s:i}",
                     "in_channels", c->in_channels, "patch_size", c->patch_size, "hidden_size", c->hidden_size,
                     "depth", c->depth, "num_heads", c->num_heads, "mlp_ratio", (double)c->mlp_ratio,
                     "cross_attn_input_size", c->cross_attn_input_size, "residual_v", c->residual_v,
                     "train_bias_and_rms", c->train_bias_and_rms, "use_rope", 1, "gradient_checkpoint", 0,
                     "dynamic_softmax_temperature", 0, "rope_base", c->rope_base);
}

static int get_int(const json_t *j, const char *key, int *out, int dflt, const char *name)
{
    json_t *v = json_object_get(j, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    if (!json_is_integer(v)) {
        err_set("%s: '%s' is not an integer", name, key);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

int flite_config_from_json(struct flite_config *c, const json_t *j, const char *name)
{
    /* Missing keys take DiT.__init__'s defaults, as from_pretrained does. */
    int use_rope = 1, dyn = 0;
    memset(c, 0, sizeof *c);
    json_t *ratio = json_object_get(j, "mlp_ratio");
    if (get_int(j, "in_channels", &c->in_channels, 4, name) || get_int(j, "patch_size", &c->patch_size, 2, name) ||
        get_int(j, "hidden_size", &c->hidden_size, 1152, name) || get_int(j, "depth", &c->depth, 28, name) ||
        get_int(j, "num_heads", &c->num_heads, 16, name) ||
        get_int(j, "cross_attn_input_size", &c->cross_attn_input_size, 128, name) ||
        get_int(j, "residual_v", &c->residual_v, 0, name) ||
        get_int(j, "train_bias_and_rms", &c->train_bias_and_rms, 1, name) ||
        get_int(j, "use_rope", &use_rope, 1, name) || get_int(j, "rope_base", &c->rope_base, 10000, name) ||
        get_int(j, "dynamic_softmax_temperature", &dyn, 0, name))
        return -1;
    if (ratio && !json_is_number(ratio)) {
        err_set("%s: 'mlp_ratio' is not a number", name);
        return -1;
    }
    c->mlp_ratio = ratio ? (float)json_number_value(ratio) : 4.0f;
    if (!use_rope) {
        err_set("%s: use_rope is false; F-Lite's forward breaks without RoPE, and so this model "
                "takes only use_rope = true", name);
        return -1;
    }
    /* dynamic_softmax_temperature scales k before the key RMS norm, which
     * undoes it but for the norm's eps (1e-6 against a mean square of about
     * one): F-Lite's output is the same either way to within that, so it is
     * accepted and has no effect here. */
    (void)dyn;
    /* Planned for 1024-px latents and T5's 512 tokens until the data say. */
    c->height = c->width = 128;
    c->text_len = 512;
    c->cond_dropout = 0.01f;
    if (flite_config_check(c) != 0) {
        err_prefix("%s", name);
        return -1;
    }
    return 0;
}

/* Folder layout: a pipeline folder's dit_model component, else the folder. */
static int resolve_dir(const char *dir, struct model_component *comp, const char **out)
{
    char *cpath = NULL, *ipath = NULL;
    if (asprintf(&cpath, "%s/" MODEL_DIR_CONFIG, dir) < 0 || asprintf(&ipath, "%s/" MODEL_DIR_INDEX, dir) < 0) {
        free(cpath);
        err_set("%s: out of memory", dir);
        return -1;
    }
    int pipeline = access(cpath, F_OK) != 0 && access(ipath, F_OK) == 0;
    free(cpath);
    free(ipath);
    *out = dir;
    if (pipeline) {
        if (model_index_component(dir, "dit_model", comp) != 0)
            return -1;
        *out = comp->folder;
    }
    return 0;
}

int flite_load_dir(const char *dir, struct flite_config *cfg, float **params)
{
    float *none;
    const int config_only = !params;
    if (config_only)
        params = &none;
    *params = NULL;
    struct model_component comp = {0};
    struct st_set *set = NULL;
    json_t *j = NULL;
    int rc = -1;
    if (resolve_dir(dir, &comp, &dir) != 0)
        goto done;
    if (!(j = model_dir_read_config(dir, FLITE_CLASS)))
        goto done;
    char name[4096];
    snprintf(name, sizeof name, "%s/" MODEL_DIR_CONFIG, dir);
    if (flite_config_from_json(cfg, j, name) != 0)
        goto done;
    if (config_only) {
        rc = 0;
        goto done;
    }
    if (!(set = model_dir_open_weights(dir)))
        goto done;
    if (!(*params = malloc((size_t)flite_param_count(cfg) * sizeof(float)))) {
        err_set("%s: out of memory", dir);
        goto done;
    }
    rc = flite_weights_load(cfg, *params, set);
done:
    if (rc != 0) {
        free(*params);
        *params = NULL;
    }
    json_decref(j);
    st_set_close(set);
    model_component_free(&comp);
    return rc;
}

int flite_save_dir(const struct flite_config *cfg, const float *params, const char *dir)
{
    struct nn_params table;
    if (flite_param_table(cfg, &table, NULL) != 0)
        return -1;
    const int gh = FLITE_ROPE_GRID, half = flite_head_size(cfg) / 2;
    const size_t rope_n = (size_t)gh * gh * half;
    struct model_tensor *t = calloc(table.count + 2, sizeof *t);
    /* The rotary buffers, which F-Lite's state dict holds and its loader
     * expects: the full 512 x 512 grid (no registers). */
    float *rope = malloc(rope_n * 2 * sizeof *rope);
    float *cs = malloc(((size_t)FLITE_REGISTERS + (size_t)gh * gh) * half * 2 * sizeof *cs);
    json_t *j = flite_config_json(cfg);
    int rc = -1;
    if (!t || !rope || !cs || !j) {
        err_set("%s: out of memory", dir);
        goto done;
    }
    const size_t rows = (size_t)FLITE_REGISTERS + (size_t)gh * gh;
    flite_rope_tables(cfg, gh, gh, cs, cs + rows * half);
    memcpy(rope, cs + (size_t)FLITE_REGISTERS * half, rope_n * sizeof *rope);
    memcpy(rope + rope_n, cs + rows * half + (size_t)FLITE_REGISTERS * half, rope_n * sizeof *rope);
    for (size_t i = 0; i < table.count; i++) {
        const struct nn_param *p = &table.p[i];
        t[i] = (struct model_tensor){p->name, ST_F32, p->ndim, {0}, params + p->offset};
        memcpy(t[i].shape, p->shape, sizeof p->shape);
    }
    t[table.count] = (struct model_tensor){ROPE_COS, ST_F32, 3, {gh, gh, half}, rope};
    t[table.count + 1] = (struct model_tensor){ROPE_SIN, ST_F32, 3, {gh, gh, half}, rope + rope_n};
    if (model_dir_write_config(dir, FLITE_CLASS, j) == 0)
        rc = model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, t, table.count + 2, 0);
done:
    json_decref(j);
    free(cs);
    free(rope);
    free(t);
    nn_params_free(&table);
    return rc;
}
