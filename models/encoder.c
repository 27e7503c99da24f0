/* The table of image encoders and the calls every user goes through.
 * Adding one (the VAE) is a folder under models/ and a line in encoders[]. */
#include "models/encoder.h"
#include "libcommon/error.h"
#include "models/pixel/pixel.h"
#include "models/vae/vae.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct encoder_kind *const encoders[] = {
    &pixel_encoder_kind,
    &vae_encoder_kind,
    NULL,
};

/* spec names kind k: "NAME", "NAME:ARGS" or an identity "NAME/...". */
static int names_kind(const char *spec, const struct encoder_kind *k)
{
    size_t n = strlen(k->name);
    return strncmp(spec, k->name, n) == 0 && (spec[n] == '\0' || spec[n] == ':' || spec[n] == '/');
}

int encoder_open(struct encoder *e, const char *spec)
{
    memset(e, 0, sizeof *e);
    for (size_t i = 0; spec && encoders[i]; i++) {
        if (!names_kind(spec, encoders[i]))
            continue;
        e->kind = encoders[i];
        int rc = encoders[i]->open(e, spec);
        if (rc == 0)
            return 0;
        memset(e, 0, sizeof *e);
        if (rc < 0)
            return -1;
        break;
    }
    char forms[512] = "";
    size_t len = 0;
    for (size_t i = 0; encoders[i]; i++)
        len += (size_t)snprintf(forms + len, len < sizeof forms ? sizeof forms - len : 0, "%s%s", i ? ", or " : "",
                                encoders[i]->specs);
    err_set("--encoder '%s': expected %s", spec ? spec : "", forms);
    return -1;
}

void encoder_close(struct encoder *e)
{
    if (e->kind && e->kind->close)
        e->kind->close(e);
    memset(e, 0, sizeof *e);
}

size_t encoder_latent_elems(const struct encoder *e, int w, int h)
{
    return (size_t)e->channels * (size_t)(h / e->factor) * (size_t)(w / e->factor);
}

int encoder_encode(const struct encoder *e, const uint8_t *rgb, int w, int h, float *mean, float *std)
{
    if (!std != !e->has_std) {
        err_set("encoder %s: %s", e->identity, e->has_std ? "its std needs a buffer" : "it has no std");
        return -1;
    }
    return e->kind->encode(e, rgb, w, h, mean, std);
}

void encoder_scale(const struct encoder *e, float *z, size_t n)
{
    if (e->scale == 1.0f && e->shift == 0.0f)
        return;
    for (size_t i = 0; i < n; i++)
        z[i] = (z[i] - e->shift) * e->scale;
}

int encoder_has_decoder(const struct encoder *e)
{
    return e->kind && e->kind->decode;
}

int encoder_decode(const struct encoder *e, const float *latents, int w, int h, uint8_t *rgb)
{
    if (!encoder_has_decoder(e)) {
        err_set("encoder '%s' has no decoder", e->identity);
        return -1;
    }
    if (e->scale == 1.0f && e->shift == 0.0f) /* pixel: the latents are z */
        return e->kind->decode(e, latents, w, h, rgb);
    size_t n = encoder_latent_elems(e, w, h);
    float *z = malloc((n ? n : 1) * sizeof *z);
    if (!z) {
        err_set("encoder %s: out of memory decoding %dx%d", e->identity, w, h);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        z[i] = latents[i] / e->scale + e->shift;
    int rc = e->kind->decode(e, z, w, h, rgb);
    free(z);
    return rc;
}
