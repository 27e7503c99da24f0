/* F-Lite against fal-ai/f-lite's own DiT (goldens of
 * tests/reference/make_flite_goldens.py): the output and every parameter's
 * gradient, with residual_v and the trainable norms and biases on and off,
 * from the diffusers folder F-Lite's save_pretrained writes; the same bits
 * with gradient checkpointing and from an inference model; the null
 * condition as the zero embedding; what we save read back; the presets and
 * the memory plan; bad folders named; and F-Lite's sampling loop (CFG and
 * APG) from given starting latents. */
#include "tests/harness.h"
#include "diffusion/diffusion.h"
#include "diffusion/generate.h"
#include "formats/model_dir.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"
#include "models/denoiser.h"
#include "models/flite/flite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* max |a - b| over max |b|. */
static double rel_error(const float *a, const float *b, int64_t n)
{
    double err = 0, scale = 1e-12;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return err / scale;
}

struct case_data {
    struct flite_config cfg;
    float *params;
    struct st_file *g;
    int B, C, H, W, L, Dc;
    float *x, *t, *T, *ctx, *dout, *out; /* T = 1000 t in f32, as F-Lite's forward computes it */
};

static int64_t dim_of(const struct st_file *g, const char *name, int k)
{
    const struct st_tensor *t = st_find(g, name);
    return t && k < t->ndim ? t->shape[k] : 0;
}

static void case_open(struct case_data *d, const char *name)
{
    memset(d, 0, sizeof *d);
    char rel[256];
    snprintf(rel, sizeof rel, "fixtures/flite/%s", name);
    int rc = flite_load_dir(test_source_path(rel), &d->cfg, &d->params);
    CHECK_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err_get());
        return;
    }
    snprintf(rel, sizeof rel, "fixtures/flite/%s_golden.safetensors", name);
    d->g = test_goldens_open(rel);
    d->B = (int)dim_of(d->g, "x", 0), d->C = (int)dim_of(d->g, "x", 1);
    d->H = (int)dim_of(d->g, "x", 2), d->W = (int)dim_of(d->g, "x", 3);
    d->L = (int)dim_of(d->g, "context", 1), d->Dc = (int)dim_of(d->g, "context", 2);
    const size_t img = (size_t)d->B * d->C * d->H * d->W;
    d->x = test_golden_f32(d->g, "x", img);
    d->t = test_golden_f32(d->g, "t", (size_t)d->B);
    d->T = malloc((size_t)d->B * sizeof *d->T);
    for (int i = 0; i < d->B; i++)
        d->T[i] = d->t[i] * 1000.0f;
    d->ctx = test_golden_f32(d->g, "context", (size_t)d->B * d->L * d->Dc);
    d->dout = test_golden_f32(d->g, "dout", img);
    d->out = test_golden_f32(d->g, "out", img);
    /* Plan for exactly the golden's sizes. */
    d->cfg.height = d->H, d->cfg.width = d->W, d->cfg.text_len = d->L;
}

static void case_close(struct case_data *d)
{
    free(d->params), free(d->x), free(d->t), free(d->T), free(d->ctx), free(d->dout), free(d->out);
    st_close(d->g);
}

/* Runs forward and backward; out and grads malloc'd (grads NULL for an
 * inference model). Sample 1 takes the null condition over junk text: the
 * golden's sample 1 has zeros. */
static void run(struct case_data *d, enum denoiser_memory mem, float **out, float **grads)
{
    struct kctx k;
    struct flite_model m;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 0), 0);
    int rc = flite_model_create(&m, &d->cfg, &k, d->B, mem, KDT_F32);
    CHECK_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err_get());
        return;
    }
    nn_weights_upload(&m.w, d->params);
    const size_t img = (size_t)d->B * d->C * d->H * d->W, text = (size_t)d->B * d->L * d->Dc;
    float *ctx = malloc(text * sizeof *ctx);
    memcpy(ctx, d->ctx, text * sizeof *ctx);
    for (size_t i = (size_t)d->L * d->Dc; i < 2 * (size_t)d->L * d->Dc; i++)
        ctx[i] = 7.0f;
    uint8_t null[8] = {0, 1, 0, 0, 0, 0, 0, 0};
    *out = malloc(img * sizeof **out);
    CHECK_INT(flite_forward(&m, *out, d->x, d->T, ctx, null, d->L, d->B, d->H, d->W), 0);
    *grads = NULL;
    if (mem != DENOISER_MEM_INFERENCE) {
        flite_backward(&m, d->dout, d->B);
        *grads = malloc((size_t)m.n_params * sizeof **grads);
        nn_weights_grads_download(&m.w, *grads);
    }
    free(ctx);
    flite_model_free(&m);
    kctx_free(&k);
}

static void check_against_flite(const char *name)
{
    struct case_data d;
    case_open(&d, name);
    if (!d.params)
        return;
    float *out, *grads;
    run(&d, DENOISER_MEM_TRAIN, &out, &grads);
    const size_t img = (size_t)d.B * d.C * d.H * d.W;
    double e = rel_error(out, d.out, (int64_t)img);
    if (e > 1e-5)
        test_fail(__FILE__, __LINE__, "%s: output error %.3g", name, e);
    struct nn_params table;
    CHECK_INT(flite_param_table(&d.cfg, &table, NULL), 0);
    double worst = 0;
    for (size_t i = 0; i < table.count; i++) {
        const struct nn_param *p = &table.p[i];
        char gname[NN_NAME_MAX + 8];
        snprintf(gname, sizeof gname, "grad.%s", p->name);
        float *want = test_golden_f32(d.g, gname, (size_t)p->n);
        double ge = rel_error(grads + p->offset, want, p->n);
        if (ge > 1e-4)
            test_fail(__FILE__, __LINE__, "%s: gradient of %s: error %.3g", name, p->name, ge);
        worst = fmax(worst, ge);
        free(want);
    }
    fprintf(stderr, "%s: output error %.2g, worst gradient error %.2g over %zu tensors\n", name, e, worst,
            table.count);

    /* Checkpointing recomputes the same ops: the same bits. */
    float *out2, *grads2, *out3, *none;
    run(&d, DENOISER_MEM_CHECKPOINT, &out2, &grads2);
    CHECK(memcmp(out, out2, img * sizeof *out) == 0);
    CHECK(memcmp(grads, grads2, (size_t)table.total * sizeof *grads) == 0);
    run(&d, DENOISER_MEM_INFERENCE, &out3, &none);
    CHECK(memcmp(out, out3, img * sizeof *out) == 0);
    nn_params_free(&table);
    free(out), free(grads), free(out2), free(grads2), free(out3);
    case_close(&d);
}

TEST(flite_matches_f_lite_with_residual_v_and_biases)
{
    check_against_flite("rv_bias");
}

TEST(flite_matches_f_lite_as_released)
{
    check_against_flite("plain");
}

TEST(flite_plans_smaller_batches_and_latents)
{
    /* A batch of one, on latents smaller than the plan and another aspect,
     * gives the first sample of a full-size run. */
    struct case_data d;
    case_open(&d, "plain");
    if (!d.params)
        return;
    struct kctx k;
    struct flite_model m;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 0), 0);
    struct flite_config big = d.cfg;
    big.height = 8, big.width = 8, big.text_len = 9;
    CHECK_INT(flite_model_create(&m, &big, &k, 4, DENOISER_MEM_TRAIN, KDT_F32), 0);
    nn_weights_upload(&m.w, d.params);
    const size_t per = (size_t)d.C * d.H * d.W;
    float *out = malloc(per * sizeof *out);
    CHECK_INT(flite_forward(&m, out, d.x, d.T, d.ctx, NULL, d.L, 1, d.H, d.W), 0);
    CHECK(rel_error(out, d.out, (int64_t)per) < 1e-5);
    /* Outside the plan: named, not run. */
    CHECK_INT(flite_forward(&m, out, d.x, d.T, d.ctx, NULL, d.L, 1, 10, 8), -1);
    CHECK_CONTAINS(err_get(), "10x8");
    CHECK_INT(flite_forward(&m, out, d.x, d.T, d.ctx, NULL, d.L, 1, 5, 4), -1);
    CHECK_INT(flite_forward(&m, out, d.x, d.T, d.ctx, NULL, 10, 1, d.H, d.W), -1);
    CHECK_CONTAINS(err_get(), "10 tokens");
    CHECK_INT(flite_forward(&m, out, d.x, d.T, d.ctx, NULL, d.L, 5, d.H, d.W), -1);
    free(out);
    flite_model_free(&m);
    kctx_free(&k);
    case_close(&d);
}

TEST(flite_saves_what_it_loads)
{
    struct case_data d;
    case_open(&d, "rv_bias");
    if (!d.params)
        return;
    const char *dir = test_tmp_path("saved");
    CHECK_INT(mkdir(dir, 0755), 0);
    CHECK_INT(flite_save_dir(&d.cfg, d.params, dir), 0);
    json_t *j = model_dir_read_config(dir, FLITE_CLASS);
    CHECK(j != NULL);
    CHECK(json_is_true(json_object_get(j, "residual_v")));
    CHECK_INT(json_integer_value(json_object_get(j, "cross_attn_input_size")), 24);
    json_decref(j);
    /* The rotary buffers F-Lite's loader expects are there, computed. */
    struct st_set *set = model_dir_open_weights(dir);
    CHECK(set != NULL);
    const struct st_tensor *cs = set ? st_set_find(set, "rope.freqs_hw_cos", NULL) : NULL;
    CHECK(cs && cs->ndim == 3 && cs->shape[0] == 512 && cs->shape[2] == 8);
    st_set_close(set);
    struct flite_config back;
    float *params = NULL;
    CHECK_INT(flite_load_dir(dir, &back, &params), 0);
    back.height = d.cfg.height, back.width = d.cfg.width, back.text_len = d.cfg.text_len;
    CHECK(memcmp(&back, &d.cfg, sizeof back) == 0);
    CHECK(params && memcmp(params, d.params, (size_t)flite_param_count(&d.cfg) * sizeof *params) == 0);
    free(params);
    case_close(&d);
}

TEST(flite_presets_count_the_released_parameters)
{
    struct flite_config c;
    CHECK_INT(flite_config_by_name(&c, "F-Lite", 128, 128, 512), 0);
    /* 242,264,065 per block and 94,838,848 outside, by hand from model.py's
     * shapes (shared/notes/flite.md 1.1 gives the per-block figure). */
    CHECK(flite_param_count(&c) == 40LL * 242264065LL + 94838848LL);
    CHECK_INT(flite_head_size(&c), 256);
    CHECK_INT(flite_config_by_name(&c, "F-Lite-7B", 64, 64, 512), 0);
    CHECK_INT(c.depth, 28);
    CHECK_INT(flite_config_by_name(&c, "F-Lite-XL", 64, 64, 512), -1);
    CHECK_CONTAINS(err_get(), "F-Lite-7B");
    CHECK_INT(flite_config_by_name(&c, "F-Lite", 64, 63, 512), -1);
    CHECK_CONTAINS(err_get(), "64x63");
    /* The plan grows with the checkpointing choice as it should: keeping
     * every block's activations costs more than one block's. */
    int64_t pb, ab_train, ab_ckpt, ab_inf;
    CHECK_INT(flite_config_by_name(&c, "F-Lite", 64, 64, 512), 0);
    CHECK_INT(flite_model_plan_bytes(&c, DEVICE_CPU, 1, DENOISER_MEM_TRAIN, KDT_F32, &pb, &ab_train), 0);
    CHECK(pb == flite_param_count(&c) * 8);
    CHECK_INT(flite_model_plan_bytes(&c, DEVICE_CPU, 1, DENOISER_MEM_CHECKPOINT, KDT_F32, &pb, &ab_ckpt), 0);
    CHECK_INT(flite_model_plan_bytes(&c, DEVICE_CPU, 1, DENOISER_MEM_INFERENCE, KDT_F32, &pb, &ab_inf), 0);
    CHECK(ab_train > 10 * ab_ckpt && ab_ckpt > ab_inf);
    CHECK(pb == flite_param_count(&c) * 4);
}

static void expect_load_error(const char *config_text, const char *drop, const char *rename, const char *reshape,
                              const char *want1, const char *want2)
{
    const char *dir = test_tmp_path("broken");
    test_write_model_variant(dir, "diffusion_pytorch_model.safetensors", config_text,
                             "fixtures/flite/rv_bias/diffusion_pytorch_model.safetensors", drop, rename, reshape,
                             NULL);
    struct flite_config c;
    float *params = (float *)1;
    CHECK_INT(flite_load_dir(dir, &c, &params), -1);
    CHECK(params == NULL);
    CHECK_CONTAINS(err_get(), want1);
    if (want2)
        CHECK_CONTAINS(err_get(), want2);
}

TEST(flite_bad_folders_are_named)
{
    char *good = test_read_file(test_source_path("fixtures/flite/rv_bias/config.json"), NULL);
    expect_load_error(good, "blocks.1.mlp.0.bias", NULL, NULL, "missing blocks.1.mlp.0.bias",
                      "broken/diffusion_pytorch_model.safetensors");
    expect_load_error(good, NULL, NULL, "final_proj.bias", "final_proj.bias has shape [1, 16]", "[16]");
    expect_load_error(good, NULL, "blocks.2.mlp.2.bias=blocks.7.mlp.2.bias", NULL, "missing blocks.2.mlp.2.bias",
                      "unexpected tensor blocks.7.mlp.2.bias");
    char *deeper = strdup(good);
    char *p = strstr(deeper, "\"depth\": 3");
    CHECK(p != NULL);
    if (p)
        p[9] = '4';
    expect_load_error(deeper, NULL, NULL, NULL, "missing blocks.3.", NULL);
    char *norope = strdup(good);
    p = strstr(norope, "\"use_rope\": true");
    CHECK(p != NULL);
    if (p)
        memcpy(p, "\"use_rope\": 0   ", 16);
    expect_load_error(norope, NULL, NULL, NULL, "use_rope", NULL);
    expect_load_error("{\"_class_name\": \"DiTTransformer2DModel\"}", NULL, NULL, NULL, "DiT", NULL);
    free(good), free(deeper), free(norope);
}

/* The sampling loop of F-Lite's pipeline from the same starting latents:
 * CFG, APG over the whole batch (F-Lite's code) and per image (each image
 * as if alone), through the seam, the Euler sampler and generate(). */
static void sample_with(struct denoiser *d, const struct sampler *s, const float *noise, const float *ctx, int L,
                        int Dc, float g, int apg, int apg_batch, float *out)
{
    struct cond cd = {.text = ctx, .text_len = L, .text_dim = Dc};
    struct generate_options go = {.cfg_scale = g, .guided = d->info.in_channels, .init_noise = noise,
                                  .apg = apg, .apg_batch = apg_batch, .apg_threshold = 0.03f};
    CHECK_INT(generate(d, s, &cd, 2, &go, out), 0);
}

TEST(flite_samples_as_f_lite_s_pipeline)
{
    struct denoiser_config mc;
    float *params = NULL;
    int rc = denoiser_config_load_dir(&mc, test_source_path("fixtures/flite/rv_bias"), &params);
    CHECK_INT(rc, 0);
    if (rc != 0)
        return;
    struct st_file *g = test_goldens_open("fixtures/flite/sampler_golden.safetensors");
    const int C = 4, H = 8, W = 12, L = 7, Dc = 24;
    const size_t n = (size_t)2 * C * H * W;
    const struct denoiser_spec fit = {.channels = C, .height = H, .width = W, .text_len = L};
    CHECK_INT(denoiser_config_fit(&mc, &fit), 0);
    struct kctx k;
    struct denoiser d;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 0), 0);
    CHECK_INT(denoiser_create(&d, &mc, &k, 4, DENOISER_MEM_INFERENCE, KDT_F32), 0);
    denoiser_params_upload(&d, params);
    struct sampler s;
    struct sampler_options so = {.shift = flow_resolution_shift(H, W)};
    CHECK_INT(sampler_init(&s, SAMPLER_EULER, 3, &so), 0);
    float *noise = test_golden_f32(g, "noise", n), *ctx = test_golden_f32(g, "context", (size_t)2 * L * Dc);
    float *out = malloc(n * sizeof *out);
    static const struct {
        const char *golden;
        float g;
        int apg, batch;
    } cases[] = {{"cfg", 3.0f, 0, 0}, {"apg_batch", 5.0f, 1, 1}, {"apg_each", 5.0f, 1, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float *want = test_golden_f32(g, cases[i].golden, n);
        sample_with(&d, &s, noise, ctx, L, Dc, cases[i].g, cases[i].apg, cases[i].batch, out);
        double e = rel_error(out, want, (int64_t)n);
        fprintf(stderr, "    %s: error %.2g of F-Lite's loop\n", cases[i].golden, e);
        if (e > 1e-5)
            test_fail(__FILE__, __LINE__, "%s: error %.3g", cases[i].golden, e);
        free(want);
    }
    /* The two APG modes differ (the batch couples its images). */
    float *each = malloc(n * sizeof *each);
    sample_with(&d, &s, noise, ctx, L, Dc, 5.0f, 1, 0, each);
    sample_with(&d, &s, noise, ctx, L, Dc, 5.0f, 1, 1, out);
    CHECK(rel_error(out, each, (int64_t)n) > 1e-4);
    free(each), free(out), free(noise), free(ctx), free(params);
    sampler_free(&s);
    denoiser_free(&d);
    denoiser_config_free(&mc);
    kctx_free(&k);
    st_close(g);
}

/* A pipeline folder as released (model_index.json, dit_model/) through
 * the seam, as dit-train --pretrained-model-path and dit-sample read it. */
TEST(flite_reads_a_pipeline_folder)
{
    const char *pipe = test_tmp_path("pipe");
    char sub[4096], cmd[8192];
    CHECK_INT(mkdir(pipe, 0755), 0);
    snprintf(sub, sizeof sub, "%s/model_index.json", pipe);
    const char *index = "{\"_class_name\": \"FLitePipeline\", \"dit_model\": [\"f_lite.model\", \"DiT\"],"
                        " \"vae\": [\"diffusers\", \"AutoencoderKL\"]}";
    test_write_file(sub, index, strlen(index));
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s/dit_model' && mkdir '%s/vae'", test_source_path("fixtures/flite/plain"),
             pipe, pipe);
    CHECK_INT(system(cmd), 0);
    struct denoiser_config mc;
    float *params = NULL;
    CHECK_INT(denoiser_config_load_dir(&mc, pipe, &params), 0);
    if (params) {
        struct denoiser_info info;
        denoiser_config_info(&mc, &info);
        CHECK_INT(info.cond, COND_TEXT);
        CHECK_INT(info.text_dim, 20);
        CHECK_STR(mc.kind->name, "flite");
        denoiser_config_free(&mc);
    }
    free(params);
}
