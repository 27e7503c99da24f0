/* The T5 tokenizer (tokenizer.h), reproducing transformers' T5TokenizerFast.
 *
 * In transformers 5 T5TokenizerFast is an alias of T5Tokenizer, which is
 * backed by the tokenizers library and builds one fixed pipeline from
 * spiece.model (models/t5/tokenization_t5.py):
 *
 *   added tokens   special tokens are cut out of the raw text first
 *   normalizer     Precompiled(the model's charsmap)
 *   pre-tokenizer  WhitespaceSplit, then Metaspace("▁", prepend "always",
 *                  split)
 *   model          Unigram(every piece with its score, extra ids appended,
 *                  unk_id 2, no byte fallback)
 *   post           "$A </s>"; padding and truncation by the caller's call
 *
 * Raw sentencepiece (EncodeAsIds; transformers 4's slow T5Tokenizer ran it
 * on the text between its added tokens and appended EOS; transformers 5 has
 * no slow T5 tokenizer) gives other ids in these cases, found by experiment
 * (tests/reference/make_t5_tokenizer_goldens.py has them among its strings);
 * we follow the fast one in each:
 *
 *  1. Special tokens. spm has no added tokens: "</s>", "<pad>", "<unk>" and
 *     "<extra_id_N>" in the text are spelled out piece by piece (the slow
 *     tokenizer cut them out, as HF does). HF cuts them out of the raw text
 *     (leftmost, longest match, anywhere, even inside a word: "a</s>b")
 *     before normalisation and gives their single ids; the text on either
 *     side is tokenized on its own, each side starting with "▁" (so
 *     "x<extra_id_3>y" is ▁x <extra_id_3> ▁ y). "<extra_id_N>" with
 *     N >= extra_ids, "<extra_id_03>" or "<EXTRA_ID_1>" are plain text.
 *  2. Whitespace. spm's normalizer drops leading and trailing spaces and
 *     collapses runs of them; other whitespace reaches its model. HF splits
 *     the normalised text on every Unicode White_Space character (Rust's
 *     char::is_whitespace) and drops them. T5's nmt_nfkc charsmap maps tab,
 *     newline, CR, NBSP, U+3000 and the other spaces to " ", so the two agree
 *     on those; they part on U+000B and U+0085, which the charsmap leaves
 *     alone: spm gives an unknown piece, HF a word break. Whitespace-only
 *     text gives just EOS. Each word gets its own "▁" and is segmented on its
 *     own (spm runs one lattice over the whole text; with T5's pieces, which
 *     never hold "▁" but at their start, that gives the same pieces), and
 *     inside a word every "▁" (U+2581 in the text, where a charsmap keeps
 *     it; nmt_nfkc makes it a space) starts a new segment (Metaspace split).
 *  3. Normalisation by graphemes. spm applies the charsmap by longest match
 *     over the whole string. HF's Precompiled normalizer walks the text
 *     grapheme cluster by cluster (unicode-segmentation): a cluster shorter
 *     than 6 bytes is replaced by the mapping of its SHORTEST prefix found in
 *     the charsmap (dropping the rest of the cluster), any other cluster is
 *     mapped code point by code point. So HF does not compose across
 *     clusters (compatibility jamo "ㅋㅠ" stay two jamo, spm makes "큐"),
 *     nor in clusters of 6 bytes or more ("𝐊\u0301" stays K + U+0301, spm
 *     makes "Ḱ"), and drops marks after a mapped base ("Ａ\u0301" is "A",
 *     NFD Vietnamese "e\u0302\u0301" is "ê"). We reproduce that walk with
 *     the grapheme classes of tokenizers' tables (generated below) and ask
 *     libsentencepiece's normalizer for every mapping (see normalize_*).
 *  4. Control pieces and sentinels in the model. HF's Unigram holds every
 *     piece, "<pad>", "</s>", "<unk>" and the extra ids included, with their
 *     scores (0), so text that normalises into one ("＜/s＞", fullwidth) is
 *     matched as that piece; spm never matches control pieces. We load the
 *     vocabulary into spm with every piece NORMAL, the extra ids appended as
 *     HF appends them (ids vocab .. vocab+E-1 for <extra_id_E-1> ..
 *     <extra_id_0>) and a fresh piece of our own as spm's unknown, mapped
 *     back to id 2.
 *  5. Unknowns. Both fuse a run of unknown characters into one id 2. HF
 *     fuses by id, so the "<unk>" piece next to unknown characters fuses
 *     with them too ("ế<unk>" is one id 2); we fuse ids 2 within a segment.
 *  6. EOS, padding, truncation. spm adds no EOS. HF appends </s>, cuts the
 *     pieces to max_length - 1 first, pads with <pad> (id 0) and gives mask
 *     1 for the pieces and EOS. The empty string is [1].
 *  7. legacy. transformers 4 read tokenizer_config.json's "legacy" (false:
 *     no "▁" after a special token, with from_slow). transformers 5 builds
 *     the pipeline above whatever it says; the goldens script checks that
 *     true, false and absent give the same ids. We read nothing of it.
 *  8. Ties. tokenizers sums scores in double, spm in float: a lattice whose
 *     two best paths tie within float rounding could part. Not seen.
 *
 * Configuration, as transformers 5.24 reads it: extra_ids (default 100) is
 * the count of sentinel pieces in the vocabulary; the special tokens are
 * tokenizer_config.json's additional_special_tokens (or extra_special_tokens)
 * when it lists them, else <extra_id_0> .. <extra_id_{extra_ids-1}>, plus
 * eos/pad/unk (tokenizer_config.json, then special_tokens_map.json, then
 * </s>, <pad>, <unk>) and the model's control and user-defined pieces. A
 * special token missing from the vocabulary gets the next id, as HF adds
 * it. The added tokens' lstrip/rstrip flags change nothing here (the
 * whitespace they would strip is dropped anyway); their "normalized" flag
 * is not read (T5's are false). */
#include "models/t5/tokenizer.h"
#include "models/t5/sentencepiece_bridge.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/utf8.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define T5_DEFAULT_EXTRA_IDS 100
#define T5_UNK_ID 2 /* T5Tokenizer builds its Unigram with unk_id=2, whatever the model says */
#define SPIECE_UNDERLINE "\xE2\x96\x81" /* U+2581, Metaspace's replacement */
/* A private-use character that NFKC leaves alone: it separates code points
 * normalised in one library call (normalize_codepoints). */
#define NORM_SEP "\xEE\x80\x80" /* U+E000 */
#define NORM_SEP_LEN 3
/* Our own unknown piece in the segmentation model (item 4 above). */
#define SEG_UNK_PIECE "<dit:t5-unknown>"

/* sentencepiece's ModelProto.SentencePiece.Type */
enum { PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3, PIECE_USER_DEFINED = 4 };

struct added_token {
    char *text;
    size_t len;
    int id;
};

struct t5_tokenizer {
    struct spm_bridge *norm; /* the charsmap alone; NULL when the model has none */
    struct spm_bridge *seg;  /* the vocabulary with an identity normalizer */
    int seg_unk;             /* seg's unknown id, reported as T5_UNK_ID */
    bool ascii_identity;     /* the charsmap maps no printable ASCII character */
    bool sep_neutral;        /* the charsmap leaves NORM_SEP alone */
    int eos_id, pad_id, vocab_size;
    struct added_token *added;
    size_t n_added;
    bool added_first[256]; /* first bytes of the added tokens */
};

/* ---- growable buffers ---------------------------------------------------- */

struct buf {
    char *p;
    size_t n, cap;
};

static int buf_reserve(struct buf *b, size_t more)
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

static int buf_put(struct buf *b, const void *data, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
    return 0;
}

struct ids {
    int *p;
    size_t n, cap;
};

static int ids_push(struct ids *v, int id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int *p = realloc(v->p, cap * sizeof *p);
        if (!p) {
            err_set("out of memory");
            return -1;
        }
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = id;
    return 0;
}

/* ---- sentencepiece's ModelProto, read and written in the protobuf wire
 * format: Debian ships no sentencepiece_model.pb.h, and the two protos we
 * load differ from spiece.model only in a few fields. ---------------------- */

struct piece {
    const char *text;
    uint32_t len;
    uint32_t score_bits; /* the float as stored, copied through */
    int type;
};

struct model_file {
    struct piece *pieces;
    size_t n_pieces;
    const char *charsmap;
    size_t charsmap_len;
};

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

static int parse_piece(struct pb r, struct piece *pc)
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

static int parse_normalizer_spec(struct pb r, struct model_file *m)
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
static int parse_model(const char *data, size_t size, struct model_file *m)
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
                struct piece *p = realloc(m->pieces, cap * sizeof *p);
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
    if (m->n_pieces <= T5_UNK_ID) {
        err_set("not a T5 sentencepiece model: %zu pieces", m->n_pieces);
        goto fail;
    }
    return 0;
bad:
    err_set("not a sentencepiece model (bad protobuf at byte %zu)", (size_t)(r.p - (const unsigned char *)data));
fail:
    free(m->pieces);
    m->pieces = NULL;
    return -1;
}

static int pb_put_varint(struct buf *b, uint64_t v)
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
    return buf_put(b, tmp, n);
}

static int pb_put_uint(struct buf *b, uint32_t field, uint64_t v)
{
    return pb_put_varint(b, (uint64_t)field << 3) || pb_put_varint(b, v) ? -1 : 0;
}

static int pb_put_bytes(struct buf *b, uint32_t field, const void *data, size_t n)
{
    if (pb_put_varint(b, (uint64_t)field << 3 | 2) || pb_put_varint(b, n))
        return -1;
    return buf_put(b, data, n);
}

/* SentencePiece { piece = 1; score = 2 (fixed32); type = 3 }, built in tmp
 * (reused across pieces). */
static int pb_put_piece(struct buf *b, struct buf *tmp, const char *text, size_t len, uint32_t score_bits,
                        int type)
{
    unsigned char score[5] = {2 << 3 | 5, (unsigned char)score_bits, (unsigned char)(score_bits >> 8),
                              (unsigned char)(score_bits >> 16), (unsigned char)(score_bits >> 24)};
    tmp->n = 0;
    if (pb_put_bytes(tmp, 1, text, len) || buf_put(tmp, score, sizeof score) || pb_put_uint(tmp, 3, (uint64_t)type))
        return -1;
    return pb_put_bytes(b, 1, tmp->p, tmp->n);
}

/* TrainerSpec { model_type = 3: UNIGRAM (1) }: a fresh spec, so that no
 * byte_fallback, bos/eos setting or other model type of the file changes
 * how spm reads our pieces (T5Tokenizer always builds a Unigram without
 * byte fallback). NormalizerSpec { name, precompiled_charsmap,
 * add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces all false }:
 * whitespace is ours to handle (item 2). */
static int pb_put_specs(struct buf *b, const char *charsmap, size_t charsmap_len)
{
    struct buf spec = {0};
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

/* ---- code points and grapheme clusters ------------------------------------ */

struct cp_range {
    uint32_t lo, hi;
};

/* The grapheme cluster classes that matter to item 3, as tokenizers 0.23.3
 * has them (unicode-segmentation 1.13.3, Unicode 16): measured on its
 * normalizer, not taken from a Unicode table, so a character new in a later
 * Unicode version is classed as HF classes it. Only the rules that can make
 * a cluster shorter than 6 bytes are needed: GB3 (CR LF), GB4/GB5 (break
 * around controls), GB9/GB9a (× Extend, ZWJ, SpacingMark: "continue") and
 * GB9b (Prepend ×). Hangul syllable sequences (GB6-8), emoji ZWJ sequences
 * (GB11), regional-indicator pairs (GB12/13) and Indic conjuncts (GB9c) join
 * only characters of 3 or 4 bytes, so such a cluster is 6 bytes or more and
 * mapped code point by code point, which is what we do for its parts. */
/* Generated by tests/reference/make_t5_tokenizer_goldens.py --grapheme-table
   from tokenizers 0.23.3. */
static const struct cp_range grapheme_continue[334] = {
    {0x300, 0x36F}, {0x483, 0x489}, {0x591, 0x5BD}, {0x5BF, 0x5BF}, {0x5C1, 0x5C2}, {0x5C4, 0x5C5},
    {0x5C7, 0x5C7}, {0x610, 0x61A}, {0x64B, 0x65F}, {0x670, 0x670}, {0x6D6, 0x6DC}, {0x6DF, 0x6E4},
    {0x6E7, 0x6E8}, {0x6EA, 0x6ED}, {0x711, 0x711}, {0x730, 0x74A}, {0x7A6, 0x7B0}, {0x7EB, 0x7F3},
    {0x7FD, 0x7FD}, {0x816, 0x819}, {0x81B, 0x823}, {0x825, 0x827}, {0x829, 0x82D}, {0x859, 0x85B},
    {0x897, 0x89F}, {0x8CA, 0x8E1}, {0x8E3, 0x903}, {0x93A, 0x93C}, {0x93E, 0x94F}, {0x951, 0x957},
    {0x962, 0x963}, {0x981, 0x983}, {0x9BC, 0x9BC}, {0x9BE, 0x9C4}, {0x9C7, 0x9C8}, {0x9CB, 0x9CD},
    {0x9D7, 0x9D7}, {0x9E2, 0x9E3}, {0x9FE, 0x9FE}, {0xA01, 0xA03}, {0xA3C, 0xA3C}, {0xA3E, 0xA42},
    {0xA47, 0xA48}, {0xA4B, 0xA4D}, {0xA51, 0xA51}, {0xA70, 0xA71}, {0xA75, 0xA75}, {0xA81, 0xA83},
    {0xABC, 0xABC}, {0xABE, 0xAC5}, {0xAC7, 0xAC9}, {0xACB, 0xACD}, {0xAE2, 0xAE3}, {0xAFA, 0xAFF},
    {0xB01, 0xB03}, {0xB3C, 0xB3C}, {0xB3E, 0xB44}, {0xB47, 0xB48}, {0xB4B, 0xB4D}, {0xB55, 0xB57},
    {0xB62, 0xB63}, {0xB82, 0xB82}, {0xBBE, 0xBC2}, {0xBC6, 0xBC8}, {0xBCA, 0xBCD}, {0xBD7, 0xBD7},
    {0xC00, 0xC04}, {0xC3C, 0xC3C}, {0xC3E, 0xC44}, {0xC46, 0xC48}, {0xC4A, 0xC4D}, {0xC55, 0xC56},
    {0xC62, 0xC63}, {0xC81, 0xC83}, {0xCBC, 0xCBC}, {0xCBE, 0xCC4}, {0xCC6, 0xCC8}, {0xCCA, 0xCCD},
    {0xCD5, 0xCD6}, {0xCE2, 0xCE3}, {0xCF3, 0xCF3}, {0xD00, 0xD03}, {0xD3B, 0xD3C}, {0xD3E, 0xD44},
    {0xD46, 0xD48}, {0xD4A, 0xD4D}, {0xD57, 0xD57}, {0xD62, 0xD63}, {0xD81, 0xD83}, {0xDCA, 0xDCA},
    {0xDCF, 0xDD4}, {0xDD6, 0xDD6}, {0xDD8, 0xDDF}, {0xDF2, 0xDF3}, {0xE31, 0xE31}, {0xE33, 0xE3A},
    {0xE47, 0xE4E}, {0xEB1, 0xEB1}, {0xEB3, 0xEBC}, {0xEC8, 0xECE}, {0xF18, 0xF19}, {0xF35, 0xF35},
    {0xF37, 0xF37}, {0xF39, 0xF39}, {0xF3E, 0xF3F}, {0xF71, 0xF84}, {0xF86, 0xF87}, {0xF8D, 0xF97},
    {0xF99, 0xFBC}, {0xFC6, 0xFC6}, {0x102D, 0x1037}, {0x1039, 0x103E}, {0x1056, 0x1059},
    {0x105E, 0x1060}, {0x1071, 0x1074}, {0x1082, 0x1082}, {0x1084, 0x1086}, {0x108D, 0x108D},
    {0x109D, 0x109D}, {0x135D, 0x135F}, {0x1712, 0x1715}, {0x1732, 0x1734}, {0x1752, 0x1753},
    {0x1772, 0x1773}, {0x17B4, 0x17D3}, {0x17DD, 0x17DD}, {0x180B, 0x180D}, {0x180F, 0x180F},
    {0x1885, 0x1886}, {0x18A9, 0x18A9}, {0x1920, 0x192B}, {0x1930, 0x193B}, {0x1A17, 0x1A1B},
    {0x1A55, 0x1A5E}, {0x1A60, 0x1A60}, {0x1A62, 0x1A62}, {0x1A65, 0x1A7C}, {0x1A7F, 0x1A7F},
    {0x1AB0, 0x1ADD}, {0x1AE0, 0x1AEB}, {0x1B00, 0x1B04}, {0x1B34, 0x1B44}, {0x1B6B, 0x1B73},
    {0x1B80, 0x1B82}, {0x1BA1, 0x1BAD}, {0x1BE6, 0x1BF3}, {0x1C24, 0x1C37}, {0x1CD0, 0x1CD2},
    {0x1CD4, 0x1CE8}, {0x1CED, 0x1CED}, {0x1CF4, 0x1CF4}, {0x1CF7, 0x1CF9}, {0x1DC0, 0x1DFF},
    {0x200C, 0x200D}, {0x20D0, 0x20F0}, {0x2CEF, 0x2CF1}, {0x2D7F, 0x2D7F}, {0x2DE0, 0x2DFF},
    {0x302A, 0x302F}, {0x3099, 0x309A}, {0xA66F, 0xA672}, {0xA674, 0xA67D}, {0xA69E, 0xA69F},
    {0xA6F0, 0xA6F1}, {0xA802, 0xA802}, {0xA806, 0xA806}, {0xA80B, 0xA80B}, {0xA823, 0xA827},
    {0xA82C, 0xA82C}, {0xA880, 0xA881}, {0xA8B4, 0xA8C5}, {0xA8E0, 0xA8F1}, {0xA8FF, 0xA8FF},
    {0xA926, 0xA92D}, {0xA947, 0xA953}, {0xA980, 0xA983}, {0xA9B3, 0xA9C0}, {0xA9E5, 0xA9E5},
    {0xAA29, 0xAA36}, {0xAA43, 0xAA43}, {0xAA4C, 0xAA4D}, {0xAA7C, 0xAA7C}, {0xAAB0, 0xAAB0},
    {0xAAB2, 0xAAB4}, {0xAAB7, 0xAAB8}, {0xAABE, 0xAABF}, {0xAAC1, 0xAAC1}, {0xAAEB, 0xAAEF},
    {0xAAF5, 0xAAF6}, {0xABE3, 0xABEA}, {0xABEC, 0xABED}, {0xFB1E, 0xFB1E}, {0xFE00, 0xFE0F},
    {0xFE20, 0xFE2F}, {0xFF9E, 0xFF9F}, {0x101FD, 0x101FD}, {0x102E0, 0x102E0}, {0x10376, 0x1037A},
    {0x10A01, 0x10A03}, {0x10A05, 0x10A06}, {0x10A0C, 0x10A0F}, {0x10A38, 0x10A3A},
    {0x10A3F, 0x10A3F}, {0x10AE5, 0x10AE6}, {0x10D24, 0x10D27}, {0x10D69, 0x10D6D},
    {0x10EAB, 0x10EAC}, {0x10EFA, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11000, 0x11002}, {0x11038, 0x11046}, {0x11070, 0x11070}, {0x11073, 0x11074},
    {0x1107F, 0x11082}, {0x110B0, 0x110BA}, {0x110C2, 0x110C2}, {0x11100, 0x11102},
    {0x11127, 0x11134}, {0x11145, 0x11146}, {0x11173, 0x11173}, {0x11180, 0x11182},
    {0x111B3, 0x111C0}, {0x111C9, 0x111CC}, {0x111CE, 0x111CF}, {0x1122C, 0x11237},
    {0x1123E, 0x1123E}, {0x11241, 0x11241}, {0x112DF, 0x112EA}, {0x11300, 0x11303},
    {0x1133B, 0x1133C}, {0x1133E, 0x11344}, {0x11347, 0x11348}, {0x1134B, 0x1134D},
    {0x11357, 0x11357}, {0x11362, 0x11363}, {0x11366, 0x1136C}, {0x11370, 0x11374},
    {0x113B8, 0x113C0}, {0x113C2, 0x113C2}, {0x113C5, 0x113C5}, {0x113C7, 0x113CA},
    {0x113CC, 0x113D0}, {0x113D2, 0x113D2}, {0x113E1, 0x113E2}, {0x11435, 0x11446},
    {0x1145E, 0x1145E}, {0x114B0, 0x114C3}, {0x115AF, 0x115B5}, {0x115B8, 0x115C0},
    {0x115DC, 0x115DD}, {0x11630, 0x11640}, {0x116AB, 0x116B7}, {0x1171D, 0x1171F},
    {0x11722, 0x1172B}, {0x1182C, 0x1183A}, {0x11930, 0x11935}, {0x11937, 0x11938},
    {0x1193B, 0x1193E}, {0x11940, 0x11940}, {0x11942, 0x11943}, {0x119D1, 0x119D7},
    {0x119DA, 0x119E0}, {0x119E4, 0x119E4}, {0x11A01, 0x11A0A}, {0x11A33, 0x11A39},
    {0x11A3B, 0x11A3E}, {0x11A47, 0x11A47}, {0x11A51, 0x11A5B}, {0x11A8A, 0x11A99},
    {0x11B60, 0x11B67}, {0x11C2F, 0x11C36}, {0x11C38, 0x11C3F}, {0x11C92, 0x11CA7},
    {0x11CA9, 0x11CB6}, {0x11D31, 0x11D36}, {0x11D3A, 0x11D3A}, {0x11D3C, 0x11D3D},
    {0x11D3F, 0x11D45}, {0x11D47, 0x11D47}, {0x11D8A, 0x11D8E}, {0x11D90, 0x11D91},
    {0x11D93, 0x11D97}, {0x11EF3, 0x11EF6}, {0x11F00, 0x11F01}, {0x11F03, 0x11F03},
    {0x11F34, 0x11F3A}, {0x11F3E, 0x11F42}, {0x11F5A, 0x11F5A}, {0x13440, 0x13440},
    {0x13447, 0x13455}, {0x1611E, 0x1612F}, {0x16AF0, 0x16AF4}, {0x16B30, 0x16B36},
    {0x16F4F, 0x16F4F}, {0x16F51, 0x16F87}, {0x16F8F, 0x16F92}, {0x16FE4, 0x16FE4},
    {0x16FF0, 0x16FF1}, {0x1BC9D, 0x1BC9E}, {0x1CF00, 0x1CF2D}, {0x1CF30, 0x1CF46},
    {0x1D165, 0x1D169}, {0x1D16D, 0x1D172}, {0x1D17B, 0x1D182}, {0x1D185, 0x1D18B},
    {0x1D1AA, 0x1D1AD}, {0x1D242, 0x1D244}, {0x1DA00, 0x1DA36}, {0x1DA3B, 0x1DA6C},
    {0x1DA75, 0x1DA75}, {0x1DA84, 0x1DA84}, {0x1DA9B, 0x1DA9F}, {0x1DAA1, 0x1DAAF},
    {0x1E000, 0x1E006}, {0x1E008, 0x1E018}, {0x1E01B, 0x1E021}, {0x1E023, 0x1E024},
    {0x1E026, 0x1E02A}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}, {0x1E5EE, 0x1E5EF}, {0x1E6E3, 0x1E6E3},
    {0x1E6E6, 0x1E6E6}, {0x1E6EE, 0x1E6EF}, {0x1E6F5, 0x1E6F5}, {0x1E8D0, 0x1E8D6},
    {0x1E944, 0x1E94A}, {0x1F3FB, 0x1F3FF}, {0xE0020, 0xE007F}, {0xE0100, 0xE01EF},
};
static const struct cp_range grapheme_prepend[15] = {
    {0x600, 0x605}, {0x6DD, 0x6DD}, {0x70F, 0x70F}, {0x890, 0x891}, {0x8E2, 0x8E2}, {0xD4E, 0xD4E},
    {0x110BD, 0x110BD}, {0x110CD, 0x110CD}, {0x111C2, 0x111C3}, {0x113D1, 0x113D1},
    {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x11A84, 0x11A89}, {0x11D46, 0x11D46},
    {0x11F02, 0x11F02},
};
static const struct cp_range grapheme_control[17] = {
    {0x0, 0x1F}, {0x7F, 0x9F}, {0xAD, 0xAD}, {0x61C, 0x61C}, {0x180E, 0x180E}, {0x200B, 0x200B},
    {0x200E, 0x200F}, {0x2028, 0x202E}, {0x2060, 0x206F}, {0xFEFF, 0xFEFF}, {0xFFF0, 0xFFFB},
    {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0000, 0xE001F},
    {0xE0080, 0xE00FF}, {0xE01F0, 0xE0FFF},
};

static bool cp_in(const struct cp_range *r, size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < r[mid].lo)
            hi = mid;
        else if (c > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

#define CP_IN(table, c) cp_in(table, sizeof table / sizeof table[0], c)

/* Rust's char::is_whitespace (Unicode White_Space), what WhitespaceSplit
 * splits on. */
static bool cp_is_whitespace(uint32_t c)
{
    return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* One code point of valid UTF-8 at s: its value; *len its bytes. */
static uint32_t utf8_decode(const unsigned char *s, size_t *len)
{
    if (s[0] < 0x80) {
        *len = 1;
        return s[0];
    }
    if (s[0] < 0xE0) {
        *len = 2;
        return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    }
    if (s[0] < 0xF0) {
        *len = 3;
        return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    }
    *len = 4;
    return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 |
           (s[3] & 0x3F);
}

struct cp {
    uint32_t value;
    uint32_t off; /* in the segment */
    uint32_t len;
    uint32_t map_off, map_len; /* its own mapping, in the code points' map buffer */
};

/* The end (exclusive) of the cluster that starts at code point i. */
static size_t grapheme_end(const struct cp *cps, size_t n, size_t i)
{
    uint32_t c = cps[i].value;
    size_t j = i + 1;
    if (c == '\r')
        return j < n && cps[j].value == '\n' ? j + 1 : j;
    if (CP_IN(grapheme_control, c))
        return j;
    if (CP_IN(grapheme_prepend, c)) {
        while (j < n && CP_IN(grapheme_prepend, cps[j].value))
            j++;
        if (j < n && !CP_IN(grapheme_control, cps[j].value))
            j++;
    }
    while (j < n && CP_IN(grapheme_continue, cps[j].value))
        j++;
    return j;
}

/* ---- normalisation (item 3) ----------------------------------------------- */

/* s[0..n) through the charsmap alone (libsentencepiece's normalizer), to out. */
static int norm_call(const struct t5_tokenizer *t, const char *s, size_t n, struct buf *out)
{
    char msg[512], *r;
    size_t rn;
    if (spm_bridge_encode_joined(t->norm, s, n, &r, &rn, msg, sizeof msg) != 0) {
        err_set("sentencepiece normalizer: %s", msg);
        return -1;
    }
    int rc = buf_put(out, r, rn);
    free(r);
    return rc;
}

static bool needs_charsmap(const struct t5_tokenizer *t, uint32_t c)
{
    return !(t->ascii_identity && c >= 0x20 && c < 0x7F);
}

/* Sets every code point's own mapping (what the charsmap makes of it alone:
 * HF's per-character path) in maps. The code points that may map are sent
 * in one library call, joined by NORM_SEP, which no charsmap rule can reach
 * across: a rule starts at a code point and, NORM_SEP being no part of any
 * rule, ends before the next separator. Should the separators not come back
 * one for one (a charsmap with a rule through U+E000, or text holding
 * U+E000 itself), each code point is sent alone. */
static int normalize_codepoints(const struct t5_tokenizer *t, const char *seg, struct cp *cps, size_t n,
                                struct buf *maps)
{
    struct buf q = {0}, r = {0};
    size_t sent = 0, parts = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!needs_charsmap(t, cps[i].value))
            continue;
        if (sent++)
            rc = buf_put(&q, NORM_SEP, NORM_SEP_LEN);
        rc = rc || buf_put(&q, seg + cps[i].off, cps[i].len);
    }
    if (rc == 0 && sent && t->sep_neutral) {
        rc = norm_call(t, q.p, q.n, &r);
        for (size_t at = 0; rc == 0 && at + NORM_SEP_LEN <= r.n; at++)
            if (memcmp(r.p + at, NORM_SEP, NORM_SEP_LEN) == 0)
                parts++;
        parts++;
    }
    bool batched = rc == 0 && sent && t->sep_neutral && parts == sent;
    size_t at = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        cps[i].map_off = (uint32_t)maps->n;
        if (!needs_charsmap(t, cps[i].value)) {
            rc = buf_put(maps, seg + cps[i].off, cps[i].len);
        } else if (batched) {
            const char *end = memmem(r.p + at, r.n - at, NORM_SEP, NORM_SEP_LEN);
            size_t len = end ? (size_t)(end - (r.p + at)) : r.n - at;
            rc = buf_put(maps, r.p + at, len);
            at += len + NORM_SEP_LEN;
        } else {
            rc = norm_call(t, seg + cps[i].off, cps[i].len, maps);
        }
        cps[i].map_len = (uint32_t)(maps->n - cps[i].map_off);
    }
    free(q.p);
    free(r.p);
    return rc ? -1 : 0;
}

static bool map_is_self(const struct cp *c, const char *seg, const struct buf *maps)
{
    return c->map_len == c->len && memcmp(maps->p + c->map_off, seg + c->off, c->len) == 0;
}

static int put_maps(struct buf *out, const struct cp *cps, size_t i, size_t j, const struct buf *maps)
{
    for (; i < j; i++)
        if (buf_put(out, maps->p + cps[i].map_off, cps[i].map_len) != 0)
            return -1;
    return 0;
}

/* A cluster cps[i..j) of 2 or more code points and under 6 bytes: HF maps
 * its shortest prefix that is a charsmap rule and drops the rest. The
 * normalizer tells whether a prefix P = c1..cm is a rule when no shorter
 * prefix is: then its longest match at P's start is P itself or nothing, so
 * norm(P) is map(P) when P is a rule and c1 + norm(c2..cm) when it is not
 * (we take a rule that maps P to exactly that for no rule: same text for
 * m = the whole cluster; unseen otherwise). c1 alone is a rule when it maps
 * to anything else (charsmaps hold no rule that maps a character to itself). */
static int normalize_cluster(const struct t5_tokenizer *t, const char *seg, const struct cp *cps, size_t i,
                             size_t j, const struct buf *maps, struct buf *out)
{
    const struct cp *c1 = &cps[i];
    if (!map_is_self(c1, seg, maps))
        return buf_put(out, maps->p + c1->map_off, c1->map_len);
    struct buf whole = {0}, split = {0};
    int rc = 0, found = 0;
    for (size_t m = i + 2; m <= j && rc == 0 && !found; m++) {
        size_t end = cps[m - 1].off + cps[m - 1].len;
        whole.n = split.n = 0;
        rc = norm_call(t, seg + c1->off, end - c1->off, &whole) || buf_put(&split, seg + c1->off, c1->len);
        if (rc == 0 && m == i + 2)
            rc = buf_put(&split, maps->p + cps[i + 1].map_off, cps[i + 1].map_len);
        else if (rc == 0)
            rc = norm_call(t, seg + cps[i + 1].off, end - cps[i + 1].off, &split);
        found = rc == 0 && (whole.n != split.n || memcmp(whole.p, split.p, whole.n) != 0);
    }
    if (rc == 0)
        rc = found ? buf_put(out, whole.p, whole.n) : put_maps(out, cps, i, j, maps);
    free(whole.p);
    free(split.p);
    return rc ? -1 : 0;
}

static bool is_plain_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7F)
            return false;
    return true;
}

/* HF's Precompiled normalizer over one segment (text between added tokens). */
static int normalize_segment(const struct t5_tokenizer *t, const char *seg, size_t n, struct buf *out)
{
    if (!t->norm || (t->ascii_identity && is_plain_ascii(seg, n)))
        return buf_put(out, seg, n);
    struct cp *cps = malloc(n * sizeof *cps);
    if (!cps) {
        err_set("out of memory");
        return -1;
    }
    size_t ncp = 0;
    for (size_t at = 0; at < n; ncp++) {
        size_t len;
        cps[ncp].value = utf8_decode((const unsigned char *)seg + at, &len);
        cps[ncp].off = (uint32_t)at;
        cps[ncp].len = (uint32_t)len;
        at += len;
    }
    struct buf maps = {0};
    int rc = normalize_codepoints(t, seg, cps, ncp, &maps);
    for (size_t i = 0; i < ncp && rc == 0;) {
        size_t j = grapheme_end(cps, ncp, i);
        size_t bytes = cps[j - 1].off + cps[j - 1].len - cps[i].off;
        if (j - i == 1 || bytes >= 6)
            rc = put_maps(out, cps, i, j, &maps);
        else
            rc = normalize_cluster(t, seg, cps, i, j, &maps, out);
        i = j;
    }
    free(maps.p);
    free(cps);
    return rc;
}

/* ---- pre-tokenization and segmentation (items 2, 4, 5) -------------------- */

static bool starts_with_underline(const char *s, size_t n)
{
    return n >= 3 && memcmp(s, SPIECE_UNDERLINE, 3) == 0;
}

/* One Metaspace segment ("▁..."), through the unigram model, to v. */
static int segment_chunk(const struct t5_tokenizer *t, const char *s, size_t n, struct ids *v)
{
    char msg[512];
    int *ids;
    size_t k;
    if (spm_bridge_encode_ids(t->seg, s, n, &ids, &k, msg, sizeof msg) != 0) {
        err_set("sentencepiece: %s", msg);
        return -1;
    }
    int rc = 0;
    bool prev_unk = false;
    for (size_t i = 0; i < k && rc == 0; i++) {
        int id = ids[i] == t->seg_unk ? T5_UNK_ID : ids[i];
        if (id == T5_UNK_ID && prev_unk)
            continue; /* item 5: fused */
        prev_unk = id == T5_UNK_ID;
        rc = ids_push(v, id);
    }
    free(ids);
    return rc;
}

/* A word (no whitespace in it): "▁" in front unless it starts with one,
 * then a segment from every "▁" to the next. */
static int segment_word(const struct t5_tokenizer *t, const char *w, size_t n, struct ids *v, struct buf *chunk)
{
    size_t at = 0;
    while (at < n) {
        size_t end = at + (starts_with_underline(w + at, n - at) ? 3 : 0);
        const char *next = end < n ? memmem(w + end, n - end, SPIECE_UNDERLINE, 3) : NULL;
        end = next ? (size_t)(next - w) : n;
        chunk->n = 0;
        if (!starts_with_underline(w + at, n - at) && buf_put(chunk, SPIECE_UNDERLINE, 3) != 0)
            return -1;
        if (buf_put(chunk, w + at, end - at) != 0 || segment_chunk(t, chunk->p, chunk->n, v) != 0)
            return -1;
        at = end;
    }
    return 0;
}

/* WhitespaceSplit over normalised text, each word to v, until v holds limit. */
static int segment_words(const struct t5_tokenizer *t, const char *s, size_t n, struct ids *v, size_t limit)
{
    struct buf chunk = {0};
    int rc = 0;
    size_t at = 0;
    while (at < n && v->n < limit && rc == 0) {
        size_t len;
        if (cp_is_whitespace(utf8_decode((const unsigned char *)s + at, &len))) {
            at += len;
            continue;
        }
        size_t start = at;
        while (at < n && !cp_is_whitespace(utf8_decode((const unsigned char *)s + at, &len)))
            at += len;
        rc = segment_word(t, s + start, at - start, v, &chunk);
    }
    free(chunk.p);
    return rc;
}

static int encode_segment(const struct t5_tokenizer *t, const char *s, size_t n, struct ids *v, size_t limit,
                          struct buf *norm)
{
    if (n == 0 || v->n >= limit)
        return 0;
    norm->n = 0;
    if (normalize_segment(t, s, n, norm) != 0)
        return -1;
    return segment_words(t, norm->p, norm->n, v, limit);
}

/* The longest added token at s[0..n), or NULL (item 1). */
static const struct added_token *match_added(const struct t5_tokenizer *t, const char *s, size_t n)
{
    const struct added_token *best = NULL;
    for (size_t k = 0; k < t->n_added; k++) {
        const struct added_token *a = &t->added[k];
        if (a->len <= n && (!best || a->len > best->len) && memcmp(s, a->text, a->len) == 0)
            best = a;
    }
    return best;
}

/* The pieces of text, at most limit of them (one more than fits tells of
 * truncation; the rest of the text is not looked at). */
static int encode_pieces(const struct t5_tokenizer *t, const char *text, size_t n, struct ids *v, size_t limit)
{
    struct buf norm = {0};
    size_t start = 0, at = 0;
    int rc = 0;
    while (at < n && v->n < limit && rc == 0) {
        const struct added_token *a =
            t->added_first[(unsigned char)text[at]] ? match_added(t, text + at, n - at) : NULL;
        if (!a) {
            at++;
            continue;
        }
        rc = encode_segment(t, text + start, at - start, v, limit, &norm);
        if (rc == 0 && v->n < limit)
            rc = ids_push(v, a->id);
        at += a->len;
        start = at;
    }
    if (rc == 0)
        rc = encode_segment(t, text + start, n - start, v, limit, &norm);
    free(norm.p);
    return rc;
}

int t5_tokenizer_encode(const struct t5_tokenizer *t, const char *text, int max_length, int32_t *ids,
                        uint8_t *mask, int *truncated)
{
    if (max_length < 1) {
        err_set("t5 tokenizer: max_length %d: must be 1 or more", max_length);
        return -1;
    }
    size_t n = strlen(text);
    long bad = utf8_invalid_at(text, n);
    if (bad >= 0) {
        err_set("t5 tokenizer: invalid UTF-8 at byte offset %ld", bad);
        return -1;
    }
    struct ids v = {0};
    if (encode_pieces(t, text, n, &v, (size_t)max_length) != 0) {
        free(v.p);
        return -1;
    }
    size_t keep = v.n < (size_t)max_length - 1 ? v.n : (size_t)max_length - 1;
    for (size_t i = 0; i < keep; i++)
        ids[i] = v.p[i];
    ids[keep] = t->eos_id;
    for (size_t i = keep + 1; i < (size_t)max_length; i++)
        ids[i] = t->pad_id;
    for (size_t i = 0; i < (size_t)max_length; i++)
        mask[i] = i <= keep;
    if (truncated)
        *truncated = v.n > keep;
    free(v.p);
    return (int)keep + 1;
}

/* ---- the folder: spiece.model and the JSON files -------------------------- */

static char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        err_set("%s: %s", path, strerror(errno));
        return NULL;
    }
    struct buf b = {0};
    char chunk[65536];
    size_t got;
    int rc = 0;
    while (rc == 0 && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = buf_put(&b, chunk, got);
    if (rc == 0 && ferror(f)) {
        err_set("%s: read error", path);
        rc = -1;
    }
    fclose(f);
    if (rc != 0) {
        free(b.p);
        return NULL;
    }
    *size = b.n;
    return b.p ? b.p : calloc(1, 1);
}

/* A JSON file of the folder: NULL and *failed = 0 when absent. */
static json_t *read_json_optional(const char *path, int *failed)
{
    struct stat st;
    *failed = 0;
    if (stat(path, &st) != 0 && errno == ENOENT)
        return NULL;
    json_t *j = json_read_file(path);
    if (!j)
        *failed = 1;
    else if (!json_is_object(j)) {
        err_set("%s: not a JSON object", path);
        json_decref(j);
        *failed = 1;
        return NULL;
    }
    return j;
}

/* A token as the JSON files write one: "text" or {"content": "text", ...}. */
static const char *json_token(const json_t *v)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_string_value(json_object_get(v, "content"));
    return NULL;
}

struct config {
    json_t *cfg, *stm; /* tokenizer_config.json, special_tokens_map.json (may be NULL) */
    char cfg_path[4096], stm_path[4096];
    long extra_ids;
    const json_t *specials; /* the listed special tokens, or NULL: the extra ids */
    const char *eos, *pad, *unk;
};

/* eos/pad/unk: tokenizer_config.json, then special_tokens_map.json. */
static int config_token(struct config *c, const char *key, const char *fallback, const char **out)
{
    const json_t *sources[2] = {c->cfg, c->stm};
    const char *paths[2] = {c->cfg_path, c->stm_path};
    *out = fallback;
    for (int i = 1; i >= 0; i--) {
        const json_t *v = sources[i] ? json_object_get(sources[i], key) : NULL;
        if (!v || json_is_null(v))
            continue;
        if (!json_token(v)) {
            err_set("%s: %s: not a token", paths[i], key);
            return -1;
        }
        *out = json_token(v);
    }
    return 0;
}

static int config_read(struct config *c, const char *dir)
{
    memset(c, 0, sizeof *c);
    snprintf(c->cfg_path, sizeof c->cfg_path, "%s/tokenizer_config.json", dir);
    snprintf(c->stm_path, sizeof c->stm_path, "%s/special_tokens_map.json", dir);
    int failed;
    c->cfg = read_json_optional(c->cfg_path, &failed);
    if (failed)
        return -1;
    c->stm = read_json_optional(c->stm_path, &failed);
    if (failed)
        return -1;
    c->extra_ids = T5_DEFAULT_EXTRA_IDS;
    const json_t *e = c->cfg ? json_object_get(c->cfg, "extra_ids") : NULL;
    if (e && !json_is_null(e)) {
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > 1000000) {
            err_set("%s: extra_ids: not a count of extra ids", c->cfg_path);
            return -1;
        }
        c->extra_ids = (long)json_integer_value(e);
    }
    /* transformers 5 takes the special tokens from tokenizer_config.json
     * only; special_tokens_map.json's list is not read. */
    const char *keys[2] = {"additional_special_tokens", "extra_special_tokens"};
    for (int i = 0; i < 2 && c->cfg && !c->specials; i++) {
        const json_t *v = json_object_get(c->cfg, keys[i]);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_array(v)) {
            err_set("%s: %s: not a list of tokens", c->cfg_path, keys[i]);
            return -1;
        }
        for (size_t k = 0; k < json_array_size(v); k++)
            if (!json_token(json_array_get(v, k))) {
                err_set("%s: %s[%zu]: not a token", c->cfg_path, keys[i], k);
                return -1;
            }
        c->specials = v;
    }
    if (config_token(c, "eos_token", "</s>", &c->eos) || config_token(c, "pad_token", "<pad>", &c->pad) ||
        config_token(c, "unk_token", "<unk>", &c->unk))
        return -1;
    return 0;
}

static void config_free(struct config *c)
{
    json_decref(c->cfg);
    json_decref(c->stm);
}

/* ---- the two sentencepiece processors ------------------------------------- */

static struct spm_bridge *load_proto(const struct buf *proto, const char *path)
{
    char msg[512];
    struct spm_bridge *b = spm_bridge_load(proto->p, proto->n, msg, sizeof msg);
    if (!b)
        err_set("%s: sentencepiece: %s", path, msg);
    return b;
}

/* The vocabulary as HF's Unigram holds it (item 4): every piece NORMAL with
 * its score, the extra ids, then our unknown piece; an identity normalizer. */
static struct spm_bridge *load_segmenter(const struct model_file *m, long extra_ids, const char *path)
{
    struct buf proto = {0}, tmp = {0};
    int rc = 0;
    for (size_t i = 0; i < m->n_pieces && rc == 0; i++)
        rc = pb_put_piece(&proto, &tmp, m->pieces[i].text, m->pieces[i].len, m->pieces[i].score_bits, PIECE_NORMAL);
    for (long i = extra_ids - 1; i >= 0 && rc == 0; i--) {
        char name[32];
        int len = snprintf(name, sizeof name, "<extra_id_%ld>", i);
        rc = pb_put_piece(&proto, &tmp, name, (size_t)len, 0, PIECE_NORMAL);
    }
    rc = rc || pb_put_piece(&proto, &tmp, SEG_UNK_PIECE, strlen(SEG_UNK_PIECE), 0, PIECE_UNKNOWN) ||
         pb_put_specs(&proto, NULL, 0);
    struct spm_bridge *b = rc == 0 ? load_proto(&proto, path) : NULL;
    free(proto.p);
    free(tmp.p);
    return b;
}

/* The charsmap alone. spm needs an unknown piece and one normal piece; the
 * segmentation of this processor is never used, only its pieces joined. */
static struct spm_bridge *load_normalizer(const struct model_file *m, const char *path)
{
    struct buf proto = {0}, tmp = {0};
    int rc = pb_put_piece(&proto, &tmp, "<unk>", 5, 0, PIECE_UNKNOWN) ||
             pb_put_piece(&proto, &tmp, SPIECE_UNDERLINE, 3, 0, PIECE_NORMAL) ||
             pb_put_specs(&proto, m->charsmap, m->charsmap_len);
    struct spm_bridge *b = rc == 0 ? load_proto(&proto, path) : NULL;
    free(proto.p);
    free(tmp.p);
    return b;
}

/* What the charsmap does to NORM_SEP and to printable ASCII, which lets
 * encode skip the library for them. */
static int probe_charsmap(struct t5_tokenizer *t)
{
    struct buf r = {0};
    int rc = norm_call(t, NORM_SEP, NORM_SEP_LEN, &r);
    t->sep_neutral = rc == 0 && r.n == NORM_SEP_LEN && memcmp(r.p, NORM_SEP, NORM_SEP_LEN) == 0;
    t->ascii_identity = true;
    for (int c = 0x20; c < 0x7F && rc == 0; c++) {
        char ch = (char)c;
        r.n = 0;
        rc = norm_call(t, &ch, 1, &r);
        if (rc == 0 && (r.n != 1 || r.p[0] != ch))
            t->ascii_identity = false;
    }
    free(r.p);
    return rc;
}

/* ---- added tokens (item 1) ------------------------------------------------ */

static int add_token(struct t5_tokenizer *t, const char *text, size_t *cap)
{
    size_t len = strlen(text);
    if (len == 0)
        return 0;
    for (size_t k = 0; k < t->n_added; k++)
        if (t->added[k].len == len && memcmp(t->added[k].text, text, len) == 0)
            return 0;
    if (t->n_added == *cap) {
        *cap = *cap ? *cap * 2 : 128;
        struct added_token *p = realloc(t->added, *cap * sizeof *p);
        if (!p) {
            err_set("out of memory");
            return -1;
        }
        t->added = p;
    }
    struct added_token *a = &t->added[t->n_added];
    a->text = strdup(text);
    if (!a->text) {
        err_set("out of memory");
        return -1;
    }
    a->len = len;
    a->id = spm_bridge_piece_id(t->seg, text, len);
    if (a->id < 0 || a->id == t->seg_unk)
        a->id = t->vocab_size++; /* not in the vocabulary: HF gives it the next id */
    t->added_first[(unsigned char)text[0]] = true;
    t->n_added++;
    return 0;
}

static int token_id(const struct t5_tokenizer *t, const char *text)
{
    for (size_t k = 0; k < t->n_added; k++)
        if (strcmp(t->added[k].text, text) == 0)
            return t->added[k].id;
    return -1;
}

static int add_tokens(struct t5_tokenizer *t, const struct model_file *m, const struct config *c)
{
    size_t cap = 0;
    char tmp[4096];
    int rc = 0;
    for (size_t i = 0; i < m->n_pieces && rc == 0; i++) {
        const struct piece *p = &m->pieces[i];
        if ((p->type == PIECE_CONTROL || p->type == PIECE_USER_DEFINED) && p->len < sizeof tmp) {
            memcpy(tmp, p->text, p->len);
            tmp[p->len] = '\0';
            rc = add_token(t, tmp, &cap);
        }
    }
    rc = rc || add_token(t, c->pad, &cap) || add_token(t, c->eos, &cap) || add_token(t, c->unk, &cap);
    if (c->specials) {
        for (size_t k = 0; k < json_array_size(c->specials) && rc == 0; k++)
            rc = add_token(t, json_token(json_array_get(c->specials, k)), &cap);
    } else {
        for (long i = 0; i < c->extra_ids && rc == 0; i++) {
            snprintf(tmp, sizeof tmp, "<extra_id_%ld>", i);
            rc = add_token(t, tmp, &cap);
        }
    }
    if (rc != 0)
        return -1;
    t->eos_id = token_id(t, c->eos);
    t->pad_id = token_id(t, c->pad);
    return 0;
}

/* ---- open and close ------------------------------------------------------- */

static int open_model(struct t5_tokenizer *t, const char *dir, const struct config *c)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/spiece.model", dir);
    size_t size;
    char *data = read_file(path, &size);
    if (!data)
        return -1;
    struct model_file m;
    int rc = parse_model(data, size, &m);
    if (rc != 0)
        err_prefix("%s", path);
    if (rc == 0 && (size_t)c->extra_ids > (size_t)INT_MAX - m.n_pieces - 1) {
        err_set("%s: too many pieces", path);
        rc = -1;
    }
    if (rc == 0) {
        t->seg_unk = (int)(m.n_pieces + (size_t)c->extra_ids);
        t->vocab_size = t->seg_unk;
        t->seg = load_segmenter(&m, c->extra_ids, path);
        rc = t->seg ? 0 : -1;
    }
    if (rc == 0 && m.charsmap_len) {
        t->norm = load_normalizer(&m, path);
        rc = t->norm ? probe_charsmap(t) : -1;
    }
    if (rc == 0)
        rc = add_tokens(t, &m, c);
    free(m.pieces);
    free(data);
    return rc;
}

struct t5_tokenizer *t5_tokenizer_open(const char *dir)
{
    struct t5_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        err_set("out of memory");
        return NULL;
    }
    struct config c;
    int rc = config_read(&c, dir);
    if (rc == 0)
        rc = open_model(t, dir, &c);
    config_free(&c);
    if (rc != 0) {
        t5_tokenizer_close(t);
        return NULL;
    }
    return t;
}

void t5_tokenizer_close(struct t5_tokenizer *t)
{
    if (!t)
        return;
    spm_bridge_free(t->norm);
    spm_bridge_free(t->seg);
    for (size_t k = 0; k < t->n_added; k++)
        free(t->added[k].text);
    free(t->added);
    free(t);
}

int t5_tokenizer_vocab_size(const struct t5_tokenizer *t)
{
    return t->vocab_size;
}

int t5_tokenizer_eos_id(const struct t5_tokenizer *t)
{
    return t->eos_id;
}

int t5_tokenizer_pad_id(const struct t5_tokenizer *t)
{
    return t->pad_id;
}
