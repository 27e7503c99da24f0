/* Loading and saving DiT weights in the original and the diffusers layouts.
 * Both are described as a list of on-disk tensors, each a slice of one
 * parameter of the flat buffer, so loading and saving share one table. */
#include "models/dit/weights.h"
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/problems.h"
#include "libcommon/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct disk_tensor {
    char name[128];
    int64_t offset; /* into the flat parameter buffer */
    int64_t n;
    int ndim;
    int64_t shape[4];
    int replica; /* > 0: a copy of an earlier entry (diffusers' per-block embedders) */
};

struct disk_table {
    struct disk_tensor *t;
    size_t n, cap;
};

static int table_add(struct disk_table *dt, const char *name, const struct nn_param *p,
                     int64_t row_begin, int64_t rows, int replica)
{
    if (dt->n == dt->cap) {
        dt->cap = dt->cap ? dt->cap * 2 : 128;
        struct disk_tensor *g = realloc(dt->t, dt->cap * sizeof *g);
        if (!g)
            return -1;
        dt->t = g;
    }
    struct disk_tensor *d = &dt->t[dt->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    int64_t row = p->n / p->shape[0];
    d->offset = p->offset + row_begin * row;
    d->n = rows * row;
    d->ndim = p->ndim;
    memcpy(d->shape, p->shape, sizeof d->shape);
    d->shape[0] = rows;
    d->replica = replica;
    return 0;
}

/* The diffusers name of an original parameter name, for the simple renames;
 * NULL for the ones that split (qkv) or repeat (embedders). */
static const char *diffusers_rename(const char *name, char *buf, size_t size)
{
    static const struct {
        const char *from, *to;
    } top[] = {
        {"x_embedder.proj.", "pos_embed.proj."},
        {"final_layer.adaLN_modulation.1.", "proj_out_1."},
        {"final_layer.linear.", "proj_out_2."},
    };
    static const struct {
        const char *from, *to;
    } block[] = {
        {"attn.proj.", "attn1.to_out.0."},
        {"mlp.fc1.", "ff.net.0.proj."},
        {"mlp.fc2.", "ff.net.2."},
        {"adaLN_modulation.1.", "norm1.linear."},
    };
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        size_t n = strlen(top[i].from);
        if (strncmp(name, top[i].from, n) == 0) {
            snprintf(buf, size, "%s%s", top[i].to, name + n);
            return buf;
        }
    }
    int blk, used = 0;
    if (sscanf(name, "blocks.%d.%n", &blk, &used) == 1 && used > 0) {
        const char *rest = name + used;
        for (size_t i = 0; i < sizeof block / sizeof block[0]; i++) {
            size_t n = strlen(block[i].from);
            if (strncmp(rest, block[i].from, n) == 0) {
                snprintf(buf, size, "transformer_blocks.%d.%s%s", blk, block[i].to, rest + n);
                return buf;
            }
        }
    }
    return NULL;
}

int dit_diffusers_module(const char *module, int out, struct denoiser_alias *parts, int max)
{
    char in[NN_NAME_MAX + 2], buf[NN_NAME_MAX + 40];
    int blk, used = 0;
    if (max < 3)
        return 0;
    if (sscanf(module, "blocks.%d.attn.qkv%n", &blk, &used) == 1 && module[used] == 0) {
        static const char *qkv[3] = {"to_q", "to_k", "to_v"};
        for (int k = 0; k < 3; k++) {
            snprintf(parts[k].name, sizeof parts[k].name, "transformer_blocks.%d.attn1.%s", blk, qkv[k]);
            parts[k].row0 = k * out / 3, parts[k].rows = out / 3;
        }
        return 3;
    }
    snprintf(in, sizeof in, "%s.", module);
    /* the embedders are copied into every block by diffusers: no one module */
    if (!diffusers_rename(in, buf, sizeof buf) || strlen(buf) > sizeof parts[0].name)
        return 0;
    buf[strlen(buf) - 1] = 0;
    snprintf(parts[0].name, sizeof parts[0].name, "%s", buf);
    parts[0].row0 = 0, parts[0].rows = out;
    return 1;
}

static int build_table(const struct dit_config *cfg, enum dit_layout layout, struct disk_table *dt)
{
    struct nn_params table;
    if (dit_param_table(cfg, &table, NULL) != 0)
        return -1;
    const int64_t C = cfg->hidden_size;
    char name[160], buf[160];
    int rc = 0;
    err_clear();
    for (size_t i = 0; i < table.count && rc == 0; i++) {
        const struct nn_param *p = &table.p[i];
        if (layout == DIT_LAYOUT_ORIGINAL) {
            rc = table_add(dt, p->name, p, 0, p->shape[0], 0);
            continue;
        }
        int blk;
        char suffix[32];
        if (sscanf(p->name, "blocks.%d.attn.qkv.%31s", &blk, suffix) == 2) {
            static const char *parts[3] = {"to_q", "to_k", "to_v"};
            for (int k = 0; k < 3 && rc == 0; k++) {
                snprintf(name, sizeof name, "transformer_blocks.%d.attn1.%s.%s", blk, parts[k], suffix);
                rc = table_add(dt, name, p, k * C, C, 0);
            }
        } else if (strncmp(p->name, "t_embedder.", 11) == 0 || strncmp(p->name, "y_embedder.", 11) == 0) {
            const char *leaf = strcmp(p->name, "y_embedder.embedding_table.weight") == 0
                                   ? "class_embedder.embedding_table.weight"
                               : strncmp(p->name, "t_embedder.mlp.0.", 17) == 0 ? "timestep_embedder.linear_1."
                                                                                : "timestep_embedder.linear_2.";
            const char *tail = strncmp(p->name, "t_embedder.", 11) == 0 ? strrchr(p->name, '.') + 1 : "";
            for (int b = 0; b < cfg->depth && rc == 0; b++) {
                snprintf(name, sizeof name, "transformer_blocks.%d.norm1.emb.%s%s", b, leaf, tail);
                rc = table_add(dt, name, p, 0, p->shape[0], b);
            }
        } else {
            const char *to = diffusers_rename(p->name, buf, sizeof buf);
            if (!to) {
                err_set("internal: no diffusers name for %s", p->name);
                rc = -1;
            } else {
                rc = table_add(dt, to, p, 0, p->shape[0], 0);
            }
        }
    }
    nn_params_free(&table);
    if (rc != 0 && !*err_get())
        err_set("out of memory");
    return rc;
}

int dit_weights_layout(const struct st_set *set)
{
    if (st_set_find(set, "x_embedder.proj.weight", NULL))
        return DIT_LAYOUT_ORIGINAL;
    if (st_set_find(set, "pos_embed.proj.weight", NULL))
        return DIT_LAYOUT_DIFFUSERS;
    return -1;
}


int dit_weights_load(const struct dit_config *cfg, float *params, const struct st_set *set,
                     enum dit_layout layout)
{
    struct disk_table dt = {0};
    if (build_table(cfg, layout, &dt) != 0)
        return -1;
    struct problems probs = {0};
    int rc = 0;
    float *replica = NULL;
    size_t used = 0;
#define PROBLEM(...) problems_add(&probs, __VA_ARGS__)
    for (size_t i = 0; i < dt.n; i++) {
        const struct disk_tensor *d = &dt.t[i];
        const struct st_tensor *t = st_set_find(set, d->name, NULL);
        if (!t) {
            PROBLEM("missing %s", d->name);
            continue;
        }
        used++;
        int same = t->ndim == d->ndim;
        for (int k = 0; same && k < d->ndim; k++)
            same = t->shape[k] == d->shape[k];
        if (!same) {
            char want[64], got[64];
            st_shape_text(want, sizeof want, d->ndim, d->shape);
            st_shape_text(got, sizeof got, t->ndim, t->shape);
            PROBLEM("%s has shape %s, the configuration needs %s", d->name, got, want);
            continue;
        }
        float *dst = params + d->offset;
        if (d->replica) {
            free(replica);
            replica = malloc((size_t)d->n * sizeof *replica);
            if (!replica) {
                PROBLEM("out of memory");
                break;
            }
            dst = replica;
        }
        if (st_tensor_to_f32(t, dst) != 0) {
            PROBLEM("%s is %s; weights must be F32, BF16 or F16", d->name, st_dtype_name(t->dtype));
            continue;
        }
        if (d->replica && memcmp(replica, params + d->offset, (size_t)d->n * sizeof *replica) != 0)
            PROBLEM("%s differs from block 0's copy: per-block timestep and class embedders are not "
                    "supported (this model shares one)", d->name);
    }
    free(replica);
    /* Tensors the configuration does not explain mean the configuration is wrong. */
    size_t extra = set->n_tensors - used;
    if (layout == DIT_LAYOUT_ORIGINAL && st_set_find(set, "pos_embed", NULL))
        extra--;
    if (extra > 0) {
        for (size_t i = 0; i < set->n_tensors; i++) {
            const struct st_tensor *t = st_set_tensor(set, i, NULL);
            int known = layout == DIT_LAYOUT_ORIGINAL && strcmp(t->name, "pos_embed") == 0;
            for (size_t k = 0; !known && k < dt.n; k++)
                known = strcmp(dt.t[k].name, t->name) == 0;
            if (!known) {
                PROBLEM("unexpected tensor %s (a deeper or different model?)", t->name);
                break;
            }
        }
    }
#undef PROBLEM
    if (problems_report(&probs, set->path) != 0)
        rc = -1;
    free(dt.t);
    return rc;
}

/* The tensors of params as a file in that layout holds them, naming the
 * table's entries: the original layout adds the fixed pos_embed buffer
 * (*pos, malloc'd). Free *out, *pos and dt->t. */
static int disk_tensors(const struct dit_config *cfg, const float *params, enum dit_layout layout,
                        struct disk_table *dt, struct model_tensor **out, size_t *n, float **pos)
{
    *out = NULL, *n = 0, *pos = NULL;
    if (build_table(cfg, layout, dt) != 0)
        return -1;
    struct model_tensor *t = calloc(dt->n + 1, sizeof *t);
    if (!t) {
        err_set("out of memory");
        return -1;
    }
    for (size_t i = 0; i < dt->n; i++) {
        t[i] = (struct model_tensor){dt->t[i].name, ST_F32, dt->t[i].ndim, {0}, params + dt->t[i].offset};
        memcpy(t[i].shape, dt->t[i].shape, sizeof dt->t[i].shape);
    }
    *out = t, *n = dt->n;
    if (layout == DIT_LAYOUT_ORIGINAL) {
        const int grid = cfg->input_size / cfg->patch_size;
        struct model_tensor *pe = &t[(*n)++];
        *pe = (struct model_tensor){"pos_embed", ST_F32, 3, {1, (int64_t)grid * grid, cfg->hidden_size}, NULL};
        *pos = malloc((size_t)(pe->shape[1] * pe->shape[2]) * sizeof **pos);
        if (!*pos) {
            err_set("out of memory");
            return -1;
        }
        dit_pos_embed(*pos, cfg->hidden_size, grid);
        pe->data = *pos;
    }
    return 0;
}

int dit_weights_save(const struct dit_config *cfg, const float *params, const char *path,
                     enum dit_layout layout)
{
    struct disk_table dt = {0};
    struct model_tensor *t;
    size_t n;
    float *pos;
    int rc = disk_tensors(cfg, params, layout, &dt, &t, &n, &pos);
    struct st_writer *w = rc == 0 ? st_writer_new() : NULL;
    if (rc == 0 && !w) {
        err_set("out of memory");
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = st_writer_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data);
    if (rc == 0)
        rc = st_writer_meta(w, "format", "pt");
    if (rc == 0)
        rc = st_writer_write(w, path);
    else
        err_prefix("%s", path);
    st_writer_free(w);
    free(t);
    free(pos);
    free(dt.t);
    return rc;
}

json_t *dit_diffusers_config(const struct dit_config *cfg)
{
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:b, s:i, s:i, s:s, s:i, s:b, s:s, s:b, s:f}",
                     "_class_name", DIT_DIFFUSERS_CLASS,
                     "num_attention_heads", cfg->num_heads,
                     "attention_head_dim", cfg->hidden_size / cfg->num_heads,
                     "in_channels", cfg->in_channels,
                     "out_channels", dit_out_channels(cfg),
                     "num_layers", cfg->depth,
                     "dropout", 0.0,
                     "norm_num_groups", 32,
                     "attention_bias", 1,
                     "sample_size", cfg->input_size,
                     "patch_size", cfg->patch_size,
                     "activation_fn", "gelu-approximate",
                     "num_embeds_ada_norm", cfg->num_classes,
                     "upcast_attention", 0,
                     "norm_type", "ada_norm_zero",
                     "norm_elementwise_affine", 0,
                     "norm_eps", (double)cfg->mlp_norm_eps);
}

static int get_int(json_t *root, const char *key, int *out, const char *path)
{
    json_t *v = json_object_get(root, key);
    if (!json_is_integer(v)) {
        err_set("%s: '%s' is missing or not an integer", path, key);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

int dit_config_from_diffusers(struct dit_config *cfg, const char *path)
{
    json_t *root = json_read_file(path);
    if (!root)
        return -1;
    int heads = 0, head_dim = 0, out_channels = 0, rc = 0;
    memset(cfg, 0, sizeof *cfg);
    const char *cls = json_string_value(json_object_get(root, "_class_name"));
    if (!cls || (strcmp(cls, DIT_DIFFUSERS_CLASS) != 0 && strcmp(cls, "Transformer2DModel") != 0)) {
        err_set("%s: _class_name is '%s', not " DIT_DIFFUSERS_CLASS, path, cls ? cls : "(none)");
        rc = -1;
    }
    if (rc == 0)
        rc = get_int(root, "num_attention_heads", &heads, path) || get_int(root, "attention_head_dim", &head_dim, path) ||
             get_int(root, "in_channels", &cfg->in_channels, path) ||
             get_int(root, "num_layers", &cfg->depth, path) || get_int(root, "sample_size", &cfg->input_size, path) ||
             get_int(root, "patch_size", &cfg->patch_size, path) ||
             get_int(root, "num_embeds_ada_norm", &cfg->num_classes, path)
                 ? -1
                 : 0;
    if (rc == 0) {
        json_t *oc = json_object_get(root, "out_channels");
        out_channels = json_is_integer(oc) ? (int)json_integer_value(oc) : cfg->in_channels;
        /* diffusers hard-codes 1e-6 for the adaLN-Zero and output norms and
         * applies the config's norm_eps to the pre-MLP norm only. */
        json_t *eps = json_object_get(root, "norm_eps");
        cfg->norm_eps = 1e-6f;
        cfg->mlp_norm_eps = json_is_number(eps) ? (float)json_number_value(eps) : 1e-5f;
        cfg->num_heads = heads;
        cfg->hidden_size = heads * head_dim;
        cfg->mlp_ratio = 4.0f;
        cfg->class_dropout_prob = 0.1f;
        cfg->learn_sigma = out_channels == 2 * cfg->in_channels;
        cfg->freq_shift = 1.0f;
        if (out_channels != cfg->in_channels && !cfg->learn_sigma) {
            err_set("%s: out_channels %d is neither in_channels nor twice it", path, out_channels);
            rc = -1;
        }
    }
    json_decref(root);
    if (rc == 0 && dit_config_check(cfg) != 0) {
        err_prefix("%s", path);
        rc = -1;
    }
    return rc;
}

json_t *dit_config_json(const struct dit_config *c)
{
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:i, s:f, s:b, s:f, s:f, s:f}",
                     "_class_name", "DiT", "input_size", c->input_size, "patch_size", c->patch_size,
                     "in_channels", c->in_channels, "hidden_size", c->hidden_size, "depth", c->depth,
                     "num_heads", c->num_heads, "mlp_ratio", (double)c->mlp_ratio, "num_classes", c->num_classes,
                     "class_dropout_prob", (double)c->class_dropout_prob, "learn_sigma", c->learn_sigma,
                     "norm_eps", (double)c->norm_eps, "mlp_norm_eps", (double)c->mlp_norm_eps, "freq_shift",
                     (double)c->freq_shift);
}

int dit_config_from_json(struct dit_config *c, const json_t *j, const char *name)
{
    memset(c, 0, sizeof *c);
    double mlp_ratio = 0, dropout = 0, eps = 0, mlp_eps = 0, shift = 0;
    int learn_sigma = 0;
    json_error_t e;
    if (json_unpack_ex((json_t *)j, &e, 0, "{s:i, s:i, s:i, s:i, s:i, s:i, s:F, s:i, s:F, s:b, s:F, s:F, s:F}",
                       "input_size", &c->input_size, "patch_size", &c->patch_size, "in_channels", &c->in_channels,
                       "hidden_size", &c->hidden_size, "depth", &c->depth, "num_heads", &c->num_heads,
                       "mlp_ratio", &mlp_ratio, "num_classes", &c->num_classes, "class_dropout_prob", &dropout,
                       "learn_sigma", &learn_sigma, "norm_eps", &eps, "mlp_norm_eps", &mlp_eps, "freq_shift",
                       &shift) != 0) {
        err_set("%s: %s", name, e.text);
        return -1;
    }
    c->mlp_ratio = (float)mlp_ratio, c->class_dropout_prob = (float)dropout, c->learn_sigma = learn_sigma;
    c->norm_eps = (float)eps, c->mlp_norm_eps = (float)mlp_eps, c->freq_shift = (float)shift;
    if (dit_config_check(c) != 0) {
        err_prefix("%s", name);
        return -1;
    }
    return 0;
}

int dit_save_dir(const struct dit_config *cfg, const float *params, const char *dir)
{
    char *dpath = NULL;
    json_t *dc = dit_diffusers_config(cfg), *oc = dit_config_json(cfg);
    struct disk_table dt = {0};
    struct model_tensor *t = NULL;
    size_t n;
    float *pos = NULL;
    int rc = -1;
    if (asprintf(&dpath, "%s/dit.json", dir) < 0 || !dc || !oc) {
        dpath = NULL;
        err_set("%s: out of memory", dir);
    } else if (model_dir_write_config(dir, DIT_DIFFUSERS_CLASS, dc) == 0 && json_write_file(dpath, oc) == 0 &&
               disk_tensors(cfg, params, DIT_LAYOUT_DIFFUSERS, &dt, &t, &n, &pos) == 0) {
        rc = model_dir_write_weights(dir, MODEL_DIR_DIFFUSERS_BASE, t, n, 0);
    }
    json_decref(dc);
    json_decref(oc);
    free(t);
    free(pos);
    free(dt.t);
    free(dpath);
    return rc;
}

/* The configuration of a model directory: dit.json when present (this
 * model's exact numerics), else diffusers' config.json. */
static int config_of_dir(const char *dir, struct dit_config *cfg)
{
    char *dpath = NULL, *cpath = NULL;
    int rc = -1;
    if (asprintf(&dpath, "%s/dit.json", dir) < 0 || asprintf(&cpath, "%s/" MODEL_DIR_CONFIG, dir) < 0) {
        err_set("%s: out of memory", dir);
    } else if (access(dpath, F_OK) == 0) {
        json_t *j = json_read_file(dpath);
        rc = j ? dit_config_from_json(cfg, j, dpath) : -1;
        json_decref(j);
    } else {
        rc = dit_config_from_diffusers(cfg, cpath);
    }
    free(dpath);
    free(cpath);
    return rc;
}

int dit_load_dir(const char *dir, struct dit_config *cfg, float **params)
{
    float *none;
    const int config_only = !params;
    if (config_only)
        params = &none;
    *params = NULL;
    /* A pipeline folder (model_index.json, no config.json of its own):
     * the DiT is its transformer component. */
    struct model_component comp = {0};
    char *cpath = NULL, *ipath = NULL;
    if (asprintf(&cpath, "%s/" MODEL_DIR_CONFIG, dir) < 0 || asprintf(&ipath, "%s/" MODEL_DIR_INDEX, dir) < 0) {
        free(cpath);
        err_set("%s: out of memory", dir);
        return -1;
    }
    int pipeline = access(cpath, F_OK) != 0 && access(ipath, F_OK) == 0;
    free(cpath);
    free(ipath);
    if (pipeline) {
        if (model_index_component(dir, "transformer", &comp) != 0)
            return -1;
        dir = comp.folder;
    }
    int rc = config_of_dir(dir, cfg);
    if (rc == 0 && config_only) {
        model_component_free(&comp);
        return 0;
    }
    struct st_set *set = rc == 0 ? model_dir_open_weights(dir) : NULL;
    rc = -1;
    if (!set)
        goto done;
    int layout = dit_weights_layout(set);
    if (layout < 0) {
        err_set("%s: neither the diffusers nor the original DiT tensor names", set->path);
        goto done;
    }
    *params = malloc((size_t)dit_param_count(cfg) * sizeof(float));
    if (!*params) {
        err_set("%s: out of memory", dir);
        goto done;
    }
    rc = dit_weights_load(cfg, *params, set, (enum dit_layout)layout);
done:
    if (rc != 0) {
        free(*params);
        *params = NULL;
    }
    st_set_close(set);
    model_component_free(&comp);
    return rc;
}
