/* F-Lite as a denoiser: presets by name, the model dir, and the model's
 * calls, conditioned on text embeddings (the null condition is the zero
 * embedding, as F-Lite's training dropout and its unconditional pass). */
#include "models/flite/denoiser.h"
#include "libcommon/error.h"
#include "models/flite/flite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int config_preset(void *cfg, const char *name, const struct denoiser_spec *spec)
{
    struct flite_config *c = cfg;
    if (strncmp(name, "F-Lite", 6) != 0)
        return 1;
    if (flite_config_by_name(c, name, spec->height, spec->width, spec->text_len ? spec->text_len : 512) != 0)
        return -1;
    if (spec->channels)
        c->in_channels = spec->channels;
    if (spec->text_dim) /* a preset trained from scratch takes the data's text encoder */
        c->cross_attn_input_size = spec->text_dim;
    if (spec->depth)
        c->depth = spec->depth;
    if (spec->hidden_size)
        c->hidden_size = spec->hidden_size;
    if (spec->num_heads)
        c->num_heads = spec->num_heads;
    return flite_config_check(c);
}

/* Memory is planned for the data's latents and text; the weights fit any. */
static int config_fit(void *cfg, const struct denoiser_spec *spec)
{
    struct flite_config *c = cfg;
    if (spec->channels && spec->channels != c->in_channels) {
        err_set("the model takes %d-channel latents, the data holds %d", c->in_channels, spec->channels);
        return -1;
    }
    if (spec->height)
        c->height = spec->height;
    if (spec->width)
        c->width = spec->width;
    if (spec->text_len)
        c->text_len = spec->text_len;
    return flite_config_check(c);
}

static void config_info(const void *cfg, struct denoiser_info *info)
{
    const struct flite_config *c = cfg;
    memset(info, 0, sizeof *info);
    info->in_channels = info->out_channels = c->in_channels;
    info->height = c->height;
    info->width = c->width;
    info->multiple = c->patch_size;
    info->cond = COND_TEXT;
    info->text_dim = c->cross_attn_input_size;
    info->cond_dropout = c->cond_dropout;
    info->n_params = flite_param_count(c);
}

/* The same architecture: the planned sizes and the caption dropout come
 * from each run's data and options, not from the weights. */
static int config_equal(const void *a, const void *b)
{
    struct flite_config x = *(const struct flite_config *)a, y = *(const struct flite_config *)b;
    x.height = y.height, x.width = y.width, x.text_len = y.text_len, x.cond_dropout = y.cond_dropout;
    return memcmp(&x, &y, sizeof x) == 0;
}

static json_t *config_to_json(const void *cfg)
{
    return flite_config_json(cfg);
}

static int load_dir(const char *dir, void *cfg, float **params)
{
    return flite_load_dir(dir, cfg, params);
}

static int save_dir(const void *cfg, const float *params, const char *dir)
{
    return flite_save_dir(cfg, params, dir);
}

static void init(const void *cfg, float *params, uint64_t seed)
{
    flite_init(cfg, params, seed);
}

static int plan_bytes(const void *cfg, enum device_kind device, int B, enum denoiser_memory mem,
                      enum kdtype dt, int64_t *param_bytes, int64_t *activation_bytes)
{
    return flite_model_plan_bytes(cfg, device, B, mem, dt, param_bytes, activation_bytes);
}

static struct flite_model *model_of(const struct denoiser *d)
{
    return d->impl;
}

static int create(struct denoiser *d, const void *cfg, struct kctx *ctx, int B,
                  enum denoiser_memory mem, enum kdtype dt)
{
    struct flite_model *m = calloc(1, sizeof *m);
    if (!m) {
        err_set("out of memory for the model");
        return -1;
    }
    if (flite_model_create(m, cfg, ctx, B, mem, dt) != 0) {
        free(m);
        return -1;
    }
    d->impl = m;
    d->kind = &flite_denoiser_kind;
    d->ctx = ctx;
    config_info(&m->cfg, &d->info);
    d->dt = m->dt;
    d->B = m->B;
    d->inference = m->inference;
    d->n_params = m->n_params;
    d->params = m->params;
    d->grads = m->grads;
    d->weights = m->weights;
    d->table = &m->table;
    d->w = &m->w;
    return 0;
}

static void destroy(struct denoiser *d)
{
    flite_model_free(model_of(d));
    free(d->impl);
}

/* The seam's callers size batches by the plan (the trainer and samplers
 * check the data against info first), so a size outside it is a bug. */
static void forward(struct denoiser *d, float *out, const float *x, const float *t, const struct cond *c,
                    int b)
{
    struct flite_model *m = model_of(d);
    if (flite_forward(m, out, x, t, c->text, c->null, c->text_len, b, d->height, d->width) != 0) {
        fprintf(stderr, "dit: internal: F-Lite forward: %s\n", err_get());
        abort();
    }
}

static void backward(struct denoiser *d, const float *dout, int b)
{
    flite_backward(model_of(d), dout, b);
}

static void params_upload(struct denoiser *d, const float *host)
{
    nn_weights_upload(&model_of(d)->w, host);
}

static void params_download(struct denoiser *d, float *host)
{
    nn_weights_download(&model_of(d)->w, host);
}

static void weights_set(struct denoiser *d, struct tensor src)
{
    nn_weights_set(&model_of(d)->w, src);
}

static void zero_grads(struct denoiser *d)
{
    nn_weights_zero_grads(&model_of(d)->w);
}

static int size_fits(const struct denoiser *d, int h, int w)
{
    return flite_size_fits(model_of(d), h, w);
}

static void sizes(const struct denoiser *d, int64_t *param_bytes, int64_t *activation_bytes)
{
    flite_model_sizes(model_of(d), param_bytes, activation_bytes);
}

static struct nn_linear *linear(struct denoiser *d, size_t i, int64_t *max_rows)
{
    struct flite_model *m = model_of(d);
    struct flite_layers *L = &m->layers;
    const size_t depth = (size_t)m->cfg.depth, per_block = 8;
    const int64_t BT = (int64_t)m->B * flite_tokens(&m->cfg, m->cfg.height, m->cfg.width);
    *max_rows = BT;
    if (i < depth * per_block) {
        struct flite_block_layers *b = &L->blocks[i / per_block];
        struct nn_linear *at[8] = {&b->qkv, &b->proj, &b->q, &b->kv, &b->cproj, &b->fc1, &b->fc2, &b->ada};
        if (i % per_block == 3)
            *max_rows = (int64_t)m->B * m->cfg.text_len;
        else if (i % per_block == 7)
            *max_rows = m->B;
        return at[i % per_block];
    }
    i -= depth * per_block;
    struct nn_linear *rest[5] = {&L->patch, &L->t1, &L->t2, &L->f_mod, &L->f_out};
    if (i >= 5)
        return NULL;
    if (i >= 1 && i <= 3)
        *max_rows = m->B;
    return rest[i];
}

static int table(const void *cfg, struct nn_params *t)
{
    return flite_param_table(cfg, t, NULL);
}

const struct denoiser_kind flite_denoiser_kind = {
    .name = "flite",
    .class_name = FLITE_CLASS,
    .presets = "F-Lite (the 10B), F-Lite-10B or F-Lite-7B",
    .config_size = sizeof(struct flite_config),
    .config_preset = config_preset,
    .config_fit = config_fit,
    .config_info = config_info,
    .config_equal = config_equal,
    .config_to_json = config_to_json,
    .load_dir = load_dir,
    .save_dir = save_dir,
    .init = init,
    .plan_bytes = plan_bytes,
    .create = create,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .params_upload = params_upload,
    .params_download = params_download,
    .weights_set = weights_set,
    .zero_grads = zero_grads,
    .sizes = sizes,
    .size_fits = size_fits,
    .linear = linear,
    .table = table,
    .lora_targets = "qkv,q,context_kv,proj", /* F-Lite's train.py default */
};
