/* T5 configs: transformers' config.json read as T5Config reads it (its
 * defaults for absent keys), checked against what the encoder implements,
 * and its canonical text; the hidden-state index and the relative position
 * buckets. */
#include "models/t5/t5.h"
#include "libcommon/error.h"
#include "libcommon/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int t5_config_check(const struct t5_config *c, const char *where)
{
    if (c->vocab_size <= 0 || c->d_model <= 0 || c->d_kv <= 0 || c->d_ff <= 0 || c->num_heads <= 0 ||
        c->num_layers <= 0 || c->num_buckets <= 0 || c->max_distance <= 0) {
        err_set("%s: vocab_size %d, d_model %d, d_kv %d, d_ff %d, num_heads %d, num_layers %d, "
                "relative_attention_num_buckets %d and relative_attention_max_distance %d must be positive",
                where, c->vocab_size, c->d_model, c->d_kv, c->d_ff, c->num_heads, c->num_layers, c->num_buckets,
                c->max_distance);
        return -1;
    }
    if (c->num_layers > T5_MAX_LAYERS) {
        err_set("%s: num_layers %d; at most %d are supported", where, c->num_layers, T5_MAX_LAYERS);
        return -1;
    }
    /* Kernel arguments are int: the widest row, 2 d_ff or 4 inner, must fit. */
    if ((int64_t)c->num_heads * c->d_kv > (1 << 24) || c->d_ff > (1 << 24) || c->d_model > (1 << 24)) {
        err_set("%s: d_model %d, d_ff %d or num_heads x d_kv %lld is too large", where, c->d_model, c->d_ff,
                (long long)c->num_heads * c->d_kv);
        return -1;
    }
    /* The buckets need an exact part (num_buckets / 4 > 0) and a logarithmic
     * part that grows (max_distance above it); torch gives garbage otherwise. */
    if (c->num_buckets < 4 || c->max_distance <= c->num_buckets / 4) {
        err_set("%s: relative_attention_num_buckets %d must be at least 4 and relative_attention_max_distance %d "
                "above a quarter of it",
                where, c->num_buckets, c->max_distance);
        return -1;
    }
    if (!(c->eps > 0) || !isfinite(c->eps)) {
        err_set("%s: layer_norm_epsilon %g must be positive", where, c->eps);
        return -1;
    }
    return 0;
}

void t5_config_text(const struct t5_config *c, char *buf, size_t size)
{
    snprintf(buf, size,
             "T5Encoder vocab=%d d_model=%d d_kv=%d d_ff=%d heads=%d layers=%d buckets=%d max_distance=%d "
             "eps=%.9g ff=%s",
             c->vocab_size, c->d_model, c->d_kv, c->d_ff, c->num_heads, c->num_layers, c->num_buckets,
             c->max_distance, c->eps, c->gated ? "gated-gelu_new" : "gelu_new");
}

int t5_layer_index(const struct t5_config *c, int layer, int *index)
{
    const int n = c->num_layers + 1; /* the tuple: embeddings, then one per block */
    if (layer < -n || layer >= n) {
        err_set("T5 layer %d: the encoder has %d hidden states (layer 0 .. %d, or -%d .. -1)", layer, n, n - 1, n);
        return -1;
    }
    *index = layer < 0 ? layer + n : layer;
    return 0;
}

/* With half = num_buckets / 2 per direction and exact = half / 2: distances
 * below exact have a bucket each; farther ones share logarithmic buckets
 * up to max_distance, and every distance beyond shares the last. torch
 * computes the logarithmic part in float32 (log of a float tensor, divided
 * by the double math.log(max_distance / exact) and multiplied by an int,
 * each rounded to float32, then truncated), so this does the same. */
int t5_relative_bucket(int rel, int num_buckets, int max_distance)
{
    const int half = num_buckets / 2, exact = half / 2;
    int bucket = rel > 0 ? half : 0;
    const int n = rel < 0 ? -rel : rel;
    if (n < exact)
        return bucket + n;
    const float ratio = (float)n / (float)exact;
    const float scaled = (float)((float)(logf(ratio) / (float)log((double)max_distance / exact)) * (float)(half - exact));
    int large = exact + (int)scaled;
    if (large > half - 1)
        large = half - 1;
    return bucket + large;
}

static int bad_value(json_t *v, const char *key, const char *expected, const char *path)
{
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    err_set("%s: key \"%s\" is %s; expected %s", path, key, t ? t : "?", expected);
    free(t);
    return -1;
}

/* A positive integer key, def when absent or null. */
static int get_int(json_t *root, const char *key, int def, int *out, const char *path)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 24))
        return bad_value(v, key, "a positive integer", path);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *root, const char *key, float def, float *out, const char *path)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return bad_value(v, key, "a number", path);
    *out = (float)json_number_value(v);
    return 0;
}

/* The activations T5's feed-forward may name that are the tanh GELU
 * (ACT2FN: NewGELUActivation, GELUTanh). */
static int is_tanh_gelu(const char *act)
{
    return strcmp(act, "gelu_new") == 0 || strcmp(act, "gelu_pytorch_tanh") == 0;
}

/* feed_forward_proj as T5Config.__post_init__ splits it: "gated-ACT" or
 * "ACT", with "gated-gelu" meaning gelu_new for backward compatibility;
 * then dense_act_fn and is_gated_act from the file override those (the
 * saved keys reach the config after __post_init__ sets them). */
static int read_ff(json_t *root, struct t5_config *c, const char *path)
{
    json_t *v = json_object_get(root, "feed_forward_proj");
    const char *ff = v ? json_string_value(v) : "relu"; /* T5Config's default */
    if (!ff)
        return bad_value(v, "feed_forward_proj", "a string", path);
    const char *dash = strchr(ff, '-');
    char act[64];
    int gated = 0;
    if (dash && strncmp(ff, "gated-", 6) == 0 && !strchr(dash + 1, '-')) {
        gated = 1;
        snprintf(act, sizeof act, "%s", strcmp(ff, "gated-gelu") == 0 ? "gelu_new" : dash + 1);
    } else if (!dash) {
        snprintf(act, sizeof act, "%s", ff);
    } else {
        err_set("%s: key \"feed_forward_proj\" is \"%s\"; expected \"gated-ACT\" or \"ACT\"", path, ff);
        return -1;
    }
    json_t *a = json_object_get(root, "dense_act_fn"), *g = json_object_get(root, "is_gated_act");
    if (a && !json_is_null(a)) {
        if (!json_is_string(a))
            return bad_value(a, "dense_act_fn", "a string", path);
        snprintf(act, sizeof act, "%s", json_string_value(a));
    }
    if (g && !json_is_null(g)) {
        if (!json_is_boolean(g))
            return bad_value(g, "is_gated_act", "true or false", path);
        gated = json_is_true(g);
    }
    if (!is_tanh_gelu(act)) {
        const char *key = a && !json_is_null(a) ? "dense_act_fn" : "feed_forward_proj";
        err_set("%s: key \"%s\" is \"%s\" (activation %s); only the tanh GELU of T5 v1.1 (gated-gelu, "
                "gated-gelu_new, gelu_new, gelu_pytorch_tanh) is implemented, not the original T5's relu or "
                "another activation",
                path, key, key[0] == 'd' ? act : ff, act);
        return -1;
    }
    c->gated = gated;
    return 0;
}

int t5_config_read(struct t5_config *c, const char *path)
{
    memset(c, 0, sizeof *c);
    json_t *root = json_read_file(path);
    if (!root)
        return -1;
    int rc = -1;
    if (!json_is_object(root)) {
        err_set("%s: not a JSON object", path);
        goto out;
    }
    json_t *mt = json_object_get(root, "model_type");
    if (mt && (!json_is_string(mt) || strcmp(json_string_value(mt), "t5") != 0)) {
        bad_value(mt, "model_type", "\"t5\" (other T5 variants such as umt5 differ in their layers)", path);
        goto out;
    }
    json_t *dec = json_object_get(root, "is_decoder");
    if (dec && !json_is_false(dec) && !json_is_null(dec)) {
        bad_value(dec, "is_decoder", "false (this is the encoder: a decoder's attention is causal)", path);
        goto out;
    }
    /* T5Config's defaults (t5-small) for absent keys. */
    if (get_int(root, "vocab_size", 32128, &c->vocab_size, path) ||
        get_int(root, "d_model", 512, &c->d_model, path) || get_int(root, "d_kv", 64, &c->d_kv, path) ||
        get_int(root, "d_ff", 2048, &c->d_ff, path) || get_int(root, "num_layers", 6, &c->num_layers, path) ||
        get_int(root, "num_heads", 8, &c->num_heads, path) ||
        get_int(root, "relative_attention_num_buckets", 32, &c->num_buckets, path) ||
        get_int(root, "relative_attention_max_distance", 128, &c->max_distance, path) ||
        get_float(root, "layer_norm_epsilon", 1e-6f, &c->eps, path) || read_ff(root, c, path))
        goto out;
    rc = t5_config_check(c, path);
out:
    json_decref(root);
    return rc;
}
