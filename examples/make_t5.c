/* make_t5: the text side of the text-to-image demo, made by the project so
 * the demo needs no download: a SentencePiece model trained on the
 * demo's captions (libsentencepiece's trainer, T5's special ids: pad 0,
 * eos 1, unk 2, no bos) and a tiny T5 v1.1 encoder with random weights, in
 * the folders a pipeline ships them in:
 *
 *   OUT/tokenizer/    spiece.model, tokenizer_config.json, special_tokens_map.json
 *   OUT/text_encoder/ config.json, model.safetensors
 *
 * A frozen random encoder is enough for the demo: its embeddings still tell
 * the words apart, and the DiT learns to read them. Every weight is a pure
 * function of the seed. See examples/README.md. */
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "libcommon/philox.h"
#include "libcommon/safetensors.h"
#include "models/t5/sentencepiece_bridge.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { T5_RNG_PURPOSE = 0x5435 }; /* the examples' own purposes, far from the toolkit's */

struct dims {
    int vocab, d_model, d_kv, d_ff, heads, layers, buckets, max_distance;
};

static void make_dir(const char *path)
{
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        die(DIT_EXIT_FAILURE, "%s: cannot create directory: %s", path, strerror(errno));
}

static void write_json(const char *path, json_t *j)
{
    if (!j || json_write_file(path, j) != 0)
        die(DIT_EXIT_FAILURE, "%s: %s", path, *err_get() ? err_get() : "out of memory");
    json_decref(j);
}

/* The tokenizer: trained on the captions file, vocabulary at most `vocab`
 * (a small corpus may hold fewer pieces: the trainer's soft limit). */
static int train_tokenizer(const char *captions, const char *dir, int vocab)
{
    char prefix[4096], size[32];
    snprintf(prefix, sizeof prefix, "%s/spiece", dir);
    snprintf(size, sizeof size, "%d", vocab);
    const char *keys[] = {"input", "model_prefix", "vocab_size", "model_type", "pad_id", "eos_id", "unk_id",
                          "bos_id", "hard_vocab_limit", "character_coverage", "num_threads", "minloglevel"};
    /* BPE, not T5's unigram: on a corpus this small and repetitive the
     * unigram trainer keeps mostly single letters, BPE whole words. The
     * pieces and their scores load as T5's tokenizer loads any model. */
    const char *vals[] = {captions, prefix, size, "bpe", "0", "1", "2", "-1", "false", "1.0", "1", "2"};
    char err[512];
    if (spm_bridge_train(keys, vals, sizeof keys / sizeof keys[0], err, sizeof err) != 0) {
        err_set("%s: training the tokenizer: %s", captions, err);
        return -1;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/spiece.vocab", dir);
    remove(path); /* the model file holds the vocabulary too */
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_json(path, json_pack("{s:i, s:s, s:s, s:s, s:i, s:b}", "extra_ids", 0, "eos_token", "</s>", "pad_token",
                               "<pad>", "unk_token", "<unk>", "model_max_length", 512, "legacy", 0));
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    write_json(path, json_pack("{s:s, s:s, s:s}", "eos_token", "</s>", "pad_token", "<pad>", "unk_token", "<unk>"));
    return 0;
}

/* One weight of n values: N(0, 1) * scale, or ones (a layer norm). */
struct weight {
    char name[96];
    int64_t shape[2];
    float *data;
};

static void add(struct weight *w, size_t *n, const struct rng_stream *s, uint64_t *off, int64_t rows, int64_t cols,
                float scale, const char *fmt, int block)
{
    struct weight *x = &w[(*n)++];
    snprintf(x->name, sizeof x->name, fmt, block);
    x->shape[0] = rows, x->shape[1] = cols;
    size_t count = (size_t)(rows * (cols ? cols : 1));
    if (!(x->data = malloc(count * sizeof *x->data)))
        die(DIT_EXIT_FAILURE, "out of memory");
    if (scale == 0) {
        for (size_t i = 0; i < count; i++)
            x->data[i] = 1.0f;
        return;
    }
    rng_normal_f32(s, *off, count, x->data);
    *off += count;
    for (size_t i = 0; i < count; i++)
        x->data[i] *= scale;
}

static int write_encoder(const char *dir, const struct dims *d, uint64_t seed)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_json(path, json_pack("{s:s, s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:f, s:b}",
                               "model_type", "t5", "architectures", "T5EncoderModel", "vocab_size", d->vocab,
                               "d_model", d->d_model, "d_kv", d->d_kv, "d_ff", d->d_ff, "num_heads", d->heads,
                               "num_layers", d->layers, "relative_attention_num_buckets", d->buckets,
                               "relative_attention_max_distance", d->max_distance, "layer_norm_epsilon", 1e-6,
                               "feed_forward_proj", "gated-gelu", "dropout_rate", 0.0, "tie_word_embeddings", 0));
    const int64_t C = d->d_model, I = (int64_t)d->heads * d->d_kv, F = d->d_ff;
    struct weight *w = calloc((size_t)(3 + 9 * d->layers), sizeof *w);
    if (!w)
        die(DIT_EXIT_FAILURE, "out of memory");
    struct rng_stream s = rng_stream(seed, T5_RNG_PURPOSE, 0, 0);
    uint64_t off = 0;
    size_t n = 0;
    add(w, &n, &s, &off, d->vocab, C, 1.0f, "shared.weight", 0);
    for (int b = 0; b < d->layers; b++) {
        /* scaled so every block's output stays of order one */
        const float sc = 1.0f / sqrtf((float)C), so = 1.0f / sqrtf((float)I), sf = 1.0f / sqrtf((float)F);
        add(w, &n, &s, &off, C, 0, 0, "encoder.block.%d.layer.0.layer_norm.weight", b);
        add(w, &n, &s, &off, I, C, sc, "encoder.block.%d.layer.0.SelfAttention.q.weight", b);
        add(w, &n, &s, &off, I, C, sc, "encoder.block.%d.layer.0.SelfAttention.k.weight", b);
        add(w, &n, &s, &off, I, C, sc, "encoder.block.%d.layer.0.SelfAttention.v.weight", b);
        add(w, &n, &s, &off, C, I, so, "encoder.block.%d.layer.0.SelfAttention.o.weight", b);
        if (b == 0)
            add(w, &n, &s, &off, d->buckets, d->heads, 0.5f,
                "encoder.block.%d.layer.0.SelfAttention.relative_attention_bias.weight", b);
        add(w, &n, &s, &off, C, 0, 0, "encoder.block.%d.layer.1.layer_norm.weight", b);
        add(w, &n, &s, &off, F, C, sc, "encoder.block.%d.layer.1.DenseReluDense.wi_0.weight", b);
        add(w, &n, &s, &off, F, C, sc, "encoder.block.%d.layer.1.DenseReluDense.wi_1.weight", b);
        add(w, &n, &s, &off, C, F, sf, "encoder.block.%d.layer.1.DenseReluDense.wo.weight", b);
    }
    add(w, &n, &s, &off, C, 0, 0, "encoder.final_layer_norm.weight", 0);
    struct st_writer *sw = st_writer_new();
    int rc = sw ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = st_writer_add(sw, w[i].name, ST_F32, w[i].shape[1] ? 2 : 1, w[i].shape, w[i].data);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (rc == 0)
        rc = st_writer_meta(sw, "format", "pt") || st_writer_write(sw, path);
    st_writer_free(sw);
    for (size_t i = 0; i < n; i++)
        free(w[i].data);
    free(w);
    return rc ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *captions = NULL, *out = NULL;
    struct dims d = {.vocab = 128, .d_model = 64, .d_kv = 16, .d_ff = 128, .heads = 4, .layers = 2, .buckets = 16,
                     .max_distance = 32};
    int64_t seed = 0;
    const struct opt opts[] = {
        {"captions", 0, OPT_STRING, &captions, "FILE", "the captions to train the tokenizer on, one per line"},
        {"output-dir", 'o', OPT_STRING, &out, "DIR", "where tokenizer/ and text_encoder/ go"},
        {"vocab", 0, OPT_INT, &d.vocab, "N", "the tokenizer's vocabulary, at most (128)"},
        {"d-model", 0, OPT_INT, &d.d_model, "N", "the encoder's width (64)"},
        {"layers", 0, OPT_INT, &d.layers, "N", "its blocks (2)"},
        {"seed", 's', OPT_INT64, &seed, "SEED", "the seed of the weights (0)"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"make_t5", "[options] --captions FILE -o DIR",
                                  "Train the demo's tokenizer on its captions and write a tiny random T5 encoder."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first < argc || !captions || !out)
        opt_usage_error("--captions and -o are required, and nothing else");
    if (d.vocab < 8 || d.d_model < 8 || d.d_model % d.heads || d.layers < 1 || d.layers > 8)
        opt_usage_error("--vocab at least 8, --d-model a multiple of %d, 1 to 8 --layers", d.heads);
    d.d_kv = d.d_model / d.heads;
    d.d_ff = 2 * d.d_model;
    char tok[4096], enc[4096];
    snprintf(tok, sizeof tok, "%s/tokenizer", out);
    snprintf(enc, sizeof enc, "%s/text_encoder", out);
    make_dir(out), make_dir(tok), make_dir(enc);
    if (train_tokenizer(captions, tok, d.vocab) != 0 || write_encoder(enc, &d, (uint64_t)seed) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    log_info("tokenizer (vocabulary at most %d) and a %d-block T5 of width %d in %s", d.vocab, d.layers, d.d_model,
             out);
    return DIT_EXIT_OK;
}
