/* The data stages as library calls, the way dit-train can run them on raw
 * data: index_run -> bucket_run -> precompute_run in one process, their
 * statuses, and an encoder with a std (the VAE's place) through precompute. */
#include "tests/harness.h"
#include "data/bucket_run.h"
#include "data/index_run.h"
#include "data/precompute.h"
#include "formats/shardset.h"
#include "libcommon/error.h"
#include "libcommon/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* index -> bucket (the ADM crop at 32) of the six class fixtures into
 * TMP/bucketed.tsv; 0 when both stages did their work. */
static int index_and_bucket(void)
{
    const char *input = test_source_path("fixtures/images/classes");
    struct index_config ic;
    index_config_init(&ic);
    ic.inputs = &input;
    ic.n_inputs = 1;
    ic.read.class_from_dir = 1;
    ic.output = test_tmp_path("index.tsv");
    struct index_summary is;
    if (index_run(&ic, &is) != STAGE_DONE || is.read != 6 || is.kept != 6 || is.other_files != 3) {
        test_fail(__FILE__, __LINE__, "index_run: %s", err_get());
        return -1;
    }
    struct bucket_run_config bc;
    bucket_run_config_init(&bc);
    bc.input = test_tmp_path("index.tsv");
    bc.output = test_tmp_path("bucketed.tsv");
    bc.buckets.center_crop_size = 32;
    struct bucket_run_summary bs;
    if (bucket_run(&bc, &bs) != STAGE_DONE || bs.bucketed != 6 || bs.n_buckets != 1) {
        test_fail(__FILE__, __LINE__, "bucket_run: %s", err_get());
        return -1;
    }
    return 0;
}

TEST(index_bucket_precompute_in_one_process)
{
    log_set_level(LOG_QUIET);
    if (index_and_bucket() != 0)
        return;
    struct encoder enc;
    CHECK_INT(encoder_open(&enc, "pixel"), 0);
    struct precompute_config pc;
    precompute_config_init(&pc);
    pc.input = test_tmp_path("bucketed.tsv");
    pc.output_dir = test_tmp_path("shards");
    pc.encoder = &enc;
    struct precompute_summary ps;
    CHECK_INT(precompute_run(&pc, &ps), STAGE_DONE);
    CHECK_INT(ps.read, 6);
    CHECK_INT(ps.encoded, 6);
    /* Again: everything is reused. */
    CHECK_INT(precompute_run(&pc, &ps), STAGE_DONE);
    CHECK_INT(ps.reused, 6);
    struct shardset *s = shardset_open(pc.output_dir);
    CHECK(s != NULL);
    if (s) {
        CHECK_INT(s->n_records, 6);
        const struct st_tensor *t = shardset_tensor(s, 0, "latent");
        CHECK(t != NULL);
        if (t) {
            CHECK_INT(t->ndim, 3);
            CHECK_INT(t->shape[0], 3);
            CHECK_INT(t->shape[1], 32);
        }
        CHECK(shardset_tensor(s, 0, "latent_std") == NULL);
        shardset_close(s);
    }
    encoder_close(&enc);
}

TEST(stage_statuses)
{
    log_set_level(LOG_QUIET);
    const char *missing = test_tmp_path("no-such.csv");
    struct index_config ic;
    index_config_init(&ic);
    ic.inputs = &missing;
    ic.n_inputs = 1;
    ic.output = test_tmp_path("i.tsv");
    CHECK_INT(index_run(&ic, NULL), STAGE_ERROR);
    CHECK_CONTAINS(err_get(), "no-such.csv");
    ic.read.caption_ext = "txt";
    CHECK_INT(index_run(&ic, NULL), STAGE_BAD_CONFIG);
    CHECK_CONTAINS(err_get(), "must begin with a dot");

    struct bucket_run_config bc;
    bucket_run_config_init(&bc);
    bc.merge_small = 1;
    CHECK_INT(bucket_run(&bc, NULL), STAGE_BAD_CONFIG);
    CHECK_CONTAINS(err_get(), "needs --batch-size");
    bucket_run_config_init(&bc);
    bc.buckets.step = 0;
    CHECK_INT(bucket_run(&bc, NULL), STAGE_BAD_CONFIG);

    /* --strict with a rejected record: the run ends, fails, writes no output. */
    FILE *f = fopen(test_tmp_path("bad.tsv"), "w");
    fprintf(f, "key\twidth\theight\na\t64\t64\nb\tx\t64\n");
    fclose(f);
    bucket_run_config_init(&bc);
    bc.input = test_tmp_path("bad.tsv");
    bc.output = test_tmp_path("b.tsv");
    bc.strict = 1;
    struct bucket_run_summary bs;
    CHECK_INT(bucket_run(&bc, &bs), STAGE_FAILED);
    CHECK_INT(bs.rejected, 1);
    CHECK(fopen(bc.output, "r") == NULL);

    struct precompute_config pc;
    precompute_config_init(&pc);
    pc.output_dir = test_tmp_path("s");
    CHECK_INT(precompute_run(&pc, NULL), STAGE_BAD_CONFIG); /* no encoder */
}

/* A stochastic encoder (mean = R / 100, std = G / 100 + 0.5), as the VAE
 * is: precompute stores latent_std beside latent, and latent_std_flip
 * beside latent_flip, both scaled as the denoiser sees latents. */
static int fake_encode(const struct encoder *e, const uint8_t *rgb, int w, int h, float *mean, float *std)
{
    (void)e;
    for (int i = 0; i < w * h; i++) {
        mean[i] = rgb[i * 3] / 100.0f;
        std[i] = rgb[i * 3 + 1] / 100.0f + 0.5f;
    }
    return 0;
}

TEST(precompute_stores_the_std_of_stochastic_encoders)
{
    log_set_level(LOG_QUIET);
    if (index_and_bucket() != 0)
        return;
    static const struct encoder_kind kind = {"fake", "fake", NULL, fake_encode, NULL, NULL};
    struct encoder enc = {.kind = &kind, .identity = "fake/1", .factor = 1, .channels = 1, .has_std = 1,
                          .scale = 2.0f, .shift = 0.25f};
    struct precompute_config pc;
    precompute_config_init(&pc);
    pc.input = test_tmp_path("bucketed.tsv");
    pc.output_dir = test_tmp_path("shards");
    pc.encoder = &enc;
    pc.flip_both = 1;
    CHECK_INT(precompute_run(&pc, NULL), STAGE_DONE);
    struct shardset *s = shardset_open(pc.output_dir);
    CHECK(s != NULL);
    if (!s)
        return;
    const char *fields[] = {"latent", "latent_std", "latent_flip", "latent_std_flip"};
    const struct st_tensor *t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = shardset_tensor(s, 0, fields[i]);
        CHECK(t[i] != NULL);
    }
    if (t[0] && t[1] && t[2] && t[3]) {
        CHECK_INT(t[1]->shape[0], 1);
        CHECK_INT(t[1]->shape[2], 32);
        const float *m = t[0]->data, *sd = t[1]->data, *mf = t[2]->data, *sf = t[3]->data;
        int ok = 1;
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                /* std * 2 of 0.5..3.05; (mean - 0.25) * 2 of 0..2.55; the std
                 * is G's and the mean R's, so (std / 2 - 0.5) * 100 is an
                 * integer and so is (m / 2 + 0.25) * 100. */
                const float v = sd[y * 32 + x], u = m[y * 32 + x];
                ok &= v >= 1.0f && v <= 6.1f && u >= -0.5f && u <= 4.6f;
                ok &= fabsf((v / 2 - 0.5f) * 100 - roundf((v / 2 - 0.5f) * 100)) < 1e-3f;
                ok &= fabsf((u / 2 + 0.25f) * 100 - roundf((u / 2 + 0.25f) * 100)) < 1e-3f;
                ok &= m[y * 32 + x] == mf[y * 32 + 31 - x] && sd[y * 32 + x] == sf[y * 32 + 31 - x];
            }
        CHECK(ok);
    }
    shardset_close(s);
}

/* --latent-mode: mean stores the scaled mean alone; sample one draw, the
 * same on every run and different from the mean. */
TEST(precompute_latent_modes)
{
    log_set_level(LOG_QUIET);
    if (index_and_bucket() != 0)
        return;
    static const struct encoder_kind kind = {"fake", "fake", NULL, fake_encode, NULL, NULL};
    struct encoder enc = {.kind = &kind, .identity = "fake/1", .factor = 1, .channels = 1, .has_std = 1,
                          .scale = 2.0f, .shift = 0.25f};
    const char *dirs[3] = {"mode_mean", "mode_sample", "mode_sample2"};
    const enum latent_mode modes[3] = {LATENT_MEAN, LATENT_SAMPLE, LATENT_SAMPLE};
    float first[3] = {0};
    double diff[3] = {0};
    for (int k = 0; k < 3; k++) {
        struct precompute_config pc;
        precompute_config_init(&pc);
        pc.input = test_tmp_path("bucketed.tsv");
        pc.output_dir = test_tmp_path(dirs[k]);
        pc.encoder = &enc;
        pc.latent_mode = modes[k];
        CHECK_INT(precompute_run(&pc, NULL), STAGE_DONE);
        struct shardset *s = shardset_open(pc.output_dir);
        CHECK(s != NULL);
        if (!s)
            return;
        CHECK(shardset_tensor(s, 0, "latent_std") == NULL);
        const struct st_tensor *t = shardset_tensor(s, 0, "latent");
        CHECK(t != NULL);
        if (t) {
            const float *v = t->data;
            first[k] = v[0];
            for (int i = 0; i < 32 * 32; i++) /* distance from a mean on the 0.02 grid */
                diff[k] += fabsf(v[i] / 2 + 0.25f - roundf((v[i] / 2 + 0.25f) * 100) / 100);
        }
        shardset_close(s);
    }
    CHECK(diff[0] < 1e-3);     /* the mean */
    CHECK(diff[1] > 1.0);      /* a draw: off the grid */
    CHECK(first[1] == first[2]); /* and the same draw again */
    CHECK(first[1] != first[0]);
    enum latent_mode m;
    CHECK_INT(latent_mode_parse("dist", &m), 0);
    CHECK_INT(m, LATENT_DIST);
    CHECK_INT(latent_mode_parse("median", &m), -1);
}
