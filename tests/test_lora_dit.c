/* LoRA on the class-conditional DiT in diffusers' names: PEFT's adapters on
 * diffusers' DiTTransformer2DModel (separate to_q, to_k, to_v) give PEFT's
 * output on the toolkit's fused qkv, the files the toolkit writes in those
 * names are PEFT's output again (tests/reference/make_dit_lora_goldens.py),
 * and the names go there and back exactly. */
#include "harness.h"
#include "formats/lora_file.h"
#include "libcommon/error.h"
#include "models/registry.h"
#include "train/lora.h"
#include "train/lora_merge.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_REL(got, want, n, tol) test_check_rel(__FILE__, __LINE__, #got, got, want, n, tol)
#define CHECK_SAME_BITS(a, b, n) test_check_same_bits(__FILE__, __LINE__, #a, a, b, n)

#define FIX "fixtures/lora/dit/"

struct dit_case {
    struct denoiser_config mc;
    struct kctx k;
    struct denoiser d;
    struct nn_params t;
    struct st_file *g;
    float *x, *T, *out;
    int32_t y[3];
    size_t n;
};

static int dit_case_open(struct dit_case *c)
{
    memset(c, 0, sizeof *c);
    float *params = NULL;
    if (denoiser_config_load_dir(&c->mc, test_source_path("fixtures/dit/tiny_diffusers"), &params) != 0) {
        test_fail(__FILE__, __LINE__, "%s", err_get());
        return -1;
    }
    CHECK_INT(kctx_init(&c->k, DEVICE_CPU, 0), 0);
    CHECK_INT(denoiser_create(&c->d, &c->mc, &c->k, 3, DENOISER_MEM_INFERENCE, KDT_F32), 0);
    CHECK_INT(denoiser_config_table(&c->mc, &c->t), 0);
    denoiser_params_upload(&c->d, params);
    free(params);
    c->g = test_goldens_open(FIX "golden.safetensors");
    c->n = (size_t)3 * 8 * 8 * 8;
    c->x = test_golden_f32(c->g, "x", (size_t)3 * 4 * 8 * 8);
    c->T = test_golden_f32(c->g, "t", 3);
    float *y = test_golden_f32(c->g, "y", 3);
    for (int i = 0; i < 3; i++)
        c->y[i] = (int32_t)y[i];
    free(y);
    c->out = malloc(c->n * sizeof *c->out);
    return 0;
}

static void dit_case_forward(struct dit_case *c)
{
    struct cond cd = {.labels = c->y};
    denoiser_forward(&c->d, c->out, c->x, c->T, &cd, 3);
}

static void dit_case_close(struct dit_case *c)
{
    free(c->x), free(c->T), free(c->out);
    st_close(c->g);
    nn_params_free(&c->t);
    denoiser_free(&c->d);
    denoiser_config_free(&c->mc);
    kctx_free(&c->k);
}

/* The model's output with the file applied as dit-sample --lora does. */
static void forward_with(struct dit_case *c, const char *file, const char *golden, double tol)
{
    struct lora_file f;
    if (lora_file_read(test_source_path(file), &f) != 0) {
        test_fail(__FILE__, __LINE__, "%s", err_get());
        return;
    }
    struct nn_lora l;
    struct nn_lora_binding b;
    CHECK_INT(lora_files_attach(&l, &b, &c->d, &f, (const float[]){1.0f}, 1), 0);
    /* q, k and v are one adapter of the fused qkv: 2 blocks x (qkv, proj, fc1, fc2) */
    CHECK_INT((int)l.n, 8);
    dit_case_forward(c);
    float *want = test_golden_f32(c->g, golden, c->n);
    CHECK_REL(c->out, want, c->n, tol);
    nn_lora_unbind(&b);
    nn_lora_free(&l);
    free(want);
    lora_file_free(&f);
}

TEST(lora_dit_in_diffusers_names_gives_peft_s_output)
{
    struct dit_case c;
    if (dit_case_open(&c) != 0)
        return;
    dit_case_forward(&c);
    float *base = test_golden_f32(c.g, "out_base", c.n);
    CHECK_REL(c.out, base, c.n, 1e-5);
    free(base);
    forward_with(&c, FIX "peft.safetensors", "out_lora", 1e-5);
    /* what dit-lora-merge --base writes, as PEFT loaded it */
    forward_with(&c, FIX "ours.safetensors", "out_ours", 1e-5);
    dit_case_close(&c);
}

static void check_same_entries(const struct lora_file *a, const struct lora_file *b)
{
    CHECK_INT((int)a->n, (int)b->n);
    for (size_t i = 0; i < a->n && i < b->n; i++) {
        const struct lora_entry *x = &a->e[i], *y = &b->e[i];
        CHECK_STR(x->name, y->name);
        CHECK_INT(x->rank, y->rank);
        CHECK_INT(x->in, y->in);
        CHECK_INT(x->out, y->out);
        CHECK_NEAR(lora_entry_scale(a, x), lora_entry_scale(b, y), 1e-6);
        if (x->rank == y->rank && x->in == y->in && x->out == y->out) {
            CHECK_SAME_BITS(x->A, y->A, (size_t)x->rank * x->in);
            CHECK_SAME_BITS(x->B, y->B, (size_t)x->out * x->rank);
        }
    }
}

/* The committed ours.safetensors is what the code writes today: PEFT's
 * file adopted (q, k, v fused), combined, exported back. */
TEST(lora_dit_file_written_in_diffusers_names_is_the_committed_one)
{
    struct dit_case c;
    if (dit_case_open(&c) != 0)
        return;
    struct lora_file f, ours;
    CHECK_INT(lora_file_read(test_source_path(FIX "peft.safetensors"), &f), 0);
    CHECK_INT(lora_file_read(test_source_path(FIX "ours.safetensors"), &ours), 0);
    CHECK_INT(lora_file_adopt(&f, c.d.kind, &c.t), 0);
    struct nn_lora_module *m;
    size_t n;
    float *h;
    int64_t total;
    CHECK_INT(lora_files_combine(&f, (const float[]){1.0f}, 1, NULL, NULL, &m, &n, &h, &total), 0);
    struct lora_file out;
    CHECK_INT(lora_to_file(m, n, h, 0, &out), 0);
    CHECK_INT(lora_file_export(&out, c.d.kind), 1);
    /* the file lists its tensors sorted by name; the export, module by module */
    for (size_t i = 0; i < out.n; i++)
        for (size_t j = i + 1; j < out.n; j++)
            if (strcmp(out.e[j].name, out.e[i].name) < 0) {
                struct lora_entry s = out.e[i];
                out.e[i] = out.e[j], out.e[j] = s;
            }
    check_same_entries(&out, &ours);
    lora_file_free(&out), lora_file_free(&f), lora_file_free(&ours);
    free(m), free(h);
    dit_case_close(&c);
}

/* A fused layer's adapter written as its parts (one A, rows of B) comes
 * back as it was, rank and bits; parts with their own A come back side by
 * side, block-diagonal, a missing part zero. */
TEST(lora_dit_names_go_there_and_back_exactly)
{
    struct dit_case c;
    if (dit_case_open(&c) != 0)
        return;
    struct lora_file f = {0};
    f.n = 2;
    f.e = calloc(2, sizeof *f.e);
    const char *names[2] = {"blocks.1.attn.qkv", "blocks.0.mlp.fc2"};
    const int outs[2] = {96, 32}, ins[2] = {32, 128};
    for (int i = 0; i < 2; i++) {
        struct lora_entry *e = &f.e[i];
        snprintf(e->name, sizeof e->name, "%s", names[i]);
        e->rank = 3, e->in = ins[i], e->out = outs[i], e->alpha = 6;
        e->A = test_normal((size_t)3 * e->in, 40 + i, 0.3f, 0);
        e->B = test_normal((size_t)e->out * 3, 50 + i, 0.3f, 0);
    }
    const char *path = test_tmp_path("dit_names.safetensors");
    struct lora_file g = {0};
    g.n = f.n;
    g.e = calloc(f.n, sizeof *g.e);
    for (size_t i = 0; i < f.n; i++) {
        g.e[i] = f.e[i];
        g.e[i].A = malloc((size_t)f.e[i].rank * f.e[i].in * sizeof(float));
        g.e[i].B = malloc((size_t)f.e[i].out * f.e[i].rank * sizeof(float));
        memcpy(g.e[i].A, f.e[i].A, (size_t)f.e[i].rank * f.e[i].in * sizeof(float));
        memcpy(g.e[i].B, f.e[i].B, (size_t)f.e[i].out * f.e[i].rank * sizeof(float));
    }
    CHECK_INT(lora_file_export(&g, c.d.kind), 1);
    CHECK_INT((int)g.n, 4);
    CHECK_STR(g.e[0].name, "transformer_blocks.1.attn1.to_q");
    CHECK_STR(g.e[2].name, "transformer_blocks.1.attn1.to_v");
    CHECK_STR(g.e[3].name, "transformer_blocks.0.ff.net.2");
    CHECK_INT(lora_file_write(path, &g, LORA_FORMAT_KOHYA, ST_F32, NULL), 0);
    lora_file_free(&g);
    struct lora_file back;
    CHECK_INT(lora_file_read(path, &back), 0);
    CHECK_INT(lora_file_adopt(&back, c.d.kind, &c.t), 0);
    if (back.n == 2 && strcmp(back.e[0].name, "blocks.0.mlp.fc2") == 0) { /* kohya's file is sorted by name */
        struct lora_entry s = back.e[0];
        back.e[0] = back.e[1], back.e[1] = s;
    }
    check_same_entries(&back, &f);
    lora_file_free(&back);

    /* to_q and to_v with their own A (ranks 1 and 2), no to_k */
    struct lora_file p = {0};
    p.n = 2;
    p.e = calloc(2, sizeof *p.e);
    const char *parts[2] = {"transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_v"};
    for (int i = 0; i < 2; i++) {
        struct lora_entry *e = &p.e[i];
        snprintf(e->name, sizeof e->name, "%s", parts[i]);
        e->rank = i + 1, e->in = 32, e->out = 32, e->alpha = 4;
        e->A = test_normal((size_t)e->rank * 32, 60 + i, 0.3f, 0);
        e->B = test_normal((size_t)32 * e->rank, 70 + i, 0.3f, 0);
    }
    double want[96][32] = {{0}};
    for (int i = 0; i < 2; i++) {
        const struct lora_entry *e = &p.e[i];
        for (int o = 0; o < 32; o++)
            for (int k = 0; k < 32; k++)
                for (int r = 0; r < e->rank; r++)
                    want[64 * i + o][k] += (double)lora_entry_scale(&p, e) * e->B[o * e->rank + r] * e->A[r * 32 + k];
    }
    CHECK_INT(lora_file_adopt(&p, c.d.kind, &c.t), 0);
    CHECK_INT((int)p.n, 1);
    const struct lora_entry *q = &p.e[0];
    CHECK_STR(q->name, "blocks.0.attn.qkv");
    CHECK_INT(q->rank, 3);
    CHECK_INT(q->out, 96);
    double err = 0;
    for (int o = 0; o < 96; o++)
        for (int k = 0; k < 32; k++) {
            double got = 0;
            for (int r = 0; r < q->rank; r++)
                got += (double)lora_entry_scale(&p, q) * q->B[o * q->rank + r] * q->A[r * 32 + k];
            err = fmax(err, fabs(got - want[o][k]));
        }
    CHECK(err < 1e-5);
    lora_file_free(&p);

    /* a part of the wrong shape, and a layer adapted in both namings */
    struct lora_file bad = {0};
    bad.n = 2;
    bad.e = calloc(2, sizeof *bad.e);
    snprintf(bad.e[0].name, sizeof bad.e[0].name, "transformer_blocks.0.attn1.to_k");
    snprintf(bad.e[1].name, sizeof bad.e[1].name, "blocks.0.attn.qkv");
    bad.e[0].rank = 1, bad.e[0].in = 32, bad.e[0].out = 96, bad.e[0].alpha = 1;
    bad.e[1].rank = 1, bad.e[1].in = 32, bad.e[1].out = 96, bad.e[1].alpha = 1;
    for (int i = 0; i < 2; i++) {
        bad.e[i].A = calloc(32, sizeof(float));
        bad.e[i].B = calloc(96, sizeof(float));
    }
    CHECK(lora_file_adopt(&bad, c.d.kind, &c.t) != 0);
    CHECK_CONTAINS(err_get(), "adapted twice");
    bad.e[1].name[0] = 'x';
    CHECK(lora_file_adopt(&bad, c.d.kind, &c.t) != 0);
    CHECK_CONTAINS(err_get(), "transformer_blocks.0.attn1.to_k: a [96, 32] adapter, the model's part has [32, 32]");
    lora_file_free(&bad);
    lora_file_free(&f);
    dit_case_close(&c);
}

TEST(lora_dit_targets_in_diffusers_names)
{
    struct dit_case c;
    if (dit_case_open(&c) != 0)
        return;
    struct nn_lora_module *m;
    size_t n;
    CHECK_INT(denoiser_lora_targets(&c.d, "to_q,to_k,to_v,to_out.0,ff.net.2", 4, 4, 0, &m, &n), 0);
    CHECK_INT((int)n, 6);
    if (n == 6) {
        CHECK_STR(m[0].name, "blocks.0.attn.qkv");
        CHECK_STR(m[1].name, "blocks.0.attn.proj");
        CHECK_STR(m[2].name, "blocks.0.mlp.fc2");
    }
    free(m);
    /* DiT's own names still; an entry is read in the naming it selects
     * in, so "proj" is attn.proj, not also diffusers' ff.net.0.proj */
    CHECK_INT(denoiser_lora_targets(&c.d, "qkv,proj", 4, 4, 0, &m, &n), 0);
    CHECK_INT((int)n, 4);
    if (n == 4)
        CHECK_STR(m[1].name, "blocks.0.attn.proj");
    free(m);
    CHECK_INT(denoiser_lora_targets(&c.d, "fc1,to_out.0", 4, 4, 0, &m, &n), 0);
    CHECK_INT((int)n, 4);
    free(m);
    /* q alone cannot be adapted apart from k and v in the fused layer */
    CHECK(denoiser_lora_targets(&c.d, "to_q,to_out.0", 4, 4, 0, &m, &n) != 0);
    CHECK_CONTAINS(err_get(), "select all of to_q, to_k, to_v, or qkv");
    dit_case_close(&c);
}
