/* F-Lite configurations, the parameter table (written once), the
 * initialisation and the rotary tables. */
#include "models/flite/flite.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int flite_config_by_name(struct flite_config *cfg, const char *name, int height, int width,
                         int text_len)
{
    /* The released values (f_lite/pt.py's defaults, which f_lite_to_hf.py
     * converts with): the 10B has 40 blocks; the 7B is said to be the same
     * width with 28. */
    int depth;
    if (strcmp(name, "F-Lite") == 0 || strcmp(name, "F-Lite-10B") == 0)
        depth = 40;
    else if (strcmp(name, "F-Lite-7B") == 0)
        depth = 28;
    else {
        err_set("model '%s': expected F-Lite (the 10B), F-Lite-10B or F-Lite-7B", name);
        return -1;
    }
    *cfg = (struct flite_config){
        .in_channels = 16, .patch_size = 2, .hidden_size = 3072, .depth = depth, .num_heads = 12,
        .mlp_ratio = 4.0f, .cross_attn_input_size = 4096, .residual_v = 1,
        .train_bias_and_rms = 0, .rope_base = 10000, .height = height, .width = width,
        .text_len = text_len, .cond_dropout = 0.01f,
    };
    return flite_config_check(cfg);
}

int flite_config_check(const struct flite_config *c)
{
    if (c->patch_size <= 0 || c->height <= 0 || c->width <= 0 || c->height % c->patch_size ||
        c->width % c->patch_size) {
        err_set("latent size %dx%d is not a positive multiple of the patch size %d", c->height,
                c->width, c->patch_size);
        return -1;
    }
    if (c->height / c->patch_size > FLITE_ROPE_GRID || c->width / c->patch_size > FLITE_ROPE_GRID) {
        err_set("latent size %dx%d is above F-Lite's rotary grid of %d patches a side", c->height,
                c->width, FLITE_ROPE_GRID);
        return -1;
    }
    if (c->hidden_size <= 0 || c->num_heads <= 0 || c->hidden_size % c->num_heads) {
        err_set("hidden size %d is not a positive multiple of the %d heads", c->hidden_size,
                c->num_heads);
        return -1;
    }
    /* The rotary embedding splits each head in halves, and each half in a
     * row part and a column part. */
    if (flite_head_size(c) % 4) {
        err_set("head size %d (hidden %d over %d heads) is not a multiple of 4, as F-Lite's 2D "
                "rotary embedding needs", flite_head_size(c), c->hidden_size, c->num_heads);
        return -1;
    }
    if (c->depth <= 0 || c->depth > FLITE_MAX_DEPTH) {
        err_set("depth %d is outside 1..%d", c->depth, FLITE_MAX_DEPTH);
        return -1;
    }
    if (c->in_channels <= 0 || c->mlp_ratio <= 0 || flite_mlp_hidden(c) <= 0 ||
        c->cross_attn_input_size <= 0 || c->text_len <= 0 || c->rope_base <= 1) {
        err_set("in_channels, mlp_ratio, cross_attn_input_size, the text length and rope_base "
                "must be positive (rope_base above 1)");
        return -1;
    }
    if (!(c->cond_dropout >= 0.0f && c->cond_dropout < 1.0f)) {
        err_set("caption dropout %g is outside [0, 1)", (double)c->cond_dropout);
        return -1;
    }
    return 0;
}

static size_t add_vector(struct nn_params *t, int64_t n, const char *name)
{
    size_t id = t->count;
    nn_params_add(t, name, 1, (int64_t[]){n});
    return id;
}

int flite_param_table(const struct flite_config *c, struct nn_params *t, struct flite_layers *L)
{
    if (flite_config_check(c) != 0)
        return -1;
    memset(t, 0, sizeof *t);
    if (L)
        memset(L, 0, sizeof *L);
    struct flite_layers scratch;
    struct flite_layers *l = L ? L : &scratch;
    const int64_t C = c->hidden_size, CI = c->in_channels, P = c->patch_size;
    const int64_t MH = flite_mlp_hidden(c), DC = c->cross_attn_input_size;
    const int bias = c->train_bias_and_rms;
    char name[NN_NAME_MAX];
    nn_linear_addf(&l->patch, t, 1, 4, (int64_t[]){C, CI, P, P}, "patch_embed.patch_proj");
    l->reg_id = t->count;
    nn_params_add(t, "register_tokens", 3, (int64_t[]){1, FLITE_REGISTERS, C});
    nn_linear_addf(&l->t1, t, 1, 2, (int64_t[]){4 * C, C}, "time_embed.0");
    nn_linear_addf(&l->t2, t, 1, 2, (int64_t[]){C, 4 * C}, "time_embed.2");
    for (int i = 0; i < c->depth; i++) {
        struct flite_block_layers *b = &l->blocks[i];
        b->norm1_id = b->norm2_id = b->norm3_id = b->lambda_id = NN_NO_ENTRY;
        if (bias) {
            snprintf(name, sizeof name, "blocks.%d.norm1.weight", i);
            b->norm1_id = add_vector(t, C, name);
        }
        if (c->residual_v) {
            snprintf(name, sizeof name, "blocks.%d.self_attn.lambda_param", i);
            b->lambda_id = add_vector(t, 1, name);
        }
        nn_linear_addf(&b->qkv, t, bias, 2, (int64_t[]){3 * C, C}, "blocks.%d.self_attn.qkv", i);
        nn_linear_addf(&b->proj, t, 0, 2, (int64_t[]){C, C}, "blocks.%d.self_attn.proj", i);
        if (bias) {
            snprintf(name, sizeof name, "blocks.%d.norm2.weight", i);
            b->norm2_id = add_vector(t, C, name);
        }
        nn_linear_addf(&b->q, t, bias, 2, (int64_t[]){C, C}, "blocks.%d.cross_attn.q", i);
        nn_linear_addf(&b->kv, t, bias, 2, (int64_t[]){2 * C, DC}, "blocks.%d.cross_attn.context_kv", i);
        nn_linear_addf(&b->cproj, t, 0, 2, (int64_t[]){C, C}, "blocks.%d.cross_attn.proj", i);
        if (bias) {
            snprintf(name, sizeof name, "blocks.%d.norm3.weight", i);
            b->norm3_id = add_vector(t, C, name);
        }
        nn_linear_addf(&b->fc1, t, 1, 2, (int64_t[]){MH, C}, "blocks.%d.mlp.0", i);
        nn_linear_addf(&b->fc2, t, 1, 2, (int64_t[]){C, MH}, "blocks.%d.mlp.2", i);
        nn_linear_addf(&b->ada, t, 1, 2, (int64_t[]){9 * C, C}, "blocks.%d.adaLN_modulation.1", i);
    }
    nn_linear_addf(&l->f_mod, t, 1, 2, (int64_t[]){2 * C, C}, "final_modulation.1");
    l->fnorm_id = bias ? add_vector(t, C, "final_norm.weight") : NN_NO_ENTRY;
    nn_linear_addf(&l->f_out, t, 1, 2, (int64_t[]){P * P * CI, C}, "final_proj");
    if (nn_params_done(t) != 0) {
        nn_params_free(t);
        return -1;
    }
    return 0;
}

int64_t flite_param_count(const struct flite_config *c)
{
    struct nn_params t;
    if (flite_param_table(c, &t, NULL) != 0)
        return -1;
    int64_t total = t.total;
    nn_params_free(&t);
    return total;
}

/* A plain entry's view, and its gradient's when it trains. */
static void bind_entry(size_t id, const struct nn_params *t, struct tensor weights,
                       struct tensor grads, struct tensor *w, struct tensor *g)
{
    if (id == NN_NO_ENTRY) {
        *w = tensor_none();
        *g = tensor_none();
        return;
    }
    *w = nn_params_view(t, weights, id);
    *g = grads.data && t->p[id].trainable ? nn_params_view(t, grads, id) : tensor_none();
}

void flite_layers_bind(struct flite_layers *L, const struct flite_config *c,
                       const struct nn_params *t, struct tensor weights, struct tensor grads)
{
    nn_linear_bind(&L->patch, t, weights, grads);
    bind_entry(L->reg_id, t, weights, grads, &L->reg, &L->dreg);
    nn_linear_bind(&L->t1, t, weights, grads);
    nn_linear_bind(&L->t2, t, weights, grads);
    for (int i = 0; i < c->depth; i++) {
        struct flite_block_layers *b = &L->blocks[i];
        bind_entry(b->norm1_id, t, weights, grads, &b->norm1, &b->dnorm1);
        bind_entry(b->norm2_id, t, weights, grads, &b->norm2, &b->dnorm2);
        bind_entry(b->norm3_id, t, weights, grads, &b->norm3, &b->dnorm3);
        bind_entry(b->lambda_id, t, weights, grads, &b->lambda, &b->dlambda);
        struct nn_linear *lin[] = {&b->qkv, &b->proj, &b->q, &b->kv, &b->cproj, &b->fc1, &b->fc2, &b->ada};
        for (size_t j = 0; j < sizeof lin / sizeof lin[0]; j++)
            nn_linear_bind(lin[j], t, weights, grads);
    }
    nn_linear_bind(&L->f_mod, t, weights, grads);
    bind_entry(L->fnorm_id, t, weights, grads, &L->fnorm, &L->dfnorm);
    nn_linear_bind(&L->f_out, t, weights, grads);
}

/* torch's default for nn.Linear and nn.Conv2d (kaiming_uniform with a = sqrt(5)
 * for the weight, the fan-in bound for the bias): both U(-1/sqrt(fan_in), +). */
static void torch_default(const struct nn_linear *l, const struct rng_stream *s, uint64_t *off)
{
    const float a = 1.0f / sqrtf((float)l->in);
    struct tensor parts[2] = {l->weight, l->bias};
    for (int p = 0; p < 2; p++) {
        if (!parts[p].data)
            continue;
        float *w = parts[p].data;
        rng_uniform_f32(s, *off, (size_t)parts[p].n, w);
        for (int64_t i = 0; i < parts[p].n; i++)
            w[i] = (2.0f * w[i] - 1.0f) * a;
        *off += (uint64_t)parts[p].n;
    }
}

static void fill_value(struct tensor t, float v)
{
    float *w = t.data;
    for (int64_t i = 0; w && i < t.n; i++)
        w[i] = v;
}

void flite_init(const struct flite_config *c, float *params, uint64_t seed)
{
    struct nn_params t;
    struct flite_layers *L = calloc(1, sizeof *L);
    if (!L || flite_param_table(c, &t, L) != 0)
        abort(); /* small next to the buffer the caller already holds */
    memset(params, 0, (size_t)t.total * sizeof *params);
    flite_layers_bind(L, c, &t, tensor_f32(params, t.total), tensor_none());
    struct rng_stream us = rng_stream(seed, RNG_PARAM_INIT, 0, 0);
    struct rng_stream ns = rng_stream(seed, RNG_PARAM_INIT, 1, 0);
    uint64_t uo = 0;
    torch_default(&L->patch, &us, &uo);
    rng_normal_f32(&ns, 0, (size_t)L->reg.n, L->reg.data);
    torch_default(&L->t1, &us, &uo);
    torch_default(&L->t2, &us, &uo);
    for (int i = 0; i < c->depth; i++) {
        struct flite_block_layers *b = &L->blocks[i];
        fill_value(b->norm1, 1.0f);
        fill_value(b->norm2, 1.0f);
        fill_value(b->norm3, 1.0f);
        fill_value(b->lambda, 0.5f);
        const struct nn_linear *lin[] = {&b->qkv, &b->proj, &b->q, &b->kv, &b->cproj, &b->fc1, &b->fc2};
        for (size_t j = 0; j < sizeof lin / sizeof lin[0]; j++)
            torch_default(lin[j], &us, &uo);
        /* adaLN_modulation stays zero: each block starts as the identity. */
    }
    fill_value(L->fnorm, 1.0f);
    /* final_modulation and final_proj stay zero (F-Lite zeroes both). */
    free(L);
    nn_params_free(&t);
}

void flite_rope_tables(const struct flite_config *c, int gh, int gw, float *cos_t, float *sin_t)
{
    const int HS = flite_head_size(c), half = HS / 2, quarter = HS / 4;
    /* F-Lite: FloatTensor([1 / base ** (i / dim) for i in range(0, dim, 2)])
     * with dim = HS / 2: Python doubles, rounded to f32. */
    float *inv = malloc((size_t)quarter * sizeof *inv);
    if (!inv)
        abort();
    for (int k = 0; k < quarter; k++)
        inv[k] = (float)(1.0 / pow((double)c->rope_base, (double)(2 * k) / (double)half));
    for (int k = 0; k < FLITE_REGISTERS * half; k++) {
        cos_t[k] = 1.0f;
        sin_t[k] = 0.0f;
    }
    for (int r = 0; r < gh; r++)
        for (int s = 0; s < gw; s++) {
            int64_t row = FLITE_REGISTERS + (int64_t)r * gw + s;
            float *co = cos_t + row * half, *si = sin_t + row * half;
            for (int k = 0; k < half; k++) {
                /* torch.outer in f32, then cos and sin of the f32 angle */
                float angle = k < quarter ? (float)r * inv[k] : (float)s * inv[k - quarter];
                co[k] = (float)cos((double)angle);
                si[k] = (float)sin((double)angle);
            }
        }
    free(inv);
}
