/* sentencepiece's ModelProto in the protobuf wire format
 * (models/t5/spiece_proto.h). */
#include "models/t5/spiece_proto.h"
#include "libcommon/error.h"

#include <stdlib.h>
#include <string.h>

int t5_buf_reserve(struct t5_buf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        err_set("out of memory");
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int t5_buf_put(struct t5_buf *b, const void *data, size_t n)
{
    if (t5_buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
    return 0;
}

struct pb {
    const unsigned char *p, *end;
};

static int pb_varint(struct pb *r, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return -1;
        unsigned char c = *r->p++;
        *v |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80))
            return 0;
    }
    return -1;
}

/* The next field: its number, its wire type, its value (varint and fixed)
 * or its payload (length-delimited). -1 on a malformed stream. */
static int pb_next(struct pb *r, uint32_t *field, uint64_t *value, struct pb *payload)
{
    uint64_t tag;
    if (pb_varint(r, &tag) != 0 || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
        return -1;
    *field = (uint32_t)(tag >> 3);
    switch (tag & 7) {
    case 0:
        return pb_varint(r, value);
    case 1:
    case 5: {
        size_t k = (tag & 7) == 1 ? 8 : 4;
        if ((size_t)(r->end - r->p) < k)
            return -1;
        *value = 0;
        for (size_t i = 0; i < k; i++)
            *value |= (uint64_t)r->p[i] << (8 * i);
        r->p += k;
        return 0;
    }
    case 2: {
        uint64_t len;
        if (pb_varint(r, &len) != 0 || len > (uint64_t)(r->end - r->p))
            return -1;
        payload->p = r->p;
        payload->end = r->p + len;
        r->p += len;
        *value = len;
        return 0;
    }
    default:
        return -1;
    }
}

static int parse_piece(struct pb r, struct spiece_piece *pc)
{
    pc->text = NULL;
    pc->len = 0;
    pc->score_bits = 0;
    pc->type = PIECE_NORMAL;
    while (r.p < r.end) {
        uint32_t f;
        uint64_t v;
        struct pb sub;
        if (pb_next(&r, &f, &v, &sub) != 0)
            return -1;
        if (f == 1) {
            pc->text = (const char *)sub.p;
            pc->len = (uint32_t)(sub.end - sub.p);
        } else if (f == 2) {
            pc->score_bits = (uint32_t)v;
        } else if (f == 3) {
            pc->type = (int)v;
        }
    }
    return pc->len ? 0 : -1;
}

static int parse_normalizer_spec(struct pb r, struct spiece_model *m)
{
    while (r.p < r.end) {
        uint32_t f;
        uint64_t v;
        struct pb sub;
        if (pb_next(&r, &f, &v, &sub) != 0)
            return -1;
        if (f == 2) {
            m->charsmap = (const char *)sub.p;
            m->charsmap_len = (size_t)(sub.end - sub.p);
        }
    }
    return 0;
}

/* ModelProto: pieces (1) and normalizer_spec (3) are all we read; the
 * trainer spec (2), the self-test samples (4) and the denormalizer (5) are
 * not carried into our protos. */
int spiece_model_parse(const char *data, size_t size, struct spiece_model *m)
{
    memset(m, 0, sizeof *m);
    size_t cap = 0;
    struct pb r = {(const unsigned char *)data, (const unsigned char *)data + size};
    while (r.p < r.end) {
        uint32_t f;
        uint64_t v;
        struct pb sub;
        if (pb_next(&r, &f, &v, &sub) != 0)
            goto bad;
        if (f == 1) {
            if (m->n_pieces == cap) {
                cap = cap ? cap * 2 : 1024;
                struct spiece_piece *p = realloc(m->pieces, cap * sizeof *p);
                if (!p) {
                    err_set("out of memory");
                    goto fail;
                }
                m->pieces = p;
            }
            if (parse_piece(sub, &m->pieces[m->n_pieces]) != 0)
                goto bad;
            m->n_pieces++;
        } else if (f == 3 && parse_normalizer_spec(sub, m) != 0) {
            goto bad;
        }
    }
    return 0;
bad:
    err_set("not a sentencepiece model (bad protobuf at byte %zu)", (size_t)(r.p - (const unsigned char *)data));
fail:
    free(m->pieces);
    m->pieces = NULL;
    return -1;
}

static int pb_put_varint(struct t5_buf *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    return t5_buf_put(b, tmp, n);
}

static int pb_put_uint(struct t5_buf *b, uint32_t field, uint64_t v)
{
    return pb_put_varint(b, (uint64_t)field << 3) || pb_put_varint(b, v) ? -1 : 0;
}

static int pb_put_bytes(struct t5_buf *b, uint32_t field, const void *data, size_t n)
{
    if (pb_put_varint(b, (uint64_t)field << 3 | 2) || pb_put_varint(b, n))
        return -1;
    return t5_buf_put(b, data, n);
}

/* SentencePiece { piece = 1; score = 2 (fixed32); type = 3 }, built in tmp
 * (reused across pieces). */
int spiece_put_piece(struct t5_buf *b, struct t5_buf *tmp, const char *text, size_t len, uint32_t score_bits,
                        int type)
{
    unsigned char score[5] = {2 << 3 | 5, (unsigned char)score_bits, (unsigned char)(score_bits >> 8),
                              (unsigned char)(score_bits >> 16), (unsigned char)(score_bits >> 24)};
    tmp->n = 0;
    if (pb_put_bytes(tmp, 1, text, len) || t5_buf_put(tmp, score, sizeof score) || pb_put_uint(tmp, 3, (uint64_t)type))
        return -1;
    return pb_put_bytes(b, 1, tmp->p, tmp->n);
}

/* TrainerSpec { model_type = 3: UNIGRAM (1) }: a fresh spec, so that no
 * byte_fallback, bos/eos setting or other model type of the file changes
 * how spm reads our pieces (T5Tokenizer always builds a Unigram without
 * byte fallback). NormalizerSpec { name, precompiled_charsmap,
 * add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces all false }:
 * whitespace is ours to handle (item 2). */
int spiece_put_specs(struct t5_buf *b, const char *charsmap, size_t charsmap_len)
{
    struct t5_buf spec = {0};
    int rc = pb_put_uint(&spec, 3, 1) || pb_put_bytes(b, 2, spec.p, spec.n);
    spec.n = 0;
    const char *name = charsmap_len ? "dit-t5-charsmap" : "identity";
    rc = rc || pb_put_bytes(&spec, 1, name, strlen(name));
    if (charsmap_len)
        rc = rc || pb_put_bytes(&spec, 2, charsmap, charsmap_len);
    rc = rc || pb_put_uint(&spec, 3, 0) || pb_put_uint(&spec, 4, 0) || pb_put_uint(&spec, 5, 0);
    rc = rc || pb_put_bytes(b, 3, spec.p, spec.n);
    free(spec.p);
    return rc ? -1 : 0;
}
