/* The T5 encoder against transformers' T5EncoderModel (goldens of
 * tests/reference/make_t5_goldens.py): every hidden state and final-norm
 * variant, with and without the attention mask, for every config and file
 * form (single, sharded, embed_tokens or shared, a whole T5 with its
 * decoder, bf16, f16 with an f32 wo) in fp32 on the CPU; the blocks held
 * for a layer and the memory plan; the loader's messages; and the
 * text-encoder kind "t5" by spec and by identity. */
#include "tests/harness.h"
#include "formats/model_dir.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"
#include "models/t5/t5.h"
#include "models/text_encoder.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* max |a - b| over max |b|: the error relative to the tensor's scale. */
static double rel_error(const float *a, const float *b, int64_t n)
{
    double err = 0, scale = 1e-12;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return err / scale;
}

static const char *fixture(const char *rel)
{
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s", test_source_path(rel));
    return b;
}

/* A copy of a golden tensor (the file's data need not be aligned); NULL
 * when absent. */
static void *golden(const struct st_file *f, const char *name, enum st_dtype dt, int64_t *n)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t || t->dtype != dt)
        return NULL;
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    memcpy(p, t->data, t->nbytes);
    if (n)
        *n = (int64_t)t->nelem;
    return p;
}

static int open_cpu(struct t5 *m, struct kctx *ctx, const char *dir, int n_blocks)
{
    if (kctx_init(ctx, DEVICE_CPU, 0) != 0)
        return -1;
    int rc = t5_open(m, dir, n_blocks, ctx, KDT_F32);
    if (rc != 0) {
        test_fail(__FILE__, __LINE__, "t5_open %s: %s", dir, err_get());
        kctx_free(ctx);
    }
    return rc;
}

/* Runs one layer of m on the golden's ids and compares with tensor want. */
static double check_one(struct t5 *m, const struct st_file *g, const char *variant, const char *want, int layer,
                        int final_norm)
{
    int64_t n = 0;
    char name[96];
    snprintf(name, sizeof name, "%s.%s", variant, want);
    float *ref = golden(g, name, ST_F32, &n);
    int32_t *ids = golden(g, "input_ids", ST_I32, NULL), *am = golden(g, "attention_mask", ST_I32, NULL);
    const struct st_tensor *it = st_find(g, "input_ids");
    if (!ref || !ids || !am || !it) {
        test_fail(__FILE__, __LINE__, "golden %s: %s or the inputs missing", g->path, name);
        free(ref), free(ids), free(am);
        return 1;
    }
    const int B = (int)it->shape[0], T = (int)it->shape[1];
    uint8_t *mask = malloc((size_t)B * T);
    for (int i = 0; i < B * T; i++)
        mask[i] = (uint8_t)am[i];
    float *out = malloc((size_t)n * sizeof *out);
    CHECK_INT(n, (int64_t)B * T * m->cfg.d_model);
    int rc = t5_forward(m, ids, strcmp(variant, "mask") == 0 ? mask : NULL, B, T, layer, final_norm, out);
    CHECK_INT(rc, 0);
    double e = rc == 0 ? rel_error(out, ref, n) : 1;
    free(ref), free(ids), free(am), free(mask), free(out);
    return e;
}

/* Every golden of fixture `name` for m; the worst error. */
static double check_goldens(struct t5 *m, const char *name, double tol, int all)
{
    char gpath[256];
    snprintf(gpath, sizeof gpath, "fixtures/t5/%s_golden.safetensors", name);
    struct st_file *g = st_open(fixture(gpath));
    CHECK(g != NULL);
    if (!g)
        return 1;
    const int N = m->cfg.num_layers;
    double worst = 0;
    static const char *const variants[] = {"mask", "nomask"};
    for (int v = 0; v < 2; v++) {
        double e_hs = 0, e_fn = 0, e;
        char want[64];
        for (int i = 0; all && i <= N && i <= m->n_blocks; i++) {
            snprintf(want, sizeof want, "hidden_states.%d", i);
            e_hs = fmax(e_hs, check_one(m, g, variants[v], want, i, 0));
            /* The same by its negative index. */
            e_hs = fmax(e_hs, check_one(m, g, variants[v], want, i - (N + 1), 0));
        }
        if (m->n_blocks == N)
            e_hs = fmax(e_hs, check_one(m, g, variants[v], "last_hidden_state", -1, 0));
        for (int k = 2; k <= N + 1; k++) {
            char full[96];
            snprintf(want, sizeof want, "final_norm.%d", k);
            snprintf(full, sizeof full, "%s.%s", variants[v], want);
            if (!st_find(g, full) || N + 1 - k > m->n_blocks) /* not a golden, or beyond the blocks held */
                continue;
            e_fn = fmax(e_fn, e = check_one(m, g, variants[v], want, -k, 1));
        }
        printf("  %s %s: hidden states %.3g, final_norm(hidden_states[-k]) %.3g (max relative error, tol %g)\n",
               name, variants[v], e_hs, e_fn, tol);
        CHECK(e_hs <= tol);
        CHECK(e_fn <= tol);
        worst = fmax(worst, fmax(e_hs, e_fn));
    }
    st_close(g);
    return worst;
}

TEST(t5_matches_transformers_for_every_config_and_file)
{
    static const struct {
        const char *name;
        int layers, gated, streamed;
    } cases[] = {
        {"small", 3, 1, 0}, {"odd", 2, 1, 0}, {"deep", 4, 1, 0}, {"gelu", 1, 0, 0}, {"full", 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "fixtures/t5/%s", cases[i].name);
        struct kctx ctx;
        struct t5 m;
        if (open_cpu(&m, &ctx, fixture(dir), -1) != 0)
            continue;
        CHECK_INT(m.cfg.num_layers, cases[i].layers);
        CHECK_INT(m.cfg.gated, cases[i].gated);
        CHECK_INT(m.streamed, cases[i].streamed);
        CHECK_INT(m.n_blocks, cases[i].layers);
        check_goldens(&m, cases[i].name, 1e-5, 1);
        t5_close(&m);
        kctx_free(&ctx);
    }
}

TEST(t5_16bit_files_stay_16bit_and_match)
{
    static const char *const names[] = {"small_bf16", "small_f16"};
    for (int i = 0; i < 2; i++) {
        char dir[256];
        snprintf(dir, sizeof dir, "fixtures/t5/%s", names[i]);
        struct kctx ctx;
        struct t5 m;
        if (open_cpu(&m, &ctx, fixture(dir), -1) != 0)
            continue;
        CHECK_INT(m.streamed, 1);
        /* bf16: every block tensor in the bf16 store; f16: wo, which
         * transformers keeps in fp32, in the f32 one. */
        const int64_t C = m.cfg.d_model, F = m.cfg.d_ff, I = (int64_t)m.cfg.num_heads * m.cfg.d_kv;
        const int64_t block = 4 * I * C + 3 * F * C + 2 * C, wo = 3 * C * F;
        CHECK_INT(m.store[i ? KDT_F16 : KDT_BF16].n, i ? 3 * block - wo : 3 * block);
        CHECK_INT(m.store[KDT_F32].n, i ? wo : 0);
        CHECK_INT(m.store[i ? KDT_BF16 : KDT_F16].n, 0);
        check_goldens(&m, names[i], 1e-5, 0);
        t5_close(&m);
        kctx_free(&ctx);
    }
}

/* The memory plan is what k_alloc holds, and a layer holds only its blocks. */
TEST(t5_holds_the_blocks_a_layer_needs_as_planned)
{
    static const struct {
        const char *dir;
        int file_bytes;
    } files[] = {{"fixtures/t5/small", 4}, {"fixtures/t5/small_bf16", 2}};
    for (int f = 0; f < 2; f++) {
        struct kctx ctx;
        struct t5 m;
        if (open_cpu(&m, &ctx, fixture(files[f].dir), 2) != 0)
            continue;
        CHECK_INT(m.n_blocks, 2);
        int32_t ids[2 * 5] = {5, 6, 7, 8, 1, 9, 1, 0, 0, 0};
        float out[2 * 5 * 32];
        CHECK_INT(t5_forward(&m, ids, NULL, 2, 5, 2, 1, out), 0);
        CHECK_INT(t5_forward(&m, ids, NULL, 2, 5, -2, 0, out), 0); /* hidden_states[2] of 4 */
        CHECK(t5_forward(&m, ids, NULL, 2, 5, -1, 0, out) != 0);
        CHECK_CONTAINS(err_get(), "needs 3 blocks; this encoder holds 2");
        CHECK(t5_forward(&m, ids, NULL, 2, 5, 4, 0, out) != 0);
        CHECK_CONTAINS(err_get(), "layer 4");
        ids[3] = 200;
        CHECK(t5_forward(&m, ids, NULL, 2, 5, 1, 0, out) != 0);
        CHECK_CONTAINS(err_get(), "token id 200 (caption 0, position 3)");
        int64_t now, peak;
        k_mem_usage(&ctx, &now, &peak);
        size_t plan = t5_memory_bytes(&ctx, &m.cfg, 2, KDT_F32, files[f].file_bytes, 2, 5);
        printf("  %s, 2 of 3 blocks, 2 x 5 tokens: %lld bytes held, %zu planned\n", files[f].dir, (long long)now,
               plan);
        CHECK_INT((int64_t)plan, now);
        /* A smaller batch reuses the arena; the bias follows T. */
        CHECK_INT(t5_forward(&m, ids, NULL, 1, 3, 1, 0, out), 0);
        k_mem_usage(&ctx, &now, &peak);
        CHECK_INT((int64_t)plan, now);
        CHECK_INT(m.bias_t, 3);
        t5_close(&m);
        kctx_free(&ctx);
    }
    /* The plan T5-XXL would use on a CPU, F-Lite's way (t5.h's comment). */
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 0), 0);
    const struct t5_config xxl = {32128, 4096, 64, 10240, 64, 24, 32, 128, 1e-6f, 1};
    const size_t flite = t5_memory_bytes(&ctx, &xxl, 17, KDT_F32, 2, T5_ENCODE_BATCH, 512);
    const size_t all = t5_memory_bytes(&ctx, &xxl, 24, KDT_F32, 2, T5_ENCODE_BATCH, 512);
    const size_t f32 = t5_memory_bytes(&ctx, &xxl, 24, KDT_F32, 4, T5_ENCODE_BATCH, 512);
    printf("  T5-XXL on the CPU, %d x 512 tokens: 17 blocks from bf16 %zu bytes, 24 from bf16 %zu, 24 from "
           "f32 %zu\n",
           T5_ENCODE_BATCH, flite, all, f32);
    CHECK(flite < (size_t)9 << 30);
    CHECK(f32 < (size_t)24 << 30);
    kctx_free(&ctx);
}

/* transformers' bucket table for 32 buckets and distance 128
 * (notes/components.md 2.1), both directions. */
TEST(t5_relative_buckets_match_transformers)
{
    static const struct {
        int lo, hi, bucket;
    } rows[] = {{8, 11, 8}, {12, 15, 9}, {16, 22, 10}, {23, 31, 11}, {32, 45, 12}, {46, 63, 13}, {64, 90, 14},
                {91, 600, 15}};
    for (int n = 0; n < 8; n++) {
        CHECK_INT(t5_relative_bucket(-n, 32, 128), n);
        CHECK_INT(t5_relative_bucket(n, 32, 128), n ? 16 + n : 0);
    }
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        for (int n = rows[r].lo; n <= rows[r].hi; n++) {
            CHECK_INT(t5_relative_bucket(-n, 32, 128), rows[r].bucket);
            CHECK_INT(t5_relative_bucket(n, 32, 128), 16 + rows[r].bucket);
        }
}

/* dir: the small model's tensors, edited as test_write_model_variant says. */
static void write_variant(const char *dir, const char *config_text, const char *drop, const char *rename,
                          const char *reshape, const char *retype)
{
    test_write_model_variant(dir, "model.safetensors", config_text, "fixtures/t5/small/model.safetensors", drop,
                             rename, reshape, retype);
}

static void expect_open_error(const char *dir, const char *const *needles)
{
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 0), 0);
    struct t5 m;
    CHECK(t5_open(&m, dir, -1, &ctx, KDT_F32) != 0);
    printf("  %s\n", err_get());
    for (; *needles; needles++)
        CHECK_CONTAINS(err_get(), *needles);
    kctx_free(&ctx);
}

static char *replaced(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    CHECK(at != NULL);
    if (!at)
        return strdup(text);
    size_t n = strlen(text) + strlen(to) + 1;
    char *s = malloc(n);
    snprintf(s, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return s;
}

TEST(t5_bad_input_is_named)
{
    char *cfg = test_read_file(fixture("fixtures/t5/small/config.json"), NULL);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const char *wo1 = "encoder.block.1.layer.1.DenseReluDense.wo.weight";
    const char *d = test_tmp_path("missing");
    write_variant(d, cfg, wo1, NULL, NULL, NULL);
    expect_open_error(d, (const char *const[]){"missing/model.safetensors", wo1, "missing", NULL});
    d = test_tmp_path("noembed");
    write_variant(d, cfg, "shared.weight", NULL, NULL, NULL);
    expect_open_error(d, (const char *const[]){"shared.weight (or encoder.embed_tokens.weight) is missing", NULL});
    d = test_tmp_path("shape");
    write_variant(d, cfg, NULL, NULL, wo1, NULL);
    expect_open_error(d, (const char *const[]){wo1, "[1, 1536]", "[32, 48]", NULL});
    d = test_tmp_path("dtype");
    write_variant(d, cfg, NULL, NULL, NULL, wo1);
    expect_open_error(d, (const char *const[]){wo1, "I32", "F32, BF16 or F16", NULL});
    /* A config of fewer layers than the file. */
    char *two = replaced(cfg, "\"num_layers\": 3", "\"num_layers\": 2");
    d = test_tmp_path("layers");
    write_variant(d, two, NULL, NULL, NULL, NULL);
    expect_open_error(d, (const char *const[]){"unexpected tensor encoder.block.2.", NULL});
    free(two);
    /* Config values the encoder does not implement name the file, the key
     * and the value. */
    /* The activation as T5Config finds it: dense_act_fn and is_gated_act,
     * saved by transformers, override feed_forward_proj. */
    char *a = replaced(cfg, "\"dense_act_fn\": \"gelu_new\",", ""), *nodense = replaced(a, "\"is_gated_act\": true,", "");
    free(a);
    struct t5_config c;
    a = replaced(cfg, "\"feed_forward_proj\": \"gated-gelu\"", "\"feed_forward_proj\": \"relu\"");
    d = test_tmp_path("override");
    mkdir(d, 0755);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", d);
    test_write_file(p, a, strlen(a));
    CHECK_INT(t5_config_read(&c, p), 0);
    CHECK_INT(c.gated, 1);
    free(a);
    a = replaced(nodense, "\"feed_forward_proj\": \"gated-gelu\"", "\"feed_forward_proj\": \"gelu_new\"");
    test_write_file(p, a, strlen(a));
    CHECK_INT(t5_config_read(&c, p), 0);
    CHECK_INT(c.gated, 0);
    free(a);
    static const struct {
        const char *from, *to, *key, *value;
    } bad[] = {
        {"\"feed_forward_proj\": \"gated-gelu\"", "\"feed_forward_proj\": \"relu\"", "feed_forward_proj", "relu"},
        {"\"feed_forward_proj\": \"gated-gelu\"", "\"feed_forward_proj\": \"gated-silu\"", "feed_forward_proj",
         "gated-silu"},
        {"\"dense_act_fn\": \"gelu_new\"", "\"dense_act_fn\": \"relu\"", "dense_act_fn", "relu"},
        {"\"dense_act_fn\": \"gelu_new\"", "\"dense_act_fn\": \"gelu\"", "dense_act_fn", "\"gelu\""},
        {"\"model_type\": \"t5\"", "\"model_type\": \"umt5\"", "model_type", "umt5"},
        {"\"is_decoder\": false", "\"is_decoder\": true", "is_decoder", "true"},
        {"\"d_model\": 32", "\"d_model\": \"32\"", "d_model", "\"32\""},
        {"\"num_heads\": 4", "\"num_heads\": 0", "num_heads", "0"},
        {"\"relative_attention_num_buckets\": 16", "\"relative_attention_num_buckets\": 2",
         "relative_attention_num_buckets 2", "at least 4"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *text = replaced(i < 2 ? nodense : cfg, bad[i].from, bad[i].to);
        char name[32];
        snprintf(name, sizeof name, "config%zu", i);
        d = test_tmp_path(name);
        write_variant(d, text, NULL, NULL, NULL, NULL);
        char where[64];
        snprintf(where, sizeof where, "%s/config.json", name);
        expect_open_error(d, (const char *const[]){where, bad[i].key, bad[i].value, NULL});
        free(text);
    }
    expect_open_error("/nonexistent/t5", (const char *const[]){"/nonexistent/t5", "no such folder", NULL});
    expect_open_error(test_tmpdir(), (const char *const[]){"no config.json", NULL});
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 0), 0);
    struct t5 m;
    CHECK(t5_open(&m, fixture("fixtures/t5/small"), -1, &ctx, KDT_BF16) != 0);
    CHECK_CONTAINS(err_get(), "f32 only");
    kctx_free(&ctx);
    free(cfg);
    free(nodense);
}

/* The hash is of the numbers: the same weights under the other embedding
 * name, sharded, or with a decoder beside them hash the same; other
 * weights do not. */
TEST(t5_hash_is_of_config_and_weights)
{
    char *cfg = test_read_file(fixture("fixtures/t5/small/config.json"), NULL);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const char *d = test_tmp_path("embed_tokens");
    write_variant(d, cfg, NULL, "shared.weight=encoder.embed_tokens.weight", NULL, NULL);
    const char *s = test_tmp_path("sharded");
    mkdir(s, 0755);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", s);
    test_write_file(p, cfg, strlen(cfg));
    struct st_file *f = st_open(fixture("fixtures/t5/small/model.safetensors"));
    struct st_writer *w = st_writer_new();
    for (size_t i = 0; f && i < f->n_tensors; i++)
        st_writer_add(w, f->tensors[i].name, f->tensors[i].dtype, f->tensors[i].ndim, f->tensors[i].shape,
                      f->tensors[i].data);
    /* A decoder tensor and lm_head, which the encoder ignores. */
    float extra[32] = {1};
    st_writer_add(w, "decoder.final_layer_norm.weight", ST_F32, 1, (int64_t[]){32}, extra);
    st_writer_add(w, "lm_head.weight", ST_F32, 2, (int64_t[]){1, 32}, extra);
    CHECK_INT(st_write_sharded(w, s, "model", 20000), 0);
    CHECK(st_shard_count(w, 20000) > 2);
    st_writer_free(w);
    st_close(f);
    const char *dirs[] = {fixture("fixtures/t5/small"), d, s, fixture("fixtures/t5/small_bf16")};
    char hash[4][33];
    for (int i = 0; i < 4; i++) {
        struct kctx ctx;
        struct t5 m;
        if (open_cpu(&m, &ctx, dirs[i], i == 2 ? 1 : -1) != 0)
            return;
        snprintf(hash[i], sizeof hash[i], "%s", m.hash);
        if (i == 1) /* the renamed embedding gives the same numbers */
            check_goldens(&m, "small", 1e-5, 0);
        t5_close(&m);
        kctx_free(&ctx);
    }
    CHECK_STR(hash[1], hash[0]);
    CHECK_STR(hash[2], hash[0]); /* blocks not held are hashed too */
    CHECK(strcmp(hash[3], hash[0]) != 0);
    free(cfg);
}

struct job {
    struct t5 *m;
    const int32_t *ids;
    float *out;
    int rc;
};

static void *forward_job(void *arg)
{
    struct job *j = arg;
    j->rc = t5_forward(j->m, j->ids, NULL, 1, 9, -2, 1, j->out);
    return NULL;
}

TEST(t5_forward_is_safe_from_several_threads)
{
    struct kctx ctx;
    struct t5 m;
    if (open_cpu(&m, &ctx, fixture("fixtures/t5/odd"), -1) != 0)
        return;
    int32_t ids[9] = {3, 14, 15, 92, 65, 35, 89, 1, 0};
    enum { N = 4 };
    struct job jobs[N];
    pthread_t th[N];
    const size_t n = 9 * 24;
    for (int i = 0; i < N; i++) {
        jobs[i] = (struct job){&m, ids, malloc(n * sizeof(float)), -1};
        pthread_create(&th[i], NULL, forward_job, &jobs[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        CHECK_INT(jobs[i].rc, 0);
        CHECK(memcmp(jobs[i].out, jobs[0].out, n * sizeof(float)) == 0);
    }
    for (int i = 0; i < N; i++)
        free(jobs[i].out);
    t5_close(&m);
    kctx_free(&ctx);
}

/* ---- the text-encoder kind ---------------------------------------------- */

/* make_t5_goldens.py's CAPTIONS. */
static const char *const captions[] = {
    "A photo of a person.",
    "a red fox jumping over a lazy dog, highly detailed",
    "",
    "Ünïcödé and   spaces, then a much longer caption that must be truncated at sixteen tokens",
};

static const char *tokenizer_dir(void)
{
    struct stat st;
    const char *d = fixture("fixtures/t5_tokenizer/tokenizer");
    char p[4096];
    snprintf(p, sizeof p, "%s/spiece.model", d);
    if (stat(p, &st) != 0) {
        printf("  no tokenizer fixture (%s): skipped\n", d);
        return NULL;
    }
    return d;
}

/* Encodes captions 0..3 and 0, 1 again (two batches) and compares with
 * golden tensor `want` (and the masks and truncation flags). */
static void check_kind(const struct text_encoder *e, const char *want)
{
    struct st_file *g = st_open(fixture("fixtures/t5/deep_captions_golden.safetensors"));
    CHECK(g != NULL);
    if (!g)
        return;
    int64_t n;
    float *ref = golden(g, want, ST_F32, &n);
    int32_t *am = golden(g, "attention_mask", ST_I32, NULL), *cut = golden(g, "truncated", ST_I32, NULL);
    CHECK(ref && am && cut);
    enum { N = 6 };
    const char *text[N] = {captions[0], captions[1], captions[2], captions[3], captions[0], captions[1]};
    const size_t per = text_encoder_embedding_elems(e), L = (size_t)e->max_length;
    float *emb = malloc(N * per * sizeof *emb);
    uint8_t mask[N * 16], trunc[N];
    CHECK_INT(L, 16);
    CHECK_INT((int64_t)(4 * per), n);
    CHECK_INT(text_encoder_encode(e, text, N, emb, mask, trunc), 0);
    double err = 0;
    for (int i = 0; i < N && ref && am && cut; i++) {
        const int r = i % 4;
        err = fmax(err, rel_error(emb + i * per, ref + r * per, (int64_t)per));
        for (size_t t = 0; t < L; t++)
            CHECK_INT(mask[i * L + t], am[r * L + t]);
        CHECK_INT(trunc[i], cut[r]);
    }
    printf("  kind %s vs %s: max relative error %.3g\n", e->identity, want, err);
    CHECK(err <= 1e-5);
    /* truncated may be NULL. */
    CHECK_INT(text_encoder_encode(e, text, 1, emb, mask, NULL), 0);
    free(ref), free(am), free(cut), free(emb);
    st_close(g);
}

TEST(t5_kind_by_spec_and_identity)
{
    const char *tok = tokenizer_dir();
    if (!tok)
        return;
    const char *deep = fixture("fixtures/t5/deep");
    char spec[8192], id[1024];
    snprintf(spec, sizeof spec, "t5:%s,tokenizer=%s,layer=-2,final_norm,max_length=16", deep, tok);
    struct text_encoder e;
    if (text_encoder_open(&e, spec) != 0) {
        test_fail(__FILE__, __LINE__, "open %s: %s", spec, err_get());
        return;
    }
    CHECK_INT(e.dim, 16);
    CHECK_INT(e.max_length, 16);
    CHECK(strncmp(e.identity, "t5/1 ", 5) == 0);
    CHECK_STR(e.identity + 5 + 33, spec + 3);
    check_kind(&e, "flite");
    snprintf(id, sizeof id, "%s", e.identity);
    text_encoder_close(&e);

    /* The identity reopens the same files, and refuses changed ones. */
    struct text_encoder r;
    CHECK_INT(text_encoder_open(&r, id), 0);
    CHECK_STR(r.identity, id);
    check_kind(&r, "flite");
    text_encoder_close(&r);
    id[5] = id[5] == '0' ? '1' : '0';
    CHECK(text_encoder_open(&r, id) != 0);
    CHECK_CONTAINS(err_get(), "have changed");

    /* Attending with the mask. */
    snprintf(spec, sizeof spec, "t5:%s,tokenizer=%s,layer=3,final_norm,mask,max_length=16,device=cpu,dtype=f32",
             deep, tok);
    CHECK_INT(text_encoder_open(&e, spec), 0);
    check_kind(&e, "masked");
    char a[40];
    snprintf(a, sizeof a, "%.37s", e.identity);
    text_encoder_close(&e);

    /* A pipeline folder: the T5EncoderModel and its tokenizer from
     * model_index.json, as F-Lite ships it (text_encoder) and as FLUX does
     * (text_encoder_2 beside a CLIP text_encoder). */
    static const char *const indexes[] = {
        "{\"_class_name\": \"FLitePipeline\", \"text_encoder\": [\"transformers\", \"T5EncoderModel\"], "
        "\"tokenizer\": [\"transformers\", \"T5TokenizerFast\"]}",
        "{\"_class_name\": \"FluxPipeline\", \"text_encoder\": [\"transformers\", \"CLIPTextModel\"], "
        "\"tokenizer\": [\"transformers\", \"CLIPTokenizer\"], \"text_encoder_2\": [\"transformers\", "
        "\"T5EncoderModel\"], \"tokenizer_2\": [\"transformers\", \"T5TokenizerFast\"]}",
    };
    for (int i = 0; i < 2; i++) {
        char pipe[64], p[4096];
        snprintf(pipe, sizeof pipe, "pipeline%d", i);
        const char *dir = test_tmp_path(pipe);
        mkdir(dir, 0755);
        snprintf(p, sizeof p, "%s/model_index.json", dir);
        test_write_file(p, indexes[i], strlen(indexes[i]));
        const char *suffix = i ? "_2" : "";
        snprintf(p, sizeof p, "%s/text_encoder%s", dir, suffix);
        CHECK_INT(symlink(deep, p), 0);
        snprintf(p, sizeof p, "%s/tokenizer%s", dir, suffix);
        CHECK_INT(symlink(tok, p), 0);
        if (i) { /* CLIP's folders, which the kind passes over */
            snprintf(p, sizeof p, "%s/text_encoder", dir), mkdir(p, 0755);
            snprintf(p, sizeof p, "%s/tokenizer", dir), mkdir(p, 0755);
        }
        snprintf(spec, sizeof spec, "t5:%s,max_length=16,layer=-2,final_norm,mask", dir);
        if (text_encoder_open(&e, spec) != 0) {
            test_fail(__FILE__, __LINE__, "open %s: %s", spec, err_get());
            continue;
        }
        char b[40];
        snprintf(b, sizeof b, "%.37s", e.identity);
        CHECK_STR(a, b); /* the same files hash the same */
        check_kind(&e, "masked");
        text_encoder_close(&e);
    }
}

static void expect_spec_error(const char *spec, const char *const *needles)
{
    struct text_encoder e;
    CHECK(text_encoder_open(&e, spec) != 0);
    printf("  %s\n", err_get());
    for (; *needles; needles++)
        CHECK_CONTAINS(err_get(), *needles);
    CHECK(e.kind == NULL);
}

TEST(t5_kind_refuses_what_it_cannot_do)
{
    const char *tok = tokenizer_dir();
    if (!tok)
        return;
    const char *deep = fixture("fixtures/t5/deep");
    char spec[8192];
#define SPEC(...) (snprintf(spec, sizeof spec, __VA_ARGS__), spec)
    expect_spec_error(SPEC("t5:%s", deep), (const char *const[]){"tokenizer=DIR", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s", fixture("fixtures/t5/gelu"), tok),
                      (const char *const[]){"808 ids", "100 rows", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,final_norm", deep, tok),
                      (const char *const[]){"layer=-1", "final_norm would apply it twice", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,layer=4,final_norm", deep, tok),
                      (const char *const[]){"layer=4", "twice", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,dtype=bf16", deep, tok),
                      (const char *const[]){"dtype=bf16 conflicts with device=cpu", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,layer=3,layer=2", deep, tok),
                      (const char *const[]){"layer is given twice", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,mask,mask", deep, tok),
                      (const char *const[]){"mask is given twice", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,layer=5", deep, tok),
                      (const char *const[]){"layer 5", "5 hidden states", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,layer=x", deep, tok), (const char *const[]){"layer=x", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,max_length=0", deep, tok),
                      (const char *const[]){"max_length=0", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,dtype=f16", deep, tok), (const char *const[]){"dtype=f16", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=%s,bogus", deep, tok),
                      (const char *const[]){"unknown option 'bogus'", NULL});
    expect_spec_error(SPEC("t5:%s,tokenizer=/nonexistent/tok", deep), (const char *const[]){"/nonexistent/tok", NULL});
    expect_spec_error("t5:/nonexistent/t5", (const char *const[]){"/nonexistent/t5", NULL});
    expect_spec_error("t5:", (const char *const[]){"t5:PATH", NULL});
    expect_spec_error(SPEC("t5:%s", test_tmpdir()), (const char *const[]){"neither a text_encoder folder", NULL});
    const char *pipe = test_tmp_path("clip_only");
    mkdir(pipe, 0755);
    char p[4096];
    snprintf(p, sizeof p, "%s/model_index.json", pipe);
    const char *index = "{\"text_encoder\": [\"transformers\", \"CLIPTextModel\"]}";
    test_write_file(p, index, strlen(index));
    snprintf(p, sizeof p, "%s/text_encoder", pipe);
    mkdir(p, 0755);
    expect_spec_error(SPEC("t5:%s", pipe), (const char *const[]){"lists no T5EncoderModel", NULL});
#undef SPEC

    /* A caption the tokenizer refuses names the caption. */
    snprintf(spec, sizeof spec, "t5:%s,tokenizer=%s,max_length=8", deep, tok);
    struct text_encoder e;
    CHECK_INT(text_encoder_open(&e, spec), 0);
    const char *bad[] = {"fine", "\xff\xfe"};
    float emb[2 * 8 * 16];
    uint8_t mask[2 * 8];
    CHECK(text_encoder_encode(&e, bad, 2, emb, mask, NULL) != 0);
    CHECK_CONTAINS(err_get(), "caption 1");
    text_encoder_close(&e);
}
