/* DiT configurations, the parameter table and the initialisation. */
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

struct table_builder {
    struct dit_param *p;
    size_t n, cap;
    int64_t offset;
    int failed;
};

static void add(struct table_builder *tb, const char *name, int ndim, int64_t d0, int64_t d1,
                int64_t d2, int64_t d3)
{
    if (tb->n == tb->cap) {
        tb->cap = tb->cap ? tb->cap * 2 : 64;
        struct dit_param *g = realloc(tb->p, tb->cap * sizeof *g);
        if (!g) {
            tb->failed = 1;
            return;
        }
        tb->p = g;
    }
    struct dit_param *q = &tb->p[tb->n++];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->ndim = ndim;
    int64_t dims[4] = {d0, d1, d2, d3};
    q->n = 1;
    for (int i = 0; i < ndim; i++) {
        q->shape[i] = dims[i];
        q->n *= dims[i];
    }
    q->offset = tb->offset;
    tb->offset += q->n;
}

struct dit_param *dit_param_table(const struct dit_config *c, size_t *count)
{
    struct table_builder tb = {0};
    const int64_t C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int64_t CO = dit_out_channels(c), MH = dit_mlp_hidden(c);
    char name[96];
    add(&tb, "x_embedder.proj.weight", 4, C, CI, P, P);
    add(&tb, "x_embedder.proj.bias", 1, C, 0, 0, 0);
    add(&tb, "t_embedder.mlp.0.weight", 2, C, DIT_FREQ_DIM, 0, 0);
    add(&tb, "t_embedder.mlp.0.bias", 1, C, 0, 0, 0);
    add(&tb, "t_embedder.mlp.2.weight", 2, C, C, 0, 0);
    add(&tb, "t_embedder.mlp.2.bias", 1, C, 0, 0, 0);
    add(&tb, "y_embedder.embedding_table.weight", 2, dit_table_rows(c), C, 0, 0);
    for (int i = 0; i < c->depth; i++) {
        static const struct {
            const char *suffix;
            int rows; /* in units: 1 = C, 3 = 3C, -1 = MH, 6 = 6C */
            int cols; /* 1 = C, -1 = MH, 0 = bias */
        } layers[] = {
            {"attn.qkv.weight", 3, 1},  {"attn.qkv.bias", 3, 0},   {"attn.proj.weight", 1, 1},
            {"attn.proj.bias", 1, 0},   {"mlp.fc1.weight", -1, 1}, {"mlp.fc1.bias", -1, 0},
            {"mlp.fc2.weight", 1, -1},  {"mlp.fc2.bias", 1, 0},    {"adaLN_modulation.1.weight", 6, 1},
            {"adaLN_modulation.1.bias", 6, 0},
        };
        for (size_t k = 0; k < sizeof layers / sizeof layers[0]; k++) {
            int64_t rows = layers[k].rows < 0 ? MH : layers[k].rows * C;
            int64_t cols = layers[k].cols < 0 ? MH : C;
            snprintf(name, sizeof name, "blocks.%d.%s", i, layers[k].suffix);
            if (layers[k].cols == 0)
                add(&tb, name, 1, rows, 0, 0, 0);
            else
                add(&tb, name, 2, rows, cols, 0, 0);
        }
    }
    add(&tb, "final_layer.adaLN_modulation.1.weight", 2, 2 * C, C, 0, 0);
    add(&tb, "final_layer.adaLN_modulation.1.bias", 1, 2 * C, 0, 0, 0);
    add(&tb, "final_layer.linear.weight", 2, P * P * CO, C, 0, 0);
    add(&tb, "final_layer.linear.bias", 1, P * P * CO, 0, 0, 0);
    if (tb.failed) {
        free(tb.p);
        err_set("out of memory");
        return NULL;
    }
    *count = tb.n;
    return tb.p;
}

int64_t dit_param_count(const struct dit_config *c)
{
    size_t n;
    struct dit_param *t = dit_param_table(c, &n);
    int64_t total = t ? t[n - 1].offset + t[n - 1].n : -1;
    free(t);
    return total;
}

void dit_params_view(const struct dit_config *c, struct tensor buf, struct dit_params *v)
{
    const int64_t C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int64_t CO = dit_out_channels(c), MH = dit_mlp_hidden(c);
    int64_t off = 0;
#define TAKE(field, count) (v->field = tensor_view(buf, off, (count)), off += (count))
    TAKE(x_w, C * CI * P * P);
    TAKE(x_b, C);
    TAKE(t1_w, C * DIT_FREQ_DIM);
    TAKE(t1_b, C);
    TAKE(t2_w, C * C);
    TAKE(t2_b, C);
    TAKE(y_table, (int64_t)dit_table_rows(c) * C);
    for (int i = 0; i < c->depth; i++) {
        TAKE(blocks[i].qkv_w, 3 * C * C);
        TAKE(blocks[i].qkv_b, 3 * C);
        TAKE(blocks[i].proj_w, C * C);
        TAKE(blocks[i].proj_b, C);
        TAKE(blocks[i].fc1_w, MH * C);
        TAKE(blocks[i].fc1_b, MH);
        TAKE(blocks[i].fc2_w, C * MH);
        TAKE(blocks[i].fc2_b, C);
        TAKE(blocks[i].ada_w, 6 * C * C);
        TAKE(blocks[i].ada_b, 6 * C);
    }
    TAKE(f_ada_w, 2 * C * C);
    TAKE(f_ada_b, 2 * C);
    TAKE(f_w, P * P * CO * C);
    TAKE(f_b, P * P * CO);
#undef TAKE
}

/* Xavier uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)). */
static void xavier(float *w, int64_t rows, int64_t cols, const struct rng_stream *s, uint64_t *off)
{
    float a = sqrtf(6.0f / (float)(rows + cols));
    int64_t n = rows * cols;
    rng_uniform_f32(s, *off, (size_t)n, w);
    for (int64_t i = 0; i < n; i++)
        w[i] = (2.0f * w[i] - 1.0f) * a;
    *off += (uint64_t)n;
}

static void normal(float *w, int64_t n, float std, const struct rng_stream *s, uint64_t *off)
{
    rng_normal_f32(s, *off, (size_t)n, w);
    for (int64_t i = 0; i < n; i++)
        w[i] *= std;
    *off += (uint64_t)n;
}

void dit_init(const struct dit_config *c, float *params, uint64_t seed)
{
    const int64_t C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int64_t MH = dit_mlp_hidden(c);
    memset(params, 0, (size_t)dit_param_count(c) * sizeof *params);
    struct dit_params v;
    dit_params_view(c, tensor_f32(params, dit_param_count(c)), &v);
    /* Separate streams per use, so adding a layer does not shift the others. */
    struct rng_stream xs = rng_stream(seed, RNG_PARAM_INIT, 0, 0);
    struct rng_stream ns = rng_stream(seed, RNG_PARAM_INIT, 1, 0);
    uint64_t xo = 0, no = 0;
    /* DiT: the patch embedding is initialised like a Linear over its kernel. */
    xavier((float *)v.x_w.data, C, CI * P * P, &xs, &xo);
    normal((float *)v.y_table.data, (int64_t)dit_table_rows(c) * C, 0.02f, &ns, &no);
    normal((float *)v.t1_w.data, C * DIT_FREQ_DIM, 0.02f, &ns, &no);
    normal((float *)v.t2_w.data, C * C, 0.02f, &ns, &no);
    for (int i = 0; i < c->depth; i++) {
        xavier((float *)v.blocks[i].qkv_w.data, 3 * C, C, &xs, &xo);
        xavier((float *)v.blocks[i].proj_w.data, C, C, &xs, &xo);
        xavier((float *)v.blocks[i].fc1_w.data, MH, C, &xs, &xo);
        xavier((float *)v.blocks[i].fc2_w.data, C, MH, &xs, &xo);
        /* adaLN_modulation stays zero: each block starts as the identity. */
    }
    /* The final layer's adaLN and linear stay zero too (adaLN-Zero). */
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
