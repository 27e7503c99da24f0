/* The text-encoder kind "t5": T5 v1.1's encoder behind models/text_encoder.h.
 *
 * Specs: "t5:PATH[,tokenizer=DIR][,layer=N][,final_norm][,mask]
 *            [,max_length=N][,device=cpu|cuda|auto][,dtype=f32|bf16]"
 * PATH is a text_encoder/ folder (then tokenizer=DIR names the tokenizer
 * folder) or a pipeline folder, whose model_index.json names the
 * T5EncoderModel (text_encoder, or text_encoder_2 / _3 as FLUX and SD3
 * name it) and its tokenizer (tokenizer, _2, _3: the same suffix). Each
 * caption becomes max_length tokens (default 512) as T5TokenizerFast
 * pads and truncates them; the embedding is hidden_states[layer] (Python
 * indexing of the tuple of num_layers + 1; default -1, last_hidden_state,
 * which has been through the final norm), then encoder.final_layer_norm
 * with final_norm; mask attends with the attention mask (default: without,
 * as F-Lite and FLUX encode). F-Lite: "t5:PIPELINE,layer=-8,final_norm".
 * The CPU computes in f32; cuda in bf16 unless dtype=f32.
 * Identity: "t5/1 HASH ARGS", HASH the xxh128 of the config, the f32
 * weights and the tokenizer's files, ARGS the spec after "t5:", so that
 * reopening the identity opens the same files and refuses them when they
 * have changed. */
#include "models/text_encoder.h"
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"
#include "libcommon/log.h"
#include "models/t5/t5.h"
#include "models/t5/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define USAGE                                                                                                  \
    "t5:PATH[,tokenizer=DIR][,layer=N][,final_norm][,mask][,max_length=N][,device=cpu|cuda|auto]"            \
    "[,dtype=f32|bf16]"

struct t5_encoder {
    struct kctx ctx;
    struct t5 t5;
    struct t5_tokenizer *tok;
    int layer, final_norm, mask;
};

struct spec {
    char path[4096], tokenizer[4096];
    int layer, final_norm, mask, max_length;
    enum device_kind dev;
    enum kdtype dt;
    char device[16], dtype[16];
};

static int int_value(const char *args, const char *key, const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        err_set("text encoder 't5:%s': %s=%s is not an integer in %d..%d", args, key, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* ARGS into the path and its options, each given at most once. */
static int parse_args(const char *args, struct spec *s)
{
    static const char *const keys[] = {",tokenizer=", ",layer=", ",final_norm", ",mask", ",max_length=",
                                       ",device=", ",dtype="};
    enum { N_KEYS = sizeof keys / sizeof keys[0] };
    memset(s, 0, sizeof *s);
    s->layer = -1, s->max_length = 512;
    snprintf(s->device, sizeof s->device, "cpu");
    const char *end = args + strlen(args);
    for (size_t k = 0; k < N_KEYS; k++) {
        const char *at = strstr(args, keys[k]);
        if (at && at < end)
            end = at;
    }
    if (end == args || (size_t)(end - args) >= sizeof s->path) {
        err_set("text encoder 't5:%s': expected %s", args, USAGE);
        return -1;
    }
    memcpy(s->path, args, (size_t)(end - args));
    s->path[end - args] = '\0';
    int seen[N_KEYS] = {0};
    char opts[8192];
    snprintf(opts, sizeof opts, "%s", end);
    for (char *save = NULL, *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        size_t k = 0;
        for (; k < N_KEYS; k++) {
            const char *key = keys[k] + 1;
            size_t n = strlen(key);
            if (key[n - 1] == '=' ? strncmp(o, key, n) == 0 : strcmp(o, key) == 0)
                break;
        }
        if (k == N_KEYS) {
            err_set("text encoder 't5:%s': unknown option '%s' (expected %s)", args, o, USAGE);
            return -1;
        }
        char name[16];
        snprintf(name, sizeof name, "%.*s", (int)strcspn(keys[k] + 1, "="), keys[k] + 1);
        if (seen[k]++) {
            err_set("text encoder 't5:%s': option %s is given twice", args, name);
            return -1;
        }
        const char *v = strchr(o, '=') ? strchr(o, '=') + 1 : "";
        int rc = 0;
        switch (k) {
        case 0: snprintf(s->tokenizer, sizeof s->tokenizer, "%s", v); break;
        case 1: rc = int_value(args, name, v, -T5_MAX_LAYERS - 1, T5_MAX_LAYERS, &s->layer); break;
        case 2: s->final_norm = 1; break;
        case 3: s->mask = 1; break;
        case 4: rc = int_value(args, name, v, 1, 1 << 16, &s->max_length); break;
        case 5: snprintf(s->device, sizeof s->device, "%s", v); break;
        default:
            if (strcmp(v, "f32") != 0 && strcmp(v, "bf16") != 0) {
                err_set("text encoder 't5:%s': dtype=%s; expected f32 or bf16", args, v);
                return -1;
            }
            snprintf(s->dtype, sizeof s->dtype, "%s", v);
        }
        if (rc)
            return -1;
    }
    if (seen[0] && !s->tokenizer[0]) {
        err_set("text encoder 't5:%s': tokenizer= names no folder", args);
        return -1;
    }
    if (device_resolve(s->device, &s->dev) != 0) {
        err_prefix("text encoder 't5:%s'", args);
        return -1;
    }
    if (s->dev == DEVICE_CPU && strcmp(s->dtype, "bf16") == 0) {
        err_set("text encoder 't5:%s': dtype=bf16 conflicts with device=%s: the CPU computes in f32 only", args,
                s->device);
        return -1;
    }
    s->dt = s->dtype[0] ? (strcmp(s->dtype, "bf16") == 0 ? KDT_BF16 : KDT_F32)
                        : s->dev == DEVICE_CUDA ? KDT_BF16 : KDT_F32;
    return 0;
}

static int is_file(const char *dir, const char *name)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* PATH to the text_encoder folder and the tokenizer folder (into te, tok). */
static int resolve_folders(const struct spec *s, const char *args, char *te, char *tok, size_t size)
{
    snprintf(tok, size, "%s", s->tokenizer);
    if (is_file(s->path, MODEL_DIR_CONFIG)) {
        snprintf(te, size, "%s", s->path);
        if (!tok[0]) {
            err_set("text encoder 't5:%s': %s is a text_encoder folder; name its tokenizer with tokenizer=DIR (or "
                    "give the pipeline folder)",
                    args, s->path);
            return -1;
        }
        return 0;
    }
    if (!is_file(s->path, MODEL_DIR_INDEX)) {
        err_set("text encoder 't5:%s': %s is neither a text_encoder folder (%s) nor a pipeline folder (%s)", args,
                s->path, MODEL_DIR_CONFIG, MODEL_DIR_INDEX);
        return -1;
    }
    static const char *const suffix[] = {"", "_2", "_3"};
    for (int i = 0; i < 3; i++) {
        char name[32];
        struct model_component c;
        snprintf(name, sizeof name, "text_encoder%s", suffix[i]);
        if (model_index_component(s->path, name, &c) != 0)
            continue;
        const int t5 = strcmp(c.class_name, "T5EncoderModel") == 0;
        if (t5)
            snprintf(te, size, "%s", c.folder);
        model_component_free(&c);
        if (!t5)
            continue;
        if (tok[0])
            return 0;
        snprintf(name, sizeof name, "tokenizer%s", suffix[i]);
        if (model_index_component(s->path, name, &c) != 0) {
            err_prefix("text encoder 't5:%s': the tokenizer of %s", args, te);
            return -1;
        }
        snprintf(tok, size, "%s", c.folder);
        model_component_free(&c);
        return 0;
    }
    err_set("text encoder 't5:%s': %s/%s lists no T5EncoderModel as text_encoder, text_encoder_2 or text_encoder_3",
            args, s->path, MODEL_DIR_INDEX);
    return -1;
}

/* The tokenizer's files that exist, each named and hashed, after the model's hash. */
static int identity_hash(const char *model_hash, const char *tok_dir, char out[33])
{
    static const char *const files[] = {"spiece.model", "tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json", "added_tokens.json"};
    struct hash_state *hs = hash_begin();
    if (!hs)
        return -1;
    hash_update(hs, model_hash, strlen(model_hash));
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (!is_file(tok_dir, files[i]))
            continue;
        char p[4096], hex[33];
        struct hash128 h;
        snprintf(p, sizeof p, "%s/%s", tok_dir, files[i]);
        if (hash_file(p, &h) != 0) {
            hash_end(hs);
            return -1;
        }
        hash_hex(h, hex);
        hash_update(hs, files[i], strlen(files[i]) + 1);
        hash_update(hs, hex, 32);
    }
    hash_hex(hash_end(hs), out);
    return 0;
}

static void state_free(struct t5_encoder *s)
{
    if (!s)
        return;
    if (s->tok)
        t5_tokenizer_close(s->tok);
    t5_close(&s->t5);
    if (s->ctx.ops)
        kctx_free(&s->ctx);
    free(s);
}

static int t5_kind_open(struct text_encoder *e, const char *spec)
{
    const char *args, *want_hash = NULL;
    char hash[33] = "";
    if (strncmp(spec, "t5:", 3) == 0) {
        args = spec + 3;
    } else if (strncmp(spec, "t5/1 ", 5) == 0 && strlen(spec) > 5 + 33 && spec[5 + 32] == ' ') {
        memcpy(hash, spec + 5, 32);
        want_hash = hash;
        args = spec + 5 + 33;
    } else {
        return 1;
    }
    struct spec s;
    char te[4096], tok[4096];
    if (parse_args(args, &s) != 0 || resolve_folders(&s, args, te, tok, sizeof te) != 0)
        return -1;
    /* The layer picks the blocks to hold, so the config comes first. */
    struct t5_config cfg;
    char cpath[4200];
    int index;
    snprintf(cpath, sizeof cpath, "%s/%s", te, MODEL_DIR_CONFIG);
    if (t5_config_read(&cfg, cpath) != 0)
        return -1;
    if (t5_layer_index(&cfg, s.layer, &index) != 0) {
        err_prefix("text encoder 't5:%s'", args);
        return -1;
    }
    if (index == cfg.num_layers && s.final_norm) {
        err_set("text encoder 't5:%s': layer=%d is last_hidden_state, which has been through the final norm "
                "already; final_norm would apply it twice",
                args, s.layer);
        return -1;
    }
    struct t5_encoder *st = calloc(1, sizeof *st);
    if (!st) {
        err_set("text encoder 't5:%s': out of memory", args);
        return -1;
    }
    st->layer = s.layer, st->final_norm = s.final_norm, st->mask = s.mask;
    /* The tokenizer first: it is quick to refuse, the weights are not. */
    if (!(st->tok = t5_tokenizer_open(tok))) {
        err_prefix("text encoder 't5:%s': tokenizer", args);
        state_free(st);
        return -1;
    }
    const int vocab = t5_tokenizer_vocab_size(st->tok);
    if (vocab > cfg.vocab_size) {
        err_set("text encoder 't5:%s': the tokenizer %s has %d ids but the embedding table of %s has %d rows", args,
                tok, vocab, te, cfg.vocab_size);
        state_free(st);
        return -1;
    }
    if (kctx_init(&st->ctx, s.dev, 0) != 0 || t5_open(&st->t5, te, index, &st->ctx, s.dt) != 0) {
        state_free(st);
        return -1;
    }
    char id_hash[33];
    int rc = identity_hash(st->t5.hash, tok, id_hash);
    if (rc == 0 && want_hash && strcmp(want_hash, id_hash) != 0) {
        err_set("text encoder %s: its config, weights and tokenizer hash to %s, but the identity records %s: the "
                "files have changed since the embeddings were made",
                s.path, id_hash, want_hash);
        rc = -1;
    }
    if (rc == 0 && (size_t)snprintf(e->identity, sizeof e->identity, "t5/1 %s %s", id_hash, args) >=
                       sizeof e->identity) {
        err_set("text encoder 't5:%s': the spec is too long for an identity (%zu bytes at most)", args,
                sizeof e->identity - 40);
        rc = -1;
    }
    if (rc) {
        state_free(st);
        return -1;
    }
    /* The start-up line: what the encoder holds, weights and arena. */
    log_info("text encoder %s: %d of %d blocks in %s on %s, %.0f MiB (weights and %d captions of %d tokens)", te,
             index, cfg.num_layers, kdtype_name(s.dt), device_name(s.dev),
             (double)t5_memory_bytes(&st->ctx, &cfg, index, s.dt, st->t5.streamed ? 2 : 4, T5_ENCODE_BATCH,
                                     s.max_length) / (1 << 20),
             T5_ENCODE_BATCH, s.max_length);
    e->max_length = s.max_length;
    e->dim = cfg.d_model;
    e->state = st;
    return 0;
}

/* Tokenizes each caption and runs the encoder T5_ENCODE_BATCH captions at a time. */
static int t5_kind_encode(const struct text_encoder *e, const char *const *captions, int n, float *emb,
                          uint8_t *mask, uint8_t *truncated)
{
    struct t5_encoder *s = e->state;
    const int L = e->max_length;
    const size_t per = text_encoder_embedding_elems(e);
    int32_t *ids = malloc((size_t)T5_ENCODE_BATCH * L * sizeof *ids);
    if (!ids) {
        err_set("text encoder %s: out of memory", e->identity);
        return -1;
    }
    int rc = 0;
    for (int start = 0; rc == 0 && start < n; start += T5_ENCODE_BATCH) {
        const int b = n - start < T5_ENCODE_BATCH ? n - start : T5_ENCODE_BATCH;
        for (int i = 0; rc == 0 && i < b; i++) {
            int cut = 0;
            uint8_t *m = mask + (size_t)(start + i) * L;
            memset(ids + (size_t)i * L, 0, (size_t)L * sizeof *ids);
            memset(m, 0, (size_t)L);
            if (t5_tokenizer_encode(s->tok, captions[start + i], L, ids + (size_t)i * L, m, &cut) < 0) {
                err_prefix("text encoder: caption %d", start + i);
                rc = -1;
            }
            if (truncated)
                truncated[start + i] = (uint8_t)(cut != 0);
        }
        if (rc == 0)
            rc = t5_forward(&s->t5, ids, s->mask ? mask + (size_t)start * L : NULL, b, L, s->layer, s->final_norm,
                            emb + (size_t)start * per);
    }
    free(ids);
    return rc;
}

static void t5_kind_close(struct text_encoder *e)
{
    state_free(e->state);
    e->state = NULL;
}

const struct text_encoder_kind t5_text_encoder_kind = {
    .name = "t5",
    .specs = USAGE " (PATH a text_encoder folder or a pipeline folder)",
    .open = t5_kind_open,
    .encode = t5_kind_encode,
    .close = t5_kind_close,
};
