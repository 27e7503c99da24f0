/* The T5 encoder's parameter table in transformers' names, and the match
 * of a safetensors set against it. The file may be an encoder-only save
 * (T5EncoderModel: shared.weight, or encoder.embed_tokens.weight when the
 * tie was saved the other way) or a whole T5 (T5ForConditionalGeneration,
 * the original checkpoints), whose decoder.* and lm_head.* the encoder
 * ignores as T5EncoderModel does (_keys_to_ignore_on_load_unexpected). */
#include "models/t5/t5.h"
#include "libcommon/error.h"
#include "libcommon/problems.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add(struct t5_params *t, enum t5_role role, int block, int64_t rows, int64_t cols, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(struct t5_params *t, enum t5_role role, int block, int64_t rows, int64_t cols, const char *fmt, ...)
{
    struct t5_param *p = &t->p[t->count++];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->role = role;
    p->block = block;
    p->ndim = cols ? 2 : 1;
    p->shape[0] = rows, p->shape[1] = cols;
    p->n = rows * (cols ? cols : 1);
}

int t5_param_table(const struct t5_config *c, struct t5_params *t)
{
    const int64_t C = c->d_model, I = (int64_t)c->num_heads * c->d_kv, F = c->d_ff;
    const size_t per_block = 9;
    memset(t, 0, sizeof *t);
    t->p = calloc(3 + per_block * (size_t)c->num_layers, sizeof *t->p);
    if (!t->p) {
        err_set("T5 parameter table: out of memory");
        return -1;
    }
    add(t, T5_EMBED, -1, c->vocab_size, C, "shared.weight");
    for (int b = 0; b < c->num_layers; b++) {
        const char *at = "encoder.block.%d.layer.0.SelfAttention", *ff = "encoder.block.%d.layer.1";
        char a[64], f[64];
        snprintf(a, sizeof a, at, b);
        snprintf(f, sizeof f, ff, b);
        add(t, T5_LN0, b, C, 0, "encoder.block.%d.layer.0.layer_norm.weight", b);
        add(t, T5_Q, b, I, C, "%s.q.weight", a);
        add(t, T5_K, b, I, C, "%s.k.weight", a);
        add(t, T5_V, b, I, C, "%s.v.weight", a);
        add(t, T5_O, b, C, I, "%s.o.weight", a);
        if (b == 0) /* has_relative_attention_bias: block 0 only */
            add(t, T5_REL_BIAS, -1, c->num_buckets, c->num_heads, "%s.relative_attention_bias.weight", a);
        add(t, T5_LN1, b, C, 0, "%s.layer_norm.weight", f);
        if (c->gated) {
            add(t, T5_WI0, b, F, C, "%s.DenseReluDense.wi_0.weight", f);
            add(t, T5_WI1, b, F, C, "%s.DenseReluDense.wi_1.weight", f);
        } else {
            add(t, T5_WI, b, F, C, "%s.DenseReluDense.wi.weight", f);
        }
        add(t, T5_WO, b, C, F, "%s.DenseReluDense.wo.weight", f);
    }
    add(t, T5_FINAL_LN, -1, C, 0, "encoder.final_layer_norm.weight");
    return 0;
}

void t5_params_free(struct t5_params *t)
{
    free(t->p);
    memset(t, 0, sizeof *t);
}

static int same_shape(const struct t5_param *p, const struct st_tensor *s)
{
    if (s->ndim != p->ndim)
        return 0;
    for (int k = 0; k < p->ndim; k++)
        if (s->shape[k] != p->shape[k])
            return 0;
    return 1;
}

static int known_name(const struct t5_params *t, const char *name)
{
    if (strcmp(name, "encoder.embed_tokens.weight") == 0)
        return 1;
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->p[i].name, name) == 0)
            return 1;
    return 0;
}

int t5_weights_find(const struct t5_params *t, const struct st_set *set, const struct st_tensor **src)
{
    struct problems probs = {0};
#define PROBLEM(...) problems_add(&probs, __VA_ARGS__)
    for (size_t i = 0; i < t->count; i++) {
        const struct t5_param *p = &t->p[i];
        const char *name = p->name;
        const struct st_tensor *s = st_set_find(set, name, NULL);
        if (!s && p->role == T5_EMBED) {
            name = "encoder.embed_tokens.weight";
            s = st_set_find(set, name, NULL);
        }
        src[i] = s;
        if (!s) {
            if (p->role == T5_EMBED)
                PROBLEM("tensor shared.weight (or encoder.embed_tokens.weight) is missing");
            else
                PROBLEM("tensor %s is missing", name);
            continue;
        }
        if (!same_shape(p, s)) {
            char want[64], got[64];
            st_shape_text(want, sizeof want, p->ndim, p->shape);
            st_shape_text(got, sizeof got, s->ndim, s->shape);
            PROBLEM("tensor %s has shape %s, the config needs %s", name, got, want);
        } else if (s->dtype != ST_F32 && s->dtype != ST_BF16 && s->dtype != ST_F16) {
            PROBLEM("tensor %s is %s; weights must be F32, BF16 or F16", name, st_dtype_name(s->dtype));
        }
    }
    /* An encoder tensor the table lacks: a config of fewer layers than the
     * file, or another network. */
    for (size_t i = 0; probs.count == 0 && i < set->n_tensors; i++) {
        const char *name = st_set_tensor(set, i, NULL)->name;
        if (strncmp(name, "encoder.", 8) == 0 && !known_name(t, name))
            PROBLEM("unexpected tensor %s (the config describes a different network)", name);
    }
#undef PROBLEM
    return problems_report(&probs, set->path);
}
