/* The AutoencoderKL forward (diffusers' autoencoder_kl.py and vae.py) on
 * kernels.h ops, one image at a time.
 *
 * The parameters are walked in table order (weights.c lists them in forward
 * order), so each layer takes the next tensors. Activations rotate through
 * four buffers of the largest activation; the same code first runs as a
 * plan (no kernel called, sizes counted), so the arena is sized by the
 * forward itself and re-planned only when a larger image comes. */
#include "models/vae/vae.h"
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define VAE_EPS 1e-6f /* every GroupNorm of the VAE (resnet_eps, conv_norm_out) */

/* One pass of the network: a plan (counts sizes) or a run. */
struct pass {
    struct vae *v;
    int plan;
    size_t i;                                  /* next parameter in the table */
    int64_t act, qkv, lse, scratch;            /* what the plan needs, in elements */
};

static struct tensor param(struct pass *p, int64_t n)
{
    const struct vae_param *q = &p->v->table.p[p->i++];
    if (q->n != n) { /* the walk and the table disagree: a bug here, not bad input */
        fprintf(stderr, "vae: parameter %s has %lld elements, the forward expects %lld\n", q->name,
                (long long)q->n, (long long)n);
        abort();
    }
    return tensor_view(p->v->weights, q->offset, n);
}

static struct tensor buf(struct pass *p, int k, int64_t n)
{
    if (p->plan) {
        if (n > p->act)
            p->act = n;
        return tensor_none();
    }
    return tensor_view(p->v->buf[k & 3], 0, n);
}

/* out[OC,Ho,Wo] in buffer `to` = conv(buffer `from` [C,H,W]); *H, *W updated. */
static void conv_forward(struct pass *p, int to, int from, int C, int *H, int *W, int OC, int k, int stride,
                         int lo, int hi)
{
    const int Ho = (*H + lo + hi - k) / stride + 1, Wo = (*W + lo + hi - k) / stride + 1;
    struct tensor w = param(p, (int64_t)OC * C * k * k), b = param(p, OC);
    struct tensor out = buf(p, to, (int64_t)OC * Ho * Wo), inp = buf(p, from, (int64_t)C * *H * *W);
    int64_t s = k_conv2d_scratch(p->v->ctx, C, *H, *W, OC, k, stride, lo, hi);
    if (p->plan) {
        if (s > p->scratch)
            p->scratch = s;
    } else {
        k_conv2d_forward(p->v->ctx, out, inp, w, b, tensor_view(p->v->scratch, 0, s), 1, C, *H, *W, OC, k, stride,
                         lo, hi);
    }
    *H = Ho, *W = Wo;
}

static void norm_forward(struct pass *p, int to, int from, int C, int HW, int silu)
{
    struct tensor w = param(p, C), b = param(p, C);
    struct tensor out = buf(p, to, (int64_t)C * HW), inp = buf(p, from, (int64_t)C * HW);
    if (!p->plan)
        k_groupnorm_forward(p->v->ctx, out, inp, w, b, 1, C, HW, p->v->cfg.norm_num_groups, VAE_EPS, silu);
}

static void add_forward(struct pass *p, int to, int a, int b, int64_t n)
{
    struct tensor o = buf(p, to, n), x = buf(p, a, n), y = buf(p, b, n);
    if (!p->plan)
        k_add(p->v->ctx, o, x, y, n);
}

/* ResnetBlock2D (resnet.py) with temb None and output scale 1:
 * out = shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x)))))), the shortcut
 * a 1x1 conv when the channels change. x in buffer x; returns the buffer
 * of out [Cout, H, W]. */
static int resnet_forward(struct pass *p, int x, int Cin, int Cout, int H, int W)
{
    const int t1 = x + 1, t2 = x + 2, out = x + 3, HW = H * W;
    int h = H, w = W;
    norm_forward(p, t1, x, Cin, HW, 1);                      /* [Cin, HW] */
    conv_forward(p, t2, t1, Cin, &h, &w, Cout, 3, 1, 1, 1);  /* [Cout, HW] */
    norm_forward(p, t2, t2, Cout, HW, 1);
    h = H, w = W;
    conv_forward(p, t1, t2, Cout, &h, &w, Cout, 3, 1, 1, 1);
    if (Cin != Cout) {
        h = H, w = W;
        conv_forward(p, t2, x, Cin, &h, &w, Cout, 1, 1, 0, 0);
        add_forward(p, out, t2, t1, (int64_t)Cout * HW);
    } else {
        add_forward(p, out, x, t1, (int64_t)Cout * HW);
    }
    return out & 3;
}

/* The mid block's Attention (attention_processor.py, AttnProcessor): one
 * head of dim C over the HW pixels as tokens, residual added. */
static int attention_forward(struct pass *p, int x, int C, int HW)
{
    struct kctx *ctx = p->v->ctx;
    const int t1 = x + 1, t2 = x + 2, out = x + 3;
    const int64_t n = (int64_t)C * HW;
    norm_forward(p, t1, x, C, HW, 0);                   /* group_norm: [C, HW] */
    struct tensor wqkv = param(p, (int64_t)C * C), wk = param(p, (int64_t)C * C), wv = param(p, (int64_t)C * C);
    struct tensor bqkv = param(p, C), bk = param(p, C), bv = param(p, C);
    /* to_q, to_k, to_v are consecutive in the table: one [3C, C] Linear. */
    wqkv.n = 3 * (int64_t)C * C, bqkv.n = 3 * (int64_t)C;
    (void)wk, (void)wv, (void)bk, (void)bv;
    struct tensor wo = param(p, (int64_t)C * C), bo = param(p, C);
    struct tensor a = buf(p, t1, n), b = buf(p, t2, n);
    int64_t s = k_attention_scratch(ctx, 1, HW, 1);
    if (p->plan) {
        if (3 * n > p->qkv)
            p->qkv = 3 * n;
        if (HW > p->lse)
            p->lse = HW;
        if (s > p->scratch)
            p->scratch = s;
    } else {
        struct tensor qkv = tensor_view(p->v->qkv, 0, 3 * n), lse = tensor_view(p->v->lse, 0, HW);
        k_transpose_forward(ctx, b, a, 1, C, HW);                  /* tokens [HW, C] */
        k_linear_forward(ctx, qkv, b, wqkv, bqkv, HW, C, 3 * C);   /* [HW, 3C] */
        k_attention_forward(ctx, a, lse, qkv, tensor_view(p->v->scratch, 0, s), 1, HW, C, 1); /* [HW, C] */
        k_linear_forward(ctx, b, a, wo, bo, HW, C, C);             /* to_out.0 */
        k_transpose_forward(ctx, a, b, 1, HW, C);                  /* [C, HW] */
    }
    add_forward(p, out, x, t1, n);
    return out & 3;
}

/* UNetMidBlock2D: resnet, attention (when configured), resnet. */
static int mid_forward(struct pass *p, int x, int C, int H, int W)
{
    x = resnet_forward(p, x, C, C, H, W);
    if (p->v->cfg.mid_block_add_attention)
        x = attention_forward(p, x, C, H * W);
    return resnet_forward(p, x, C, C, H, W);
}

/* Encoder (vae.py) + quant_conv: buffer 0 [3, H, W] -> the buffer returned
 * holds the Gaussian's parameters [2L, H/f, W/f]. */
static int encoder_forward(struct pass *p, int H, int W)
{
    const struct vae_config *c = &p->v->cfg;
    const int *C = c->block_out_channels, n = c->n_blocks, L = c->latent_channels;
    (void)buf(p, 0, (int64_t)c->in_channels * H * W);
    conv_forward(p, 1, 0, c->in_channels, &H, &W, C[0], 3, 1, 1, 1);
    int x = 1, cin = C[0];
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < c->layers_per_block; j++, cin = C[i])
            x = resnet_forward(p, x, cin, C[i], H, W);
        if (i < n - 1) { /* Downsample2D: F.pad (0, 1, 0, 1), then a stride-2 conv */
            conv_forward(p, x + 1, x, C[i], &H, &W, C[i], 3, 2, 0, 1);
            x = (x + 1) & 3;
        }
    }
    x = mid_forward(p, x, C[n - 1], H, W);
    norm_forward(p, x + 1, x, C[n - 1], H * W, 1);
    conv_forward(p, x + 2, x + 1, C[n - 1], &H, &W, 2 * L, 3, 1, 1, 1);
    x = (x + 2) & 3;
    if (c->use_quant_conv) {
        conv_forward(p, x + 1, x, 2 * L, &H, &W, 2 * L, 1, 1, 0, 0);
        x = (x + 1) & 3;
    }
    return x;
}

/* post_quant_conv + Decoder: buffer 0 [L, h, w] -> the buffer returned
 * holds the image [3, h f, w f]. */
static int decoder_forward(struct pass *p, int H, int W)
{
    const struct vae_config *c = &p->v->cfg;
    const int *C = c->block_out_channels, n = c->n_blocks, L = c->latent_channels;
    int x = 0;
    (void)buf(p, 0, (int64_t)L * H * W);
    if (c->use_post_quant_conv) {
        conv_forward(p, 1, 0, L, &H, &W, L, 1, 1, 0, 0);
        x = 1;
    }
    conv_forward(p, x + 1, x, L, &H, &W, C[n - 1], 3, 1, 1, 1);
    x = mid_forward(p, (x + 1) & 3, C[n - 1], H, W);
    for (int i = 0, cin = C[n - 1]; i < n; i++) {
        const int cout = C[n - 1 - i];
        for (int j = 0; j < c->layers_per_block + 1; j++, cin = cout)
            x = resnet_forward(p, x, cin, cout, H, W);
        if (i < n - 1) { /* Upsample2D: nearest x2, then a 3x3 conv */
            struct tensor up = buf(p, x + 1, (int64_t)cout * 4 * H * W), src = buf(p, x, (int64_t)cout * H * W);
            if (!p->plan)
                k_upsample_nearest2x_forward(p->v->ctx, up, src, 1, cout, H, W);
            H *= 2, W *= 2;
            conv_forward(p, x + 2, x + 1, cout, &H, &W, cout, 3, 1, 1, 1);
            x = (x + 2) & 3;
        }
    }
    norm_forward(p, x + 1, x, C[0], H * W, 1);
    conv_forward(p, x + 2, x + 1, C[0], &H, &W, c->out_channels, 3, 1, 1, 1);
    return (x + 2) & 3;
}

/* Index of the first decoder-side parameter (post_quant_conv or decoder.conv_in). */
static size_t decoder_start(const struct vae *v)
{
    const char *first = v->cfg.use_post_quant_conv ? "post_quant_conv.weight" : "decoder.conv_in.weight";
    return (size_t)(vae_params_find(&v->table, first) - v->table.p);
}

static void arena_free(struct vae *v)
{
    for (int i = 0; i < 4; i++)
        k_free(v->ctx, &v->buf[i]);
    k_free(v->ctx, &v->qkv);
    k_free(v->ctx, &v->lse);
    k_free(v->ctx, &v->scratch);
    v->planned_hw = 0;
}

/* Plans both passes for an h x w image and grows the arena when it must. */
static int arena_reserve(struct vae *v, int w, int h)
{
    const int f = vae_factor(&v->cfg);
    struct pass e = {.v = v, .plan = 1, .i = 0}, d = {.v = v, .plan = 1, .i = decoder_start(v)};
    encoder_forward(&e, h, w);
    decoder_forward(&d, h / f, w / f);
    int64_t act = e.act > d.act ? e.act : d.act, qkv = e.qkv > d.qkv ? e.qkv : d.qkv;
    int64_t lse = e.lse > d.lse ? e.lse : d.lse, scratch = e.scratch > d.scratch ? e.scratch : d.scratch;
    if (v->buf[0].n >= act && v->qkv.n >= qkv && v->lse.n >= lse && v->scratch.n >= scratch && v->buf[0].data)
        return 0;
    arena_free(v);
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = k_alloc(v->ctx, &v->buf[i], v->dt, act);
    rc = rc || k_alloc(v->ctx, &v->qkv, v->dt, qkv > 0 ? qkv : 1) || k_alloc(v->ctx, &v->lse, KDT_F32, lse > 0 ? lse : 1) ||
         k_alloc(v->ctx, &v->scratch, KDT_F32, scratch > 0 ? scratch : 1);
    if (rc) {
        err_prefix("VAE activations for a %dx%d image", w, h);
        arena_free(v);
        return -1;
    }
    v->planned_hw = (int64_t)w * h;
    return 0;
}

static int check_size(const struct vae *v, int w, int h, const char *what)
{
    const int f = vae_factor(&v->cfg);
    if (w <= 0 || h <= 0 || w % f || h % f) {
        err_set("VAE %s: %dx%d is not a positive multiple of the factor %d", what, w, h, f);
        return -1;
    }
    return 0;
}

/* The Gaussian of diffusers' DiagonalGaussianDistribution from moments
 * [2L, n]: mean the first L channels, std = exp(clamp(logvar, -30, 20) / 2). */
void vae_gaussian(const float *moments, int64_t nl, float *mean, float *std)
{
    memcpy(mean, moments, (size_t)nl * sizeof *mean);
    for (int64_t i = 0; std && i < nl; i++) {
        float lv = moments[nl + i];
        lv = lv < -30.0f ? -30.0f : lv > 20.0f ? 20.0f : lv;
        std[i] = expf(0.5f * lv);
    }
}

int vae_encode_moments_locked(struct vae *v, const float *x, int w, int h, float *moments)
{
    if (check_size(v, w, h, "encode") != 0 || arena_reserve(v, w, h) != 0)
        return -1;
    const int f = vae_factor(&v->cfg);
    const int64_t nx = (int64_t)v->cfg.in_channels * h * w, nm = 2 * (int64_t)v->cfg.latent_channels * (h / f) * (w / f);
    struct pass p = {.v = v, .plan = 0, .i = 0};
    k_upload_f32(v->ctx, tensor_view(v->buf[0], 0, nx), x, nx);
    int out = encoder_forward(&p, h, w);
    k_download_f32(v->ctx, moments, tensor_view(v->buf[out], 0, nm), nm);
    return 0;
}

int vae_decode_locked(struct vae *v, const float *z, int w, int h, float *out)
{
    if (check_size(v, w, h, "decode") != 0 || arena_reserve(v, w, h) != 0)
        return -1;
    const int f = vae_factor(&v->cfg);
    const int64_t nz = (int64_t)v->cfg.latent_channels * (h / f) * (w / f), no = (int64_t)v->cfg.out_channels * h * w;
    struct pass p = {.v = v, .plan = 0, .i = decoder_start(v)};
    k_upload_f32(v->ctx, tensor_view(v->buf[0], 0, nz), z, nz);
    int o = decoder_forward(&p, h / f, w / f);
    k_download_f32(v->ctx, out, tensor_view(v->buf[o], 0, no), no);
    return 0;
}

int vae_encode(struct vae *v, const float *x, int w, int h, float *mean, float *std)
{
    if (check_size(v, w, h, "encode") != 0)
        return -1;
    const int f = vae_factor(&v->cfg);
    const int64_t nl = (int64_t)v->cfg.latent_channels * (h / f) * (w / f);
    float *moments = malloc(2 * (size_t)nl * sizeof *moments);
    if (!moments) {
        err_set("VAE encode: out of memory for a %dx%d image", w, h);
        return -1;
    }
    pthread_mutex_lock(&v->lock);
    int rc = vae_encode_moments_locked(v, x, w, h, moments);
    pthread_mutex_unlock(&v->lock);
    if (rc == 0)
        vae_gaussian(moments, nl, mean, std);
    free(moments);
    return rc;
}

int vae_decode(struct vae *v, const float *z, int w, int h, float *out)
{
    pthread_mutex_lock(&v->lock);
    int rc = vae_decode_locked(v, z, w, h, out);
    pthread_mutex_unlock(&v->lock);
    return rc;
}

int vae_create(struct vae *v, const struct vae_config *c, const float *params, struct kctx *ctx, enum kdtype dt)
{
    memset(v, 0, sizeof *v);
    v->cfg = *c;
    v->ctx = ctx;
    v->dt = dt;
    if (vae_config_check(c, "VAE config") != 0 || vae_param_table(c, &v->table) != 0)
        return -1;
    pthread_mutex_init(&v->lock, NULL);
    if (k_alloc(ctx, &v->weights, dt, v->table.total) != 0) {
        err_prefix("VAE weights (%lld parameters)", (long long)v->table.total);
        vae_close(v);
        return -1;
    }
    k_upload_f32(ctx, v->weights, params, v->table.total);
    char text[512];
    vae_config_text(c, text, sizeof text);
    struct hash_state *hs = hash_begin();
    if (!hs) {
        vae_close(v);
        return -1;
    }
    hash_update(hs, text, strlen(text));
    hash_update(hs, params, (size_t)v->table.total * sizeof *params);
    hash_hex(hash_end(hs), v->hash);
    return 0;
}

void vae_close(struct vae *v)
{
    if (!v->ctx)
        return;
    arena_free(v);
    k_free(v->ctx, &v->weights);
    vae_params_free(&v->table);
    pthread_mutex_destroy(&v->lock);
    memset(v, 0, sizeof *v);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* config_path: a config.json, or a folder holding one. */
static int read_config_at(struct vae_config *c, const char *config_path)
{
    char p[4096];
    if (is_dir(config_path))
        snprintf(p, sizeof p, "%s/%s", config_path, MODEL_DIR_CONFIG);
    else
        snprintf(p, sizeof p, "%s", config_path);
    return vae_config_read(c, p);
}

int vae_open(struct vae *v, const char *path, const char *config_path, struct kctx *ctx, enum kdtype dt)
{
    memset(v, 0, sizeof *v);
    struct stat st;
    if (stat(path, &st) != 0) {
        err_set("VAE %s: no such file or folder", path);
        return -1;
    }
    struct vae_config cfg;
    struct st_set *set = NULL;
    struct model_component comp = {0};
    char cpath[4096];
    int rc = -1;
    if (S_ISDIR(st.st_mode)) {
        const char *dir = path;
        snprintf(cpath, sizeof cpath, "%s/%s", path, MODEL_DIR_CONFIG);
        if (stat(cpath, &st) != 0) { /* a pipeline folder: its vae/ component */
            snprintf(cpath, sizeof cpath, "%s/%s", path, MODEL_DIR_INDEX);
            if (stat(cpath, &st) != 0) {
                err_set("VAE %s: a folder with neither %s (an AutoencoderKL) nor %s (a pipeline)", path,
                        MODEL_DIR_CONFIG, MODEL_DIR_INDEX);
                return -1;
            }
            if (model_index_component(path, "vae", &comp) != 0)
                return -1;
            dir = comp.folder;
        }
        snprintf(cpath, sizeof cpath, "%s/%s", dir, MODEL_DIR_CONFIG);
        if ((config_path ? read_config_at(&cfg, config_path) : vae_config_read(&cfg, cpath)) == 0)
            set = model_dir_open_weights(dir);
    } else {
        set = st_set_open(path);
        if (set && (config_path ? read_config_at(&cfg, config_path) : vae_config_infer(&cfg, set)) != 0) {
            st_set_close(set);
            set = NULL;
        }
    }
    if (set) {
        struct vae_params table;
        float *params = NULL;
        if (vae_param_table(&cfg, &table) == 0) {
            params = malloc((size_t)table.total * sizeof *params);
            if (!params)
                err_set("VAE %s: out of memory for %lld parameters", path, (long long)table.total);
            else if (vae_weights_load(&table, params, set) == 0)
                rc = vae_create(v, &cfg, params, ctx, dt);
            free(params);
            vae_params_free(&table);
        }
        st_set_close(set);
    }
    model_component_free(&comp);
    return rc;
}
