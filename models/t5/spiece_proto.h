/* sentencepiece's ModelProto for the T5 tokenizer (tokenizer.c), read and
 * written in the protobuf wire format: Debian ships no
 * sentencepiece_model.pb.h, and the two protos the tokenizer loads into
 * libsentencepiece differ from spiece.model only in a few fields. Also the
 * growable byte buffer they are built in. */
#ifndef DIT_MODELS_T5_SPIECE_PROTO_H
#define DIT_MODELS_T5_SPIECE_PROTO_H

#include <stddef.h>
#include <stdint.h>

struct t5_buf {
    char *p;
    size_t n, cap;
};

/* 0, or -1 with err_set() when out of memory. */
int t5_buf_reserve(struct t5_buf *b, size_t more);
int t5_buf_put(struct t5_buf *b, const void *data, size_t n);

/* ModelProto.SentencePiece.Type */
enum { PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3, PIECE_USER_DEFINED = 4 };

struct spiece_piece {
    const char *text;
    uint32_t len;
    uint32_t score_bits; /* the float as stored, copied through */
    int type;
};

struct spiece_model {
    struct spiece_piece *pieces;
    size_t n_pieces;
    const char *charsmap;
    size_t charsmap_len;
};

/* The pieces and the precompiled charsmap of a serialized ModelProto
 * (pointing into data). 0, or -1 with err_set(); m->pieces is malloc'd. */
int spiece_model_parse(const char *data, size_t size, struct spiece_model *m);
/* One SentencePiece { piece, score (the float's bits), type } into b, built
 * in tmp. */
int spiece_put_piece(struct t5_buf *b, struct t5_buf *tmp, const char *text, size_t len, uint32_t score_bits,
                     int type);
/* A Unigram TrainerSpec and a NormalizerSpec with the charsmap (none when
 * charsmap_len is 0) and every whitespace rule off. */
int spiece_put_specs(struct t5_buf *b, const char *charsmap, size_t charsmap_len);

#endif
