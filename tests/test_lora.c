/* LoRA: the adapter's forward and backward against the merged model
 * (W + scale B A), a frozen model that stays bitwise unchanged while its
 * adapters train, dropout's masks through gradient checkpointing, and the
 * files (diffusers, PEFT, kohya) written and read back, hostile ones
 * refused with their reason. */
#include "harness.h"
#include "tests/denoiser_fixture.h"
#include "formats/lora_file.h"
#include "libcommon/error.h"
#include "libcommon/names.h"
#include "libcommon/philox.h"
#include "models/registry.h"
#include "train/lora.h"
#include "train/lora_merge.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_REL(got, want, n, tol) test_check_rel(__FILE__, __LINE__, #got, got, want, n, tol)
#define CHECK_SAME_BITS(a, b, n) test_check_same_bits(__FILE__, __LINE__, #a, a, b, n)

static const struct denoiser_spec tiny = {4, 8, 8, 10, 2, 32, 4, 0, 0};

/* An adapter on qkv and proj with random A and B (B is zero at a real
 * start, which would test nothing). */
static void lora_on(struct denoiser *d, struct nn_lora *l, struct nn_lora_binding *b, float dropout, int train,
                    float **host_out)
{
    struct nn_lora_module *mods;
    size_t n;
    CHECK_INT(denoiser_lora_targets(d, "qkv,proj", 4, 8.0f, 0, &mods, &n), 0);
    CHECK_INT((int)n, 2 * 2); /* depth 2 */
    CHECK_INT(nn_lora_create(l, mods, n), 0);
    free(mods);
    l->dropout = dropout;
    l->seed = 17;
    CHECK_INT(nn_lora_alloc(l, d->ctx, KDT_F32, train), 0);
    float *h = malloc((size_t)l->table.total * sizeof *h);
    struct rng_stream s = rng_stream(3, RNG_NOISE, 1, 2);
    rng_normal_f32(&s, 0, (size_t)l->table.total, h);
    for (int64_t i = 0; i < l->table.total; i++)
        h[i] *= 0.1f;
    nn_weights_upload(&l->w, h);
    CHECK_INT(denoiser_lora_bind(d, l, b), 0);
    if (host_out)
        *host_out = h;
    else
        free(h);
}

/* W += scale B A for every module, on the host parameters. */
static void merge_into(const struct nn_lora *l, const float *lh, const struct nn_params *t, float *p)
{
    for (size_t i = 0; i < l->n; i++) {
        const struct nn_lora_module *m = &l->mod[i];
        char name[128];
        snprintf(name, sizeof name, "%s.weight", m->name);
        const struct nn_param *w = nn_params_find(t, name);
        CHECK(w != NULL);
        const float *A = lh + l->table.p[m->a_id].offset, *B = lh + l->table.p[m->b_id].offset;
        for (int o = 0; o < m->out; o++)
            for (int c = 0; c < m->in; c++) {
                double s = 0;
                for (int r = 0; r < m->rank; r++)
                    s += (double)B[o * m->rank + r] * A[r * m->in + c];
                p[w->offset + (int64_t)o * m->in + c] += (float)(m->scale * s);
            }
    }
}

struct fixture {
    struct kctx k;
    struct denoiser_config mc;
    float x[2 * 256], t[2], out[2 * 512], dout[2 * 512];
    int32_t y[2];
};

static void fixture_init(struct fixture *f)
{
    CHECK_INT(kctx_init(&f->k, DEVICE_CPU, 1), 0);
    CHECK_INT(denoiser_config_preset(&f->mc, "DiT-S/2", &tiny), 0);
    struct rng_stream s = rng_stream(5, RNG_NOISE, 0, 0);
    rng_normal_f32(&s, 0, 2 * 256, f->x);
    rng_normal_f32(&s, 1000, 2 * 512, f->dout);
    f->t[0] = 10, f->t[1] = 700;
    f->y[0] = 3, f->y[1] = 8;
}

TEST(lora_forward_and_backward_equal_the_merged_model)
{
    struct fixture f;
    fixture_init(&f);
    struct denoiser d, merged;
    CHECK_INT(denoiser_create(&d, &f.mc, &f.k, 2, DENOISER_MEM_TRAIN | DENOISER_MEM_FROZEN, KDT_F32), 0);
    CHECK(d.grads.data == NULL); /* frozen: no gradient buffer at all */
    CHECK_INT(denoiser_create(&merged, &f.mc, &f.k, 2, DENOISER_MEM_TRAIN, KDT_F32), 0);
    float *p = test_denoiser_random_params(&f.mc, d.n_params, 7);
    denoiser_params_upload(&d, p);
    struct nn_lora l;
    struct nn_lora_binding b;
    float *lh;
    lora_on(&d, &l, &b, 0, 1, &lh);
    merge_into(&l, lh, d.table, p);
    denoiser_params_upload(&merged, p);

    struct cond c = {.labels = f.y};
    float got[2 * 512], want[2 * 512];
    denoiser_forward(&d, got, f.x, f.t, &c, 2);
    denoiser_forward(&merged, want, f.x, f.t, &c, 2);
    CHECK_REL(got, want, 2 * 512, 1e-4);

    /* dB = s G A^T and dA = s B^T G, G the merged weight's gradient. */
    nn_weights_zero_grads(&l.w);
    denoiser_zero_grads(&merged);
    denoiser_backward(&d, f.dout, 2);
    denoiser_backward(&merged, f.dout, 2);
    float *G = malloc((size_t)merged.n_params * sizeof *G), *dl = malloc((size_t)l.table.total * sizeof *dl);
    k_download(&f.k, G, merged.grads, merged.n_params);
    k_download(&f.k, dl, l.w.grads, l.table.total);
    for (size_t i = 0; i < l.n; i++) {
        const struct nn_lora_module *m = &l.mod[i];
        char name[128];
        snprintf(name, sizeof name, "%s.weight", m->name);
        const float *g = G + nn_params_find(d.table, name)->offset;
        const float *A = lh + l.table.p[m->a_id].offset, *B = lh + l.table.p[m->b_id].offset;
        float *wa = malloc((size_t)m->rank * m->in * sizeof *wa), *wb = malloc((size_t)m->out * m->rank * sizeof *wb);
        for (int r = 0; r < m->rank; r++)
            for (int c2 = 0; c2 < m->in; c2++) {
                double s = 0;
                for (int o = 0; o < m->out; o++)
                    s += (double)B[o * m->rank + r] * g[o * m->in + c2];
                wa[r * m->in + c2] = (float)(m->scale * s);
            }
        for (int o = 0; o < m->out; o++)
            for (int r = 0; r < m->rank; r++) {
                double s = 0;
                for (int c2 = 0; c2 < m->in; c2++)
                    s += (double)g[o * m->in + c2] * A[r * m->in + c2];
                wb[o * m->rank + r] = (float)(m->scale * s);
            }
        CHECK_REL(dl + l.table.p[m->a_id].offset, wa, (size_t)m->rank * m->in, 2e-3);
        CHECK_REL(dl + l.table.p[m->b_id].offset, wb, (size_t)m->out * m->rank, 2e-3);
        free(wa), free(wb);
    }
    free(G), free(dl), free(lh), free(p);
    nn_lora_unbind(&b);
    /* unbound: the model is the base again */
    CHECK(d.kind->linear(&d, 0, &(int64_t){0})->adapter == NULL);
    nn_lora_free(&l);
    denoiser_free(&d);
    denoiser_free(&merged);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

TEST(lora_dropout_masks_survive_gradient_checkpointing)
{
    struct fixture f;
    fixture_init(&f);
    struct denoiser a, c;
    CHECK_INT(denoiser_create(&a, &f.mc, &f.k, 2, DENOISER_MEM_TRAIN | DENOISER_MEM_FROZEN, KDT_F32), 0);
    CHECK_INT(denoiser_create(&c, &f.mc, &f.k, 2, DENOISER_MEM_CHECKPOINT | DENOISER_MEM_FROZEN, KDT_F32), 0);
    float *p = test_denoiser_random_params(&f.mc, a.n_params, 7);
    denoiser_params_upload(&a, p);
    denoiser_params_upload(&c, p);
    free(p);
    struct nn_lora la, lc;
    struct nn_lora_binding ba, bc;
    lora_on(&a, &la, &ba, 0.3f, 1, NULL);
    lora_on(&c, &lc, &bc, 0.3f, 1, NULL);
    const uint64_t rec[2] = {11, 5};
    struct cond cd = {.labels = f.y};
    float o1[2 * 512], o2[2 * 512], o3[2 * 512];
    nn_lora_binding_batch(&ba, rec, 2, 3, 1);
    nn_lora_binding_batch(&bc, rec, 2, 3, 1);
    denoiser_forward(&a, o1, f.x, f.t, &cd, 2);
    denoiser_forward(&c, o2, f.x, f.t, &cd, 2);
    CHECK_SAME_BITS(o1, o2, 2 * 512);
    nn_weights_zero_grads(&la.w);
    nn_weights_zero_grads(&lc.w);
    denoiser_backward(&a, f.dout, 2);
    denoiser_backward(&c, f.dout, 2); /* recomputes each block, masks included */
    const int64_t n = la.table.total;
    float *g1 = malloc((size_t)n * sizeof *g1), *g2 = malloc((size_t)n * sizeof *g2);
    k_download(&f.k, g1, la.w.grads, n);
    k_download(&f.k, g2, lc.w.grads, n);
    CHECK_SAME_BITS(g1, g2, (size_t)n);
    free(g1), free(g2);
    /* another epoch draws other masks; validation (training 0) none */
    nn_lora_binding_batch(&ba, rec, 2, 4, 1);
    denoiser_forward(&a, o3, f.x, f.t, &cd, 2);
    CHECK(memcmp(o1, o3, sizeof o1) != 0);
    nn_lora_binding_batch(&ba, rec, 2, 4, 0);
    denoiser_forward(&a, o3, f.x, f.t, &cd, 2);
    ba.lora->dropout = 0;
    nn_lora_binding_batch(&ba, rec, 2, 4, 1);
    denoiser_forward(&a, o2, f.x, f.t, &cd, 2);
    CHECK_SAME_BITS(o2, o3, 2 * 512);
    nn_lora_unbind(&ba), nn_lora_unbind(&bc);
    nn_lora_free(&la), nn_lora_free(&lc);
    denoiser_free(&a), denoiser_free(&c);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

TEST(lora_training_leaves_a_frozen_model_bitwise_unchanged)
{
    struct fixture f;
    fixture_init(&f);
    struct denoiser d;
    CHECK_INT(denoiser_create(&d, &f.mc, &f.k, 2, DENOISER_MEM_TRAIN | DENOISER_MEM_FROZEN, KDT_F32), 0);
    float *p = test_denoiser_random_params(&f.mc, d.n_params, 7);
    denoiser_params_upload(&d, p);
    struct trainer tr;
    struct trainer_config tc = {.objective = OBJECTIVE_DDPM, .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                .schedule = LR_CONSTANT, .total_steps = 3, .grad_accum = 1, .ema_decay = 0.5,
                                .seed = 4};
    CHECK_INT(trainer_init(&tr, &d, &tc), 0);
    CHECK_INT(tr.base_trains, 0);
    CHECK_INT(tr.opt.nstate, 0); /* no optimizer state for the model */
    struct nn_lora l;
    struct nn_lora_binding b;
    struct lora_options lo = {8, 8.0f, 0.1f, 0, "qkv,proj", NN_LORA_INIT_GAUSSIAN, NULL};
    CHECK_INT(train_lora_create(&l, &b, &d, &lo, 4), 0);
    CHECK_INT(trainer_add_lora(&tr, &l, &b), 0);
    /* Gaussian A, zero B: the adapted model starts as the model */
    float *lh = malloc((size_t)l.table.total * sizeof *lh);
    nn_weights_download(&l.w, lh);
    double sa = 0;
    for (size_t i = 0; i < l.n; i++) {
        const struct nn_param *A = &l.table.p[l.mod[i].a_id], *B = &l.table.p[l.mod[i].b_id];
        for (int64_t j = 0; j < A->n; j++)
            sa += (double)lh[A->offset + j] * lh[A->offset + j];
        for (int64_t j = 0; j < B->n; j++)
            CHECK(lh[B->offset + j] == 0.0f);
        (void)sa;
    }
    /* std 1/rank: the mean square near 1/64 */
    CHECK_NEAR(sa / (double)(l.table.total / 2), 1.0 / 64, 0.01);
    const uint64_t rec[2] = {1, 2};
    struct cond cd = {.labels = f.y};
    for (int s = 0; s < 3; s++) {
        trainer_micro_step(&tr, f.x, &cd, rec, 2, 0);
        CHECK(isfinite(trainer_optimizer_step(&tr)));
    }
    float *after = malloc((size_t)d.n_params * sizeof *after);
    denoiser_params_download(&d, after);
    CHECK_SAME_BITS(after, p, (size_t)d.n_params);
    float *lh2 = malloc((size_t)l.table.total * sizeof *lh2);
    nn_weights_download(&l.w, lh2);
    CHECK(memcmp(lh, lh2, (size_t)l.table.total * sizeof *lh) != 0); /* the adapter trained */
    free(lh), free(lh2), free(after), free(p);
    trainer_free(&tr);
    nn_lora_unbind(&b);
    nn_lora_free(&l);
    denoiser_free(&d);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

TEST(lora_target_modules_match_as_peft)
{
    CHECK(nn_lora_targets_match("qkv,q,context_kv,proj", "blocks.0.self_attn.qkv"));
    CHECK(nn_lora_targets_match("qkv, q ,context_kv,proj", "blocks.3.cross_attn.q"));
    CHECK(nn_lora_targets_match("qkv,proj", "blocks.1.cross_attn.proj"));
    CHECK(!nn_lora_targets_match("qkv,proj", "blocks.1.mlp.0"));
    CHECK(!nn_lora_targets_match("q", "blocks.0.self_attn.qkv")); /* a suffix of whole names only */
    CHECK(nn_lora_targets_match("self_attn.qkv", "blocks.0.self_attn.qkv"));
    CHECK(nn_lora_targets_match("blocks.0.self_attn.qkv", "blocks.0.self_attn.qkv"));
    CHECK(!nn_lora_targets_match("", "qkv"));
}

/* A two-module adapter as a file's entries. */
static void sample_file(struct lora_file *f)
{
    memset(f, 0, sizeof *f);
    f->n = 2;
    f->e = calloc(2, sizeof *f->e);
    const char *names[2] = {"blocks.0.attn.qkv", "blocks.1.attn.proj"};
    for (int i = 0; i < 2; i++) {
        struct lora_entry *e = &f->e[i];
        snprintf(e->name, sizeof e->name, "%s", names[i]);
        e->rank = 2 + i, e->in = 5, e->out = 3 + 4 * i, e->alpha = 4.0f * (float)(i + 1);
        e->A = malloc((size_t)e->rank * e->in * sizeof *e->A);
        e->B = malloc((size_t)e->out * e->rank * sizeof *e->B);
        for (int j = 0; j < e->rank * e->in; j++)
            e->A[j] = 0.25f * (float)(j % 7) - 0.5f;
        for (int j = 0; j < e->out * e->rank; j++)
            e->B[j] = 0.125f * (float)(j % 5) - 0.25f;
    }
}

static void check_same_file(const struct lora_file *a, const struct lora_file *b)
{
    CHECK_INT((int)a->n, (int)b->n);
    for (size_t i = 0; i < a->n && i < b->n; i++) {
        const struct lora_entry *x = &a->e[i], *y = NULL;
        for (size_t j = 0; j < b->n; j++)
            if (strcmp(b->e[j].name, x->name) == 0)
                y = &b->e[j];
        CHECK(y != NULL);
        if (!y)
            continue;
        CHECK_INT(y->rank, x->rank);
        CHECK_NEAR(lora_entry_scale(b, y), lora_entry_scale(a, x), 1e-6);
        CHECK_SAME_BITS(y->A, x->A, (size_t)x->rank * x->in);
        CHECK_SAME_BITS(y->B, x->B, (size_t)x->out * x->rank);
    }
}

TEST(lora_files_write_and_read_back_in_every_naming)
{
    struct lora_file f, g;
    sample_file(&f);
    const char *dir = test_tmpdir();
    char path[256];
    const enum lora_format fmts[3] = {LORA_FORMAT_DIFFUSERS, LORA_FORMAT_PEFT, LORA_FORMAT_KOHYA};
    const char *names[2] = {"blocks.0.attn.qkv", "blocks.1.attn.proj"};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, lora_file_name(fmts[k], 0));
        CHECK_INT(lora_file_write(path, &f, fmts[k], ST_F32, "qkv,proj"), 0);
        CHECK_INT(lora_file_read(path, &g), 0);
        CHECK_INT((int)g.format, (int)fmts[k]);
        CHECK_INT(g.kohya_names, fmts[k] == LORA_FORMAT_KOHYA);
        CHECK_INT(lora_file_resolve(&g, names, 2), 0);
        check_same_file(&f, &g);
        lora_file_free(&g);
    }
    /* rsLoRA through kohya (which has none): the same scale */
    f.rslora = 1;
    snprintf(path, sizeof path, "%s/rs.safetensors", dir);
    CHECK_INT(lora_file_write(path, &f, LORA_FORMAT_KOHYA, ST_F32, NULL), 0);
    CHECK_INT(lora_file_read(path, &g), 0);
    CHECK_INT(lora_file_resolve(&g, names, 2), 0);
    check_same_file(&f, &g);
    lora_file_free(&g);
    /* a kohya name the model lacks */
    CHECK_INT(lora_file_read(path, &g), 0);
    CHECK(lora_file_resolve(&g, names, 1) != 0);
    CHECK_CONTAINS(err_get(), "lora_unet_blocks_1_attn_proj");
    lora_file_free(&g);
    lora_file_free(&f);
}

/* One hostile safetensors file: written from tensors, then read. */
static void hostile(const char *dir, const char *what, const char *const *names, const int64_t (*shapes)[2],
                    const int *ndims, int n, const char *meta, const char *expect)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, what);
    struct st_writer *w = st_writer_new();
    static float data[64];
    for (int i = 0; i < 64; i++)
        data[i] = (i == 7 && strstr(what, "nan_values")) || (i == 0 && strstr(what, "alpha_nan")) ? NAN : 0.5f;
    for (int i = 0; i < n; i++)
        CHECK_INT(st_writer_add(w, names[i], ST_F32, ndims[i], shapes[i], data), 0);
    if (meta)
        st_writer_meta(w, "lora_adapter_metadata", meta);
    CHECK_INT(st_writer_write(w, path), 0);
    st_writer_free(w);
    struct lora_file f;
    if (lora_file_read(path, &f) == 0) {
        test_fail(__FILE__, __LINE__, "%s: read without an error", what);
        lora_file_free(&f);
        return;
    }
    CHECK_CONTAINS(err_get(), path);
    CHECK_CONTAINS(err_get(), expect);
}

TEST(lora_files_hostile_ones_are_refused_with_their_reason)
{
    const char *dir = test_tmpdir();
    const char *ab[2] = {"transformer.m.lora_A.weight", "transformer.m.lora_B.weight"};
    const int d2[3] = {2, 2, 0};
    hostile(dir, "missing_b", ab, (const int64_t[][2]){{2, 4}}, d2, 1, NULL, "no lora_B");
    hostile(dir, "rank_mismatch", ab, (const int64_t[][2]){{2, 4}, {3, 3}}, d2, 2, NULL, "rank 2");
    hostile(dir, "wrong_shape", ab, (const int64_t[][2]){{2, 4}, {6, 0}}, (const int[]){2, 1}, 2, NULL,
            "are not a LoRA's");
    hostile(dir, "nan_values", ab, (const int64_t[][2]){{2, 4}, {3, 2}}, d2, 2, NULL, "non-finite");
    const char *kohya[3] = {"lora_unet_m.alpha", "lora_unet_m.lora_down.weight", "lora_unet_m.lora_up.weight"};
    const int dk[3] = {0, 2, 2};
    hostile(dir, "alpha_nan", kohya, (const int64_t[][2]){{0, 0}, {2, 4}, {3, 2}}, dk, 3, NULL, "non-finite");
    hostile(dir, "alpha_vector", kohya, (const int64_t[][2]){{8, 0}, {2, 4}, {3, 2}}, (const int[]){1, 2, 2}, 3, NULL,
            "elements, not one");
    hostile(dir, "negative_alpha_meta", ab, (const int64_t[][2]){{2, 4}, {3, 2}}, d2, 2,
            "{\"transformer.lora_alpha\": -3}", "alpha -3");
    hostile(dir, "rank_meta", ab, (const int64_t[][2]){{2, 4}, {3, 2}}, d2, 2, "{\"transformer.r\": 16}",
            "configuration says 16");
    hostile(dir, "bad_meta", ab, (const int64_t[][2]){{2, 4}, {3, 2}}, d2, 2, "{not json", "lora_adapter_metadata");
    const char *other[1] = {"blocks.0.attn.qkv.weight"};
    hostile(dir, "not_lora", other, (const int64_t[][2]){{2, 4}}, d2, 1, NULL, "not a LoRA tensor");
    const char *mixed[2] = {"transformer.m.lora_A.weight", "lora_unet_m.lora_up.weight"};
    hostile(dir, "mixed", mixed, (const int64_t[][2]){{2, 4}, {3, 2}}, d2, 2, NULL, "naming");
}

TEST(lora_files_combine_ranks_side_by_side)
{
    struct lora_file f[2];
    sample_file(&f[0]);
    sample_file(&f[1]);
    f[1].n = 1; /* the second adapts only the first module (its second entry is freed below) */
    const float strength[2] = {0.5f, 2.0f};
    struct nn_lora_module *m;
    size_t n;
    float *h;
    int64_t total;
    CHECK_INT(lora_files_combine(f, strength, 2, NULL, NULL, &m, &n, &h, &total), 0);
    CHECK_INT((int)n, 2);
    CHECK_INT(m[0].rank, 4);
    CHECK_INT(m[1].rank, 3);
    /* B_combined A_combined = sum of strength * scale * B A */
    const struct lora_entry *e = &f[0].e[0];
    const float *A = h, *B = h + 4 * 5;
    for (int o = 0; o < e->out; o++)
        for (int c = 0; c < e->in; c++) {
            double got = 0, want = 0;
            for (int r = 0; r < 4; r++)
                got += (double)B[o * 4 + r] * A[r * 5 + c];
            for (int r = 0; r < e->rank; r++)
                want += (0.5 + 2.0) * lora_entry_scale(&f[0], e) * e->B[o * e->rank + r] * e->A[r * 5 + c];
            CHECK_NEAR(got, want, 1e-5);
        }
    free(m), free(h);
    f[1].n = 2;
    lora_file_free(&f[0]);
    lora_file_free(&f[1]);
}

/* The tiny F-Lite of tests/fixtures/flite with LoRA files made by PEFT,
 * diffusers, kohya's naming and F-Lite's torch.save. */
struct flite_case {
    struct denoiser_config mc;
    struct kctx k;
    struct denoiser d;
    struct st_file *g;
    float *x, *T, *ctx, *out;
    size_t n;
};

static int flite_case_open(struct flite_case *c)
{
    memset(c, 0, sizeof *c);
    float *params = NULL;
    if (denoiser_config_load_dir(&c->mc, test_source_path("fixtures/flite/rv_bias"), &params) != 0) {
        test_fail(__FILE__, __LINE__, "%s", err_get());
        return -1;
    }
    const int C = 4, H = 8, W = 12, L = 7, Dc = 24;
    const struct denoiser_spec fit = {.channels = C, .height = H, .width = W, .text_len = L};
    CHECK_INT(denoiser_config_fit(&c->mc, &fit), 0);
    CHECK_INT(kctx_init(&c->k, DEVICE_CPU, 0), 0);
    CHECK_INT(denoiser_create(&c->d, &c->mc, &c->k, 2, DENOISER_MEM_INFERENCE, KDT_F32), 0);
    denoiser_params_upload(&c->d, params);
    free(params);
    c->g = test_goldens_open("fixtures/lora/golden.safetensors");
    c->n = (size_t)2 * C * H * W;
    c->x = test_golden_f32(c->g, "x", c->n);
    float *t = test_golden_f32(c->g, "t", 2);
    c->T = malloc(2 * sizeof *c->T);
    for (int i = 0; i < 2; i++)
        c->T[i] = t[i] * 1000.0f;
    free(t);
    c->ctx = test_golden_f32(c->g, "context", (size_t)2 * L * Dc);
    c->out = malloc(c->n * sizeof *c->out);
    return 0;
}

static void flite_case_forward(struct flite_case *c)
{
    struct cond cd = {.text = c->ctx, .text_len = 7, .text_dim = 24};
    denoiser_forward(&c->d, c->out, c->x, c->T, &cd, 2);
}

static void flite_case_close(struct flite_case *c)
{
    free(c->x), free(c->T), free(c->ctx), free(c->out);
    st_close(c->g);
    denoiser_free(&c->d);
    denoiser_config_free(&c->mc);
    kctx_free(&c->k);
}

/* The files (each "path" or "path:strength" under fixtures/lora) on the
 * model, as dit-sample --lora applies them. */
static void flite_with(struct flite_case *c, const char *const *files, const float *strength, int n,
                       const char *golden, double tol)
{
    struct lora_file f[4];
    memset(f, 0, sizeof f);
    for (int i = 0; i < n; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "fixtures/lora/%s", files[i]);
        if (lora_file_read(test_source_path(rel), &f[i]) != 0) {
            test_fail(__FILE__, __LINE__, "%s", err_get());
            return;
        }
    }
    struct nn_lora l;
    struct nn_lora_binding b;
    CHECK_INT(lora_files_attach(&l, &b, &c->d, f, strength, (size_t)n), 0);
    flite_case_forward(c);
    float *want = test_golden_f32(c->g, golden, c->n);
    fprintf(stderr, "    %s (%d file%s):", files[0], n, n > 1 ? "s" : "");
    test_check_rel(__FILE__, __LINE__, golden, c->out, want, c->n, tol);
    free(want);
    nn_lora_unbind(&b);
    nn_lora_free(&l);
    for (int i = 0; i < n; i++)
        lora_file_free(&f[i]);
}

TEST(lora_files_of_peft_diffusers_kohya_and_flite_give_peft_s_outputs)
{
    struct flite_case c;
    if (flite_case_open(&c) != 0)
        return;
    flite_case_forward(&c);
    float *want = test_golden_f32(c.g, "out_base", c.n);
    CHECK_REL(c.out, want, c.n, 1e-5);
    free(want);
    const float one = 1.0f;
    static const char *const each[] = {"peft/adapter_model.safetensors", "kohya.safetensors",
                                       "diffusers_model.safetensors", "lora_weights.pt", "model.pt"};
    for (size_t i = 0; i < sizeof each / sizeof *each; i++) {
        /* F-Lite's .pt files record no alpha: the scale is its run's --lora_alpha / --lora_rank;
         * read alone it has scale 1, so it is given the strength 2 this adapter's alpha 8 / rank 4 means */
        const float s = strstr(each[i], ".pt") ? 2.0f : one;
        flite_with(&c, &each[i], &s, 1, "out_lora", 1e-5);
    }
    /* two at once, the second at 0.5 (PEFT's set_adapters weights) */
    static const char *const two[] = {"peft/adapter_model.safetensors", "second.safetensors"};
    flite_with(&c, two, (const float[]){1.0f, 0.5f}, 2, "out_two", 1e-5);
    /* a file we wrote, as diffusers' load_lora_adapter reads it */
    if (st_find(c.g, "out_ours")) {
        static const char *const ours[] = {"ours.safetensors"};
        flite_with(&c, ours, &one, 1, "out_ours", 1e-5);
    } else {
        test_fail(__FILE__, __LINE__, "golden.safetensors lacks out_ours (rerun the script after tests/tools/lora.sh)");
    }
    flite_case_close(&c);
}

TEST(lora_merged_into_the_model_equals_the_adapter_on_the_fly)
{
    struct flite_case c;
    if (flite_case_open(&c) != 0)
        return;
    struct lora_file f[2];
    CHECK_INT(lora_file_read(test_source_path("fixtures/lora/peft/adapter_model.safetensors"), &f[0]), 0);
    CHECK_INT(lora_file_read(test_source_path("fixtures/lora/second.safetensors"), &f[1]), 0);
    struct nn_params t;
    CHECK_INT(denoiser_config_table(&c.mc, &t), 0);
    float *p = malloc((size_t)c.d.n_params * sizeof *p), *p0 = malloc((size_t)c.d.n_params * sizeof *p0);
    denoiser_params_download(&c.d, p0);
    memcpy(p, p0, (size_t)c.d.n_params * sizeof *p);
    /* ratio 0 is the identity, bit for bit */
    CHECK_INT(lora_merge_into(&f[0], 0.0f, &t, p, ST_F32), 0);
    CHECK_SAME_BITS(p, p0, (size_t)c.d.n_params);
    CHECK_INT(lora_merge_into(&f[0], 1.0f, &t, p, ST_F32), 0);
    CHECK_INT(lora_merge_into(&f[1], 0.5f, &t, p, ST_F32), 0);
    denoiser_params_upload(&c.d, p);
    flite_case_forward(&c);
    float *want = test_golden_f32(c.g, "out_two", c.n);
    CHECK_REL(c.out, want, c.n, 1e-5);
    /* in bf16 arithmetic: near, not equal */
    memcpy(p, p0, (size_t)c.d.n_params * sizeof *p);
    CHECK_INT(lora_merge_into(&f[0], 1.0f, &t, p, ST_BF16), 0);
    CHECK_INT(lora_merge_into(&f[1], 0.5f, &t, p, ST_BF16), 0);
    denoiser_params_upload(&c.d, p);
    flite_case_forward(&c);
    CHECK_REL(c.out, want, c.n, 0.1);
    /* a module the model lacks, or of another shape: named, nothing changed */
    memcpy(p, p0, (size_t)c.d.n_params * sizeof *p);
    snprintf(f[1].e[0].name, sizeof f[1].e[0].name, "blocks.9.self_attn.qkv");
    CHECK(lora_merge_into(&f[1], 1.0f, &t, p, ST_F32) != 0);
    CHECK_CONTAINS(err_get(), "blocks.9.self_attn.qkv");
    CHECK_SAME_BITS(p, p0, (size_t)c.d.n_params);
    snprintf(f[1].e[0].name, sizeof f[1].e[0].name, "blocks.0.mlp.2");
    CHECK(lora_merge_into(&f[1], 1.0f, &t, p, ST_F32) != 0);
    CHECK_CONTAINS(err_get(), "the model's blocks.0.mlp.2.weight is");
    free(want), free(p), free(p0);
    nn_params_free(&t);
    lora_file_free(&f[0]), lora_file_free(&f[1]);
    flite_case_close(&c);
}

TEST(lora_re_ranked_by_svd_keeps_the_product)
{
    struct lora_file f[2];
    CHECK_INT(lora_file_read(test_source_path("fixtures/lora/peft/adapter_model.safetensors"), &f[0]), 0);
    CHECK_INT(lora_file_read(test_source_path("fixtures/lora/peft/adapter_model.safetensors"), &f[1]), 0);
    /* the same adapter twice (ranks 8 side by side) has rank 4: re-ranked to 4, the product stays */
    struct nn_lora_module *m;
    size_t n;
    float *h;
    int64_t total;
    CHECK_INT(lora_files_combine(f, (const float[]){0.25f, 0.75f}, 2, NULL, NULL, &m, &n, &h, &total), 0);
    CHECK_INT(m[0].rank, 8);
    struct lora_file r;
    CHECK_INT(lora_to_file(m, n, h, 4, &r), 0);
    for (size_t i = 0; i < r.n; i++) {
        const struct lora_entry *e = &r.e[i], *o = &f[0].e[i];
        CHECK_INT(e->rank, 4);
        CHECK_STR(e->name, o->name);
        double err = 0, ref = 0;
        for (int a = 0; a < e->out; a++)
            for (int b = 0; b < e->in; b++) {
                double got = 0, want = 0;
                for (int k = 0; k < e->rank; k++)
                    got += (double)e->B[a * e->rank + k] * e->A[k * e->in + b];
                got *= lora_entry_scale(&r, e);
                for (int k = 0; k < o->rank; k++)
                    want += (double)o->B[a * o->rank + k] * o->A[k * o->in + b];
                want *= lora_entry_scale(&f[0], o);
                err += (got - want) * (got - want), ref += want * want;
            }
        CHECK(sqrt(err / ref) < 1e-5);
    }
    /* to rank 1: the best rank-1 product, so an error, but not all of it */
    lora_file_free(&r);
    CHECK_INT(lora_to_file(m, n, h, 1, &r), 0);
    CHECK_INT(r.e[0].rank, 1);
    lora_file_free(&r);
    free(m), free(h);
    lora_file_free(&f[0]), lora_file_free(&f[1]);
}
