/* The image-encoder kind "vae": an AutoencoderKL behind models/encoder.h.
 *
 * Specs: "vae:PATH[,config=CONFIG][,device=cpu|cuda|auto][,dtype=f32|bf16][,tiling]"
 * with PATH an AutoencoderKL folder, a pipeline folder with vae/, or a
 * single ldm/BFL .safetensors file (its config from CONFIG, a config.json
 * or a folder with one, or inferred from the shapes: models/vae/vae.h).
 * The defaults are the CPU in fp32; cuda computes in bf16 unless dtype=f32;
 * tiling encodes and decodes large images in tiles as diffusers'
 * enable_tiling() does (models/vae/tiling.c).
 * Identity: "vae/1 HASH ARGS", HASH the xxh128 of the config and the f32
 * weights, ARGS the spec after "vae:", so that reopening the identity opens
 * the same files and refuses them when their weights have changed. */
#include "models/encoder.h"
#include "libcommon/error.h"
#include "models/vae/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vae_encoder {
    struct kctx ctx;
    struct vae vae;
    int tiling; /* diffusers' enable_tiling() */
};

/* Splits ARGS into the path and its options (each ",key=value" at the end). */
static int parse_args(const char *args, char *path, size_t size, char *config, enum device_kind *dev, enum kdtype *dt,
                      int *tiling)
{
    static const char *const keys[] = {",config=", ",device=", ",dtype=", ",tiling"};
    const char *end = args + strlen(args);
    *tiling = 0;
    for (size_t k = 0; k < 4; k++) {
        const char *s = strstr(args, keys[k]);
        if (s && s < end)
            end = s;
    }
    if (end == args || (size_t)(end - args) >= size) {
        err_set("--encoder 'vae:%s': expected vae:PATH[,config=CONFIG][,device=D][,dtype=T][,tiling]", args);
        return -1;
    }
    memcpy(path, args, (size_t)(end - args));
    path[end - args] = '\0';
    config[0] = '\0';
    char device[16] = "cpu", dtype[16] = "";
    char opts[4096];
    snprintf(opts, sizeof opts, "%s", end);
    for (char *save = NULL, *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        if (strncmp(o, "config=", 7) == 0)
            snprintf(config, 4096, "%s", o + 7);
        else if (strncmp(o, "device=", 7) == 0)
            snprintf(device, sizeof device, "%s", o + 7);
        else if (strncmp(o, "dtype=", 6) == 0 && (strcmp(o + 6, "f32") == 0 || strcmp(o + 6, "bf16") == 0))
            snprintf(dtype, sizeof dtype, "%s", o + 6);
        else if (strcmp(o, "tiling") == 0)
            *tiling = 1;
        else {
            err_set("--encoder 'vae:%s': unknown option '%s' (config=PATH, device=cpu|cuda|auto, dtype=f32|bf16, tiling)",
                    args, o);
            return -1;
        }
    }
    if (device_resolve(device, dev) != 0)
        return -1;
    *dt = dtype[0] ? (strcmp(dtype, "bf16") == 0 ? KDT_BF16 : KDT_F32) : *dev == DEVICE_CUDA ? KDT_BF16 : KDT_F32;
    if (*dev == DEVICE_CPU && *dt != KDT_F32) {
        err_set("--encoder 'vae:%s': the CPU computes in f32 only", args);
        return -1;
    }
    return 0;
}

static int vae_kind_open(struct encoder *e, const char *spec)
{
    const char *args, *want_hash = NULL;
    char hash[33] = "";
    if (strncmp(spec, "vae:", 4) == 0) {
        args = spec + 4;
    } else if (strncmp(spec, "vae/1 ", 6) == 0 && strlen(spec) > 6 + 33 && spec[6 + 32] == ' ') {
        memcpy(hash, spec + 6, 32);
        want_hash = hash;
        args = spec + 6 + 33;
    } else {
        return 1;
    }
    char path[4096], config[4096];
    enum device_kind dev;
    enum kdtype dt;
    int tiling;
    if (parse_args(args, path, sizeof path, config, &dev, &dt, &tiling) != 0)
        return -1;
    struct vae_encoder *s = calloc(1, sizeof *s);
    if (!s) {
        err_set("--encoder '%s': out of memory", spec);
        return -1;
    }
    if (kctx_init(&s->ctx, dev, 0) != 0) {
        free(s);
        return -1;
    }
    if (vae_open(&s->vae, path, config[0] ? config : NULL, &s->ctx, dt) != 0) {
        kctx_free(&s->ctx);
        free(s);
        return -1;
    }
    const struct vae_config *c = &s->vae.cfg;
    int rc = 0;
    if (c->in_channels != 3 || c->out_channels != 3) {
        err_set("VAE %s: in_channels %d and out_channels %d; an image encoder needs RGB (3)", path, c->in_channels,
                c->out_channels);
        rc = -1;
    } else if (want_hash && strcmp(want_hash, s->vae.hash) != 0) {
        err_set("VAE %s: its config and weights hash to %s, but the identity records %s: the files have changed "
                "since the latents were made",
                path, s->vae.hash, want_hash);
        rc = -1;
    } else if ((size_t)snprintf(e->identity, sizeof e->identity, "vae/1 %s %s", s->vae.hash, args) >=
               sizeof e->identity) {
        err_set("--encoder '%s': the path is too long for an encoder identity (%zu bytes)", spec,
                sizeof e->identity - 40);
        rc = -1;
    }
    if (rc != 0) {
        vae_close(&s->vae);
        kctx_free(&s->ctx);
        free(s);
        return -1;
    }
    e->factor = vae_factor(c);
    e->channels = c->latent_channels;
    e->has_std = 1;
    e->scale = c->scaling_factor;
    e->shift = c->shift_factor;
    s->tiling = tiling;
    e->state = s;
    return 0;
}

/* rgb to [-1, 1] as ToTensor + Normalize(0.5, 0.5): (v / 255 - 0.5) / 0.5 in fp32. */
static int vae_kind_encode(const struct encoder *e, const uint8_t *rgb, int w, int h, float *mean, float *std)
{
    struct vae_encoder *s = e->state;
    const size_t n = (size_t)w * (size_t)h;
    float *x = malloc(3 * (n ? n : 1) * sizeof *x);
    if (!x) {
        err_set("encoder %s: out of memory for a %dx%d image", e->identity, w, h);
        return -1;
    }
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < n; i++)
            x[c * n + i] = ((float)rgb[i * 3 + c] / 255.0f - 0.5f) / 0.5f;
    int rc = s->tiling ? vae_encode_tiled(&s->vae, x, w, h, mean, std) : vae_encode(&s->vae, x, w, h, mean, std);
    free(x);
    return rc;
}

/* The decoder's output to 8 bits as VaeImageProcessor.postprocess(output_type
 * "pil") does: clamp(x / 2 + 0.5, 0, 1) * 255, rounded half to even (numpy). */
static int vae_kind_decode(const struct encoder *e, const float *z, int w, int h, uint8_t *rgb)
{
    struct vae_encoder *s = e->state;
    const size_t n = (size_t)w * (size_t)h;
    float *out = malloc(3 * (n ? n : 1) * sizeof *out);
    if (!out) {
        err_set("encoder %s: out of memory for a %dx%d image", e->identity, w, h);
        return -1;
    }
    int rc = s->tiling ? vae_decode_tiled(&s->vae, z, w, h, out) : vae_decode(&s->vae, z, w, h, out);
    for (int c = 0; rc == 0 && c < 3; c++)
        for (size_t i = 0; i < n; i++) {
            float v = out[c * n + i] / 2.0f + 0.5f;
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            rgb[i * 3 + c] = (uint8_t)rintf(v * 255.0f);
        }
    free(out);
    return rc;
}

static void vae_kind_close(struct encoder *e)
{
    struct vae_encoder *s = e->state;
    if (!s)
        return;
    vae_close(&s->vae);
    kctx_free(&s->ctx);
    free(s);
    e->state = NULL;
}

const struct encoder_kind vae_encoder_kind = {
    .name = "vae",
    .specs = "vae:PATH (an AutoencoderKL folder, a pipeline folder or an ldm/BFL .safetensors file; options "
             ",config=CONFIG ,device=cpu|cuda|auto ,dtype=f32|bf16 ,tiling)",
    .open = vae_kind_open,
    .encode = vae_kind_encode,
    .decode = vae_kind_decode,
    .close = vae_kind_close,
};
