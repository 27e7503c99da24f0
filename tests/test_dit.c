/* The DiT model against the original facebookresearch/DiT and diffusers'
 * DiTTransformer2DModel on a tiny random configuration (goldens made by
 * tests/reference/make_dit_goldens.py). */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"
#include "models/dit/dit.h"
#include "models/dit/denoiser.h"
#include "models/dit/weights.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static struct dit_config tiny_config(void)
{
    struct dit_config c = {
        .input_size = 8, .patch_size = 2, .in_channels = 4, .hidden_size = 32, .depth = 2,
        .num_heads = 4, .mlp_ratio = 4.0f, .num_classes = 10, .class_dropout_prob = 0.1f,
        .learn_sigma = 1, .norm_eps = 1e-6f, .mlp_norm_eps = 1e-6f, .freq_shift = 0.0f,
    };
    return c;
}

/* Largest |a - b| relative to the largest |b| (so tiny entries do not dominate). */
static double rel_error(const float *a, const float *b, int64_t n)
{
    double err = 0, scale = 1e-12;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return err / scale;
}

static const float *f32(const struct st_file *f, const char *name, int64_t n)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t || t->dtype != ST_F32 || (int64_t)t->nelem != n) {
        test_fail(__FILE__, __LINE__, "fixture tensor %s missing or not F32[%lld]", name, (long long)n);
        return NULL;
    }
    return t->data;
}

TEST(paper_configs_have_the_paper_parameter_counts)
{
    struct dit_config c;
    CHECK_INT(dit_config_by_name(&c, "DiT-XL/2", 32), 0);
    /* DiT's train.py logs 675,129,632 parameters for DiT-XL/2, counting the
     * fixed pos_embed (256 x 1152) that is not trained. */
    CHECK_INT(dit_param_count(&c), 675129632LL - 256 * 1152);
    CHECK_INT(dit_config_by_name(&c, "DiT-S/8", 32), 0);
    CHECK_INT(c.depth, 12);
    CHECK_INT(c.hidden_size, 384);
    CHECK(dit_config_by_name(&c, "DiT-M/2", 32) != 0);
    CHECK_CONTAINS(err_get(), "DiT-M/2");
    CHECK(dit_config_by_name(&c, "DiT-B/3", 32) != 0);
}

/* The fixture's int64 labels as the int32 the model takes. */
static void fixture_labels(const struct st_file *io, int32_t *y, int n)
{
    const struct st_tensor *yt = st_find(io, "y");
    for (int i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, (const char *)yt->data + 8 * i, 8);
        y[i] = (int32_t)v;
    }
}

static int run_original(struct dit_model *m, struct kctx *ctx, enum dit_memory memory, float *out)
{
    struct dit_config cfg = tiny_config();
    struct st_set *w = st_set_open(test_source_path("fixtures/dit/tiny_original.safetensors"));
    struct st_file *io = st_open(test_source_path("fixtures/dit/tiny_io.safetensors"));
    CHECK(w && io);
    if (!w || !io) {
        fprintf(stderr, "    %s\n", err_get());
        return -1;
    }
    CHECK_INT(dit_model_create(m, &cfg, ctx, 3, memory, KDT_F32), 0);
    CHECK_INT(dit_weights_load(&cfg, (float *)m->params.data, w, DIT_LAYOUT_ORIGINAL), 0);
    const float *x = f32(io, "x", 3 * 4 * 8 * 8);
    const float *t = f32(io, "t_float", 3);
    int32_t y[3];
    fixture_labels(io, y, 3);
    dit_forward(m, out, x, t, y, 3);
    dit_zero_grads(m);
    dit_backward(m, f32(io, "R", 3 * 8 * 8 * 8), 3);
    st_set_close(w);
    st_close(io);
    return 0;
}

TEST(forward_and_gradients_match_facebookresearch_dit)
{
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 0), 0);
    struct dit_model m;
    float out[3 * 8 * 8 * 8];
    if (run_original(&m, &ctx, 0, out) != 0)
        return;
    struct st_file *io = st_open(test_source_path("fixtures/dit/tiny_io.safetensors"));
    double e = rel_error(out, f32(io, "out", 3 * 8 * 8 * 8), 3 * 8 * 8 * 8);
    fprintf(stderr, "    output relative error %.3g\n", e);
    CHECK(e < 1e-5);
    const struct nn_param *table = m.table.p;
    size_t np = m.table.count;
    double worst = 0;
    for (size_t i = 0; i < np; i++) {
        char name[128];
        snprintf(name, sizeof name, "grad/%s", table[i].name);
        const float *g = f32(io, name, table[i].n);
        if (!g)
            continue;
        double ge = rel_error((const float *)m.grads.data + table[i].offset, g, table[i].n);
        if (ge > 1e-4)
            test_fail(__FILE__, __LINE__, "gradient of %s: relative error %.3g", table[i].name, ge);
        worst = fmax(worst, ge);
    }
    fprintf(stderr, "    worst gradient relative error %.3g over %zu tensors\n", worst, np);
    st_close(io);
    dit_model_free(&m);
    kctx_free(&ctx);
}

TEST(gradient_checkpointing_gives_identical_gradients)
{
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 0), 0);
    struct dit_model a, b;
    float out_a[3 * 8 * 8 * 8], out_b[3 * 8 * 8 * 8];
    if (run_original(&a, &ctx, 0, out_a) != 0 || run_original(&b, &ctx, 1, out_b) != 0)
        return;
    CHECK(memcmp(out_a, out_b, sizeof out_a) == 0);
    CHECK(memcmp(a.grads.data, b.grads.data, (size_t)a.n_params * sizeof(float)) == 0);
    int64_t pa, aa, pb, ab;
    dit_model_sizes(&a, &pa, &aa);
    dit_model_sizes(&b, &pb, &ab);
    CHECK(ab < aa);
    dit_model_free(&a);
    dit_model_free(&b);
    kctx_free(&ctx);
}

/* The inference plan runs the same ops on one residual stream: the same
 * bits as the training plan, in a fraction of the memory, and no training. */
TEST(inference_plan_gives_identical_outputs_in_less_memory)
{
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 0), 0);
    struct dit_model a, b;
    float out_a[3 * 8 * 8 * 8], out_b[3 * 8 * 8 * 8];
    if (run_original(&a, &ctx, DIT_MEM_TRAIN, out_a) != 0)
        return;
    struct dit_config cfg = tiny_config();
    CHECK_INT(dit_model_create(&b, &cfg, &ctx, 3, DIT_MEM_INFERENCE, KDT_F32), 0);
    CHECK(b.grads.data == NULL);
    float *p = malloc((size_t)a.n_params * sizeof *p);
    dit_params_download(&a, p);
    dit_params_upload(&b, p);
    struct st_file *io = st_open(test_source_path("fixtures/dit/tiny_io.safetensors"));
    int32_t y[3];
    fixture_labels(io, y, 3);
    dit_forward(&b, out_b, f32(io, "x", 3 * 4 * 8 * 8), f32(io, "t_float", 3), y, 3);
    CHECK(memcmp(out_a, out_b, sizeof out_a) == 0);
    int64_t pa, aa, pb, ab;
    dit_model_sizes(&a, &pa, &aa);
    dit_model_sizes(&b, &pb, &ab);
    fprintf(stderr, "    activations: training %lld bytes, inference %lld; parameters %lld, %lld\n",
            (long long)aa, (long long)ab, (long long)pa, (long long)pb);
    CHECK(ab * 2 < aa); /* depth 2 here: the gap grows with depth */
    /* The plan without allocating counts what create allocated. */
    int64_t pp, ap;
    CHECK_INT(dit_model_plan_bytes(&cfg, DEVICE_CPU, 3, DIT_MEM_TRAIN, KDT_F32, &pp, &ap), 0);
    CHECK(pp == pa && ap == aa);
    CHECK_INT(dit_model_plan_bytes(&cfg, DEVICE_CPU, 3, DIT_MEM_INFERENCE, KDT_F32, &pp, &ap), 0);
    CHECK(pp == pb && ap == ab);
    CHECK_INT(dit_model_plan_bytes(&cfg, DEVICE_CUDA, 3, DIT_MEM_INFERENCE, KDT_BF16, &pp, &ap), 0);
    CHECK_INT(pp, a.n_params * 2); /* bf16 weights alone */
    CHECK(dit_model_plan_bytes(&cfg, DEVICE_CPU, 0, DIT_MEM_TRAIN, KDT_F32, &pp, &ap) != 0);
    CHECK_INT(pb * 2, pa);
    /* dit_weights_set: weights from another model's f32 buffer. */
    dit_weights_set(&b, a.grads);
    dit_params_download(&b, p);
    CHECK(memcmp(p, a.grads.data, (size_t)a.n_params * sizeof *p) == 0);
    struct trainer tr;
    struct trainer_config tc = {.grad_accum = 1};
    struct denoiser bd;
    CHECK_INT(dit_denoiser_wrap(&bd, &b), 0);
    CHECK(trainer_init(&tr, &bd, &tc) != 0);
    CHECK_CONTAINS(err_get(), "inference");
    denoiser_free(&bd);
    free(p);
    st_close(io);
    dit_model_free(&a);
    dit_model_free(&b);
    kctx_free(&ctx);
}

TEST(positional_embedding_matches_dit)
{
    struct st_file *f = st_open(test_source_path("fixtures/dit/tiny_pos_embed.safetensors"));
    CHECK(f != NULL);
    if (!f)
        return;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (t->dtype != ST_F32)
            continue;
        int64_t tokens = t->shape[t->ndim - 2], dim = t->shape[t->ndim - 1];
        int grid = (int)lround(sqrt((double)tokens));
        float *ours = malloc((size_t)(tokens * dim) * sizeof *ours);
        dit_pos_embed(ours, (int)dim, grid);
        CHECK(rel_error(ours, t->data, tokens * dim) < 1e-6);
        free(ours);
    }
    st_close(f);
}

TEST(initialisation_follows_dit)
{
    struct dit_config cfg = tiny_config();
    int64_t n = dit_param_count(&cfg);
    float *p = calloc((size_t)n, sizeof *p);
    dit_init(&cfg, p, 1234);
    struct st_file *ref = st_open(test_source_path("fixtures/dit/tiny_init_original.safetensors"));
    CHECK(ref != NULL);
    struct nn_params params;
    CHECK_INT(dit_param_table(&cfg, &params, NULL), 0);
    const struct nn_param *table = params.p;
    size_t np = params.count;
    for (size_t i = 0; ref && i < np; i++) {
        const struct st_tensor *t = st_find(ref, table[i].name);
        CHECK(t != NULL);
        if (!t)
            continue;
        /* Same zero pattern; same spread (std within 25%, same bound). */
        double s_ref = 0, s_our = 0, max_ref = 0, max_our = 0;
        for (int64_t k = 0; k < table[i].n; k++) {
            float r;
            memcpy(&r, (const char *)t->data + 4 * k, 4);
            s_ref += (double)r * r;
            s_our += (double)p[table[i].offset + k] * p[table[i].offset + k];
            max_ref = fmax(max_ref, fabs(r));
            max_our = fmax(max_our, fabs(p[table[i].offset + k]));
        }
        if ((s_ref == 0) != (s_our == 0))
            test_fail(__FILE__, __LINE__, "%s: zero in one initialisation only", table[i].name);
        if (s_ref > 0 && table[i].n >= 64) {
            double ratio = sqrt(s_our / s_ref);
            if (ratio < 0.75 || ratio > 1.25)
                test_fail(__FILE__, __LINE__, "%s: std ratio %.3f to DiT's", table[i].name, ratio);
        }
    }
    nn_params_free(&params);
    st_close(ref);
    free(p);
}

TEST(weights_round_trip_in_both_layouts)
{
    struct dit_config cfg = tiny_config();
    int64_t n = dit_param_count(&cfg);
    float *p = malloc((size_t)n * sizeof *p), *q = malloc((size_t)n * sizeof *q);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    for (int layout = DIT_LAYOUT_ORIGINAL; layout <= DIT_LAYOUT_DIFFUSERS; layout++) {
        const char *path = test_tmp_path(layout ? "d.safetensors" : "o.safetensors");
        CHECK_INT(dit_weights_save(&cfg, p, path, layout), 0);
        struct st_set *s = st_set_open(path);
        CHECK(s != NULL);
        CHECK_INT(dit_weights_layout(s), layout);
        memset(q, 0, (size_t)n * sizeof *q);
        CHECK_INT(dit_weights_load(&cfg, q, s, layout), 0);
        CHECK(memcmp(p, q, (size_t)n * sizeof *q) == 0);
        st_set_close(s);
    }
    /* A deeper configuration cannot load these weights, and says why. */
    struct dit_config deeper = cfg;
    deeper.depth = 3;
    struct st_set *s = st_set_open(test_tmp_path("o.safetensors"));
    float *big = calloc((size_t)dit_param_count(&deeper), sizeof *big);
    CHECK(dit_weights_load(&deeper, big, s, DIT_LAYOUT_ORIGINAL) != 0);
    CHECK_CONTAINS(err_get(), "missing blocks.2.attn.qkv.weight");
    st_set_close(s);
    free(big);
    free(p);
    free(q);
}

/* The expected flat gradient from diffusers' per-name gradients: the
 * per-block embedder copies are summed (this model shares one embedder), then
 * mapped with the same loader the weights use. */
static float *diffusers_expected_grads(const struct dit_config *cfg, const struct st_file *io)
{
    struct st_writer *w = st_writer_new();
    float **sums = calloc(io->n_tensors, sizeof *sums);
    for (size_t i = 0; i < io->n_tensors; i++) {
        const struct st_tensor *t = &io->tensors[i];
        if (strncmp(t->name, "grad/", 5) != 0)
            continue;
        const char *name = t->name + 5;
        const char *emb = strstr(name, ".norm1.emb.");
        const void *data = t->data;
        if (emb) {
            sums[i] = calloc(t->nelem, sizeof(float));
            for (int b = 0; b < cfg->depth; b++) {
                char copy[256];
                snprintf(copy, sizeof copy, "grad/transformer_blocks.%d%s", b, emb);
                const struct st_tensor *c = st_find(io, copy);
                for (uint64_t k = 0; c && k < t->nelem; k++) {
                    float v;
                    memcpy(&v, (const char *)c->data + 4 * k, 4);
                    sums[i][k] += v;
                }
            }
            data = sums[i];
        }
        st_writer_add(w, name, ST_F32, t->ndim, t->shape, data);
    }
    const char *path = test_tmp_path("expected_grads.safetensors");
    CHECK_INT(st_writer_write(w, path), 0);
    st_writer_free(w);
    for (size_t i = 0; i < io->n_tensors; i++)
        free(sums[i]);
    free(sums);
    struct st_set *s = st_set_open(path);
    float *g = calloc((size_t)dit_param_count(cfg), sizeof *g);
    CHECK_INT(dit_weights_load(cfg, g, s, DIT_LAYOUT_DIFFUSERS), 0);
    st_set_close(s);
    return g;
}

TEST(forward_and_gradients_match_diffusers)
{
    struct dit_config cfg;
    CHECK_INT(dit_config_from_diffusers(&cfg, test_source_path("fixtures/dit/tiny_diffusers/config.json")), 0);
    CHECK_INT(cfg.hidden_size, 32);
    CHECK_INT(dit_table_rows(&cfg), 11);
    CHECK_NEAR(cfg.mlp_norm_eps, 1e-5, 1e-12);
    struct st_set *w = st_set_open(test_source_path("fixtures/dit/tiny_diffusers/diffusion_pytorch_model.safetensors"));
    struct st_file *io = st_open(test_source_path("fixtures/dit/tiny_io.safetensors"));
    struct st_file *dio = st_open(test_source_path("fixtures/dit/tiny_diffusers_io.safetensors"));
    CHECK(w && io && dio);
    if (!w || !io || !dio)
        return;
    CHECK_INT(dit_weights_layout(w), DIT_LAYOUT_DIFFUSERS);
    struct kctx ctx;
    kctx_init(&ctx, DEVICE_CPU, 0);
    struct dit_model m;
    CHECK_INT(dit_model_create(&m, &cfg, &ctx, 3, 0, KDT_F32), 0);
    CHECK_INT(dit_weights_load(&cfg, (float *)m.params.data, w, DIT_LAYOUT_DIFFUSERS), 0);
    int32_t y[3];
    fixture_labels(io, y, 3);
    float out[3 * 8 * 8 * 8];
    dit_forward(&m, out, f32(io, "x", 3 * 4 * 8 * 8), f32(io, "t_float", 3), y, 3);
    double e = rel_error(out, f32(dio, "out", 3 * 8 * 8 * 8), 3 * 8 * 8 * 8);
    fprintf(stderr, "    output relative error %.3g\n", e);
    CHECK(e < 1e-5);
    dit_zero_grads(&m);
    dit_backward(&m, f32(dio, "R", 3 * 8 * 8 * 8), 3);
    float *want = diffusers_expected_grads(&cfg, dio);
    const struct nn_param *table = m.table.p;
    size_t np = m.table.count;
    for (size_t i = 0; i < np; i++) {
        double ge = rel_error((const float *)m.grads.data + table[i].offset, want + table[i].offset, table[i].n);
        if (ge > 1e-4)
            test_fail(__FILE__, __LINE__, "gradient of %s: relative error %.3g", table[i].name, ge);
    }
    free(want);
    dit_model_free(&m);
    kctx_free(&ctx);
    st_set_close(w);
    st_close(io);
    st_close(dio);
}

#include "libcommon/philox.h"
#include "diffusion/diffusion.h"

TEST(loss_falls_when_training_on_a_fixed_batch)
{
    struct dit_config cfg = tiny_config();
    struct kctx ctx;
    kctx_init(&ctx, DEVICE_CPU, 0);
    struct dit_model m;
    const int B = 4, n = 4 * 8 * 8;
    CHECK_INT(dit_model_create(&m, &cfg, &ctx, B, 0, KDT_F32), 0);
    dit_init(&cfg, (float *)m.params.data, 7);
    struct ddpm_schedule s;
    CHECK_INT(ddpm_schedule_linear(&s, 1000), 0);
    float x0[4 * 256], noise[4 * 256], x_t[4 * 256], out[4 * 2 * 256], dout[4 * 2 * 256];
    struct rng_stream rs = rng_stream(11, RNG_NOISE, 0, 0);
    rng_normal_f32(&rs, 0, (size_t)(B * n), x0);
    rng_normal_f32(&rs, (uint64_t)B * n, (size_t)(B * n), noise);
    int32_t t[4] = {10, 200, 500, 900}, y[4] = {1, 2, 3, 10};
    ddpm_q_sample(&s, x_t, x0, noise, t, B, n);
    float *mom = calloc((size_t)m.n_params, sizeof *mom), *vel = calloc((size_t)m.n_params, sizeof *vel);
    double first = 0, last = 0;
    for (int step = 1; step <= 60; step++) {
        dit_forward(&m, out, x_t, (float[]){10, 200, 500, 900}, y, B);
        double loss = ddpm_training_loss(&s, out, x0, x_t, noise, t, B, 4, 64, NULL, dout);
        if (step == 1)
            first = loss;
        last = loss;
        dit_zero_grads(&m);
        dit_backward(&m, dout, B);
        struct adamw_params hp = {1e-3, 0.9, 0.999, 1e-8, 0.0, step};
        k_adamw_update(&ctx, m.params, m.grads,
                       tensor_f32(mom, m.n_params), tensor_f32(vel, m.n_params), tensor_none(),
                       m.n_params, &hp);
    }
    fprintf(stderr, "    loss %.4f -> %.4f after 60 AdamW steps\n", first, last);
    CHECK(last < 0.5 * first);
    free(mom);
    free(vel);
    ddpm_schedule_free(&s);
    dit_model_free(&m);
    kctx_free(&ctx);
}


/* Params after `steps` DDPM steps through the trainer, from DiT's init
 * perturbed so that every layer has a gradient. With overflow, one
 * gradient is made infinite before each update, as an fp16 overflow would. */
static float *trainer_run(int loss_scaling, int overflow, int steps, struct trainer *out_tr)
{
    struct dit_config cfg = tiny_config();
    struct kctx ctx;
    kctx_init(&ctx, DEVICE_CPU, 0);
    static struct dit_model m;
    const int B = 4;
    CHECK_INT(dit_model_create(&m, &cfg, &ctx, B, 0, KDT_F32), 0);
    float *p = m.params.data;
    dit_init(&cfg, p, 3);
    for (int64_t i = 0; i < m.n_params; i++)
        p[i] += 0.01f * (float)((i * 7919) % 13 - 6);
    struct trainer_config tc = {.objective = OBJECTIVE_DDPM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
                                .eps = 1e-8, .schedule = LR_CONSTANT, .total_steps = steps,
                                .grad_accum = 1, .max_grad_norm = 0.5, .ema_decay = 0.9, .seed = 4,
                                .loss_scaling = loss_scaling};
    struct trainer tr;
    static struct denoiser dn;
    CHECK_INT(dit_denoiser_wrap(&dn, &m), 0);
    CHECK_INT(trainer_init(&tr, &dn, &tc), 0);
    float x[4 * 256];
    struct rng_stream rs = rng_stream(12, RNG_NOISE, 0, 0);
    rng_normal_f32(&rs, 0, 4 * 256, x);
    int32_t labels[4] = {1, 2, 3, 4};
    uint64_t records[4] = {5, 6, 7, 8};
    for (int s = 0; s < steps; s++) {
        trainer_micro_step(&tr, x, &(struct cond){.labels = labels}, records, B, 0);
        if (overflow)
            ((float *)m.grads.data)[m.n_params / 2] = INFINITY;
        trainer_optimizer_step(&tr);
    }
    float *after = malloc((size_t)m.n_params * sizeof *after);
    memcpy(after, p, (size_t)m.n_params * sizeof *after);
    *out_tr = tr;
    out_tr->m = NULL; /* freed below */
    trainer_free(&tr);
    denoiser_free(&dn);
    dit_model_free(&m);
    kctx_free(&ctx);
    return after;
}

TEST(loss_scaling_by_a_power_of_two_changes_no_bit)
{
    /* Scaling dout by 2^16 scales every gradient exactly, and unscaling
     * (folded into the clipping factor) undoes it exactly. */
    struct trainer a, b;
    float *plain = trainer_run(0, 0, 3, &a);
    float *scaled = trainer_run(1, 0, 3, &b);
    struct dit_config cfg = tiny_config();
    CHECK(memcmp(plain, scaled, (size_t)dit_param_count(&cfg) * sizeof(float)) == 0);
    CHECK(b.loss_scale == LOSS_SCALE_INIT);
    CHECK_INT(b.skipped_steps, 0);
    free(plain), free(scaled);
}

TEST(loss_scaling_skips_overflowing_updates_and_halves_the_scale)
{
    struct trainer a, b;
    float *before = trainer_run(1, 0, 0, &a);
    float *after = trainer_run(1, 1, 2, &b);
    struct dit_config cfg = tiny_config();
    CHECK(memcmp(before, after, (size_t)dit_param_count(&cfg) * sizeof(float)) == 0);
    CHECK_INT(b.skipped_steps, 2);
    CHECK_INT(b.step, 2);
    CHECK(b.loss_scale == LOSS_SCALE_INIT / 4);
    free(before), free(after);
}
