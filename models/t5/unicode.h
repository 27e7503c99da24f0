/* Code points and grapheme clusters as the T5 tokenizer (tokenizer.c)
 * needs them to do what tokenizers' normaliser does: UTF-8 decoding,
 * Unicode White_Space, and the end of a grapheme cluster by the classes
 * tokenizers 0.23.3 uses (unicode.c). */
#ifndef DIT_MODELS_T5_UNICODE_H
#define DIT_MODELS_T5_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct t5_cp {
    uint32_t value;
    uint32_t off; /* in the segment */
    uint32_t len;
    uint32_t map_off, map_len; /* its own mapping, in the code points' map buffer */
};

/* Rust's char::is_whitespace (Unicode White_Space), what WhitespaceSplit
 * splits on. */
bool t5_cp_is_whitespace(uint32_t c);
/* One code point of valid UTF-8 at s: its value; *len its bytes. */
uint32_t t5_utf8_decode(const unsigned char *s, size_t *len);
/* The end (exclusive) of the cluster that starts at code point i of cps[n]. */
size_t t5_grapheme_end(const struct t5_cp *cps, size_t n, size_t i);

#endif
