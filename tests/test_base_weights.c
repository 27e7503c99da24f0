/* A frozen base stored apart (--base-weight-dtype bf16 | fp8): the linears'
 * weights leave the compute copy for a store of bf16 values or e4m3 codes
 * with one scale per output row, widened layer by layer. Storage apart
 * must change nothing but the weights' values: the model equals an f32
 * model given the rounded weights, bit for bit, in forward, in LoRA's
 * backward and through gradient checkpointing. Against the f32 base, the
 * outputs stay within the bounds stated here (measured on these tiny
 * random models; printed for the record). And a model that trains with
 * its linears' weight gradients accumulated in bf16: each product's
 * gradient added in once rounded, the optimizer tensor by tensor equal to
 * its one pass over the plain layout. */
#include "harness.h"
#include "tests/denoiser_fixture.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/philox.h"
#include "models/registry.h"
#include "nn/linear.h"
#include "nn/weights.h"
#include "train/optimizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_REL(got, want, n, tol) test_check_rel(__FILE__, __LINE__, #got, got, want, n, tol)
#define CHECK_SAME_BITS(a, b, n) test_check_same_bits(__FILE__, __LINE__, #a, a, b, n)

static const struct denoiser_spec tiny = {4, 8, 8, 10, 2, 32, 4, 0, 0};

TEST(base_table_moves_only_the_linears_weights_apart)
{
    struct nn_params t = {0};
    struct nn_linear fc, conv;
    const int64_t fs[] = {6, 5}, cs[] = {3, 2, 2, 2}, v[] = {7};
    nn_linear_addf(&fc, &t, 1, 2, fs, "fc");
    nn_params_add(&t, "norm.weight", 1, v);
    nn_linear_addf(&conv, &t, 0, 4, cs, "conv");
    CHECK_INT(nn_params_done(&t), 0);
    CHECK_INT((int)t.compute_total, 30 + 6 + 7 + 24);
    nn_params_set_apart(&t);
    /* fc.bias and norm.weight stay, compacted; the two weights move */
    CHECK_INT((int)t.compute_total, 6 + 7);
    CHECK_INT((int)t.store_total, 30 + 24);
    CHECK_INT((int)t.store_rows, 6 + 3);
    CHECK_INT((int)t.widest, 30);
    CHECK_INT((int)t.p[0].coff, -1);
    CHECK_INT((int)t.p[1].coff, 0);
    CHECK_INT((int)t.p[2].coff, 6);
    CHECK_INT((int)t.p[3].soff, 30);
    CHECK_INT((int)t.p[3].row, 6);
    float full[67], compact[13];
    /* a full-size buffer (master, host) keeps every entry where it was */
    CHECK(nn_params_view(&t, tensor_f32(full, 67), 2).data == full + 36);
    CHECK(nn_params_view(&t, tensor_f32(compact, 13), 2).data == compact + 6);
    CHECK(nn_params_view(&t, tensor_f32(compact, 13), 0).data == NULL);
    nn_params_free(&t);
}

/* What the store keeps of p: the linears' weights rounded to bf16, or to
 * e4m3 codes times their row's scale; everything else as it was. */
static void rounded(const struct nn_params *t, enum nn_base base, const float *p, float *q)
{
    memcpy(q, p, (size_t)t->total * sizeof *q);
    for (size_t i = 0; i < t->count; i++) {
        const struct nn_param *e = &t->p[i];
        if (!e->linear)
            continue;
        float *w = q + e->offset;
        if (base == NN_BASE_BF16) {
            for (int64_t j = 0; j < e->n; j++)
                w[j] = bf16_to_f32(f32_to_bf16(w[j]));
            continue;
        }
        const int rows = (int)e->shape[0], cols = (int)(e->n / rows);
        uint8_t *codes = malloc((size_t)e->n);
        float *scale = malloc((size_t)rows * sizeof *scale);
        f32_to_e4m3_rows(w, rows, cols, codes, scale);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                w[r * cols + c] = e4m3_to_f32(codes[r * cols + c]) * scale[r];
        free(codes), free(scale);
    }
}

struct dit_case {
    struct kctx k;
    struct denoiser_config mc;
    float x[2 * 256], t[2], out[2 * 512], dout[2 * 512];
    int32_t y[2];
    struct cond c;
};

static void dit_case_init(struct dit_case *f)
{
    CHECK_INT(kctx_init(&f->k, DEVICE_CPU, 1), 0);
    CHECK_INT(denoiser_config_preset(&f->mc, "DiT-S/2", &tiny), 0);
    struct rng_stream s = rng_stream(5, RNG_NOISE, 0, 0);
    rng_normal_f32(&s, 0, 2 * 256, f->x);
    rng_normal_f32(&s, 1000, 2 * 512, f->dout);
    f->t[0] = 10, f->t[1] = 700;
    f->y[0] = 3, f->y[1] = 8;
    f->c = (struct cond){.labels = f->y};
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

/* Stated bounds on ||out - out_f32|| / ||out_f32|| for these models: bf16
 * keeps 8 significant bits (a weight's error up to 2^-9 of it), e4m3 4 bits
 * with the row's scale (up to 2^-5 of it, uniform over the row's range). */
#define BOUND_BF16 1e-2
#define BOUND_FP8 6e-2

static void dit_stored_equals_rounded(enum nn_base base, double bound)
{
    struct dit_case f;
    dit_case_init(&f);
    struct denoiser ref, apart, rnd;
    CHECK_INT(denoiser_create(&ref, &f.mc, &f.k, 2, DENOISER_MEM_INFERENCE, KDT_F32), 0);
    CHECK_INT(denoiser_create(&apart, &f.mc, &f.k, 2,
                              (enum denoiser_memory)(DENOISER_MEM_INFERENCE | DENOISER_MEM_BASE(base)), KDT_F32),
              0);
    CHECK_INT(denoiser_create(&rnd, &f.mc, &f.k, 2, DENOISER_MEM_INFERENCE, KDT_F32), 0);
    const int64_t n = ref.n_params;
    float *p = test_denoiser_random_params(&f.mc, n, 7), *q = malloc((size_t)n * sizeof *q), *back = malloc((size_t)n * sizeof *back);
    rounded(ref.table, base, p, q);
    denoiser_params_upload(&ref, p);
    denoiser_params_upload(&apart, p);
    denoiser_params_upload(&rnd, q);
    /* the store gives back exactly the rounded weights */
    denoiser_params_download(&apart, back);
    CHECK_SAME_BITS(back, q, (size_t)n);

    float got[2 * 512], want[2 * 512], f32[2 * 512];
    denoiser_forward(&apart, got, f.x, f.t, &f.c, 2);
    denoiser_forward(&rnd, want, f.x, f.t, &f.c, 2);
    denoiser_forward(&ref, f32, f.x, f.t, &f.c, 2);
    CHECK_SAME_BITS(got, want, 2 * 512);
    double e = rel_l2(got, f32, 2 * 512);
    int64_t pa, pr, act;
    denoiser_sizes(&apart, &pa, &act);
    denoiser_sizes(&ref, &pr, &act);
    printf("  DiT base %s: ||out - out_f32|| / ||out_f32|| = %.3g (bound %.0e); weights %lld against %lld bytes\n",
           nn_base_name(base), e, bound, (long long)pa, (long long)pr);
    CHECK(e > 0 && e <= bound);
    CHECK(pa < pr);

    /* another model's f32 weights (EMA into the samples' model) land as an upload does */
    struct tensor dev;
    CHECK_INT(k_alloc(&f.k, &dev, KDT_F32, n), 0);
    float *z = calloc((size_t)n, sizeof *z);
    denoiser_params_upload(&apart, z);
    k_upload(&f.k, dev, p, n);
    denoiser_weights_set(&apart, dev);
    denoiser_params_download(&apart, back);
    CHECK_SAME_BITS(back, q, (size_t)n);
    k_free(&f.k, &dev);
    free(z);
    free(p), free(q), free(back);
    denoiser_free(&ref), denoiser_free(&apart), denoiser_free(&rnd);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

TEST(base_dit_bf16_is_the_model_with_bf16_weights)
{
    dit_stored_equals_rounded(NN_BASE_BF16, BOUND_BF16);
}

TEST(base_dit_fp8_is_the_model_with_e4m3_row_scaled_weights)
{
    dit_stored_equals_rounded(NN_BASE_FP8, BOUND_FP8);
}

/* LoRA on qkv and proj of d, with random A and B (B is zero at a real
 * start, which would test nothing); the adapter's host values in *h. */
static void lora_on(struct denoiser *d, struct nn_lora *l, struct nn_lora_binding *b)
{
    struct nn_lora_module *mods;
    size_t n;
    CHECK_INT(denoiser_lora_targets(d, "qkv,proj", 4, 8.0f, 0, &mods, &n), 0);
    CHECK_INT(nn_lora_create(l, mods, n), 0);
    free(mods);
    CHECK_INT(nn_lora_alloc(l, d->ctx, KDT_F32, 1), 0);
    float *h = malloc((size_t)l->table.total * sizeof *h);
    struct rng_stream s = rng_stream(3, RNG_NOISE, 1, 2);
    rng_normal_f32(&s, 0, (size_t)l->table.total, h);
    for (int64_t i = 0; i < l->table.total; i++)
        h[i] *= 0.1f;
    nn_weights_upload(&l->w, h);
    free(h);
    CHECK_INT(denoiser_lora_bind(d, l, b), 0);
}

/* The adapter's gradients through a stored base (one scratch widened again
 * for backward, and for checkpointing's recomputation) equal those through
 * the f32 model of the rounded weights. */
static void lora_through(enum nn_base base, enum denoiser_memory plan)
{
    struct dit_case f;
    dit_case_init(&f);
    struct denoiser apart, rnd;
    CHECK_INT(denoiser_create(&apart, &f.mc, &f.k, 2,
                              (enum denoiser_memory)(plan | DENOISER_MEM_FROZEN | DENOISER_MEM_BASE(base)), KDT_F32),
              0);
    CHECK(apart.grads.data == NULL && apart.params.data == NULL);
    CHECK_INT(denoiser_create(&rnd, &f.mc, &f.k, 2, (enum denoiser_memory)(DENOISER_MEM_TRAIN | DENOISER_MEM_FROZEN),
                              KDT_F32),
              0);
    const int64_t n = rnd.n_params;
    float *p = test_denoiser_random_params(&f.mc, n, 11), *q = malloc((size_t)n * sizeof *q);
    rounded(rnd.table, base, p, q);
    denoiser_params_upload(&apart, p);
    denoiser_params_upload(&rnd, q);
    struct nn_lora la, lr;
    struct nn_lora_binding ba, br;
    lora_on(&apart, &la, &ba);
    lora_on(&rnd, &lr, &br);
    float got[2 * 512], want[2 * 512];
    denoiser_forward(&apart, got, f.x, f.t, &f.c, 2);
    denoiser_forward(&rnd, want, f.x, f.t, &f.c, 2);
    CHECK_SAME_BITS(got, want, 2 * 512);
    nn_weights_zero_grads(&la.w);
    nn_weights_zero_grads(&lr.w);
    denoiser_backward(&apart, f.dout, 2);
    denoiser_backward(&rnd, f.dout, 2);
    const int64_t nl = la.table.total;
    float *ga = malloc((size_t)nl * sizeof *ga), *gr = malloc((size_t)nl * sizeof *gr);
    nn_weights_grads_download(&la.w, ga);
    nn_weights_grads_download(&lr.w, gr);
    if (plan == DENOISER_MEM_CHECKPOINT)
        CHECK_REL(ga, gr, (size_t)nl, 1e-5); /* recomputed blocks sum in another order */
    else
        CHECK_SAME_BITS(ga, gr, (size_t)nl);
    free(ga), free(gr), free(p), free(q);
    nn_lora_free(&la), nn_lora_free(&lr);
    denoiser_free(&apart), denoiser_free(&rnd);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

TEST(base_lora_trains_through_an_fp8_base)
{
    lora_through(NN_BASE_FP8, DENOISER_MEM_TRAIN);
}

TEST(base_lora_trains_through_a_bf16_base_with_checkpointing)
{
    lora_through(NN_BASE_BF16, DENOISER_MEM_CHECKPOINT);
}

TEST(base_that_trains_cannot_be_stored_apart)
{
    struct dit_case f;
    dit_case_init(&f);
    struct denoiser d;
    CHECK_INT(denoiser_create(&d, &f.mc, &f.k, 2, (enum denoiser_memory)(DENOISER_MEM_TRAIN | DENOISER_MEM_BASE(NN_BASE_FP8)),
                              KDT_F32),
              -1);
    CHECK(strstr(err_get(), "--base-weight-dtype fp8 is for a frozen base") != NULL);
    /* f32 on the CPU is the compute dtype itself: nothing to store apart */
    CHECK_INT(denoiser_create(&d, &f.mc, &f.k, 2, (enum denoiser_memory)(DENOISER_MEM_TRAIN | DENOISER_MEM_BASE(NN_BASE_F32)),
                              KDT_F32),
              0);
    denoiser_free(&d);
    enum nn_base b;
    CHECK_INT(nn_base_parse("fp8", &b), 0);
    CHECK_INT((int)b, (int)NN_BASE_FP8);
    CHECK_INT(nn_base_parse("int4", &b), -1);
    CHECK(strstr(err_get(), "'int4'") != NULL);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

/* The tiny F-Lite of tests/fixtures/flite: its fused qkv, cross-attention
 * and patch embedding all read stored weights. */
TEST(base_flite_fp8_is_the_model_with_e4m3_row_scaled_weights)
{
    struct denoiser_config mc;
    float *p = NULL;
    if (denoiser_config_load_dir(&mc, test_source_path("fixtures/flite/rv_bias"), &p) != 0) {
        test_fail(__FILE__, __LINE__, "%s", err_get());
        return;
    }
    const int C = 4, H = 8, W = 12, L = 7, Dc = 24;
    const struct denoiser_spec fit = {.channels = C, .height = H, .width = W, .text_len = L};
    CHECK_INT(denoiser_config_fit(&mc, &fit), 0);
    struct kctx k;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 1), 0);
    const enum nn_base bases[] = {NN_BASE_BF16, NN_BASE_FP8};
    const double bounds[] = {BOUND_BF16, BOUND_FP8};
    const size_t no = (size_t)2 * C * H * W;
    float *x = malloc(no * sizeof *x), *ctx = malloc((size_t)2 * L * Dc * sizeof *ctx);
    struct rng_stream s = rng_stream(21, RNG_NOISE, 0, 0);
    rng_normal_f32(&s, 0, no, x);
    rng_normal_f32(&s, no, (size_t)2 * L * Dc, ctx);
    float T[2] = {120, 850};
    struct cond cd = {.text = ctx, .text_len = L, .text_dim = Dc};
    for (int i = 0; i < 2; i++) {
        struct denoiser ref, apart, rnd;
        CHECK_INT(denoiser_create(&ref, &mc, &k, 2, DENOISER_MEM_INFERENCE, KDT_F32), 0);
        CHECK_INT(denoiser_create(&apart, &mc, &k, 2,
                                  (enum denoiser_memory)(DENOISER_MEM_INFERENCE | DENOISER_MEM_BASE(bases[i])), KDT_F32),
                  0);
        CHECK_INT(denoiser_create(&rnd, &mc, &k, 2, DENOISER_MEM_INFERENCE, KDT_F32), 0);
        float *q = malloc((size_t)ref.n_params * sizeof *q);
        rounded(ref.table, bases[i], p, q);
        denoiser_params_upload(&ref, p);
        denoiser_params_upload(&apart, p);
        denoiser_params_upload(&rnd, q);
        float *got = malloc(no * sizeof *got), *want = malloc(no * sizeof *want), *f32 = malloc(no * sizeof *f32);
        denoiser_forward(&apart, got, x, T, &cd, 2);
        denoiser_forward(&rnd, want, x, T, &cd, 2);
        denoiser_forward(&ref, f32, x, T, &cd, 2);
        CHECK_SAME_BITS(got, want, no);
        double e = rel_l2(got, f32, no);
        printf("  F-Lite base %s: ||out - out_f32|| / ||out_f32|| = %.3g (bound %.0e)\n", nn_base_name(bases[i]), e,
               bounds[i]);
        CHECK(e > 0 && e <= bounds[i]);
        free(got), free(want), free(f32), free(q);
        denoiser_free(&ref), denoiser_free(&apart), denoiser_free(&rnd);
    }
    free(x), free(ctx), free(p);
    denoiser_config_free(&mc);
    kctx_free(&k);
}

/* ---- a model that trains, its linears' gradients in bf16 -------------- */

static void grads_of(struct denoiser *d, struct dit_case *f, int micro, float *host)
{
    denoiser_zero_grads(d);
    for (int i = 0; i < micro; i++) {
        float out[2 * 512];
        f->t[0] = 10.0f + 300.0f * (float)i;
        denoiser_forward(d, out, f->x, f->t, &f->c, 2);
        denoiser_backward(d, f->dout, 2);
    }
    f->t[0] = 10;
    nn_weights_grads_download(d->w, host);
}

/* The same DiT twice: in the plain layout, and with bf16 gradients. */
static void pair_create(struct dit_case *f, struct denoiser *plain, struct denoiser *split)
{
    dit_case_init(f);
    CHECK_INT(denoiser_create(plain, &f->mc, &f->k, 2, DENOISER_MEM_TRAIN, KDT_F32), 0);
    CHECK_INT(denoiser_create(split, &f->mc, &f->k, 2,
                              (enum denoiser_memory)(DENOISER_MEM_TRAIN | DENOISER_MEM_GRADS_BF16), KDT_F32),
              0);
}

/* The bf16 gradients are the f32 ones with each micro-batch's product
 * added in once rounded; everything else is as the plain model's. */
TEST(grads_bf16_are_each_products_sum_rounded_once)
{
    struct dit_case f;
    struct denoiser plain, split;
    pair_create(&f, &plain, &split);
    CHECK(nn_weights_split(split.w) && !nn_weights_split(plain.w));
    const int64_t n = plain.n_params;
    float *p = test_denoiser_random_params(&f.mc, n, 5);
    denoiser_params_upload(&plain, p);
    denoiser_params_upload(&split, p);
    float *g1 = malloc((size_t)n * sizeof *g1), *g2 = malloc((size_t)n * sizeof *g2), *gs = malloc((size_t)n * sizeof *gs);
    float *want = malloc((size_t)n * sizeof *want);
    /* one micro-batch: the linears' gradients rounded, the rest exact */
    grads_of(&plain, &f, 1, g1);
    grads_of(&split, &f, 1, gs);
    const struct nn_params *t = plain.table;
    for (size_t i = 0; i < t->count; i++)
        for (int64_t j = 0; j < t->p[i].n; j++) {
            const float g = g1[t->p[i].offset + j];
            want[t->p[i].offset + j] = t->p[i].linear ? bf16_to_f32(f32_to_bf16(g)) : g;
        }
    CHECK_SAME_BITS(gs, want, (size_t)n);
    /* two: round(round(a) + b), a and b each micro-batch's own product */
    float *a = malloc((size_t)n * sizeof *a);
    memcpy(a, g1, (size_t)n * sizeof *a);
    grads_of(&plain, &f, 2, g2); /* a + b, in f32 */
    grads_of(&split, &f, 2, gs);
    int64_t off_linear = 0;
    for (size_t i = 0; i < t->count; i++)
        if (t->p[i].linear && t->p[i].n > 64) {
            off_linear = t->p[i].offset;
            break;
        }
    double worst = 0;
    for (int64_t j = 0; j < 64; j++) {
        const float ra = bf16_to_f32(f32_to_bf16(a[off_linear + j]));
        const float b = g2[off_linear + j] - a[off_linear + j]; /* the second product, to f32 rounding */
        const float w2 = bf16_to_f32(f32_to_bf16(ra + b));
        double d = fabs((double)gs[off_linear + j] - w2) / (fabs(w2) + 1e-30);
        worst = d > worst ? d : worst;
    }
    CHECK(worst <= 1.0 / 128); /* one bf16 ulp: b is only known to f32 rounding here */
    double sq = 0;
    for (int64_t j = 0; j < n; j++)
        sq += (double)gs[j] * gs[j];
    double got = nn_weights_grads_sum_squares(split.w);
    CHECK(fabs(got - sq) <= 1e-9 * sq);
    free(a), free(g1), free(g2), free(gs), free(want), free(p);
    denoiser_free(&plain), denoiser_free(&split);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

/* Tensor by tensor (gradients apart) the optimizer computes what it does
 * in one pass over the plain layout, given the same gradients. */
static void optimizer_split_equals_flat(const char *name)
{
    struct dit_case f;
    struct denoiser plain, split;
    pair_create(&f, &plain, &split);
    const int64_t n = plain.n_params;
    float *p = test_denoiser_random_params(&f.mc, n, 6), *g = malloc((size_t)n * sizeof *g);
    denoiser_params_upload(&plain, p);
    denoiser_params_upload(&split, p);
    struct optimizer op, os;
    const struct optimizer_config oc = {0.9, 0.999, 1e-8, 0.01};
    CHECK_INT(optimizer_create(&op, name, &f.k, n, &oc, plain.table), 0);
    CHECK_INT(optimizer_create(&os, name, &f.k, n, &oc, split.table), 0);
    for (int step = 1; step <= 3; step++) {
        grads_of(&split, &f, 1, g);
        k_upload(&f.k, plain.grads, g, n); /* the plain model gets the rounded gradients */
        optimizer_step_weights(&op, plain.w, 0.5, 1e-3, step);
        optimizer_step_weights(&os, split.w, 0.5, 1e-3, step);
        denoiser_params_download(&split, g);
        denoiser_params_download(&plain, p);
        CHECK_SAME_BITS(g, p, (size_t)n);
    }
    optimizer_free(&op), optimizer_free(&os);
    free(p), free(g);
    denoiser_free(&plain), denoiser_free(&split);
    denoiser_config_free(&f.mc);
    kctx_free(&f.k);
}

TEST(grads_bf16_adamw_tensor_by_tensor_equals_one_pass)
{
    optimizer_split_equals_flat("adamw");
}

TEST(grads_bf16_adamw8bit_tensor_by_tensor_equals_one_pass)
{
    optimizer_split_equals_flat("adamw8bit");
}
