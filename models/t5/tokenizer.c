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
#include "models/t5/spiece_proto.h"
#include "models/t5/unicode.h"
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

/* ---- normalisation (item 3) ----------------------------------------------- */

/* s[0..n) through the charsmap alone (libsentencepiece's normalizer), to out. */
static int norm_call(const struct t5_tokenizer *t, const char *s, size_t n, struct t5_buf *out)
{
    char msg[512], *r;
    size_t rn;
    if (spm_bridge_encode_joined(t->norm, s, n, &r, &rn, msg, sizeof msg) != 0) {
        err_set("sentencepiece normalizer: %s", msg);
        return -1;
    }
    int rc = t5_buf_put(out, r, rn);
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
static int normalize_codepoints(const struct t5_tokenizer *t, const char *seg, struct t5_cp *cps, size_t n,
                                struct t5_buf *maps)
{
    struct t5_buf q = {0}, r = {0};
    size_t sent = 0, parts = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!needs_charsmap(t, cps[i].value))
            continue;
        if (sent++)
            rc = t5_buf_put(&q, NORM_SEP, NORM_SEP_LEN);
        rc = rc || t5_buf_put(&q, seg + cps[i].off, cps[i].len);
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
            rc = t5_buf_put(maps, seg + cps[i].off, cps[i].len);
        } else if (batched) {
            const char *end = memmem(r.p + at, r.n - at, NORM_SEP, NORM_SEP_LEN);
            size_t len = end ? (size_t)(end - (r.p + at)) : r.n - at;
            rc = t5_buf_put(maps, r.p + at, len);
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

static bool map_is_self(const struct t5_cp *c, const char *seg, const struct t5_buf *maps)
{
    return c->map_len == c->len && memcmp(maps->p + c->map_off, seg + c->off, c->len) == 0;
}

static int put_maps(struct t5_buf *out, const struct t5_cp *cps, size_t i, size_t j, const struct t5_buf *maps)
{
    for (; i < j; i++)
        if (t5_buf_put(out, maps->p + cps[i].map_off, cps[i].map_len) != 0)
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
static int normalize_cluster(const struct t5_tokenizer *t, const char *seg, const struct t5_cp *cps, size_t i,
                             size_t j, const struct t5_buf *maps, struct t5_buf *out)
{
    const struct t5_cp *c1 = &cps[i];
    if (!map_is_self(c1, seg, maps))
        return t5_buf_put(out, maps->p + c1->map_off, c1->map_len);
    struct t5_buf whole = {0}, split = {0};
    int rc = 0, found = 0;
    for (size_t m = i + 2; m <= j && rc == 0 && !found; m++) {
        size_t end = cps[m - 1].off + cps[m - 1].len;
        whole.n = split.n = 0;
        rc = norm_call(t, seg + c1->off, end - c1->off, &whole) || t5_buf_put(&split, seg + c1->off, c1->len);
        if (rc == 0 && m == i + 2)
            rc = t5_buf_put(&split, maps->p + cps[i + 1].map_off, cps[i + 1].map_len);
        else if (rc == 0)
            rc = norm_call(t, seg + cps[i + 1].off, end - cps[i + 1].off, &split);
        found = rc == 0 && (whole.n != split.n || memcmp(whole.p, split.p, whole.n) != 0);
    }
    if (rc == 0)
        rc = found ? t5_buf_put(out, whole.p, whole.n) : put_maps(out, cps, i, j, maps);
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
static int normalize_segment(const struct t5_tokenizer *t, const char *seg, size_t n, struct t5_buf *out)
{
    if (!t->norm || (t->ascii_identity && is_plain_ascii(seg, n)))
        return t5_buf_put(out, seg, n);
    struct t5_cp *cps = malloc(n * sizeof *cps);
    if (!cps) {
        err_set("out of memory");
        return -1;
    }
    size_t ncp = 0;
    for (size_t at = 0; at < n; ncp++) {
        size_t len;
        cps[ncp].value = t5_utf8_decode((const unsigned char *)seg + at, &len);
        cps[ncp].off = (uint32_t)at;
        cps[ncp].len = (uint32_t)len;
        at += len;
    }
    struct t5_buf maps = {0};
    int rc = normalize_codepoints(t, seg, cps, ncp, &maps);
    for (size_t i = 0; i < ncp && rc == 0;) {
        size_t j = t5_grapheme_end(cps, ncp, i);
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
static int segment_word(const struct t5_tokenizer *t, const char *w, size_t n, struct ids *v, struct t5_buf *chunk)
{
    size_t at = 0;
    while (at < n) {
        size_t end = at + (starts_with_underline(w + at, n - at) ? 3 : 0);
        const char *next = end < n ? memmem(w + end, n - end, SPIECE_UNDERLINE, 3) : NULL;
        end = next ? (size_t)(next - w) : n;
        chunk->n = 0;
        if (!starts_with_underline(w + at, n - at) && t5_buf_put(chunk, SPIECE_UNDERLINE, 3) != 0)
            return -1;
        if (t5_buf_put(chunk, w + at, end - at) != 0 || segment_chunk(t, chunk->p, chunk->n, v) != 0)
            return -1;
        at = end;
    }
    return 0;
}

/* WhitespaceSplit over normalised text, each word to v, until v holds limit. */
static int segment_words(const struct t5_tokenizer *t, const char *s, size_t n, struct ids *v, size_t limit)
{
    struct t5_buf chunk = {0};
    int rc = 0;
    size_t at = 0;
    while (at < n && v->n < limit && rc == 0) {
        size_t len;
        if (t5_cp_is_whitespace(t5_utf8_decode((const unsigned char *)s + at, &len))) {
            at += len;
            continue;
        }
        size_t start = at;
        while (at < n && !t5_cp_is_whitespace(t5_utf8_decode((const unsigned char *)s + at, &len)))
            at += len;
        rc = segment_word(t, s + start, at - start, v, &chunk);
    }
    free(chunk.p);
    return rc;
}

static int encode_segment(const struct t5_tokenizer *t, const char *s, size_t n, struct ids *v, size_t limit,
                          struct t5_buf *norm)
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
    struct t5_buf norm = {0};
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
    struct t5_buf b = {0};
    char chunk[65536];
    size_t got;
    int rc = 0;
    while (rc == 0 && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = t5_buf_put(&b, chunk, got);
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

static struct spm_bridge *load_proto(const struct t5_buf *proto, const char *path)
{
    char msg[512];
    struct spm_bridge *b = spm_bridge_load(proto->p, proto->n, msg, sizeof msg);
    if (!b)
        err_set("%s: sentencepiece: %s", path, msg);
    return b;
}

/* The vocabulary as HF's Unigram holds it (item 4): every piece NORMAL with
 * its score, the extra ids, then our unknown piece; an identity normalizer. */
static struct spm_bridge *load_segmenter(const struct spiece_model *m, long extra_ids, const char *path)
{
    struct t5_buf proto = {0}, tmp = {0};
    int rc = 0;
    for (size_t i = 0; i < m->n_pieces && rc == 0; i++)
        rc = spiece_put_piece(&proto, &tmp, m->pieces[i].text, m->pieces[i].len, m->pieces[i].score_bits, PIECE_NORMAL);
    for (long i = extra_ids - 1; i >= 0 && rc == 0; i--) {
        char name[32];
        int len = snprintf(name, sizeof name, "<extra_id_%ld>", i);
        rc = spiece_put_piece(&proto, &tmp, name, (size_t)len, 0, PIECE_NORMAL);
    }
    rc = rc || spiece_put_piece(&proto, &tmp, SEG_UNK_PIECE, strlen(SEG_UNK_PIECE), 0, PIECE_UNKNOWN) ||
         spiece_put_specs(&proto, NULL, 0);
    struct spm_bridge *b = rc == 0 ? load_proto(&proto, path) : NULL;
    free(proto.p);
    free(tmp.p);
    return b;
}

/* The charsmap alone. spm needs an unknown piece and one normal piece; the
 * segmentation of this processor is never used, only its pieces joined. */
static struct spm_bridge *load_normalizer(const struct spiece_model *m, const char *path)
{
    struct t5_buf proto = {0}, tmp = {0};
    int rc = spiece_put_piece(&proto, &tmp, "<unk>", 5, 0, PIECE_UNKNOWN) ||
             spiece_put_piece(&proto, &tmp, SPIECE_UNDERLINE, 3, 0, PIECE_NORMAL) ||
             spiece_put_specs(&proto, m->charsmap, m->charsmap_len);
    struct spm_bridge *b = rc == 0 ? load_proto(&proto, path) : NULL;
    free(proto.p);
    free(tmp.p);
    return b;
}

/* What the charsmap does to NORM_SEP and to printable ASCII, which lets
 * encode skip the library for them. */
static int probe_charsmap(struct t5_tokenizer *t)
{
    struct t5_buf r = {0};
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

static int add_tokens(struct t5_tokenizer *t, const struct spiece_model *m, const struct config *c)
{
    size_t cap = 0;
    char tmp[4096];
    int rc = 0;
    for (size_t i = 0; i < m->n_pieces && rc == 0; i++) {
        const struct spiece_piece *p = &m->pieces[i];
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
    struct spiece_model m;
    int rc = spiece_model_parse(data, size, &m);
    if (rc == 0 && m.n_pieces <= T5_UNK_ID) {
        free(m.pieces);
        m.pieces = NULL;
        err_set("not a T5 sentencepiece model: %zu pieces", m.n_pieces);
        rc = -1;
    }
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
