/* The AutoencoderKL parameter table (written once, in forward order) with
 * each tensor's name in the three layouts it ships in, and the one loader
 * for all of them (diffusers' single_file_utils.py gives the ldm mapping:
 * down.i.block.j, mid.block_1/attn_1/block_2, nin_shortcut, norm_out, and
 * the decoder's up blocks numbered from the lowest resolution, so diffusers'
 * up_blocks.i is ldm's up.(n-1-i)). */
#include "models/vae/vae.h"
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/problems.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add(struct vae_params *t, int linear, int ndim, const int64_t *shape, const char *name,
               const char *ldm, const char *legacy)
{
    if (t->count == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 128;
        struct vae_param *p = realloc(t->p, cap * sizeof *p);
        if (!p) {
            err_set("VAE parameter table: out of memory");
            return -1;
        }
        t->p = p, t->cap = cap;
    }
    struct vae_param *p = &t->p[t->count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->ldm, sizeof p->ldm, "%s", ldm);
    snprintf(p->legacy, sizeof p->legacy, "%s", legacy ? legacy : name);
    p->ndim = ndim;
    p->n = 1;
    for (int i = 0; i < ndim; i++)
        p->shape[i] = shape[i], p->n *= shape[i];
    p->offset = t->total;
    p->linear = linear;
    t->total += p->n;
    return 0;
}

/* NAME.weight and NAME.bias of a Conv2d [oc, c, k, k]. */
static int conv(struct vae_params *t, const char *d, const char *l, int64_t oc, int64_t c, int64_t k)
{
    char dn[96], ln[96], db[96], lb[96];
    snprintf(dn, sizeof dn, "%s.weight", d), snprintf(ln, sizeof ln, "%s.weight", l);
    snprintf(db, sizeof db, "%s.bias", d), snprintf(lb, sizeof lb, "%s.bias", l);
    return add(t, 0, 4, (int64_t[]){oc, c, k, k}, dn, ln, NULL) || add(t, 0, 1, (int64_t[]){oc}, db, lb, NULL);
}

static int norm(struct vae_params *t, const char *d, const char *l, int64_t c)
{
    char dn[96], ln[96], db[96], lb[96];
    snprintf(dn, sizeof dn, "%s.weight", d), snprintf(ln, sizeof ln, "%s.weight", l);
    snprintf(db, sizeof db, "%s.bias", d), snprintf(lb, sizeof lb, "%s.bias", l);
    return add(t, 0, 1, (int64_t[]){c}, dn, ln, NULL) || add(t, 0, 1, (int64_t[]){c}, db, lb, NULL);
}

static int resnet(struct vae_params *t, const char *d, const char *l, int64_t cin, int64_t cout)
{
    char dn[96], ln[96];
#define SUB(ds, ls) (snprintf(dn, sizeof dn, "%s.%s", d, ds), snprintf(ln, sizeof ln, "%s.%s", l, ls))
    int rc = (SUB("norm1", "norm1"), norm(t, dn, ln, cin)) || (SUB("conv1", "conv1"), conv(t, dn, ln, cout, cin, 3)) ||
             (SUB("norm2", "norm2"), norm(t, dn, ln, cout)) || (SUB("conv2", "conv2"), conv(t, dn, ln, cout, cout, 3));
    if (!rc && cin != cout)
        rc = (SUB("conv_shortcut", "nin_shortcut"), conv(t, dn, ln, cout, cin, 1));
#undef SUB
    return rc;
}

/* The mid-block attention: q, k, v weights stored consecutively, then
 * their biases, so that they are one fused [3C, C] Linear and its [3C] bias. */
static int attention(struct vae_params *t, const char *d, const char *l, int64_t c)
{
    static const char *const dn[] = {"to_q", "to_k", "to_v"}, *const ln[] = {"q", "k", "v"},
                             *const gn[] = {"query", "key", "value"}, *const part[] = {"weight", "bias"};
    char a[96], b[96], g[96];
    snprintf(a, sizeof a, "%s.group_norm", d), snprintf(b, sizeof b, "%s.norm", l);
    if (norm(t, a, b, c))
        return -1;
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 3; i++) {
            snprintf(a, sizeof a, "%s.%s.%s", d, dn[i], part[p]);
            snprintf(b, sizeof b, "%s.%s.%s", l, ln[i], part[p]);
            snprintf(g, sizeof g, "%s.%s.%s", d, gn[i], part[p]);
            if (add(t, p == 0, p == 0 ? 2 : 1, (int64_t[]){c, c}, a, b, g))
                return -1;
        }
    for (int p = 0; p < 2; p++) {
        snprintf(a, sizeof a, "%s.to_out.0.%s", d, part[p]);
        snprintf(b, sizeof b, "%s.proj_out.%s", l, part[p]);
        snprintf(g, sizeof g, "%s.proj_attn.%s", d, part[p]);
        if (add(t, p == 0, p == 0 ? 2 : 1, (int64_t[]){c, c}, a, b, g))
            return -1;
    }
    return 0;
}

static int mid_block(struct vae_params *t, const struct vae_config *c, const char *side)
{
    const int64_t C = c->block_out_channels[c->n_blocks - 1];
    char d[96], l[96];
    snprintf(d, sizeof d, "%s.mid_block.resnets.0", side), snprintf(l, sizeof l, "%s.mid.block_1", side);
    if (resnet(t, d, l, C, C))
        return -1;
    if (c->mid_block_add_attention) {
        snprintf(d, sizeof d, "%s.mid_block.attentions.0", side), snprintf(l, sizeof l, "%s.mid.attn_1", side);
        if (attention(t, d, l, C))
            return -1;
    }
    snprintf(d, sizeof d, "%s.mid_block.resnets.1", side), snprintf(l, sizeof l, "%s.mid.block_2", side);
    return resnet(t, d, l, C, C);
}

int vae_param_table(const struct vae_config *c, struct vae_params *t)
{
    memset(t, 0, sizeof *t);
    const int n = c->n_blocks, L = c->latent_channels;
    const int *C = c->block_out_channels;
    char d[96], l[96];
    int rc = conv(t, "encoder.conv_in", "encoder.conv_in", C[0], c->in_channels, 3);
    for (int i = 0, cin = C[0]; !rc && i < n; i++) {
        for (int j = 0; !rc && j < c->layers_per_block; j++) {
            snprintf(d, sizeof d, "encoder.down_blocks.%d.resnets.%d", i, j);
            snprintf(l, sizeof l, "encoder.down.%d.block.%d", i, j);
            rc = resnet(t, d, l, cin, C[i]);
            cin = C[i];
        }
        if (!rc && i < n - 1) {
            snprintf(d, sizeof d, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            snprintf(l, sizeof l, "encoder.down.%d.downsample.conv", i);
            rc = conv(t, d, l, C[i], C[i], 3);
        }
    }
    rc = rc || mid_block(t, c, "encoder") || norm(t, "encoder.conv_norm_out", "encoder.norm_out", C[n - 1]) ||
         conv(t, "encoder.conv_out", "encoder.conv_out", 2 * L, C[n - 1], 3);
    if (!rc && c->use_quant_conv)
        rc = conv(t, "quant_conv", "quant_conv", 2 * L, 2 * L, 1);
    if (!rc && c->use_post_quant_conv)
        rc = conv(t, "post_quant_conv", "post_quant_conv", L, L, 1);
    rc = rc || conv(t, "decoder.conv_in", "decoder.conv_in", C[n - 1], L, 3) || mid_block(t, c, "decoder");
    for (int i = 0, cin = C[n - 1]; !rc && i < n; i++) {
        const int cout = C[n - 1 - i];
        for (int j = 0; !rc && j < c->layers_per_block + 1; j++) {
            snprintf(d, sizeof d, "decoder.up_blocks.%d.resnets.%d", i, j);
            snprintf(l, sizeof l, "decoder.up.%d.block.%d", n - 1 - i, j);
            rc = resnet(t, d, l, cin, cout);
            cin = cout;
        }
        if (!rc && i < n - 1) {
            snprintf(d, sizeof d, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            snprintf(l, sizeof l, "decoder.up.%d.upsample.conv", n - 1 - i);
            rc = conv(t, d, l, cout, cout, 3);
        }
    }
    rc = rc || norm(t, "decoder.conv_norm_out", "decoder.norm_out", C[0]) ||
         conv(t, "decoder.conv_out", "decoder.conv_out", c->out_channels, C[0], 3);
    if (rc)
        vae_params_free(t);
    return rc ? -1 : 0;
}

void vae_params_free(struct vae_params *t)
{
    free(t->p);
    memset(t, 0, sizeof *t);
}

const struct vae_param *vae_params_find(const struct vae_params *t, const char *name)
{
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->p[i].name, name) == 0)
            return &t->p[i];
    return NULL;
}

static const char *const prefixes[] = {"", "first_stage_model.", "vae."};

static const struct st_tensor *find(const struct st_set *set, const char *prefix, const char *name)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return st_set_find(set, full, NULL);
}

int vae_weights_layout(const struct st_set *set, enum vae_layout *layout, const char **prefix)
{
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        const char *p = prefixes[i];
        if (!find(set, p, "encoder.conv_in.weight"))
            continue;
        *prefix = p;
        if (find(set, p, "encoder.down.0.block.0.norm1.weight"))
            *layout = VAE_LAYOUT_LDM;
        else if (find(set, p, "encoder.mid_block.attentions.0.query.weight"))
            *layout = VAE_LAYOUT_LEGACY_ATTN;
        else
            *layout = VAE_LAYOUT_DIFFUSERS;
        return 0;
    }
    err_set("%s: no encoder.conv_in.weight (nor with a first_stage_model. or vae. prefix): not an AutoencoderKL",
            set->path);
    return -1;
}

static const char *layout_name(const struct vae_param *p, enum vae_layout layout)
{
    return layout == VAE_LAYOUT_LDM ? p->ldm : layout == VAE_LAYOUT_LEGACY_ATTN ? p->legacy : p->name;
}

/* The file's shape is the table's, or for a Linear weight the same with
 * trailing 1x1 (ldm stores the attention projections as 1x1 convs). */
static int same_shape(const struct vae_param *p, const struct st_tensor *t)
{
    int nd = t->ndim;
    if (p->linear && nd == 4 && t->shape[2] == 1 && t->shape[3] == 1)
        nd = 2;
    if (nd != p->ndim)
        return 0;
    for (int k = 0; k < nd; k++)
        if (t->shape[k] != p->shape[k])
            return 0;
    return 1;
}


/* Whether a tensor of the file is one the VAE should explain: with a prefix
 * only the prefixed ones (an SD checkpoint holds the UNet too); an ldm file
 * may also carry training leftovers outside the network (loss.*, model_ema.*). */
static int is_vae_tensor(const char *name, const char *prefix, enum vae_layout layout)
{
    size_t n = strlen(prefix);
    if (strncmp(name, prefix, n) != 0)
        return 0;
    name += n;
    if (layout != VAE_LAYOUT_LDM)
        return 1;
    return strncmp(name, "encoder.", 8) == 0 || strncmp(name, "decoder.", 8) == 0 ||
           strncmp(name, "quant_conv.", 11) == 0 || strncmp(name, "post_quant_conv.", 16) == 0;
}

int vae_weights_load(const struct vae_params *t, float *params, const struct st_set *set)
{
    enum vae_layout layout;
    const char *prefix;
    if (vae_weights_layout(set, &layout, &prefix) != 0)
        return -1;
    struct problems probs = {0};
    size_t used = 0;
#define PROBLEM(...) problems_add(&probs, __VA_ARGS__)
    for (size_t i = 0; i < t->count; i++) {
        const struct vae_param *p = &t->p[i];
        const char *name = layout_name(p, layout);
        const struct st_tensor *s = find(set, prefix, name);
        if (!s) {
            PROBLEM("tensor %s%s is missing", prefix, name);
            continue;
        }
        used++;
        if (!same_shape(p, s)) {
            char want[64], got[64];
            st_shape_text(want, sizeof want, p->ndim, p->shape);
            st_shape_text(got, sizeof got, s->ndim, s->shape);
            PROBLEM("tensor %s%s has shape %s, the config needs %s", prefix, name, got, want);
            continue;
        }
        if (st_tensor_to_f32(s, params + p->offset) != 0)
            PROBLEM("tensor %s%s is %s; weights must be F32, BF16 or F16", prefix, name, st_dtype_name(s->dtype));
    }
    size_t ours = 0;
    for (size_t i = 0; i < set->n_tensors; i++)
        ours += (size_t)is_vae_tensor(st_set_tensor(set, i, NULL)->name, prefix, layout);
    if (ours > used && probs.count == 0)
        for (size_t i = 0; i < set->n_tensors; i++) {
            const char *name = st_set_tensor(set, i, NULL)->name;
            if (!is_vae_tensor(name, prefix, layout))
                continue;
            int known = 0;
            for (size_t k = 0; !known && k < t->count; k++)
                known = strcmp(name + strlen(prefix), layout_name(&t->p[k], layout)) == 0;
            if (!known) {
                PROBLEM("unexpected tensor %s (the config describes a different network)", name);
                break;
            }
        }
#undef PROBLEM
    return problems_report(&probs, set->path);
}

/* The tensor of the file named by printf format fmt in the file's layout. */
static const struct st_tensor *findf(const struct st_set *set, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const struct st_tensor *findf(const struct st_set *set, const char *prefix, const char *fmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return find(set, prefix, name);
}

int vae_config_infer(struct vae_config *c, const struct st_set *set)
{
    enum vae_layout layout;
    const char *p;
    if (vae_weights_layout(set, &layout, &p) != 0)
        return -1;
    memset(c, 0, sizeof *c);
    const int ldm = layout == VAE_LAYOUT_LDM;
    const char *down = ldm ? "encoder.down.%d.block.%d.conv1.weight" : "encoder.down_blocks.%d.resnets.%d.conv1.weight";
    const struct st_tensor *t;
    while (c->n_blocks < VAE_MAX_BLOCKS && (t = findf(set, p, down, c->n_blocks, 0)) && t->ndim == 4)
        c->block_out_channels[c->n_blocks++] = (int)t->shape[0];
    while (findf(set, p, down, 0, c->layers_per_block))
        c->layers_per_block++;
    const struct st_tensor *in = find(set, p, "encoder.conv_in.weight"), *eo = find(set, p, "encoder.conv_out.weight"),
                           *dout = find(set, p, "decoder.conv_out.weight");
    if (c->n_blocks == 0 || !eo || eo->ndim != 4 || !dout || dout->ndim != 4 || in->ndim != 4) {
        err_set("%s: cannot infer the VAE config from the tensor shapes (encoder.conv_out, decoder.conv_out or the "
                "first down block is missing or not a conv); give it a config",
                set->path);
        return -1;
    }
    c->in_channels = (int)in->shape[1];
    c->out_channels = (int)dout->shape[0];
    c->latent_channels = (int)(eo->shape[0] / 2);
    c->norm_num_groups = 32;
    c->use_quant_conv = find(set, p, "quant_conv.weight") != NULL;
    c->use_post_quant_conv = find(set, p, "post_quant_conv.weight") != NULL;
    c->mid_block_add_attention = find(set, p, ldm ? "encoder.mid.attn_1.q.weight"
                                              : layout == VAE_LAYOUT_LEGACY_ATTN ? "encoder.mid_block.attentions.0.query.weight"
                                                                                 : "encoder.mid_block.attentions.0.to_q.weight") != NULL;
    /* sample_size (the tile of tiling only) as the released configs give it. */
    if (c->latent_channels == 4 && c->use_quant_conv && c->use_post_quant_conv)
        c->scaling_factor = 0.18215f, c->shift_factor = 0.0f, c->sample_size = 256; /* SD (sd-vae-ft-*) */
    else if (c->latent_channels == 16 && !c->use_quant_conv && !c->use_post_quant_conv)
        c->scaling_factor = 0.3611f, c->shift_factor = 0.1159f, c->sample_size = 1024; /* FLUX.1 */
    else {
        err_set("%s: %d latent channels %s quant convs match neither the SD VAE (4, with) nor the FLUX VAE (16, "
                "without), so the scaling factor is unknown; give it a config (vae:FILE,config=DIR)",
                set->path, c->latent_channels, c->use_quant_conv ? "with" : "without");
        return -1;
    }
    return vae_config_check(c, set->path);
}
