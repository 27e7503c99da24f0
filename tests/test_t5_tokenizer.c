/* models/t5/tokenizer: the ids of transformers' T5TokenizerFast
 * (tests/reference/make_t5_tokenizer_goldens.py), the folder's forms and
 * errors, and encoding from several threads at once. */
#include "tests/harness.h"
#include "models/t5/tokenizer.h"
#include "libcommon/error.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define FIXTURE_DIR "fixtures/t5_tokenizer/tokenizer"

struct golden {
    char *text;
    int max_length, count, truncated;
    int32_t *ids;
    uint8_t *mask;
};

struct goldens {
    struct golden *g;
    size_t n;
};

static int32_t *json_ints(const json_t *a, size_t n)
{
    int32_t *v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; v && i < n && i < json_array_size(a); i++)
        v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

static struct goldens goldens_read(const char *rel)
{
    struct goldens out = {0};
    char *text = test_read_file(test_source_path(rel), NULL);
    CHECK(text != NULL);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        CHECK(j != NULL);
        if (!j)
            break;
        struct golden g = {0};
        g.text = strdup(json_string_value(json_object_get(j, "text")));
        g.max_length = (int)json_integer_value(json_object_get(j, "max_length"));
        g.count = (int)json_integer_value(json_object_get(j, "count"));
        g.truncated = (int)json_integer_value(json_object_get(j, "truncated"));
        g.ids = json_ints(json_object_get(j, "ids"), (size_t)g.max_length);
        int32_t *m = json_ints(json_object_get(j, "mask"), (size_t)g.max_length);
        g.mask = malloc((size_t)g.max_length);
        for (int i = 0; i < g.max_length; i++)
            g.mask[i] = (uint8_t)m[i];
        free(m);
        CHECK_INT(json_array_size(json_object_get(j, "ids")), g.max_length);
        json_decref(j);
        out.g = realloc(out.g, (out.n + 1) * sizeof *out.g);
        out.g[out.n++] = g;
    }
    free(text);
    return out;
}

static void goldens_free(struct goldens *gs)
{
    for (size_t i = 0; i < gs->n; i++) {
        free(gs->g[i].text);
        free(gs->g[i].ids);
        free(gs->g[i].mask);
    }
    free(gs->g);
}

/* The count of golden lines t gets wrong; the first few are reported. */
static int goldens_mismatches(const struct t5_tokenizer *t, const struct goldens *gs, int report)
{
    int bad = 0;
    int32_t *ids = malloc(4096 * sizeof *ids);
    uint8_t *mask = malloc(4096);
    for (size_t i = 0; i < gs->n; i++) {
        const struct golden *g = &gs->g[i];
        int truncated = -1;
        int count = t5_tokenizer_encode(t, g->text, g->max_length, ids, mask, &truncated);
        int same = count == g->count && truncated == g->truncated &&
                   memcmp(ids, g->ids, (size_t)g->max_length * sizeof *ids) == 0 &&
                   memcmp(mask, g->mask, (size_t)g->max_length) == 0;
        if (!same && report && bad < 5) {
            char got[512] = "", want[512] = "";
            for (int k = 0; k < g->max_length && k < 40; k++) {
                snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[k]);
                snprintf(want + strlen(want), sizeof want - strlen(want), " %d", g->ids[k]);
            }
            test_fail(__FILE__, __LINE__, "line %zu (max_length %d): count %d/%d truncated %d/%d\n  got %s\n want %s",
                      i + 1, g->max_length, count, g->count, truncated, g->truncated, got, want);
        }
        bad += !same;
    }
    free(ids);
    free(mask);
    return bad;
}

static struct t5_tokenizer *open_fixture(void)
{
    struct t5_tokenizer *t = t5_tokenizer_open(test_source_path(FIXTURE_DIR));
    if (!t)
        test_fail(__FILE__, __LINE__, "open: %s", err_get());
    return t;
}

/* A folder in the test's tmpdir with the fixture's spiece.model and, when
 * config is not NULL, that tokenizer_config.json. */
static const char *folder_with(const char *name, const char *config)
{
    const char *dir = test_tmp_path(name);
    char path[4096];
    CHECK_INT(mkdir(dir, 0755), 0);
    size_t size;
    char *model = test_read_file(test_source_path(FIXTURE_DIR "/spiece.model"), &size);
    snprintf(path, sizeof path, "%s/spiece.model", dir);
    test_write_file(path, model, size);
    free(model);
    if (config) {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
        test_write_file(path, config, strlen(config));
    }
    return dir;
}

TEST(t5_tokenizer_goldens)
{
    struct t5_tokenizer *t = open_fixture();
    if (!t)
        return;
    CHECK_INT(t5_tokenizer_vocab_size(t), 808);
    CHECK_INT(t5_tokenizer_eos_id(t), 1);
    CHECK_INT(t5_tokenizer_pad_id(t), 0);
    struct goldens gs = goldens_read("fixtures/t5_tokenizer/goldens.jsonl");
    CHECK(gs.n >= 150);
    CHECK_INT(goldens_mismatches(t, &gs, 1), 0);
    goldens_free(&gs);
    t5_tokenizer_close(t);
}

TEST(t5_tokenizer_without_json_files_uses_t5_defaults)
{
    struct t5_tokenizer *t = t5_tokenizer_open(folder_with("bare", NULL));
    CHECK(t != NULL);
    if (!t) {
        test_fail(__FILE__, __LINE__, "%s", err_get());
        return;
    }
    CHECK_INT(t5_tokenizer_vocab_size(t), 900); /* 800 pieces + 100 extra ids */
    struct goldens gs = goldens_read("fixtures/t5_tokenizer/goldens_defaults.jsonl");
    CHECK(gs.n >= 10);
    CHECK_INT(goldens_mismatches(t, &gs, 1), 0);
    goldens_free(&gs);
    t5_tokenizer_close(t);
}

/* transformers 5 builds the same pipeline whatever "legacy" says (checked
 * by the goldens script); a copy with legacy false gives the goldens. */
TEST(t5_tokenizer_legacy_false_gives_the_same_ids)
{
    json_error_t e;
    json_t *cfg = json_load_file(test_source_path(FIXTURE_DIR "/tokenizer_config.json"), 0, &e);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    json_object_set_new(cfg, "legacy", json_false());
    char *text = json_dumps(cfg, JSON_INDENT(2));
    json_decref(cfg);
    struct t5_tokenizer *t = t5_tokenizer_open(folder_with("legacy", text));
    free(text);
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_INT(t5_tokenizer_vocab_size(t), 808);
    struct goldens gs = goldens_read("fixtures/t5_tokenizer/goldens.jsonl");
    CHECK_INT(goldens_mismatches(t, &gs, 1), 0);
    goldens_free(&gs);
    t5_tokenizer_close(t);
}

TEST(t5_tokenizer_invalid_utf8_names_the_offset)
{
    struct t5_tokenizer *t = open_fixture();
    if (!t)
        return;
    int32_t ids[16];
    uint8_t mask[16];
    int truncated = 7;
    static const struct {
        const char *text;
        const char *offset;
    } bad[] = {
        {"ab\xff" "cd", "byte offset 2"},
        {"caf\xc3", "byte offset 3"},           /* cut short */
        {"x \xed\xa0\x80 y", "byte offset 2"},  /* a surrogate */
        {"\xc0\xaf", "byte offset 0"},          /* overlong */
        {"ok \xf4\x90\x80\x80", "byte offset 3"}, /* above U+10FFFF */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err_clear();
        CHECK_INT(t5_tokenizer_encode(t, bad[i].text, 16, ids, mask, &truncated), -1);
        CHECK_CONTAINS(err_get(), "invalid UTF-8");
        CHECK_CONTAINS(err_get(), bad[i].offset);
    }
    CHECK_INT(t5_tokenizer_encode(t, "a", 0, ids, mask, NULL), -1);
    CHECK_CONTAINS(err_get(), "max_length");
    t5_tokenizer_close(t);
}

TEST(t5_tokenizer_bad_folders_are_named)
{
    err_clear();
    CHECK(t5_tokenizer_open(test_tmpdir()) == NULL);
    CHECK_CONTAINS(err_get(), "spiece.model");

    const char *dir = test_tmp_path("garbage");
    char path[4096];
    CHECK_INT(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/spiece.model", dir);
    test_write_file(path, "\x0a\xff\xff\xff\x0fnot a model", 16);
    err_clear();
    CHECK(t5_tokenizer_open(dir) == NULL);
    CHECK_CONTAINS(err_get(), "spiece.model");

    err_clear();
    CHECK(t5_tokenizer_open(folder_with("badjson", "{\"extra_ids\": ")) == NULL);
    CHECK_CONTAINS(err_get(), "tokenizer_config.json");

    err_clear();
    CHECK(t5_tokenizer_open(folder_with("badextra", "{\"extra_ids\": \"many\"}")) == NULL);
    CHECK_CONTAINS(err_get(), "extra_ids");
}

TEST(t5_tokenizer_config_extra_ids)
{
    /* extra_ids alone (no list): the sentinels are that many, ids from the top. */
    struct t5_tokenizer *t = t5_tokenizer_open(folder_with("e3", "{\"extra_ids\": 3}"));
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_INT(t5_tokenizer_vocab_size(t), 803);
    int32_t ids[8];
    uint8_t mask[8];
    CHECK_INT(t5_tokenizer_encode(t, "<extra_id_0><extra_id_2>", 8, ids, mask, NULL), 3);
    CHECK_INT(ids[0], 802);
    CHECK_INT(ids[1], 800);
    CHECK_INT(ids[2], 1);
    CHECK_INT(ids[3], 0);
    CHECK_INT(mask[2], 1);
    CHECK_INT(mask[3], 0);
    t5_tokenizer_close(t);
}

struct thread_job {
    const struct t5_tokenizer *t;
    const struct goldens *gs;
    int bad;
};

static void *encode_thread(void *arg)
{
    struct thread_job *job = arg;
    for (int round = 0; round < 3; round++)
        job->bad += goldens_mismatches(job->t, job->gs, 0);
    return NULL;
}

TEST(t5_tokenizer_two_threads_encode_at_once)
{
    struct t5_tokenizer *t = open_fixture();
    if (!t)
        return;
    struct goldens gs = goldens_read("fixtures/t5_tokenizer/goldens.jsonl");
    struct thread_job jobs[2] = {{t, &gs, 0}, {t, &gs, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_INT(pthread_create(&th[i], NULL, encode_thread, &jobs[i]), 0);
    for (int i = 0; i < 2; i++)
        CHECK_INT(pthread_join(th[i], NULL), 0);
    CHECK_INT(jobs[0].bad, 0);
    CHECK_INT(jobs[1].bad, 0);
    goldens_free(&gs);
    t5_tokenizer_close(t);
}
