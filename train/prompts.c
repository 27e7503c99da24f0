#include "train/prompts.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "models/text_encoder.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add(struct prompts *p, const char *text, int *cap)
{
    if (p->n == *cap) {
        int grown = *cap ? 2 * *cap : 8;
        char **t = realloc(p->text, (size_t)grown * sizeof *t);
        if (!t)
            return -1;
        p->text = t, *cap = grown;
    }
    if (!(p->text[p->n] = strdup(text)))
        return -1;
    p->n++;
    return 0;
}

int prompts_read(struct prompts *p, const char *prompt, const char *file)
{
    memset(p, 0, sizeof *p);
    int cap = 0;
    if (!!prompt == !!file) {
        err_set("give one of --prompt and --prompts-file");
        return -1;
    }
    if (prompt) {
        if (add(p, prompt, &cap) != 0) {
            err_set("out of memory");
            return -1;
        }
        return 0;
    }
    FILE *f = fopen(file, "r");
    if (!f) {
        err_set("%s: %s", file, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &lcap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (strspn(line, " \t") == (size_t)len)
            continue; /* a blank line is no prompt */
        if (add(p, line, &cap) != 0) {
            err_set("out of memory");
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) {
        err_set("%s: %s", file, strerror(errno));
        rc = -1;
    }
    free(line);
    fclose(f);
    if (rc == 0 && p->n == 0) {
        err_set("%s: no prompts (one per line)", file);
        rc = -1;
    }
    return rc;
}

int prompts_encode(struct prompts *p, const char *spec, const char *negative)
{
    struct text_encoder e;
    if (text_encoder_open(&e, spec) != 0)
        return -1;
    snprintf(p->encoder, sizeof p->encoder, "%s", e.identity);
    p->len = e.max_length, p->dim = e.dim;
    const size_t per = text_encoder_embedding_elems(&e);
    p->emb = malloc((size_t)p->n * per * sizeof *p->emb);
    uint8_t *mask = malloc((size_t)(p->n + 1) * (size_t)e.max_length), *cut = malloc((size_t)p->n + 1);
    int rc = p->emb && mask && cut ? 0 : -1;
    if (rc)
        err_set("out of memory for %d prompts' embeddings", p->n);
    if (rc == 0)
        rc = text_encoder_encode(&e, (const char *const *)p->text, p->n, p->emb, mask, cut);
    for (int i = 0; rc == 0 && i < p->n; i++)
        if (cut[i])
            log_warn("prompt %d has more than %d tokens: cut, as the model was trained", i + 1, e.max_length);
    if (rc == 0 && negative) {
        if (!(p->negative = malloc(per * sizeof *p->negative))) {
            err_set("out of memory");
            rc = -1;
        } else {
            rc = text_encoder_encode(&e, &negative, 1, p->negative, mask, cut);
        }
    }
    free(mask), free(cut);
    text_encoder_close(&e);
    return rc;
}

void prompts_free(struct prompts *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->text[i]);
    free(p->text), free(p->emb), free(p->negative);
    memset(p, 0, sizeof *p);
}
