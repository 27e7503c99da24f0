/* Prompts for text-to-image sampling (dit-sample --prompt / --prompts-file,
 * and dit-train's samples during training): read once, encoded once by the
 * text encoder, which is then closed, so that its memory (T5-XXL's 9 GB
 * of bf16) is free before the denoiser is made. */
#ifndef DIT_TRAIN_PROMPTS_H
#define DIT_TRAIN_PROMPTS_H

#include <stddef.h>

struct prompts {
    char **text;     /* [n] UTF-8 */
    int n;
    float *emb;      /* [n, len, dim] */
    float *negative; /* [len, dim] of the negative prompt; NULL: none (the zero embedding) */
    int len, dim;
    char encoder[1024]; /* the text encoder's identity */
};

/* The prompt, or the lines of file (blank lines and a trailing CR
 * skipped); exactly one of them. -1 with err_set() naming the file. */
int prompts_read(struct prompts *p, const char *prompt, const char *file);
/* Encodes every prompt and the negative one (NULL: none) with the text
 * encoder of spec, then closes it. -1 with err_set(). */
int prompts_encode(struct prompts *p, const char *spec, const char *negative);
void prompts_free(struct prompts *p);

#endif
