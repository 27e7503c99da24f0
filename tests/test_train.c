/* train/: learning-rate schedules, the optimizer interface, and a
 * checkpoint written and read back (weights, EMA, optimizer state, data
 * position, loss scaling), for a tiny DiT through the denoiser seam. */
#include "harness.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"
#include "models/registry.h"
#include "train/checkpoint.h"
#include "train/schedule.h"
#include "train/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

TEST(lr_schedules_as_diffusers_get_scheduler)
{
    struct lr_config c = {LR_CONSTANT, 1e-3, 10, 110};
    /* Warmup: lr * step / warmup, from 0. */
    CHECK_NEAR(lr_at(&c, 0), 0.0, 1e-15);
    CHECK_NEAR(lr_at(&c, 5), 5e-4, 1e-15);
    CHECK_NEAR(lr_at(&c, 10), 1e-3, 1e-15);
    CHECK_NEAR(lr_at(&c, 109), 1e-3, 1e-15);
    c.schedule = LR_LINEAR; /* to 0 at total_steps */
    CHECK_NEAR(lr_at(&c, 60), 5e-4, 1e-15);
    CHECK_NEAR(lr_at(&c, 110), 0.0, 1e-15);
    CHECK_NEAR(lr_at(&c, 200), 0.0, 1e-15); /* never negative */
    c.schedule = LR_COSINE;                 /* half a cosine */
    CHECK_NEAR(lr_at(&c, 60), 5e-4, 1e-15);
    CHECK_NEAR(lr_at(&c, 35), 1e-3 * 0.5 * (1 + cos(M_PI * 0.25)), 1e-15);
    CHECK_NEAR(lr_at(&c, 110), 0.0, 1e-15);
    c.warmup_steps = 0; /* no warmup: the full rate at step 0 */
    CHECK_NEAR(lr_at(&c, 0), 1e-3, 1e-15);
    enum lr_schedule s;
    CHECK_INT(lr_schedule_parse("cosine", &s), 0);
    CHECK_INT(s, LR_COSINE);
    CHECK_STR(lr_schedule_name(s), "cosine");
    CHECK(lr_schedule_parse("polynomial", &s) != 0);
}

TEST(optimizer_lists_its_named_state)
{
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 1), 0);
    struct optimizer o;
    struct optimizer_config oc = {0.9, 0.999, 1e-8, 0.0};
    CHECK_INT(optimizer_create(&o, "adamw", &ctx, 100, &oc, NULL), 0);
    CHECK_INT(o.nstate, 2);
    CHECK(optimizer_state_find(&o, "adam_m") && optimizer_state_find(&o, "adam_v"));
    CHECK(!optimizer_state_find(&o, "state1"));
    CHECK_INT(optimizer_state_bytes(&o), 800);
    optimizer_free(&o);
    CHECK(optimizer_create(&o, "lion", &ctx, 100, &oc, NULL) != 0);
    CHECK_CONTAINS(err_get(), "lion");
    kctx_free(&ctx);
}

static const struct denoiser_spec tiny_spec = {4, 8, 8, 10, 2, 32, 4, 0, 0};

/* A trainer over a tiny DiT after `steps` steps of fixed data. */
static void trained(struct kctx *ctx, struct denoiser_config *mc, struct denoiser *d, struct trainer *tr, int steps)
{
    CHECK_INT(denoiser_config_preset(mc, "DiT-S/2", &tiny_spec), 0);
    CHECK_INT(denoiser_create(d, mc, ctx, 2, DENOISER_MEM_TRAIN, KDT_F32), 0);
    float *p = malloc((size_t)d->n_params * sizeof *p);
    mc->kind->init(mc->impl, p, 5);
    for (int64_t i = 0; i < d->n_params; i++)
        p[i] += 0.01f * (float)((i * 7919) % 13 - 6);
    denoiser_params_upload(d, p);
    free(p);
    struct trainer_config tc = {.objective = OBJECTIVE_DDPM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
                                .eps = 1e-8, .schedule = LR_COSINE, .total_steps = 10, .grad_accum = 1,
                                .ema_decay = 0.9, .seed = 4};
    CHECK_INT(trainer_init(tr, d, &tc), 0);
    float x[2 * 256];
    struct rng_stream rs = rng_stream(12, RNG_NOISE, 0, 0);
    rng_normal_f32(&rs, 0, 2 * 256, x);
    int32_t labels[2] = {1, 7};
    uint64_t records[2] = {3, 4};
    for (int s = 0; s < steps; s++) {
        trainer_micro_step(tr, x, &(struct cond){.labels = labels}, records, 2, 0);
        trainer_optimizer_step(tr);
    }
}

static int same_tensor(struct tensor a, struct tensor b)
{
    return a.n == b.n && memcmp(a.data, b.data, (size_t)a.n * sizeof(float)) == 0;
}

TEST(checkpoint_writes_and_reads_back_everything)
{
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 1), 0);
    struct denoiser_config mc, mc2;
    struct denoiser d, d2;
    struct trainer tr, tr2;
    trained(&ctx, &mc, &d, &tr, 3);
    trained(&ctx, &mc2, &d2, &tr2, 0);
    const char *out = test_tmp_path("run");
    struct train_position pos = {3, 1, 2, 0.75, 3};
    struct checkpoint_info info = {"ddpm", "pixel/1 s2d=1", "DiT-S/2", 4, 1, NULL, LORA_FORMAT_DIFFUSERS, NULL, NULL};
    CHECK_INT(train_checkpoint_save(out, 0, &mc, &tr, &pos, &info), 0);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoint-0000003", out);
    struct train_position back = {0};
    CHECK_INT(train_checkpoint_load(dir, &mc2, &tr2, &back), 0);
    CHECK_INT(back.step, 3);
    CHECK_INT(back.epoch, 1);
    CHECK_INT(back.index, 2);
    CHECK_INT(back.loss_n, 3);
    CHECK(back.loss_sum == 0.75);
    CHECK_INT(tr2.step, 3);
    CHECK(same_tensor(d.params, d2.params));
    CHECK(same_tensor(tr.ema, tr2.ema));
    for (int i = 0; i < tr.opt.nstate; i++)
        CHECK(same_tensor(tr.opt.state[i].t, tr2.opt.state[i].t));
    char *objective, *encoder;
    CHECK_INT(train_checkpoint_info(dir, &objective, &encoder, NULL), 0);
    CHECK_STR(objective, "ddpm");
    CHECK_STR(encoder, "pixel/1 s2d=1");
    free(objective), free(encoder);
    /* The next step after the reload equals the next step of the original. */
    float x[2 * 256];
    struct rng_stream rs = rng_stream(12, RNG_NOISE, 0, 0);
    rng_normal_f32(&rs, 0, 2 * 256, x);
    int32_t labels[2] = {1, 7};
    uint64_t records[2] = {3, 4};
    trainer_micro_step(&tr, x, &(struct cond){.labels = labels}, records, 2, 0);
    trainer_optimizer_step(&tr);
    trainer_micro_step(&tr2, x, &(struct cond){.labels = labels}, records, 2, 0);
    trainer_optimizer_step(&tr2);
    CHECK(same_tensor(d.params, d2.params));
    trainer_free(&tr2);
    denoiser_free(&d2);
    denoiser_config_free(&mc2);

    /* Another configuration is refused by name. */
    struct denoiser_spec other = tiny_spec;
    other.depth = 1;
    CHECK_INT(denoiser_config_preset(&mc2, "DiT-S/2", &other), 0);
    CHECK_INT(denoiser_create(&d2, &mc2, &ctx, 2, DENOISER_MEM_TRAIN, KDT_F32), 0);
    struct trainer_config tc = tr.cfg;
    CHECK_INT(trainer_init(&tr2, &d2, &tc), 0);
    CHECK(train_checkpoint_load(dir, &mc2, &tr2, &back) != 0);
    CHECK_CONTAINS(err_get(), "differs from this run");
    trainer_free(&tr2);
    denoiser_free(&d2);
    denoiser_config_free(&mc2);
    trainer_free(&tr);
    denoiser_free(&d);
    denoiser_config_free(&mc);
    kctx_free(&ctx);
}

TEST(registry_finds_models_by_preset_and_class_name)
{
    struct denoiser_config mc;
    CHECK_INT(denoiser_config_preset(&mc, "DiT-B/4", &tiny_spec), 0);
    CHECK_STR(mc.kind->name, "dit");
    struct denoiser_info info;
    denoiser_config_info(&mc, &info);
    CHECK_INT(info.in_channels, 4);
    CHECK_INT(info.out_channels, 8);
    CHECK_INT(info.num_classes, 10);
    CHECK_INT(info.cond, COND_LABELS);
    denoiser_config_free(&mc);
    CHECK(denoiser_config_preset(&mc, "Flux-9000", &tiny_spec) != 0);
    CHECK_CONTAINS(err_get(), "Flux-9000");
    CHECK(registry_denoiser_by_class("DiTTransformer2DModel") == registry_denoiser_by_name("dit"));
    CHECK(registry_denoiser_by_class("Transformer2DModel") == registry_denoiser_by_name("dit"));
    CHECK(!registry_denoiser_by_class("UNet2DConditionModel"));
}

/* Latents drawn from a stored distribution: mean + std * eps, the same for
 * a record and epoch whatever the batch, new each epoch, fixed for
 * validation. */
TEST(latents_are_drawn_per_record_and_epoch)
{
    enum { PER = 4096 };
    struct trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.cfg.seed = 11;
    float *mean = malloc(2 * PER * sizeof(float)), *std = malloc(2 * PER * sizeof(float));
    float *a = malloc(2 * PER * sizeof(float)), *b = malloc(PER * sizeof(float)), *c = malloc(PER * sizeof(float));
    for (int i = 0; i < 2 * PER; i++)
        mean[i] = 1.0f, std[i] = 2.0f;
    const uint64_t recs[2] = {7, 9};
    trainer_draw_latents(&tr, a, mean, std, recs, 2, PER, 3, 0);
    trainer_draw_latents(&tr, b, mean + PER, std + PER, recs + 1, 1, PER, 3, 0); /* record 9 alone */
    CHECK(memcmp(a + PER, b, PER * sizeof(float)) == 0);
    double s1 = 0, s2 = 0;
    for (int i = 0; i < PER; i++)
        s1 += a[i], s2 += (double)a[i] * a[i];
    const double mu = s1 / PER, sd = sqrt(s2 / PER - mu * mu);
    CHECK(fabs(mu - 1.0) < 0.1 && fabs(sd - 2.0) < 0.1);
    trainer_draw_latents(&tr, c, mean, std, recs, 1, PER, 4, 0); /* another epoch */
    CHECK(memcmp(a, c, PER * sizeof(float)) != 0);
    trainer_draw_latents(&tr, b, mean, std, recs, 1, PER, 3, 1); /* validation: any epoch */
    trainer_draw_latents(&tr, c, mean, std, recs, 1, PER, 8, 1);
    CHECK(memcmp(b, c, PER * sizeof(float)) == 0);
    free(mean), free(std), free(a), free(b), free(c);
}
