/* The DiT as a denoiser: configurations by the paper's names, the model
 * dir, and the model's calls, with the condition mapped to labels (the
 * null condition is the extra label row, num_classes). */
#include "models/dit/denoiser.h"
#include "libcommon/error.h"
#include "models/dit/dit.h"
#include "models/dit/weights.h"

#include <stdlib.h>
#include <string.h>

static int config_preset(void *cfg, const char *name, const struct denoiser_spec *spec)
{
    struct dit_config *c = cfg;
    if (strncmp(name, "DiT-", 4) != 0)
        return 1;
    if (dit_config_by_name(c, name, spec->height) != 0)
        return -1;
    if (spec->height != spec->width) {
        err_set("%s takes square latents, not %dx%d", name, spec->height, spec->width);
        return -1;
    }
    /* The paper's sizes take 4-channel VAE latents; the channels follow the
     * data (3 for the pixel encoder). */
    if (spec->channels)
        c->in_channels = spec->channels;
    if (spec->num_classes)
        c->num_classes = spec->num_classes;
    if (spec->depth)
        c->depth = spec->depth;
    if (spec->hidden_size)
        c->hidden_size = spec->hidden_size;
    if (spec->num_heads)
        c->num_heads = spec->num_heads;
    return dit_config_check(c);
}

static void config_info(const void *cfg, struct denoiser_info *info)
{
    const struct dit_config *c = cfg;
    info->in_channels = c->in_channels;
    info->out_channels = dit_out_channels(c);
    info->learned_sigma = c->learn_sigma;
    info->height = info->width = c->input_size;
    info->multiple = c->patch_size;
    info->cond = COND_LABELS;
    info->num_classes = c->num_classes;
    info->cond_dropout = c->class_dropout_prob;
    info->n_params = dit_param_count(c);
}

static int config_equal(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct dit_config)) == 0;
}

static json_t *config_to_json(const void *cfg)
{
    return dit_config_json(cfg);
}

static int load_dir(const char *dir, void *cfg, float **params)
{
    return dit_load_dir(dir, cfg, params);
}

static int save_dir(const void *cfg, const float *params, const char *dir)
{
    return dit_save_dir(cfg, params, dir);
}

static void init(const void *cfg, float *params, uint64_t seed)
{
    dit_init(cfg, params, seed);
}

static enum dit_memory memory_of(enum denoiser_memory mem)
{
    int frozen = mem & DENOISER_MEM_FROZEN ? DIT_MEM_FROZEN : 0;
    int wbits = (int)mem & NN_MEM_MASK; /* the same bits in both */
    mem = (enum denoiser_memory)(mem & ~(DENOISER_MEM_FROZEN | NN_MEM_MASK));
    return (enum dit_memory)((mem == DENOISER_MEM_INFERENCE ? DIT_MEM_INFERENCE
                              : mem == DENOISER_MEM_CHECKPOINT ? DIT_MEM_CHECKPOINT : DIT_MEM_TRAIN) |
                             frozen | wbits);
}

static int plan_bytes(const void *cfg, enum device_kind device, int B, enum denoiser_memory mem, enum kdtype dt,
                      int64_t *param_bytes, int64_t *activation_bytes)
{
    return dit_model_plan_bytes(cfg, device, B, memory_of(mem), dt, param_bytes, activation_bytes);
}

/* The labels the model sees: the null condition is the extra row. */
struct dit_impl {
    struct dit_model *m;
    int owned;       /* created here, freed with the denoiser */
    int32_t *labels; /* [B] */
};

static void fill(struct denoiser *d, struct dit_impl *p)
{
    struct dit_model *m = p->m;
    d->impl = p;
    d->kind = &dit_denoiser_kind;
    d->ctx = m->ctx;
    config_info(&m->cfg, &d->info);
    d->height = d->info.height, d->width = d->info.width;
    d->dt = m->dt;
    d->B = m->B;
    d->inference = m->inference;
    d->n_params = m->n_params;
    d->params = m->params;
    d->grads = m->grads;
    d->weights = m->weights;
    d->table = &m->table;
    d->w = &m->w;
}

static struct dit_impl *impl_new(int B)
{
    struct dit_impl *p = calloc(1, sizeof *p);
    if (!p || !(p->labels = malloc((size_t)B * sizeof *p->labels))) {
        free(p);
        err_set("out of memory for the model");
        return NULL;
    }
    return p;
}

int dit_denoiser_wrap(struct denoiser *d, struct dit_model *m)
{
    memset(d, 0, sizeof *d);
    struct dit_impl *p = impl_new(m->B);
    if (!p)
        return -1;
    p->m = m;
    fill(d, p);
    return 0;
}

static int create(struct denoiser *d, const void *cfg, struct kctx *ctx, int B, enum denoiser_memory mem,
                  enum kdtype dt)
{
    struct dit_impl *p = impl_new(B);
    if (!p || !(p->m = calloc(1, sizeof *p->m))) {
        if (p)
            free(p->labels);
        free(p);
        err_set("out of memory for the model");
        return -1;
    }
    p->owned = 1;
    if (dit_model_create(p->m, cfg, ctx, B, memory_of(mem), dt) != 0) {
        free(p->m);
        free(p->labels);
        free(p);
        return -1;
    }
    fill(d, p);
    return 0;
}

static void destroy(struct denoiser *d)
{
    struct dit_impl *p = d->impl;
    if (p->owned) {
        dit_model_free(p->m);
        free(p->m);
    }
    free(p->labels);
    free(p);
}

static void forward(struct denoiser *d, float *out, const float *x, const float *t, const struct cond *c, int b)
{
    struct dit_impl *p = d->impl;
    const int null_row = p->m->cfg.num_classes;
    for (int i = 0; i < b; i++)
        p->labels[i] = (c->null && c->null[i]) || !c->labels ? null_row : c->labels[i];
    dit_forward(p->m, out, x, t, p->labels, b);
}

static void backward(struct denoiser *d, const float *dout, int b)
{
    dit_backward(((struct dit_impl *)d->impl)->m, dout, b);
}

static void params_upload(struct denoiser *d, const float *host)
{
    dit_params_upload(((struct dit_impl *)d->impl)->m, host);
}

static void params_download(struct denoiser *d, float *host)
{
    dit_params_download(((struct dit_impl *)d->impl)->m, host);
}

static void weights_set(struct denoiser *d, struct tensor src)
{
    dit_weights_set(((struct dit_impl *)d->impl)->m, src);
}

static void zero_grads(struct denoiser *d)
{
    dit_zero_grads(((struct dit_impl *)d->impl)->m);
}

static void sizes(const struct denoiser *d, int64_t *param_bytes, int64_t *activation_bytes)
{
    dit_model_sizes(((const struct dit_impl *)d->impl)->m, param_bytes, activation_bytes);
}

/* The original DiT's names or diffusers' (whose numerics differ a little). */
static int load_file(const char *path, void *config, float **params)
{
    struct dit_config *cfg = config;
    struct st_set *set = st_set_open(path);
    int layout = set ? dit_weights_layout(set) : -1;
    if (set && layout < 0)
        err_set("%s: neither the diffusers nor the original DiT tensor names", path);
    if (layout == DIT_LAYOUT_DIFFUSERS) {
        cfg->freq_shift = 1.0f;
        cfg->mlp_norm_eps = 1e-5f;
    }
    *params = layout < 0 ? NULL : malloc((size_t)dit_param_count(cfg) * sizeof(float));
    if (layout >= 0 && !*params)
        err_set("out of memory");
    int rc = *params && dit_weights_load(cfg, *params, set, (enum dit_layout)layout) == 0 ? 0 : -1;
    st_set_close(set);
    if (rc != 0) {
        free(*params);
        *params = NULL;
    }
    return rc;
}

static struct nn_linear *linear(struct denoiser *d, size_t i, int64_t *max_rows)
{
    struct dit_model *m = ((struct dit_impl *)d->impl)->m;
    struct dit_layers *L = &m->layers;
    const size_t depth = (size_t)m->cfg.depth, per_block = 5;
    const int64_t BT = (int64_t)m->B * dit_tokens(&m->cfg);
    *max_rows = m->B;
    if (i < depth * per_block) {
        struct dit_block_layers *b = &L->blocks[i / per_block];
        struct nn_linear *at[5] = {&b->qkv, &b->proj, &b->fc1, &b->fc2, &b->ada};
        if (i % per_block != 4)
            *max_rows = BT;
        return at[i % per_block];
    }
    i -= depth * per_block;
    struct nn_linear *rest[5] = {&L->x_embed, &L->t1, &L->t2, &L->f_ada, &L->f_out};
    if (i >= 5)
        return NULL;
    if (i == 0 || i == 4)
        *max_rows = BT;
    return rest[i];
}

static int table(const void *cfg, struct nn_params *t)
{
    return dit_param_table(cfg, t, NULL);
}

const struct denoiser_kind dit_denoiser_kind = {
    .name = "dit",
    .class_name = "DiTTransformer2DModel",
    .class_alias = "Transformer2DModel",
    .presets = "DiT-S, -B, -L or -XL with /2, /4 or /8",
    .config_size = sizeof(struct dit_config),
    .config_preset = config_preset,
    .config_info = config_info,
    .config_equal = config_equal,
    .config_to_json = config_to_json,
    .load_dir = load_dir,
    .save_dir = save_dir,
    .load_file = load_file,
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
    .linear = linear,
    .table = table,
    .lora_targets = "qkv,proj",
    .lora_alias = dit_diffusers_module,
};

