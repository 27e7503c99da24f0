/* The AutoencoderKL against diffusers (goldens of
 * tests/reference/make_vae_goldens.py): encode and decode for every config
 * and weight layout in fp32 on the CPU, the bf16 file, the loader's
 * messages, and the encoder kind "vae" by spec and by identity. */
#include "tests/harness.h"
#include "formats/model_dir.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"
#include "models/encoder.h"
#include "models/vae/vae.h"

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

/* A copy of a golden tensor (the file's data need not be aligned). */
static void *golden(const struct st_file *f, const char *name, enum st_dtype dt, int64_t *n)
{
    const struct st_tensor *t = st_find(f, name);
    if (!t || t->dtype != dt) {
        test_fail(__FILE__, __LINE__, "fixture %s: tensor %s missing or not %s", f->path, name, st_dtype_name(dt));
        return calloc(1, 16);
    }
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    memcpy(p, t->data, t->nbytes);
    if (n)
        *n = (int64_t)t->nelem;
    return p;
}

static const char *fixture(const char *rel)
{
    static char buf[8][4096];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s", test_source_path(rel));
    return b;
}

/* Encode and decode of vae (tiled or not) against golden file gname; returns the worst error. */
static double check_goldens_as(struct vae *v, const char *gname, double tol, const char *label, int tiling)
{
    struct st_file *g = st_open(fixture(gname));
    CHECK(g != NULL);
    if (!g)
        return 1;
    int64_t nx, nm, nz, nd;
    float *x = golden(g, "x", ST_F32, &nx), *mean = golden(g, "mean", ST_F32, &nm);
    float *std = golden(g, "std", ST_F32, NULL), *z = golden(g, "z", ST_F32, &nz);
    float *dec = golden(g, "decoded", ST_F32, &nd);
    const struct st_tensor *xt = st_find(g, "x");
    const int H = xt ? (int)xt->shape[1] : 0, W = xt ? (int)xt->shape[2] : 0;
    float *gm = malloc((size_t)nm * sizeof *gm), *gs = malloc((size_t)nm * sizeof *gs);
    float *gd = malloc((size_t)nd * sizeof *gd);
    CHECK_INT(tiling ? vae_encode_tiled(v, x, W, H, gm, gs) : vae_encode(v, x, W, H, gm, gs), 0);
    CHECK_INT(tiling ? vae_decode_tiled(v, z, W, H, gd) : vae_decode(v, z, W, H, gd), 0);
    double em = rel_error(gm, mean, nm), es = rel_error(gs, std, nm), ed = rel_error(gd, dec, nd);
    printf("  %s vs %s: mean %.3g, std %.3g, decoded %.3g (max relative error, tol %g)\n", label, gname, em, es, ed,
           tol);
    CHECK(em <= tol);
    CHECK(es <= tol);
    CHECK(ed <= tol);
    free(x), free(mean), free(std), free(z), free(dec), free(gm), free(gs), free(gd);
    st_close(g);
    return fmax(em, fmax(es, ed));
}

static double check_goldens(struct vae *v, const char *gname, double tol, const char *label)
{
    return check_goldens_as(v, gname, tol, label, 0);
}

static void check_encoder(struct encoder *e, const char *gname);

static int open_cpu(struct vae *v, struct kctx *ctx, const char *path, const char *config)
{
    if (kctx_init(ctx, DEVICE_CPU, 0) != 0)
        return -1;
    int rc = vae_open(v, path, config, ctx, KDT_F32);
    if (rc != 0) {
        test_fail(__FILE__, __LINE__, "vae_open %s: %s", path, err_get());
        kctx_free(ctx);
    }
    return rc;
}

TEST(vae_matches_diffusers_for_every_config_and_layout)
{
    static const struct {
        const char *path, *config, *golden;
        double tol;
    } cases[] = {
        {"fixtures/vae/sd", NULL, "fixtures/vae/sd_golden.safetensors", 1e-5},
        {"fixtures/vae/flux", NULL, "fixtures/vae/flux_golden.safetensors", 1e-5},
        {"fixtures/vae/noattn", NULL, "fixtures/vae/noattn_golden.safetensors", 1e-5},
        {"fixtures/vae/sd_legacy", NULL, "fixtures/vae/sd_golden.safetensors", 1e-5},
        {"fixtures/vae/sd_ldm.safetensors", "fixtures/vae/sd", "fixtures/vae/sd_golden.safetensors", 1e-5},
        {"fixtures/vae/sd_bf16", NULL, "fixtures/vae/sd_bf16_golden.safetensors", 1e-5},
        {"fixtures/vae/sd_bf16", NULL, "fixtures/vae/sd_golden.safetensors", 1e-2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct kctx ctx;
        struct vae v;
        if (open_cpu(&v, &ctx, fixture(cases[i].path), cases[i].config ? fixture(cases[i].config) : NULL) != 0)
            continue;
        check_goldens(&v, cases[i].golden, cases[i].tol, cases[i].path);
        vae_close(&v);
        kctx_free(&ctx);
    }
}

TEST(vae_replans_for_a_larger_image_and_gives_the_same_result)
{
    struct kctx ctx;
    struct vae v;
    if (open_cpu(&v, &ctx, fixture("fixtures/vae/flux"), NULL) != 0)
        return;
    const int W = 48, H = 32;
    float *x = calloc(3 * W * H, sizeof *x), *m = malloc(16 * 8 * 12 * sizeof *m);
    for (int i = 0; i < 3 * W * H; i++)
        x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    CHECK_INT(vae_encode(&v, x, W, H, m, NULL), 0);
    int64_t planned = v.planned_hw;
    CHECK_INT(planned, W * H);
    check_goldens(&v, "fixtures/vae/flux_golden.safetensors", 1e-5, "flux after 48x32");
    CHECK_INT(v.planned_hw, planned); /* the smaller image reused the arena */
    CHECK(vae_encode(&v, x, 30, 32, m, NULL) != 0);
    CHECK_CONTAINS(err_get(), "multiple of the factor 4");
    free(x), free(m);
    vae_close(&v);
    kctx_free(&ctx);
}

TEST(vae_tiling_matches_diffusers_enable_tiling)
{
    struct kctx ctx;
    struct vae v;
    if (open_cpu(&v, &ctx, fixture("fixtures/vae/sd"), NULL) != 0)
        return;
    CHECK_INT(v.cfg.sample_size, 16);
    check_goldens_as(&v, "fixtures/vae/sd_tiled_golden.safetensors", 1e-5, "sd tiled 40x28", 1);
    /* Images within one tile take the untiled way, as diffusers does. */
    float x[3 * 16 * 16], m1[4 * 8 * 8], m2[4 * 8 * 8];
    for (int i = 0; i < 3 * 16 * 16; i++)
        x[i] = (float)((i * 29) % 61) / 30.0f - 1.0f;
    CHECK_INT(vae_encode(&v, x, 16, 16, m1, NULL), 0);
    CHECK_INT(vae_encode_tiled(&v, x, 16, 16, m2, NULL), 0);
    CHECK(memcmp(m1, m2, sizeof m1) == 0);
    vae_close(&v);
    kctx_free(&ctx);

    char spec[4096];
    snprintf(spec, sizeof spec, "vae:%s,tiling", fixture("fixtures/vae/sd"));
    struct encoder e;
    CHECK_INT(encoder_open(&e, spec), 0);
    CHECK_CONTAINS(e.identity, ",tiling");
    check_encoder(&e, "fixtures/vae/sd_tiled_golden.safetensors");
    encoder_close(&e);
}

TEST(vae_layouts_load_bit_identical_weights)
{
    struct vae_config c;
    CHECK_INT(vae_config_read(&c, fixture("fixtures/vae/sd/config.json")), 0);
    CHECK_INT(c.n_blocks, 2);
    CHECK_INT(c.norm_num_groups, 2);
    CHECK_NEAR(c.scaling_factor, 0.18215f, 0);
    CHECK_NEAR(c.shift_factor, 0, 0);
    struct vae_params t;
    CHECK_INT(vae_param_table(&c, &t), 0);
    const char *files[] = {"fixtures/vae/sd/diffusion_pytorch_model.safetensors",
                           "fixtures/vae/sd_legacy/diffusion_pytorch_model.safetensors",
                           "fixtures/vae/sd_ldm.safetensors"};
    const enum vae_layout layouts[] = {VAE_LAYOUT_DIFFUSERS, VAE_LAYOUT_LEGACY_ATTN, VAE_LAYOUT_LDM};
    float *ref = NULL;
    for (int i = 0; i < 3; i++) {
        struct st_set *s = st_set_open(fixture(files[i]));
        CHECK(s != NULL);
        if (!s)
            continue;
        enum vae_layout layout;
        const char *prefix;
        CHECK_INT(vae_weights_layout(s, &layout, &prefix), 0);
        CHECK_INT(layout, layouts[i]);
        CHECK_STR(prefix, i == 2 ? "first_stage_model." : "");
        float *p = malloc((size_t)t.total * sizeof *p);
        CHECK_INT(vae_weights_load(&t, p, s), 0);
        if (!ref)
            ref = p;
        else {
            CHECK(memcmp(ref, p, (size_t)t.total * sizeof *p) == 0);
            free(p);
        }
        st_set_close(s);
    }
    free(ref);
    vae_params_free(&t);
}

TEST(vae_single_file_config_is_inferred_from_shapes)
{
    struct st_set *s = st_set_open(fixture("fixtures/vae/sd_ldm.safetensors"));
    CHECK(s != NULL);
    if (!s)
        return;
    struct vae_config c;
    /* The tiny file has 4 channels per block: groups 32 cannot hold. */
    CHECK(vae_config_infer(&c, s) != 0);
    CHECK_CONTAINS(err_get(), "norm_num_groups 32");
    CHECK_INT(c.n_blocks, 2);
    CHECK_INT(c.block_out_channels[0], 4);
    CHECK_INT(c.block_out_channels[1], 8);
    CHECK_INT(c.layers_per_block, 1);
    CHECK_INT(c.latent_channels, 4);
    CHECK_INT(c.use_quant_conv, 1);
    CHECK_INT(c.use_post_quant_conv, 1);
    CHECK_INT(c.mid_block_add_attention, 1);
    CHECK_NEAR(c.scaling_factor, 0.18215f, 0);
    st_set_close(s);
}

/* dir: the sd tensors with `drop` left out and `reshape` given a wrong
 * shape (test_write_model_variant). */
static void write_variant(const char *dir, const char *config_text, const char *drop, const char *reshape)
{
    test_write_model_variant(dir, "diffusion_pytorch_model.safetensors", config_text,
                             "fixtures/vae/sd/diffusion_pytorch_model.safetensors", drop, NULL, reshape, NULL);
}

static void expect_open_error(const char *path, const char *config, const char *const *needles)
{
    struct kctx ctx;
    CHECK_INT(kctx_init(&ctx, DEVICE_CPU, 0), 0);
    struct vae v;
    CHECK(vae_open(&v, path, config, &ctx, KDT_F32) != 0);
    printf("  %s\n", err_get());
    for (; *needles; needles++)
        CHECK_CONTAINS(err_get(), *needles);
    kctx_free(&ctx);
}

TEST(vae_bad_input_is_named)
{
    char *cfg = test_read_file(fixture("fixtures/vae/sd/config.json"), NULL);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    const char *d1 = test_tmp_path("missing");
    write_variant(d1, cfg, "decoder.mid_block.attentions.0.to_k.bias", NULL);
    expect_open_error(d1, NULL,
                      (const char *const[]){"missing/diffusion_pytorch_model.safetensors",
                                            "decoder.mid_block.attentions.0.to_k.bias", "missing", NULL});
    const char *d2 = test_tmp_path("shape");
    write_variant(d2, cfg, NULL, "encoder.conv_out.weight");
    expect_open_error(d2, NULL,
                      (const char *const[]){"shape/diffusion_pytorch_model.safetensors", "encoder.conv_out.weight",
                                            "[1, 576]", "[8, 8, 3, 3]", NULL});
    /* Unsupported config values name the file, the key and the value. */
    static const struct {
        const char *from, *to, *key, *value;
    } bad[] = {
        {"\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\"", "act_fn", "gelu"},
        {"\"DownEncoderBlock2D\",", "\"AttnDownEncoderBlock2D\",", "down_block_types", "AttnDownEncoderBlock2D"},
        {"\"norm_num_groups\": 2", "\"norm_num_groups\": 3", "norm_num_groups 3", "block_out_channels[0] = 4"},
        {"\"use_quant_conv\": true", "\"use_quant_conv\": 1", "use_quant_conv", "1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *at = strstr(cfg, bad[i].from);
        CHECK(at != NULL);
        if (!at)
            continue;
        char text[4096];
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - cfg), cfg, bad[i].to, at + strlen(bad[i].from));
        char name[32];
        snprintf(name, sizeof name, "config%zu", i);
        const char *d = test_tmp_path(name);
        write_variant(d, text, NULL, NULL);
        char where[64];
        snprintf(where, sizeof where, "%s/config.json", name);
        expect_open_error(d, NULL, (const char *const[]){where, bad[i].key, bad[i].value, NULL});
    }
    free(cfg);
    expect_open_error("/nonexistent/vae", NULL, (const char *const[]){"/nonexistent/vae", "no such file", NULL});
    expect_open_error(test_tmpdir(), NULL, (const char *const[]){"neither config.json", NULL});
    /* A single file whose config does not match it. */
    expect_open_error(fixture("fixtures/vae/sd_ldm.safetensors"), fixture("fixtures/vae/flux"),
                      (const char *const[]){"sd_ldm.safetensors", "missing", NULL});
}

/* The encoder seam: uint8 in, mean/std out; latents in, uint8 out. */
static void check_encoder(struct encoder *e, const char *gname)
{
    struct st_file *g = st_open(fixture(gname));
    if (!g)
        return;
    int64_t nm, nl, ni;
    uint8_t *img = golden(g, "image", ST_U8, &ni), *want = golden(g, "decoded_rgb", ST_U8, NULL);
    float *mean = golden(g, "mean", ST_F32, &nm), *std = golden(g, "std", ST_F32, NULL);
    float *lat = golden(g, "latents", ST_F32, &nl);
    const struct st_tensor *it = st_find(g, "image");
    const int H = (int)it->shape[0], W = (int)it->shape[1];
    CHECK_INT((int64_t)encoder_latent_elems(e, W, H), nm);
    float *gm = malloc((size_t)nm * sizeof *gm), *gs = malloc((size_t)nm * sizeof *gs);
    uint8_t *rgb = malloc((size_t)ni);
    CHECK_INT(encoder_encode(e, img, W, H, gm, gs), 0);
    double em = rel_error(gm, mean, nm), es = rel_error(gs, std, nm);
    CHECK(em <= 1e-5);
    CHECK(es <= 1e-5);
    CHECK_INT(encoder_decode(e, lat, W, H, rgb), 0);
    int worst = 0, off = 0;
    for (int64_t i = 0; i < ni; i++) {
        int d = abs((int)rgb[i] - (int)want[i]);
        worst = d > worst ? d : worst;
        off += d != 0;
    }
    printf("  encoder %s: mean %.3g, std %.3g; decoded uint8: %d of %lld differ, by at most %d\n", gname, em, es,
           off, (long long)ni, worst);
    CHECK(worst <= 1); /* fp32 rounding may tip a value at a .5 boundary */
    CHECK(off <= ni / 100);
    free(img), free(want), free(mean), free(std), free(lat), free(gm), free(gs), free(rgb);
    st_close(g);
}

TEST(vae_encoder_kind_by_spec_and_identity)
{
    char spec[4096];
    snprintf(spec, sizeof spec, "vae:%s", fixture("fixtures/vae/flux"));
    struct encoder e;
    CHECK_INT(encoder_open(&e, spec), 0);
    CHECK_INT(e.factor, 4);
    CHECK_INT(e.channels, 16);
    CHECK_INT(e.has_std, 1);
    CHECK_NEAR(e.scale, 0.3611f, 0);
    CHECK_NEAR(e.shift, 0.1159f, 0);
    CHECK(encoder_has_decoder(&e));
    CHECK(strncmp(e.identity, "vae/1 ", 6) == 0);
    CHECK_CONTAINS(e.identity, fixture("fixtures/vae/flux"));
    check_encoder(&e, "fixtures/vae/flux_golden.safetensors");
    char id[1024];
    snprintf(id, sizeof id, "%s", e.identity);
    encoder_close(&e);

    struct encoder r;
    CHECK_INT(encoder_open(&r, id), 0);
    CHECK_STR(r.identity, id);
    check_encoder(&r, "fixtures/vae/flux_golden.safetensors");
    encoder_close(&r);
    id[6] = id[6] == '0' ? '1' : '0'; /* another hash: the files "changed" */
    CHECK(encoder_open(&r, id) != 0);
    CHECK_CONTAINS(err_get(), "have changed");

    /* A single file with its config, and a pipeline folder with vae/: the
     * same weights hash the same in every layout. */
    char a[1024], b[1024];
    snprintf(spec, sizeof spec, "vae:%s", fixture("fixtures/vae/sd"));
    CHECK_INT(encoder_open(&e, spec), 0);
    snprintf(a, sizeof a, "%.38s", e.identity);
    check_encoder(&e, "fixtures/vae/sd_golden.safetensors");
    encoder_close(&e);
    snprintf(spec, sizeof spec, "vae:%s,config=%s", fixture("fixtures/vae/sd_ldm.safetensors"), fixture("fixtures/vae/sd"));
    CHECK_INT(encoder_open(&e, spec), 0);
    snprintf(b, sizeof b, "%.38s", e.identity);
    CHECK_STR(a, b);
    CHECK_CONTAINS(e.identity, ",config=");
    snprintf(id, sizeof id, "%s", e.identity);
    encoder_close(&e);
    CHECK_INT(encoder_open(&e, id), 0);
    encoder_close(&e);

    const char *pipe = test_tmp_path("pipeline");
    mkdir(pipe, 0755);
    char p[4096];
    snprintf(p, sizeof p, "%s/model_index.json", pipe);
    const char *index = "{\"_class_name\": \"DiTPipeline\", \"vae\": [\"diffusers\", \"AutoencoderKL\"]}";
    test_write_file(p, index, strlen(index));
    snprintf(p, sizeof p, "%s/vae", pipe);
    CHECK_INT(symlink(fixture("fixtures/vae/sd"), p), 0);
    snprintf(spec, sizeof spec, "vae:%s", pipe);
    CHECK_INT(encoder_open(&e, spec), 0);
    snprintf(b, sizeof b, "%.38s", e.identity);
    CHECK_STR(a, b);
    encoder_close(&e);

    CHECK(encoder_open(&e, "vae:") != 0);
    CHECK(encoder_open(&e, "vae:/nonexistent") != 0);
    CHECK_CONTAINS(err_get(), "/nonexistent");
    snprintf(spec, sizeof spec, "vae:%s,dtype=f16", fixture("fixtures/vae/sd"));
    CHECK(encoder_open(&e, spec) != 0);
    CHECK_CONTAINS(err_get(), "dtype=f16");
}

struct job {
    const struct encoder *e;
    const uint8_t *img;
    float *mean, *std;
    int rc;
};

static void *encode_job(void *arg)
{
    struct job *j = arg;
    j->rc = encoder_encode(j->e, j->img, 24, 16, j->mean, j->std);
    return NULL;
}

TEST(vae_encoder_is_safe_from_several_threads)
{
    char spec[4096];
    snprintf(spec, sizeof spec, "vae:%s", fixture("fixtures/vae/sd"));
    struct encoder e;
    CHECK_INT(encoder_open(&e, spec), 0);
    uint8_t img[24 * 16 * 3];
    for (int i = 0; i < 24 * 16 * 3; i++)
        img[i] = (uint8_t)(i * 7);
    enum { N = 4 };
    struct job jobs[N];
    pthread_t th[N];
    const size_t n = encoder_latent_elems(&e, 24, 16);
    for (int i = 0; i < N; i++) {
        jobs[i] = (struct job){&e, img, malloc(n * sizeof(float)), malloc(n * sizeof(float)), -1};
        pthread_create(&th[i], NULL, encode_job, &jobs[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        CHECK_INT(jobs[i].rc, 0);
        CHECK(memcmp(jobs[i].mean, jobs[0].mean, n * sizeof(float)) == 0);
        CHECK(memcmp(jobs[i].std, jobs[0].std, n * sizeof(float)) == 0);
    }
    for (int i = 0; i < N; i++)
        free(jobs[i].mean), free(jobs[i].std);
    encoder_close(&e);
}
