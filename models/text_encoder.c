/* The table of text encoders and the calls every user goes through: T5
 * (models/t5/, T5 v1.1's encoder, F-Lite's and FLUX's). A new kind is one
 * line here. */
#include "models/text_encoder.h"
#include "libcommon/error.h"
#include "models/t5/t5.h"

#include <stdio.h>
#include <string.h>

static const struct text_encoder_kind *const text_encoders[] = {
    &t5_text_encoder_kind,
    NULL,
};

int text_encoder_open(struct text_encoder *e, const char *spec)
{
    memset(e, 0, sizeof *e);
    char forms[512] = "";
    size_t len = 0;
    for (size_t i = 0; spec && text_encoders[i]; i++) {
        const struct text_encoder_kind *k = text_encoders[i];
        size_t n = strlen(k->name);
        len += (size_t)snprintf(forms + len, len < sizeof forms ? sizeof forms - len : 0, "%s%s", i ? ", or " : "",
                                k->specs);
        if (strncmp(spec, k->name, n) != 0 || (spec[n] != ':' && spec[n] != '/'))
            continue;
        e->kind = k;
        int rc = k->open(e, spec);
        if (rc == 0)
            return 0;
        memset(e, 0, sizeof *e);
        if (rc < 0)
            return -1;
    }
    err_set("text encoder '%s': expected %s", spec ? spec : "", forms);
    return -1;
}

void text_encoder_close(struct text_encoder *e)
{
    if (e->kind && e->kind->close)
        e->kind->close(e);
    memset(e, 0, sizeof *e);
}

size_t text_encoder_embedding_elems(const struct text_encoder *e)
{
    return (size_t)e->max_length * (size_t)e->dim;
}

int text_encoder_encode(const struct text_encoder *e, const char *const *captions, int n, float *emb,
                        uint8_t *mask, uint8_t *truncated)
{
    if (!e->kind) {
        err_set("text encoder: not open");
        return -1;
    }
    return e->kind->encode(e, captions, n, emb, mask, truncated);
}

int text_encoder_spec_t5(char *spec, size_t size, const char *path, const char *tokenizer, int layer_given,
                         int layer, int final_norm, int mask, int max_length)
{
    size_t n = (size_t)snprintf(spec, size, "%s%s", strncmp(path, "t5:", 3) == 0 ? "" : "t5:", path);
    if (tokenizer)
        n += (size_t)snprintf(spec + n, n < size ? size - n : 0, ",tokenizer=%s", tokenizer);
    if (layer_given)
        n += (size_t)snprintf(spec + n, n < size ? size - n : 0, ",layer=%d", layer);
    if (final_norm)
        n += (size_t)snprintf(spec + n, n < size ? size - n : 0, ",final_norm");
    if (mask)
        n += (size_t)snprintf(spec + n, n < size ? size - n : 0, ",mask");
    n += (size_t)snprintf(spec + n, n < size ? size - n : 0, ",max_length=%d", max_length ? max_length : 512);
    if (n >= size) {
        err_set("the text encoder's paths are too long");
        return -1;
    }
    return 0;
}
