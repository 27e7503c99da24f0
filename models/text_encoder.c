/* The table of text encoders and the calls every user goes through. The
 * T5 issue adds models/t5/ and its line here; until then the table is empty
 * and every spec is refused with that said. */
#include "models/text_encoder.h"
#include "libcommon/error.h"

#include <stdio.h>
#include <string.h>

static const struct text_encoder_kind *const text_encoders[] = {
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
    if (!text_encoders[0])
        err_set("text encoder '%s': this build has no text encoder yet (T5 is still to come)", spec ? spec : "");
    else
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
                        uint8_t *mask)
{
    if (!e->kind) {
        err_set("text encoder: not open");
        return -1;
    }
    return e->kind->encode(e, captions, n, emb, mask);
}
