/* DiT configurations, the parameter table (written once) and the
 * initialisation. */
#include "models/dit/dit.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dit_config_by_name(struct dit_config *cfg, const char *name, int input_size)
{
    /* Table 1 of the DiT paper. */
    static const struct {
        const char *size;
        int depth, hidden, heads;
    } sizes[] = {{"S", 12, 384, 6}, {"B", 12, 768, 12}, {"L", 24, 1024, 16}, {"XL", 28, 1152, 16}};
    char size[8];
    int patch;
    if (sscanf(name, "DiT-%7[A-Z]/%d", size, &patch) != 2 || (patch != 2 && patch != 4 && patch != 8)) {
        err_set("model '%s': expected DiT-S, -B, -L or -XL with /2, /4 or /8, e.g. DiT-XL/2", name);
        return -1;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        if (strcmp(size, sizes[i].size) != 0)
            continue;
        *cfg = (struct dit_config){
            .input_size = input_size, .patch_size = patch, .in_channels = 4,
            .hidden_size = sizes[i].hidden, .depth = sizes[i].depth, .num_heads = sizes[i].heads,
            .mlp_ratio = 4.0f, .num_classes = 1000, .class_dropout_prob = 0.1f, .learn_sigma = 1,
            .norm_eps = 1e-6f, .mlp_norm_eps = 1e-6f, .freq_shift = 0.0f,
        };
        return dit_config_check(cfg);
    }
    err_set("model '%s': unknown size '%s' (S, B, L or XL)", name, size);
    return -1;
}

int dit_config_check(const struct dit_config *c)
{
    if (c->input_size <= 0 || c->patch_size <= 0 || c->input_size % c->patch_size) {
        err_set("input size %d is not a positive multiple of the patch size %d", c->input_size,
                c->patch_size);
        return -1;
    }
    if (c->hidden_size <= 0 || c->num_heads <= 0 || c->hidden_size % c->num_heads) {
        err_set("hidden size %d is not a positive multiple of the %d heads", c->hidden_size,
                c->num_heads);
        return -1;
    }
    if (c->depth <= 0 || c->depth > DIT_MAX_DEPTH) {
        err_set("depth %d is outside 1..%d", c->depth, DIT_MAX_DEPTH);
        return -1;
    }
    if (c->in_channels <= 0 || c->num_classes <= 0 || c->mlp_ratio <= 0 ||
        dit_mlp_hidden(c) <= 0) {
        err_set("in_channels, num_classes and mlp_ratio must be positive");
        return -1;
    }
    if (c->class_dropout_prob < 0 || c->class_dropout_prob >= 1) {
        err_set("class dropout %g is outside [0, 1)", c->class_dropout_prob);
        return -1;
    }
    return 0;
}

int dit_param_table(const struct dit_config *c, struct nn_params *t, struct dit_layers *L)
{
    memset(t, 0, sizeof *t);
    if (L)
        memset(L, 0, sizeof *L);
    const int64_t C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int64_t CO = dit_out_channels(c), MH = dit_mlp_hidden(c);
    /* Every layer of the DiT, in buffer order; L may be NULL, and so may
     * each layer argument below then be. */
#define LAYER(field) (L ? &L->field : NULL)
    nn_linear_addf(LAYER(x_embed), t, 1, 4, (int64_t[]){C, CI, P, P}, "x_embedder.proj");
    nn_linear_addf(LAYER(t1), t, 1, 2, (int64_t[]){C, DIT_FREQ_DIM}, "t_embedder.mlp.0");
    nn_linear_addf(LAYER(t2), t, 1, 2, (int64_t[]){C, C}, "t_embedder.mlp.2");
    if (L)
        L->y_table_id = t->count;
    nn_params_add(t, "y_embedder.embedding_table.weight", 2, (int64_t[]){dit_table_rows(c), C});
    for (int i = 0; i < c->depth; i++) {
        nn_linear_addf(LAYER(blocks[i].qkv), t, 1, 2, (int64_t[]){3 * C, C}, "blocks.%d.attn.qkv", i);
        nn_linear_addf(LAYER(blocks[i].proj), t, 1, 2, (int64_t[]){C, C}, "blocks.%d.attn.proj", i);
        nn_linear_addf(LAYER(blocks[i].fc1), t, 1, 2, (int64_t[]){MH, C}, "blocks.%d.mlp.fc1", i);
        nn_linear_addf(LAYER(blocks[i].fc2), t, 1, 2, (int64_t[]){C, MH}, "blocks.%d.mlp.fc2", i);
        nn_linear_addf(LAYER(blocks[i].ada), t, 1, 2, (int64_t[]){6 * C, C},
                       "blocks.%d.adaLN_modulation.1", i);
    }
    nn_linear_addf(LAYER(f_ada), t, 1, 2, (int64_t[]){2 * C, C}, "final_layer.adaLN_modulation.1");
    nn_linear_addf(LAYER(f_out), t, 1, 2, (int64_t[]){P * P * CO, C}, "final_layer.linear");
#undef LAYER
    if (nn_params_done(t) != 0) {
        nn_params_free(t);
        return -1;
    }
    return 0;
}

int64_t dit_param_count(const struct dit_config *c)
{
    struct nn_params t;
    if (dit_param_table(c, &t, NULL) != 0)
        return -1;
    int64_t total = t.total;
    nn_params_free(&t);
    return total;
}

void dit_layers_bind(struct dit_layers *L, const struct dit_config *c, const struct nn_params *t,
                     struct tensor weights, struct tensor grads)
{
    nn_linear_bind(&L->x_embed, t, weights, grads);
    nn_linear_bind(&L->t1, t, weights, grads);
    nn_linear_bind(&L->t2, t, weights, grads);
    L->y_table = nn_params_view(t, weights, L->y_table_id);
    /* A frozen label table, like a frozen linear, gets no gradient. */
    L->dy_table = grads.data && t->p[L->y_table_id].trainable ? nn_params_view(t, grads, L->y_table_id)
                                                              : tensor_none();
    for (int i = 0; i < c->depth; i++) {
        struct dit_block_layers *b = &L->blocks[i];
        nn_linear_bind(&b->qkv, t, weights, grads);
        nn_linear_bind(&b->proj, t, weights, grads);
        nn_linear_bind(&b->fc1, t, weights, grads);
        nn_linear_bind(&b->fc2, t, weights, grads);
        nn_linear_bind(&b->ada, t, weights, grads);
    }
    nn_linear_bind(&L->f_ada, t, weights, grads);
    nn_linear_bind(&L->f_out, t, weights, grads);
}

/* Xavier uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)). */
static void xavier(const struct nn_linear *l, const struct rng_stream *s, uint64_t *off)
{
    float a = sqrtf(6.0f / (float)(l->out + l->in));
    int64_t n = (int64_t)l->out * l->in;
    float *w = l->weight.data;
    rng_uniform_f32(s, *off, (size_t)n, w);
    for (int64_t i = 0; i < n; i++)
        w[i] = (2.0f * w[i] - 1.0f) * a;
    *off += (uint64_t)n;
}

static void normal(struct tensor t, float std, const struct rng_stream *s, uint64_t *off)
{
    float *w = t.data;
    int64_t n = t.n;
    rng_normal_f32(s, *off, (size_t)n, w);
    for (int64_t i = 0; i < n; i++)
        w[i] *= std;
    *off += (uint64_t)n;
}

void dit_init(const struct dit_config *c, float *params, uint64_t seed)
{
    struct nn_params t;
    struct dit_layers *L = calloc(1, sizeof *L);
    if (!L || dit_param_table(c, &t, L) != 0)
        abort(); /* small next to the buffer the caller already holds */
    memset(params, 0, (size_t)t.total * sizeof *params);
    dit_layers_bind(L, c, &t, tensor_f32(params, t.total), tensor_none());
    /* Separate streams per use, so adding a layer does not shift the others. */
    struct rng_stream xs = rng_stream(seed, RNG_PARAM_INIT, 0, 0);
    struct rng_stream ns = rng_stream(seed, RNG_PARAM_INIT, 1, 0);
    uint64_t xo = 0, no = 0;
    /* DiT: the patch embedding is initialised like a Linear over its kernel. */
    xavier(&L->x_embed, &xs, &xo);
    normal(L->y_table, 0.02f, &ns, &no);
    normal(L->t1.weight, 0.02f, &ns, &no);
    normal(L->t2.weight, 0.02f, &ns, &no);
    for (int i = 0; i < c->depth; i++) {
        xavier(&L->blocks[i].qkv, &xs, &xo);
        xavier(&L->blocks[i].proj, &xs, &xo);
        xavier(&L->blocks[i].fc1, &xs, &xo);
        xavier(&L->blocks[i].fc2, &xs, &xo);
        /* adaLN_modulation stays zero: each block starts as the identity. */
    }
    /* The final layer's adaLN and linear stay zero too (adaLN-Zero). */
    free(L);
    nn_params_free(&t);
}

static void sincos_1d(double *out, int D, double pos)
{
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        double omega = 1.0 / pow(10000.0, (double)i / half);
        out[i] = sin(pos * omega);
        out[half + i] = cos(pos * omega);
    }
}

void dit_pos_embed(float *out, int C, int grid)
{
    /* For token (row r, column c): the first half encodes the column, the
     * second the row, as np.meshgrid(grid_w, grid_h) orders them in DiT. */
    double *tmp = malloc((size_t)C * sizeof *tmp);
    if (!tmp)
        abort();
    for (int r = 0; r < grid; r++)
        for (int col = 0; col < grid; col++) {
            float *o = out + ((int64_t)r * grid + col) * C;
            sincos_1d(tmp, C / 2, col);
            sincos_1d(tmp + C / 2, C / 2, r);
            for (int i = 0; i < C; i++)
                o[i] = (float)tmp[i];
        }
    free(tmp);
}
