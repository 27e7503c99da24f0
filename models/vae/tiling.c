/* diffusers' tiled encode and decode (autoencoder_kl.py: _tiled_encode,
 * tiled_decode, blend_v, blend_h), for images larger than the tile.
 *
 * Tiles start every step = int(tile * 0.75) input pixels (latents when
 * decoding), the last ones in each direction partial; each runs through the
 * network alone. In raster order each output tile is then blended, in
 * place, with the tile above and the tile to its left (already blended, as
 * diffusers' in-place blends leave them) over `blend` rows and columns:
 * b[y] = a[end - e + y] (1 - y/e) + b[y] (y/e), e = min(both sizes, blend);
 * the first row_limit rows and columns of each make the output. */
#include "models/vae/vae.h"
#include "libcommon/error.h"

#include <stdlib.h>
#include <string.h>

struct tile {
    float *data; /* [C][h][w] */
    int h, w;
};

/* y / e and 1 - y / e are Python floats that torch applies as float32. */
static void blend_v(const struct tile *a, struct tile *b, int C, int blend)
{
    int e = a->h < b->h ? a->h : b->h;
    e = e < blend ? e : blend;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < e; y++) {
            const float wa = (float)(1.0 - (double)y / e), wb = (float)((double)y / e);
            const float *ar = a->data + ((size_t)c * a->h + (a->h - e + y)) * a->w;
            float *br = b->data + ((size_t)c * b->h + y) * b->w;
            for (int x = 0; x < b->w; x++)
                br[x] = ar[x] * wa + br[x] * wb;
        }
}

static void blend_h(const struct tile *a, struct tile *b, int C, int blend)
{
    int e = a->w < b->w ? a->w : b->w;
    e = e < blend ? e : blend;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < b->h; y++) {
            const float *ar = a->data + ((size_t)c * a->h + y) * a->w;
            float *br = b->data + ((size_t)c * b->h + y) * b->w;
            for (int x = 0; x < e; x++) {
                const float wa = (float)(1.0 - (double)x / e), wb = (float)((double)x / e);
                br[x] = ar[a->w - e + x] * wa + br[x] * wb;
            }
        }
}

/* One tiled pass: in[Cin][H][W] -> out[Cout][H*num/den][W*num/den]. */
static int tiled(struct vae *v, int encode, const float *in, int Cin, int H, int W, int tile, int Cout, int num,
                 int den, float *out)
{
    const int step = (int)(tile * (1 - 0.25)), otile = tile * num / den;
    const int blend = (int)(otile * 0.25), limit = otile - blend;
    const int rows = (H + step - 1) / step, cols = (W + step - 1) / step;
    const int OH = H * num / den, OW = W * num / den;
    struct tile *t = calloc((size_t)rows * cols, sizeof *t);
    float *src = malloc((size_t)Cin * tile * tile * sizeof *src);
    int rc = t && src ? 0 : -1;
    if (rc)
        err_set("VAE tiled %s: out of memory", encode ? "encode" : "decode");
    pthread_mutex_lock(&v->lock);
    for (int i = 0; rc == 0 && i < rows; i++)
        for (int j = 0; rc == 0 && j < cols; j++) {
            const int th = H - i * step < tile ? H - i * step : tile, tw = W - j * step < tile ? W - j * step : tile;
            for (int c = 0; c < Cin; c++)
                for (int y = 0; y < th; y++)
                    memcpy(src + ((size_t)c * th + y) * tw, in + ((size_t)c * H + i * step + y) * W + j * step,
                           (size_t)tw * sizeof *src);
            struct tile *o = &t[i * cols + j];
            o->h = th * num / den, o->w = tw * num / den;
            o->data = malloc((size_t)Cout * o->h * o->w * sizeof *o->data);
            if (!o->data) {
                err_set("VAE tiled %s: out of memory", encode ? "encode" : "decode");
                rc = -1;
            } else {
                /* Pixels in a tile: th x tw when encoding, th*f x tw*f when decoding. */
                rc = encode ? vae_encode_moments_locked(v, src, tw, th, o->data)
                            : vae_decode_locked(v, src, o->w, o->h, o->data);
            }
        }
    pthread_mutex_unlock(&v->lock);
    for (int i = 0; rc == 0 && i < rows; i++)
        for (int j = 0; j < cols; j++) {
            struct tile *b = &t[i * cols + j];
            if (i > 0)
                blend_v(&t[(i - 1) * cols + j], b, Cout, blend);
            if (j > 0)
                blend_h(&t[i * cols + j - 1], b, Cout, blend);
            const int ch = b->h < limit ? b->h : limit, cw = b->w < limit ? b->w : limit;
            for (int c = 0; c < Cout; c++)
                for (int y = 0; y < ch && i * limit + y < OH; y++)
                    memcpy(out + ((size_t)c * OH + i * limit + y) * OW + j * limit,
                           b->data + ((size_t)c * b->h + y) * b->w,
                           (size_t)(j * limit + cw <= OW ? cw : OW - j * limit) * sizeof *out);
        }
    for (int k = 0; t && k < rows * cols; k++)
        free(t[k].data);
    free(t), free(src);
    return rc;
}

static int check_tile(const struct vae *v)
{
    const int f = vae_factor(&v->cfg), T = v->cfg.sample_size;
    if (T <= 0 || T % (4 * f)) {
        err_set("VAE tiling: sample_size %d is not a positive multiple of 4 x the factor %d", T, f);
        return -1;
    }
    return 0;
}

int vae_encode_tiled(struct vae *v, const float *x, int w, int h, float *mean, float *std)
{
    const int T = v->cfg.sample_size, f = vae_factor(&v->cfg);
    if (w <= T && h <= T)
        return vae_encode(v, x, w, h, mean, std);
    if (check_tile(v) != 0)
        return -1;
    if (w % f || h % f) {
        err_set("VAE encode: %dx%d is not a positive multiple of the factor %d", w, h, f);
        return -1;
    }
    const int64_t nl = (int64_t)v->cfg.latent_channels * (h / f) * (w / f);
    float *moments = malloc(2 * (size_t)nl * sizeof *moments);
    if (!moments) {
        err_set("VAE tiled encode: out of memory");
        return -1;
    }
    int rc = tiled(v, 1, x, v->cfg.in_channels, h, w, T, 2 * v->cfg.latent_channels, 1, f, moments);
    if (rc == 0)
        vae_gaussian(moments, nl, mean, std);
    free(moments);
    return rc;
}

int vae_decode_tiled(struct vae *v, const float *z, int w, int h, float *out)
{
    const int f = vae_factor(&v->cfg), TL = v->cfg.sample_size / f;
    if (w % f || h % f || w <= 0 || h <= 0) {
        err_set("VAE decode: %dx%d is not a positive multiple of the factor %d", w, h, f);
        return -1;
    }
    if (w / f <= TL && h / f <= TL)
        return vae_decode(v, z, w, h, out);
    if (check_tile(v) != 0)
        return -1;
    return tiled(v, 0, z, v->cfg.latent_channels, h / f, w / f, TL, v->cfg.out_channels, f, 1, out);
}
