/* The samplers against the code users run: DiT's IDDPM sampling loops,
 * diffusers' DiTPipeline with DDPMScheduler / DDIMScheduler, and F-Lite's
 * pipeline, step by step with the same fake model and noise (goldens from
 * tests/reference/make_sampler_goldens.py); and DiT's single respaced steps
 * (tests/reference/make_diffusion_goldens.py). */
#include "tests/harness.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"
#include "libcommon/safetensors.h"
#include "diffusion/diffusion.h"
#include "diffusion/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define NULL_CLASS 1000

static double at(const struct st_file *f, const char *name, uint64_t i)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t || i >= t->nelem) {
        test_fail(__FILE__, __LINE__, "golden %s[%llu] missing", name, (unsigned long long)i);
        return NAN;
    }
    const char *p = (const char *)t->data + i * st_dtype_size(t->dtype);
    switch (t->dtype) {
    case ST_F64: { double v; memcpy(&v, p, 8); return v; }
    case ST_F32: { float v; memcpy(&v, p, 4); return v; }
    case ST_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    default: return NAN;
    }
}

static uint64_t count(const struct st_file *f, const char *name)
{
    const struct st_tensor *t = st_find(f, name);
    return t ? t->nelem : 0;
}

/* Values [first, first + n) of a golden as floats (NaN where missing). */
static float *f32_range(const struct st_file *f, const char *name, uint64_t first, int64_t n)
{
    float *out = malloc((size_t)n * sizeof *out);
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)at(f, name, first + (uint64_t)i);
    return out;
}

/* max |ours - want| / max |want| */
static double rel_err(const float *ours, const float *want, int64_t n)
{
    double err = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)ours[i] - want[i]));
        scale = fmax(scale, fabs(want[i]));
        if (isnan(ours[i]) != isnan(want[i]))
            return INFINITY;
    }
    return scale > 0 ? err / scale : err;
}

/* ------------------------------------------------------------------------
 * DiT's single respaced steps (diffusion.safetensors) */

static struct st_file *diffusion_goldens(void)
{
    struct st_file *f = st_open(test_source_path("fixtures/dit/diffusion.safetensors"));
    CHECK(f != NULL);
    return f;
}

static void check_respaced_schedule(int n)
{
    struct st_file *g = diffusion_goldens();
    if (!g)
        return;
    struct sampler s;
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, n, NULL), 0);
    char name[64];
    snprintf(name, sizeof name, "respaced%d/timestep_map", n);
    CHECK_INT(count(g, name), n);
    for (int j = 0; j < n; j++) {
        const struct sampler_coef *c = &s.coef[n - 1 - j];
        snprintf(name, sizeof name, "respaced%d/timestep_map", n);
        CHECK_INT(c->t, (int)at(g, name, (uint64_t)j));
        const struct {
            const char *what;
            double ours;
        } v[] = {{"betas", c->beta},
                 {"alphas_cumprod", c->alphas_cumprod},
                 {"posterior_log_variance_clipped", c->posterior_log_variance_clipped}};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
            snprintf(name, sizeof name, "respaced%d/%s", n, v[k].what);
            double want = at(g, name, (uint64_t)j);
            if (!(fabs(v[k].ours - want) <= 1e-12 * fmax(1.0, fabs(want))))
                test_fail(__FILE__, __LINE__, "%s[%d]: %.17g vs %.17g", name, j, v[k].ours, want);
        }
    }
    sampler_free(&s);
    st_close(g);
}

TEST(respaced_schedules_match_dit_spaced_diffusion)
{
    check_respaced_schedule(25);
    check_respaced_schedule(250);
}

/* One step of each DiT sampler for each row of the golden batch (the rows
 * sit at respaced steps 0, 1, N/2, N-1), as p_sample, p_mean_variance and
 * ddim_sample compute it. */
static void check_single_steps(int n)
{
    struct st_file *g = diffusion_goldens();
    if (!g)
        return;
    const int C = 4;
    const int64_t hw = 16, per = C * hw;
    struct sampler ddpm, ddpm_clip, ddim0, ddim1;
    struct sampler_options o = {.reference = SAMPLER_REF_DIT};
    CHECK_INT(sampler_init(&ddpm, SAMPLER_DDPM, n, &o), 0);
    o.clip_denoised = 1;
    CHECK_INT(sampler_init(&ddpm_clip, SAMPLER_DDPM, n, &o), 0);
    o.clip_denoised = 0;
    CHECK_INT(sampler_init(&ddim0, SAMPLER_DDIM, n, &o), 0);
    o.eta = 1.0f;
    CHECK_INT(sampler_init(&ddim1, SAMPLER_DDIM, n, &o), 0);
    char p[32], name[64];
    snprintf(p, sizeof p, "respaced%d/", n);
    float zeros[64] = {0}, x[64];
    for (int b = 0; b < 4; b++) {
        snprintf(name, sizeof name, "%st", p);
        int j = (int)at(g, name, (uint64_t)b), i = n - 1 - j;
        snprintf(name, sizeof name, "%smodel_t", p);
        CHECK_NEAR(sampler_model_timestep(&ddpm, i), at(g, name, (uint64_t)b), 0);
        snprintf(name, sizeof name, "%sx", p);
        float *x0 = f32_range(g, name, (uint64_t)(b * per), per);
        snprintf(name, sizeof name, "%smodel_output", p);
        float *out = f32_range(g, name, (uint64_t)(b * 2 * per), 2 * per);
        snprintf(name, sizeof name, "%snoise", p);
        float *noise = f32_range(g, name, (uint64_t)(b * per), per);
        const struct {
            const struct sampler *s;
            const char *golden;
            const float *noise;
        } cases[] = {
            {&ddpm, "p_sample", noise},     {&ddpm, "mean", zeros},     {&ddpm_clip, "clip_mean", zeros},
            {&ddim0, "ddim_eta0", noise},   {&ddim1, "ddim_eta1", noise},
        };
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            memcpy(x, x0, sizeof(float) * per);
            sampler_step(cases[k].s, i, x, out, 1, cases[k].noise, 1, C, hw);
            snprintf(name, sizeof name, "%s%s", p, cases[k].golden);
            float *want = f32_range(g, name, (uint64_t)(b * per), per);
            double e = rel_err(x, want, per);
            if (!(e <= 2e-6))
                test_fail(__FILE__, __LINE__, "%s row %d (respaced t %d): relative error %.3g", name, b, j, e);
            free(want);
        }
        free(x0), free(out), free(noise);
    }
    sampler_free(&ddpm), sampler_free(&ddpm_clip), sampler_free(&ddim0), sampler_free(&ddim1);
    st_close(g);
}

TEST(single_steps_match_dit_p_sample_and_ddim_sample)
{
    check_single_steps(25);
    check_single_steps(250);
}

/* ------------------------------------------------------------------------
 * Whole sampling runs (sampler.safetensors) */

static struct st_file *sampler_goldens(void)
{
    struct st_file *f = st_open(test_source_path("fixtures/sampler/sampler.safetensors"));
    CHECK(f != NULL);
    return f;
}

/* The fake models of make_sampler_goldens.py: constants in double rounded
 * once to float, the rest float arithmetic in the same order as torch. */
static void dit_fake(float *out, const float *x, int t, const int64_t *y, int B, int C, int64_t hw)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float ke = (float)(0.1 * sin(t / 100.0 + c) + (y[b] != NULL_CLASS ? 0.05 * cos((double)(y[b] + c)) : 0.0));
            float kv = (float)(0.8 * cos(t / 50.0 + c));
            const float *xs = x + ((int64_t)b * C + c) * hw;
            float *eps = out + ((int64_t)b * 2 * C + c) * hw, *var = eps + (int64_t)C * hw;
            for (int64_t k = 0; k < hw; k++) {
                eps[k] = 0.3f * xs[k] + ke;
                var[k] = 0.1f * xs[k] + kv;
            }
        }
}

static void flow_fake(float *out, const float *x, float t, int cond, int B, int C, int64_t hw)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float k = (float)(0.3 * sin(3.0 * (double)t + c) + (cond ? 0.25 * cos((double)c) : 0.0));
            for (int64_t q = 0; q < hw; q++) {
                int64_t at_ = ((int64_t)b * C + c) * hw + q;
                out[at_] = -0.8f * x[at_] + k;
            }
        }
}

struct run {
    const char *name;
    enum sampler_kind kind;
    struct sampler_options opt;
    int steps;
    float cfg;   /* 0: no guidance */
    int guided;  /* guided channels */
};

static void check_run(const struct run *r)
{
    struct st_file *g = sampler_goldens();
    if (!g)
        return;
    const int flow = r->kind == SAMPLER_EULER, B = 2, C = flow ? 16 : 4, CO = flow ? C : 2 * C;
    const int64_t hw = flow ? 1 : 4, per = C * hw;
    char name[96];
    snprintf(name, sizeof name, "%s/x", r->name);
    CHECK_INT(count(g, name), (uint64_t)((r->steps + 1) * B * per));
    struct sampler s;
    CHECK_INT(sampler_init(&s, r->kind, r->steps, &r->opt), 0);
    CHECK_INT(sampler_num_steps(&s), r->steps);
    int64_t labels[2] = {0, 0}, nulls[2] = {NULL_CLASS, NULL_CLASS};
    if (!flow) {
        snprintf(name, sizeof name, "%s/labels", r->name);
        for (int b = 0; b < B; b++)
            labels[b] = (int64_t)at(g, name, (uint64_t)b);
    }
    snprintf(name, sizeof name, "%s/x", r->name);
    float *x = f32_range(g, name, 0, B * per);
    float *cond = malloc(sizeof(float) * B * CO * hw), *uncond = malloc(sizeof(float) * B * CO * hw);
    snprintf(name, sizeof name, "%s/noise", r->name);
    const int have_noise = count(g, name) > 0;
    for (int i = 0; i < r->steps; i++) {
        float tm = sampler_model_timestep(&s, i);
        if (flow) {
            snprintf(name, sizeof name, "%s/t", r->name);
            float want_t = (float)at(g, name, (uint64_t)i);
            CHECK_NEAR((float)sampler_time(&s, i), want_t, 0);
            CHECK_NEAR(tm, want_t * 1000.0f, 0);
            flow_fake(cond, x, (float)sampler_time(&s, i), 1, B, C, hw);
            flow_fake(uncond, x, (float)sampler_time(&s, i), 0, B, C, hw);
        } else {
            snprintf(name, sizeof name, "%s/timesteps", r->name);
            CHECK_INT((int)tm, (int)at(g, name, (uint64_t)i));
            dit_fake(cond, x, (int)tm, labels, B, C, hw);
            dit_fake(uncond, x, (int)tm, nulls, B, C, hw);
        }
        if (r->cfg > 0)
            sampler_cfg_combine(cond, cond, uncond, r->cfg, B, r->guided, CO, hw);
        float *noise = NULL;
        if (sampler_step_noise(&s, i)) {
            CHECK(have_noise);
            snprintf(name, sizeof name, "%s/noise", r->name);
            noise = f32_range(g, name, (uint64_t)(i * B * per), B * per);
        }
        sampler_step(&s, i, x, cond, !flow, noise, B, C, hw);
        free(noise);
        snprintf(name, sizeof name, "%s/x", r->name);
        float *want = f32_range(g, name, (uint64_t)((i + 1) * B * per), B * per);
        double e = rel_err(x, want, B * per);
        /* fp32 tolerance, relative to the sample's largest value */
        if (!(e <= 1e-5))
            test_fail(__FILE__, __LINE__, "%s step %d: relative error %.3g", r->name, i, e);
        free(want);
    }
    free(x), free(cond), free(uncond);
    sampler_free(&s);
    st_close(g);
}

TEST(ddpm_matches_dit_sample_py_step_by_step)
{
    struct run r = {"dit_ddpm25", SAMPLER_DDPM, {.reference = SAMPLER_REF_DIT}, 25, 4.0f, 3};
    check_run(&r);
}

TEST(ddim_matches_dit_ddim_sample_loop_step_by_step)
{
    struct run r0 = {"dit_ddim10_eta0", SAMPLER_DDIM, {.reference = SAMPLER_REF_DIT}, 10, 4.0f, 3};
    struct run r1 = {"dit_ddim10_eta1", SAMPLER_DDIM, {.reference = SAMPLER_REF_DIT, .eta = 1.0f}, 10, 4.0f, 3};
    check_run(&r0);
    check_run(&r1);
}

TEST(ddpm_matches_diffusers_dit_pipeline_step_by_step)
{
    struct run r = {"hf_ddpm25", SAMPLER_DDPM, {.reference = SAMPLER_REF_DIFFUSERS}, 25, 4.0f, 4};
    check_run(&r);
    struct run t = {"hf_ddpm10_trailing", SAMPLER_DDPM,
                    {.reference = SAMPLER_REF_DIFFUSERS, .spacing = SAMPLER_SPACING_TRAILING}, 10, 0, 0};
    check_run(&t);
}

TEST(ddim_matches_diffusers_dit_pipeline_step_by_step)
{
    struct run r = {"hf_ddim25", SAMPLER_DDIM, {.reference = SAMPLER_REF_DIFFUSERS}, 25, 4.0f, 4};
    check_run(&r);
    struct run e = {"hf_ddim10_eta1", SAMPLER_DDIM, {.reference = SAMPLER_REF_DIFFUSERS, .eta = 1.0f}, 10, 0, 0};
    check_run(&e);
}

TEST(euler_matches_f_lite_pipeline_step_by_step)
{
    struct run r = {"flite_euler10", SAMPLER_EULER, {.shift = 3.0}, 10, 4.0f, 16};
    check_run(&r);
}

TEST(timestep_spacings_match_iddpm_and_diffusers)
{
    struct st_file *g = sampler_goldens();
    if (!g)
        return;
    const int ns[] = {1, 3, 7, 10, 25, 50, 100, 250};
    const struct {
        const char *rule;
        struct sampler_options opt;
    } rules[] = {
        {"iddpm", {.reference = SAMPLER_REF_DIT}},
        {"leading", {.reference = SAMPLER_REF_DIFFUSERS}},
        {"leading_offset1", {.reference = SAMPLER_REF_DIFFUSERS, .steps_offset = 1}},
        {"trailing", {.reference = SAMPLER_REF_DIFFUSERS, .spacing = SAMPLER_SPACING_TRAILING}},
        {"linspace", {.reference = SAMPLER_REF_DIFFUSERS, .spacing = SAMPLER_SPACING_LINSPACE}},
    };
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++)
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            char name[64];
            snprintf(name, sizeof name, "spacing/%s/%d", rules[r].rule, ns[k]);
            CHECK_INT(count(g, name), ns[k]);
            struct sampler s;
            CHECK_INT(sampler_init(&s, SAMPLER_DDPM, ns[k], &rules[r].opt), 0);
            for (int i = 0; i < ns[k] && i < sampler_num_steps(&s); i++)
                if (s.coef[i].t != (int)at(g, name, (uint64_t)i)) {
                    test_fail(__FILE__, __LINE__, "%s step %d: %d vs %d", name, i, s.coef[i].t,
                              (int)at(g, name, (uint64_t)i));
                    break;
                }
            sampler_free(&s);
        }
    st_close(g);
}

/* ------------------------------------------------------------------------
 * Properties */

TEST(step_structure_of_each_reference)
{
    struct sampler s;
    /* DiT: each step goes to the next visited timestep, no noise at the last. */
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 25, NULL), 0);
    CHECK_INT(s.coef[0].t, 999);
    CHECK_INT(s.coef[0].t_prev, 957);
    CHECK_INT(s.coef[24].t, 0);
    CHECK_INT(s.coef[24].t_prev, -1);
    CHECK(sampler_step_noise(&s, 23) && !sampler_step_noise(&s, 24));
    CHECK_INT(sampler_variance(&s, 1), VARIANCE_LEARNED_RANGE);
    CHECK_INT(sampler_variance(&s, 0), VARIANCE_FIXED_LARGE);
    CHECK_NEAR(sampler_time(&s, 25), -1, 0);
    sampler_free(&s);
    /* diffusers: t - 1000 / N whatever the spacing; noise wherever t > 0. */
    struct sampler_options o = {.reference = SAMPLER_REF_DIFFUSERS, .spacing = SAMPLER_SPACING_LINSPACE};
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 25, &o), 0);
    CHECK_INT(s.coef[0].t, 999);
    CHECK_INT(s.coef[0].t_prev, 959);
    CHECK_INT(sampler_variance(&s, 1), VARIANCE_FIXED_SMALL);
    sampler_free(&s);
    o.spacing = SAMPLER_SPACING_TRAILING;
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 10, &o), 0);
    CHECK_INT(s.coef[9].t, 99);
    CHECK_INT(s.coef[9].t_prev, -1);
    CHECK(sampler_step_noise(&s, 9));
    sampler_free(&s);
    o = (struct sampler_options){.reference = SAMPLER_REF_DIFFUSERS, .variance = VARIANCE_LEARNED_RANGE};
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 10, &o), 0);
    CHECK_INT(sampler_variance(&s, 0), VARIANCE_FIXED_SMALL);
    sampler_free(&s);
    /* DDIM adds noise only with eta > 0; DiT not at the last step. */
    o = (struct sampler_options){.eta = 0.0f};
    CHECK_INT(sampler_init(&s, SAMPLER_DDIM, 10, &o), 0);
    CHECK(!sampler_step_noise(&s, 0));
    sampler_free(&s);
    o.eta = 0.5f;
    CHECK_INT(sampler_init(&s, SAMPLER_DDIM, 10, &o), 0);
    CHECK(sampler_step_noise(&s, 0) && !sampler_step_noise(&s, 9));
    sampler_free(&s);
    o.reference = SAMPLER_REF_DIFFUSERS;
    CHECK_INT(sampler_init(&s, SAMPLER_DDIM, 10, &o), 0);
    CHECK(sampler_step_noise(&s, 9));
    sampler_free(&s);
}

TEST(euler_grid_shift_and_update)
{
    struct sampler s;
    CHECK_INT(sampler_init(&s, SAMPLER_EULER, 4, NULL), 0);
    for (int i = 0; i <= 4; i++)
        CHECK_NEAR(sampler_time(&s, i), (4 - i) / 4.0, 0);
    CHECK_NEAR(sampler_model_timestep(&s, 0), 1000.0, 0);
    CHECK_NEAR(sampler_model_timestep(&s, 1), 750.0, 0);
    CHECK(!sampler_step_noise(&s, 0));
    sampler_free(&s);
    /* F-Lite's alpha for a 64 x 64 latent is 2: t' = 2t / (1 + t). */
    struct sampler_options o = {.shift = flow_resolution_shift(64, 64)};
    CHECK_INT(sampler_init(&s, SAMPLER_EULER, 4, &o), 0);
    CHECK_NEAR(sampler_time(&s, 0), 1.0, 0);
    CHECK_NEAR(sampler_time(&s, 2), 2 * 0.5 / 1.5, 1e-15);
    CHECK_NEAR(sampler_time(&s, 4), 0.0, 0);
    /* dz/dt = -v: from t = 1 to 0 a constant v is added once. The variance
     * half of a learned-sigma output is ignored. */
    float x[4] = {1, 2, 3, 4}, out[8] = {0.5f, -1, 2, 0, 99, 99, 99, 99};
    for (int i = 0; i < 4; i++)
        sampler_step(&s, i, x, out, 1, NULL, 1, 4, 1);
    CHECK_NEAR(x[0], 1.5, 1e-6);
    CHECK_NEAR(x[1], 1.0, 1e-6);
    CHECK_NEAR(x[2], 5.0, 1e-6);
    CHECK_NEAR(x[3], 4.0, 1e-6);
    sampler_free(&s);
}

TEST(cfg_combine_guides_the_first_channels)
{
    /* B = 2, C_total = 3, hw = 2; channels 0-1 guided. */
    float cond[12], uncond[12], out[12];
    for (int i = 0; i < 12; i++) {
        cond[i] = (float)i;
        uncond[i] = (float)(2 * i) - 1.0f;
    }
    sampler_cfg_combine(out, cond, uncond, 4.0f, 2, 2, 3, 2);
    for (int b = 0; b < 2; b++)
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < 2; k++) {
                int i = (b * 3 + c) * 2 + k;
                float want = c < 2 ? uncond[i] + 4.0f * (cond[i] - uncond[i]) : cond[i];
                CHECK_NEAR(out[i], want, 0);
            }
    /* in place on cond, and on uncond */
    float c2[12], u2[12];
    memcpy(c2, cond, sizeof c2);
    sampler_cfg_combine(c2, c2, uncond, 4.0f, 2, 2, 3, 2);
    CHECK(memcmp(c2, out, sizeof out) == 0);
    memcpy(u2, uncond, sizeof u2);
    sampler_cfg_combine(u2, cond, u2, 4.0f, 2, 2, 3, 2);
    CHECK(memcmp(u2, out, sizeof out) == 0);
    /* scale 1 with everything guided is the conditional output */
    sampler_cfg_combine(out, cond, uncond, 1.0f, 2, 3, 3, 2);
    for (int i = 0; i < 12; i++)
        CHECK_NEAR(out[i], cond[i], 1e-6);
}

TEST(noise_per_image_does_not_depend_on_the_batch)
{
    const int64_t n = 37;
    float batch[4 * 37], alone[37], want[37];
    for (int k = 0; k < 4; k++)
        sampler_noise(batch + k * n, 42, (uint64_t)k, 3, n);
    sampler_noise(alone, 42, 2, 3, n);
    CHECK(memcmp(alone, batch + 2 * n, sizeof alone) == 0);
    struct rng_stream st = rng_stream(42, RNG_SAMPLE_NOISE, 3, 2);
    rng_normal_f32(&st, 0, (size_t)n, want);
    CHECK(memcmp(alone, want, sizeof want) == 0);
    /* other steps, images and seeds get other numbers */
    sampler_noise(want, 42, 2, 4, n);
    CHECK(memcmp(alone, want, sizeof want) != 0);
    sampler_noise(want, 43, 2, 3, n);
    CHECK(memcmp(alone, want, sizeof want) != 0);
    CHECK(memcmp(batch, batch + n, sizeof alone) != 0);
}

TEST(sampler_init_rejects_bad_settings)
{
    struct sampler s;
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 0, NULL), -1);
    CHECK_CONTAINS(err_get(), "0 sampling steps");
    CHECK_INT(sampler_init(&s, SAMPLER_DDIM, 1001, NULL), -1);
    CHECK_CONTAINS(err_get(), "1..1000");
    CHECK_INT(sampler_init(&s, SAMPLER_EULER, 0, NULL), -1);
    CHECK_INT(sampler_init(&s, (enum sampler_kind)7, 10, NULL), -1);
    CHECK_CONTAINS(err_get(), "unknown sampler");
    struct sampler_options o = {.eta = -1.0f};
    CHECK_INT(sampler_init(&s, SAMPLER_DDIM, 10, &o), -1);
    CHECK_CONTAINS(err_get(), "eta");
    o = (struct sampler_options){.eta = NAN};
    CHECK_INT(sampler_init(&s, SAMPLER_DDIM, 10, &o), -1);
    o = (struct sampler_options){.shift = INFINITY};
    CHECK_INT(sampler_init(&s, SAMPLER_EULER, 10, &o), -1);
    CHECK_CONTAINS(err_get(), "shift");
    /* leading with an offset past the last training timestep */
    o = (struct sampler_options){.reference = SAMPLER_REF_DIFFUSERS, .steps_offset = 1};
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 1000, &o), -1);
    CHECK_CONTAINS(err_get(), "timestep 1000");
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 999, &o), 0);
    sampler_free(&s);
    /* an offset only where diffusers applies one */
    o = (struct sampler_options){.steps_offset = 1};
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 10, &o), -1);
    CHECK_CONTAINS(err_get(), "steps_offset");
    /* numpy's arange makes 62 "trailing" timesteps for 61 steps (the last
     * one -1): diffusers would index alphas_cumprod[-1]; refuse instead */
    o = (struct sampler_options){.reference = SAMPLER_REF_DIFFUSERS, .spacing = SAMPLER_SPACING_TRAILING};
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 61, &o), -1);
    CHECK_CONTAINS(err_get(), "62 steps");
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 60, &o), 0);
    sampler_free(&s);
    o = (struct sampler_options){.spacing = (enum sampler_spacing)9};
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 10, &o), -1);
    o = (struct sampler_options){.variance = (enum ddpm_variance)9};
    CHECK_INT(sampler_init(&s, SAMPLER_DDPM, 10, &o), -1);
    /* every step count the references take */
    for (int n = 1; n <= 1000; n += 37) {
        CHECK_INT(sampler_init(&s, SAMPLER_DDPM, n, NULL), 0);
        CHECK_INT(s.coef[0].t, n > 1 ? 999 : 0);
        CHECK_INT(s.coef[n - 1].t, 0);
        sampler_free(&s);
    }
}
