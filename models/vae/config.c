/* AutoencoderKL configs: diffusers' config.json, checked against what the
 * forward implements, and its canonical text. */
#include "models/vae/vae.h"
#include "libcommon/error.h"
#include "libcommon/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vae_factor(const struct vae_config *c)
{
    return 1 << (c->n_blocks - 1);
}

int vae_config_check(const struct vae_config *c, const char *where)
{
    if (c->n_blocks < 1 || c->n_blocks > VAE_MAX_BLOCKS) {
        err_set("%s: block_out_channels has %d entries; 1..%d are supported", where, c->n_blocks, VAE_MAX_BLOCKS);
        return -1;
    }
    if (c->in_channels <= 0 || c->out_channels <= 0 || c->latent_channels <= 0 || c->layers_per_block <= 0 ||
        c->norm_num_groups <= 0) {
        err_set("%s: in_channels %d, out_channels %d, latent_channels %d, layers_per_block %d and "
                "norm_num_groups %d must be positive",
                where, c->in_channels, c->out_channels, c->latent_channels, c->layers_per_block, c->norm_num_groups);
        return -1;
    }
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out_channels[i] <= 0 || c->block_out_channels[i] % c->norm_num_groups) {
            err_set("%s: block_out_channels[%d] = %d is not a positive multiple of norm_num_groups %d", where, i,
                    c->block_out_channels[i], c->norm_num_groups);
            return -1;
        }
    if (!(c->scaling_factor > 0)) {
        err_set("%s: scaling_factor %g must be positive", where, c->scaling_factor);
        return -1;
    }
    return 0;
}

void vae_config_text(const struct vae_config *c, char *buf, size_t size)
{
    size_t n = (size_t)snprintf(buf, size, "AutoencoderKL in=%d out=%d latent=%d blocks=[", c->in_channels,
                                c->out_channels, c->latent_channels);
    for (int i = 0; i < c->n_blocks && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%d", i ? "," : "", c->block_out_channels[i]);
    if (n < size)
        snprintf(buf + n, size - n, "] layers=%d groups=%d quant=%d post_quant=%d mid_attn=%d scale=%.9g shift=%.9g",
                 c->layers_per_block, c->norm_num_groups, c->use_quant_conv, c->use_post_quant_conv,
                 c->mid_block_add_attention, c->scaling_factor, c->shift_factor);
}

/* An integer key, def when absent; -1 naming the file and key otherwise. */
static int get_int(json_t *root, const char *key, int def, int *out, const char *path)
{
    json_t *v = json_object_get(root, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 24)) {
        char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        err_set("%s: key \"%s\" is %s; expected a non-negative integer", path, key, t ? t : "?");
        free(t);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_bool(json_t *root, const char *key, int def, int *out, const char *path)
{
    json_t *v = json_object_get(root, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) {
        char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        err_set("%s: key \"%s\" is %s; expected true or false", path, key, t ? t : "?");
        free(t);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

/* A number; null (FLUX writes shift_factor: null for "none") and absence give def. */
static int get_float(json_t *root, const char *key, float def, float *out, const char *path)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) {
        char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        err_set("%s: key \"%s\" is %s; expected a number", path, key, t ? t : "?");
        free(t);
        return -1;
    }
    *out = (float)json_number_value(v);
    return 0;
}

/* Every entry of a string list must be want (the only block kind built). */
static int check_blocks(json_t *root, const char *key, const char *want, int n, const char *path)
{
    json_t *v = json_object_get(root, key);
    if (!v)
        return 0; /* diffusers' default: n blocks of want */
    if (!json_is_array(v) || (int)json_array_size(v) != n) {
        err_set("%s: key \"%s\" must list %d block types, one per block_out_channels entry", path, key, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, (size_t)i));
        if (!s || strcmp(s, want) != 0) {
            err_set("%s: key \"%s\"[%d] is \"%s\"; only %s is supported", path, key, i, s ? s : "(not a string)",
                    want);
            return -1;
        }
    }
    return 0;
}

int vae_config_read(struct vae_config *c, const char *path)
{
    memset(c, 0, sizeof *c);
    json_t *root = json_read_file(path);
    if (!root)
        return -1;
    int rc = -1;
    const char *cls = json_string_value(json_object_get(root, "_class_name"));
    if (!json_is_object(root)) {
        err_set("%s: not a JSON object", path);
        goto out;
    }
    if (cls && strcmp(cls, VAE_DIFFUSERS_CLASS) != 0) {
        err_set("%s: key \"_class_name\" is \"%s\"; expected %s", path, cls, VAE_DIFFUSERS_CLASS);
        goto out;
    }
    json_t *boc = json_object_get(root, "block_out_channels");
    if (!boc) { /* diffusers' default */
        c->n_blocks = 1;
        c->block_out_channels[0] = 64;
    } else if (!json_is_array(boc) || json_array_size(boc) < 1 || json_array_size(boc) > VAE_MAX_BLOCKS) {
        err_set("%s: key \"block_out_channels\" must be a list of 1..%d integers", path, VAE_MAX_BLOCKS);
        goto out;
    } else {
        c->n_blocks = (int)json_array_size(boc);
        for (int i = 0; i < c->n_blocks; i++) {
            json_t *e = json_array_get(boc, (size_t)i);
            if (!json_is_integer(e) || json_integer_value(e) <= 0 || json_integer_value(e) > (1 << 16)) {
                err_set("%s: key \"block_out_channels\"[%d] is not a positive integer", path, i);
                goto out;
            }
            c->block_out_channels[i] = (int)json_integer_value(e);
        }
    }
    const char *act = json_string_value(json_object_get(root, "act_fn"));
    if (json_object_get(root, "act_fn") && (!act || strcmp(act, "silu") != 0)) {
        err_set("%s: key \"act_fn\" is \"%s\"; only silu is supported", path, act ? act : "(not a string)");
        goto out;
    }
    if (check_blocks(root, "down_block_types", "DownEncoderBlock2D", c->n_blocks, path) != 0 ||
        check_blocks(root, "up_block_types", "UpDecoderBlock2D", c->n_blocks, path) != 0)
        goto out;
    /* Keys of AutoencoderKL.__init__ whose other values change the network. */
    json_t *lo = json_object_get(root, "latents_mean"), *ls = json_object_get(root, "latents_std");
    if ((lo && !json_is_null(lo)) || (ls && !json_is_null(ls))) {
        err_set("%s: keys \"latents_mean\"/\"latents_std\" are set; per-channel latent statistics are not supported",
                path);
        goto out;
    }
    if (get_int(root, "in_channels", 3, &c->in_channels, path) || get_int(root, "out_channels", 3, &c->out_channels, path) ||
        get_int(root, "latent_channels", 4, &c->latent_channels, path) ||
        get_int(root, "layers_per_block", 1, &c->layers_per_block, path) ||
        get_int(root, "norm_num_groups", 32, &c->norm_num_groups, path) ||
        get_int(root, "sample_size", 32, &c->sample_size, path) ||
        get_bool(root, "use_quant_conv", 1, &c->use_quant_conv, path) ||
        get_bool(root, "use_post_quant_conv", 1, &c->use_post_quant_conv, path) ||
        get_bool(root, "mid_block_add_attention", 1, &c->mid_block_add_attention, path) ||
        get_float(root, "scaling_factor", 0.18215f, &c->scaling_factor, path) ||
        get_float(root, "shift_factor", 0.0f, &c->shift_factor, path))
        goto out;
    rc = vae_config_check(c, path);
out:
    json_decref(root);
    return rc;
}
