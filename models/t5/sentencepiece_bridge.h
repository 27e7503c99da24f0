/* The C face of libsentencepiece (Debian's libsentencepiece-dev, whose API
 * is C++ only): a processor loaded from a serialized ModelProto, encoding to
 * ids or to its pieces. Nothing here knows about T5; models/t5/tokenizer.c
 * builds the ModelProtos it loads. No C++ exception crosses this interface:
 * failures return -1 (or NULL) with the library's message in err. */
#ifndef DIT_MODELS_T5_SENTENCEPIECE_BRIDGE_H
#define DIT_MODELS_T5_SENTENCEPIECE_BRIDGE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct spm_bridge;

/* A processor from proto[0..size) (a serialized sentencepiece ModelProto).
 * NULL with the reason in err[0..errlen). */
struct spm_bridge *spm_bridge_load(const void *proto, size_t size, char *err, size_t errlen);
void spm_bridge_free(struct spm_bridge *b);

/* The id of a piece, or -1 when the vocabulary has no such piece. */
int spm_bridge_piece_id(const struct spm_bridge *b, const char *piece, size_t len);

/* text[0..len) to piece ids: *ids (malloc'd, NULL when *n is 0) and *n.
 * Several threads may encode with one processor at once. 0, or -1 with err. */
int spm_bridge_encode_ids(const struct spm_bridge *b, const char *text, size_t len, int **ids, size_t *n,
                          char *err, size_t errlen);

/* text[0..len) to its pieces joined, that is the text as the processor's
 * normalizer leaves it (runs of unknown characters come back as they are):
 * *out (malloc'd, NUL-terminated) and *out_len. 0, or -1 with err. */
int spm_bridge_encode_joined(const struct spm_bridge *b, const char *text, size_t len, char **out,
                             size_t *out_len, char *err, size_t errlen);

/* Trains a model with SentencePieceTrainer from n option pairs (the
 * trainer's flags without the dashes: input, model_prefix, vocab_size, ...),
 * which writes MODEL_PREFIX.model and .vocab. The demo data's tokenizer is
 * trained this way. 0, or -1 with err. */
int spm_bridge_train(const char *const *keys, const char *const *values, size_t n, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
