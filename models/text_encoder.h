/* The text-encoder seam: a text encoder turns captions into the embeddings
 * a text-to-image denoiser is conditioned on (struct cond's text and
 * text_mask), as F-Lite conditions on a hidden layer of T5-XXL.
 *
 * Every caption becomes max_length tokens (padded or truncated, as the
 * model's tokenizer does), so a batch is emb[n, max_length, dim] with
 * mask[n, max_length] (1 for a real token, 0 for padding). Whether the
 * encoder itself attends with that mask, which hidden layer it returns and
 * whether the final norm is applied are part of its spec and identity:
 * F-Lite encodes without a mask and takes layer -8 through the final norm.
 *
 * Implementations live in one folder each (models/t5/: T5 v1.1)
 * and are listed in the table of models/text_encoder.c; text_encoder_open
 * picks one by spec, or by the identity string that shards and checkpoints
 * record, which names everything that changes the embeddings. */
#ifndef DIT_MODELS_TEXT_ENCODER_H
#define DIT_MODELS_TEXT_ENCODER_H

#include <stddef.h>
#include <stdint.h>

struct text_encoder;

struct text_encoder_kind {
    const char *name;  /* "t5": specs "t5:ARGS", identities "t5/..." */
    const char *specs; /* for messages */
    /* As encoder_kind's open: 0, 1 when the text is not its spec, -1 with
     * err_set() when it is but cannot be opened. */
    int (*open)(struct text_encoder *e, const char *spec);
    /* n captions (UTF-8) to emb[n, max_length, dim] and mask[n, max_length];
     * truncated[n] (may be NULL) gets 1 for each caption that had more
     * tokens than max_length holds. 0, or -1 with err_set(). Several
     * threads may call it at once. */
    int (*encode)(const struct text_encoder *e, const char *const *captions, int n, float *emb, uint8_t *mask,
                  uint8_t *truncated);
    void (*close)(struct text_encoder *e); /* NULL when there is no state */
};

struct text_encoder {
    const struct text_encoder_kind *kind;
    char identity[1024];
    int max_length; /* tokens per caption */
    int dim;        /* embedding width */
    void *state;
};

/* The spec of a T5 encoder from a tool's options: "t5:PATH" (PATH a
 * text_encoder/ or pipeline folder; a PATH that is already "t5:..." gets
 * the options appended) with ",tokenizer=", ",layer=" (when layer_given),
 * ",final_norm", ",mask" and ",max_length=" (0: 512). -1 with err_set()
 * when it does not fit in size. */
int text_encoder_spec_t5(char *spec, size_t size, const char *path, const char *tokenizer, int layer_given,
                         int layer, int final_norm, int mask, int max_length);

/* 0, or -1 with err_set() naming the forms this build accepts. */
int text_encoder_open(struct text_encoder *e, const char *spec);
void text_encoder_close(struct text_encoder *e);

/* Elements of one caption's embedding: max_length * dim. */
size_t text_encoder_embedding_elems(const struct text_encoder *e);

int text_encoder_encode(const struct text_encoder *e, const char *const *captions, int n, float *emb,
                        uint8_t *mask, uint8_t *truncated);

#endif
