/* precompute_run with a text encoder: each record's caption becomes text
 * [L, D] and text_mask [L] in the run's text dtype; a caption repeated in
 * the data set is encoded once; a changed caption re-encodes its record
 * only; a caption that is not UTF-8 stops the run naming its line and
 * column (the manifest reader refuses it); a missing caption column is
 * named. The text encoder here is a fake kind whose output is a known
 * function of the caption, so the stored tensors can be checked exactly. */
#include "tests/harness.h"
#include "data/bucket_run.h"
#include "data/index_run.h"
#include "data/precompute.h"
#include "formats/shardset.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_L 6
#define FAKE_D 3

static int fake_captions_encoded; /* summed over calls, in this process */

/* emb[l][d] = bytes of the caption + l / 4 + d / 8 over its first l + 1
 * characters (exact in bf16); mask 1 for each character up to L - 1 and
 * for the EOS after them; truncated when the caption is longer. */
static int fake_text_encode(const struct text_encoder *e, const char *const *captions, int n, float *emb,
                            uint8_t *mask, uint8_t *truncated)
{
    for (int i = 0; i < n; i++) {
        const int len = (int)strlen(captions[i]);
        for (int l = 0; l < FAKE_L; l++) {
            mask[i * FAKE_L + l] = l <= len && l < FAKE_L;
            int sum = 0;
            for (int k = 0; k <= l && k < len; k++)
                sum += (unsigned char)captions[i][k];
            for (int d = 0; d < FAKE_D; d++)
                emb[(i * FAKE_L + l) * FAKE_D + d] = (float)(sum % 16) + l / 4.0f + d / 8.0f;
        }
        if (truncated)
            truncated[i] = len > FAKE_L - 1;
    }
    fake_captions_encoded += n;
    return 0;
}

static const struct text_encoder_kind fake_kind = {"fake", "fake", NULL, fake_text_encode, NULL};

/* The six class fixtures, ADM-cropped to 32, with the captions given
 * (NULL: as indexed) into TMP/NAME. */
static int bucketed_with_captions(const char *name, const char *const captions[6])
{
    const char *input = test_source_path("fixtures/images/classes");
    struct index_config ic;
    index_config_init(&ic);
    ic.inputs = &input;
    ic.n_inputs = 1;
    ic.read.class_from_dir = 1;
    ic.output = test_tmp_path("index.tsv");
    struct bucket_run_config bc;
    bucket_run_config_init(&bc);
    bc.input = test_tmp_path("index.tsv");
    bc.output = test_tmp_path("bucketed.tsv");
    bc.buckets.center_crop_size = 32;
    if (index_run(&ic, NULL) != STAGE_DONE || bucket_run(&bc, NULL) != STAGE_DONE) {
        test_fail(__FILE__, __LINE__, "index | bucket: %s", err_get());
        return -1;
    }
    char *text = test_read_file(test_tmp_path("bucketed.tsv"), NULL);
    FILE *out = fopen(test_tmp_path(name), "w");
    int row = -1;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && out; line = strtok_r(NULL, "\n", &save)) {
        /* caption is the third column of dit-index's manifests */
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL, *t3 = t2 ? strchr(t2 + 1, '\t') : NULL;
        if (row >= 0 && row < 6 && captions && captions[row] && t3)
            fprintf(out, "%.*s%s%s\n", (int)(t2 + 1 - line), line, captions[row], t3);
        else
            fprintf(out, "%s\n", line);
        row++;
    }
    free(text);
    if (!out || fclose(out) != 0 || row != 6) {
        test_fail(__FILE__, __LINE__, "rewriting the captions: %d rows", row);
        return -1;
    }
    return 0;
}

/* Runs precompute over TMP/NAME into TMP/shards with the fake encoder. */
static int run_with_text(const char *name, struct precompute_summary *ps, const char *rejects)
{
    static struct text_encoder te = {.kind = &fake_kind, .identity = "fake-text/1", .max_length = FAKE_L,
                                     .dim = FAKE_D};
    struct encoder enc;
    if (encoder_open(&enc, "pixel") != 0)
        return -1;
    struct precompute_config pc;
    precompute_config_init(&pc);
    pc.input = test_tmp_path(name);
    pc.output_dir = test_tmp_path("shards");
    pc.encoder = &enc;
    pc.text_encoder = &te;
    pc.rejects = rejects;
    int rc = precompute_run(&pc, ps);
    encoder_close(&enc);
    return rc;
}

static void run_bad_utf8(void)
{
    struct precompute_summary ps;
    if (run_with_text("m.tsv", &ps, NULL) != STAGE_FAILED)
        exit(1);
}

static float bf16_at(const struct st_tensor *t, size_t i)
{
    return bf16_to_f32(((const uint16_t *)t->data)[i]);
}

TEST(precompute_encodes_each_distinct_caption_once)
{
    log_set_level(LOG_QUIET);
    static const char *const captions[6] = {"a cat", "a cat", "a dog", "a cat", "", "a long caption"};
    if (bucketed_with_captions("m.tsv", captions) != 0)
        return;
    fake_captions_encoded = 0;
    struct precompute_summary ps;
    CHECK_INT(run_with_text("m.tsv", &ps, NULL), STAGE_DONE);
    CHECK_INT(ps.encoded, 6);
    CHECK_INT(ps.captions_encoded, 4); /* "a cat", "a dog", "", "a long caption" */
    CHECK_INT(ps.captions_truncated, 1);
    CHECK_INT(fake_captions_encoded, 4);
    struct shardset *s = shardset_open(test_tmp_path("shards"));
    CHECK(s != NULL);
    if (!s)
        return;
    for (size_t r = 0; r < 6; r++) {
        const struct st_tensor *t = shardset_tensor(s, r, "text"), *m = shardset_tensor(s, r, "text_mask");
        CHECK(t && m);
        if (!t || !m)
            continue;
        CHECK_INT(t->dtype, ST_BF16);
        CHECK_INT(t->ndim, 2);
        CHECK_INT(t->shape[0], FAKE_L);
        CHECK_INT(t->shape[1], FAKE_D);
        CHECK_INT(m->ndim, 1);
        CHECK_INT(m->shape[0], FAKE_L);
        /* the record's own caption, by its key's row */
        const char *cap = captions[r];
        float want[FAKE_L * FAKE_D];
        uint8_t wm[FAKE_L];
        fake_text_encode(NULL, &cap, 1, want, wm, NULL);
        fake_captions_encoded--;
        for (int i = 0; i < FAKE_L * FAKE_D; i++)
            if (bf16_at(t, (size_t)i) != want[i]) {
                test_fail(__FILE__, __LINE__, "record %zu text[%d] = %g, want %g", r, i, bf16_at(t, (size_t)i),
                          want[i]);
                break;
            }
        for (int l = 0; l < FAKE_L; l++)
            CHECK(bf16_at(m, (size_t)l) == (float)wm[l]);
    }
    shardset_close(s);
    /* Again: all reused, nothing encoded. */
    fake_captions_encoded = 0;
    CHECK_INT(run_with_text("m.tsv", &ps, NULL), STAGE_DONE);
    CHECK_INT(ps.reused, 6);
    CHECK_INT(fake_captions_encoded, 0);
    /* One caption changed: that record alone is encoded again. */
    static const char *const changed[6] = {"a cat", "a cat", "a bird", "a cat", "", "a long caption"};
    if (bucketed_with_captions("m2.tsv", changed) != 0)
        return;
    CHECK_INT(run_with_text("m2.tsv", &ps, NULL), STAGE_DONE);
    CHECK_INT(ps.encoded, 1);
    CHECK_INT(ps.reused, 5);
    CHECK_INT(fake_captions_encoded, 1);
}

TEST(precompute_refuses_captions_that_are_not_utf8)
{
    log_set_level(LOG_QUIET);
    static const char *const captions[6] = {"a cat", "bad \xc3\x28 caption", NULL, NULL, NULL, NULL};
    if (bucketed_with_captions("m.tsv", captions) != 0)
        return;
    int sig = 0;
    char *err = test_stderr_of(run_bad_utf8, &sig);
    CHECK_INT(sig, 0);
    CHECK_CONTAINS(err, "m.tsv:3: column caption: invalid UTF-8 at byte 5");
    CHECK_CONTAINS(err, "manifest.tsv was not written");
    free(err);
}

TEST(precompute_names_a_missing_caption_column)
{
    log_set_level(LOG_QUIET);
    if (bucketed_with_captions("m.tsv", NULL) != 0)
        return;
    static struct text_encoder te = {.kind = &fake_kind, .identity = "fake-text/1", .max_length = FAKE_L,
                                     .dim = FAKE_D};
    struct encoder enc;
    CHECK_INT(encoder_open(&enc, "pixel"), 0);
    struct precompute_config pc;
    precompute_config_init(&pc);
    pc.input = test_tmp_path("m.tsv");
    pc.output_dir = test_tmp_path("shards");
    pc.encoder = &enc;
    pc.text_encoder = &te;
    pc.caption_column = "prompt";
    CHECK_INT(precompute_run(&pc, NULL), STAGE_ERROR);
    CHECK_CONTAINS(err_get(), "no 'prompt' column");
    encoder_close(&enc);
}
