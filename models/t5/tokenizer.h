/* The T5 tokenizer: captions to the ids transformers' T5TokenizerFast gives
 * for the same spiece.model, called as F-Lite's pipeline calls it:
 * tokenizer(captions, padding="max_length", max_length=N, truncation=True).
 *
 * That is: the pieces of the text, cut to N - 1, then EOS (id 1), then pad
 * (id 0) up to N; the mask is 1 for the real tokens (EOS included) and 0 for
 * the padding. Special tokens written in the text (</s>, <pad>, <unk>,
 * <extra_id_N>) become their single ids. The unigram segmentation and the
 * NFKC normalisation are libsentencepiece's; tokenizer.c lists where the
 * fast tokenizer differs from raw sentencepiece and how it is followed. */
#ifndef DIT_MODELS_T5_TOKENIZER_H
#define DIT_MODELS_T5_TOKENIZER_H

#include <stdint.h>

struct t5_tokenizer;

/* dir: a tokenizer/ folder as pipelines ship it: spiece.model, and
 * optionally tokenizer_config.json and special_tokens_map.json (without
 * them, T5's defaults: 100 extra ids, </s> <pad> <unk>). NULL with err_set()
 * naming the missing or bad file. */
struct t5_tokenizer *t5_tokenizer_open(const char *dir);
void t5_tokenizer_close(struct t5_tokenizer *t);

/* The embedding rows the ids need: the sentencepiece vocabulary, the extra
 * ids and any other added token (32100 for T5). */
int t5_tokenizer_vocab_size(const struct t5_tokenizer *t);

/* The ids of a few tokens (for checks and messages). */
int t5_tokenizer_eos_id(const struct t5_tokenizer *t);
int t5_tokenizer_pad_id(const struct t5_tokenizer *t);

/* text (UTF-8, NUL-terminated) to ids[max_length] and mask[max_length].
 * Returns the count of real tokens, EOS included (1 to max_length);
 * *truncated (may be NULL) is set to 1 when pieces were dropped, else 0.
 * -1 with err_set() for invalid UTF-8 (naming the byte offset) or
 * max_length < 1. Several threads may encode with one tokenizer at once. */
int t5_tokenizer_encode(const struct t5_tokenizer *t, const char *text, int max_length, int32_t *ids,
                        uint8_t *mask, int *truncated);

#endif
