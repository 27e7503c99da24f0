/* nn/: the parameter table and its views, and the linear layer with its
 * adapter hook and frozen bases. */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "nn/linear.h"
#include "nn/params.h"

#include <stdio.h>
#include <stdlib.h>

TEST(params_table_lays_entries_out_in_order_with_views)
{
    struct nn_params t = {0};
    struct nn_linear conv, fc;
    nn_linear_addf(&conv, &t, 1, 4, (int64_t[]){5, 3, 2, 2}, "embed.proj");
    nn_params_add(&t, "table.weight", 2, (int64_t[]){7, 5});
    nn_linear_addf(&fc, &t, 0, 2, (int64_t[]){4, 5}, "blocks.%d.fc", 3);
    nn_linear_addf(NULL, &t, 1, 2, (int64_t[]){2, 4}, "head");
    CHECK_INT(nn_params_done(&t), 0);
    CHECK_INT(t.count, 6);
    static const char *names[] = {"embed.proj.weight", "embed.proj.bias", "table.weight",
                                  "blocks.3.fc.weight", "head.weight", "head.bias"};
    static const int64_t sizes[] = {60, 5, 35, 20, 8, 2};
    int64_t off = 0;
    for (size_t i = 0; i < t.count; i++) {
        CHECK_STR(t.p[i].name, names[i]);
        CHECK_INT(t.p[i].offset, off);
        CHECK_INT(t.p[i].n, sizes[i]);
        CHECK_INT(t.p[i].trainable, 1);
        off += sizes[i];
    }
    CHECK_INT(t.total, off);
    CHECK_INT(t.p[0].ndim, 4);
    CHECK_INT(t.p[0].shape[3], 2);
    /* A kernel [out, CH, P, P] is a linear over its flattened patch. */
    CHECK_INT(conv.in, 12);
    CHECK_INT(conv.out, 5);
    CHECK_INT(conv.weight_id, 0);
    CHECK_INT(conv.bias_id, 1);
    CHECK_INT(fc.in, 5);
    CHECK_INT(fc.weight_id, 3);
    CHECK(fc.bias_id == NN_NO_ENTRY);
    CHECK(nn_params_find(&t, "table.weight") == &t.p[2]);
    CHECK(nn_params_find(&t, "table") == NULL);
    t.p[2].trainable = 0;
    CHECK_INT(nn_params_trainable(&t), off - 35);

    float *w = calloc((size_t)t.total, sizeof *w), *g = calloc((size_t)t.total, sizeof *g);
    struct tensor v = nn_params_view(&t, tensor_f32(w, t.total), 2);
    CHECK(v.data == w + 65);
    CHECK_INT(v.n, 35);
    nn_linear_bind(&fc, &t, tensor_f32(w, t.total), tensor_f32(g, t.total));
    CHECK(fc.weight.data == w + 100 && fc.weight.n == 20);
    CHECK(fc.dweight.data == g + 100);
    CHECK(fc.bias.data == NULL && fc.dbias.data == NULL);
    CHECK_INT(fc.trainable, 1);
    CHECK_INT(fc.storage, KDT_F32);
    /* Without a gradient buffer the gradient views are absent. */
    nn_linear_bind(&conv, &t, tensor_f32(w, t.total), tensor_none());
    CHECK(conv.bias.data == w + 60 && conv.dweight.data == NULL && conv.dbias.data == NULL);
    nn_params_free(&t);

    /* Errors wait for nn_params_done. */
    struct nn_params bad = {0};
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    nn_linear_addf(NULL, &bad, 1, 2, (int64_t[]){2, 2}, "%s", longname);
    CHECK_INT(nn_params_done(&bad), -1);
    CHECK_CONTAINS(err_get(), "parameter table");
    nn_params_free(&bad);
    free(w);
    free(g);
}

/* A test adapter: out += scale * inp D^T with its own matrix D [out, in]
 * (LoRA's B A merged into one), counting its calls. */
struct delta {
    const float *d;
    float *dd; /* its gradient, accumulated */
    float scale;
    int forwards, backwards;
};

static void delta_forward(const struct nn_adapter *a, struct kctx *k, const struct nn_linear *l,
                          struct tensor out, struct tensor inp, int M)
{
    struct delta *s = a->ctx;
    float *o = out.data;
    const float *x = inp.data;
    for (int m = 0; m < M; m++)
        for (int j = 0; j < l->out; j++)
            for (int i = 0; i < l->in; i++)
                o[m * l->out + j] += s->scale * x[m * l->in + i] * s->d[j * l->in + i];
    s->forwards++;
}

static void delta_backward(const struct nn_adapter *a, struct kctx *k, const struct nn_linear *l,
                           struct tensor dinp, struct tensor dout, struct tensor inp, int M)
{
    struct delta *s = a->ctx;
    float *di = dinp.data;
    const float *go = dout.data, *x = inp.data;
    for (int m = 0; m < M; m++)
        for (int j = 0; j < l->out; j++)
            for (int i = 0; i < l->in; i++) {
                if (di)
                    di[m * l->in + i] += s->scale * go[m * l->out + j] * s->d[j * l->in + i];
                s->dd[j * l->in + i] += s->scale * go[m * l->out + j] * x[m * l->in + i];
            }
    s->backwards++;
}

enum { ROWS = 3, NIN = 4, NOUT = 5 };

/* One linear [NOUT, NIN] with bias over a small table, values fixed. */
static void small_linear(struct nn_params *t, struct nn_linear *l, float *w, float *g, const float *vals)
{
    memset(t, 0, sizeof *t);
    nn_linear_addf(l, t, 1, 2, (int64_t[]){NOUT, NIN}, "fc");
    CHECK_INT(nn_params_done(t), 0);
    memcpy(w, vals, (size_t)t->total * sizeof *w);
    memset(g, 0, (size_t)t->total * sizeof *g);
}

static float value(int i)
{
    return (float)((i * 37) % 17 - 8) / 8.0f;
}

TEST(linear_adapter_contribution_lands_in_output_and_gradients)
{
    struct kctx k;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 1), 0);
    const int NP = NOUT * NIN + NOUT;
    float vals[NOUT * NIN + NOUT], merged[NOUT * NIN + NOUT], d[NOUT * NIN];
    for (int i = 0; i < NP; i++)
        vals[i] = value(i);
    const float scale = 0.5f;
    for (int i = 0; i < NOUT * NIN; i++)
        d[i] = value(3 * i + 1);
    /* The merged layer W + scale D is what the adapted one must equal. */
    memcpy(merged, vals, sizeof vals);
    for (int i = 0; i < NOUT * NIN; i++)
        merged[i] += scale * d[i];
    float x[ROWS * NIN], dout[ROWS * NOUT];
    for (int i = 0; i < ROWS * NIN; i++)
        x[i] = value(5 * i + 2);
    for (int i = 0; i < ROWS * NOUT; i++)
        dout[i] = value(7 * i + 3);

    struct nn_params ta, tm;
    struct nn_linear la, lm;
    float wa[NOUT * NIN + NOUT], ga[NOUT * NIN + NOUT], wm[NOUT * NIN + NOUT], gm[NOUT * NIN + NOUT];
    small_linear(&ta, &la, wa, ga, vals);
    small_linear(&tm, &lm, wm, gm, merged);
    nn_linear_bind(&la, &ta, tensor_f32(wa, NP), tensor_f32(ga, NP));
    nn_linear_bind(&lm, &tm, tensor_f32(wm, NP), tensor_f32(gm, NP));
    float dd[NOUT * NIN] = {0};
    struct delta s = {d, dd, scale, 0, 0};
    struct nn_adapter adapter = {delta_forward, delta_backward, &s};
    la.adapter = &adapter;

    float ya[ROWS * NOUT], ym[ROWS * NOUT], pa[ROWS * NOUT], pm[ROWS * NOUT];
    nn_linear_forward(&k, &la, tensor_f32(ya, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    nn_linear_forward(&k, &lm, tensor_f32(ym, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    CHECK_INT(s.forwards, 1);
    for (int i = 0; i < ROWS * NOUT; i++)
        CHECK_NEAR(ya[i], ym[i], 1e-5);
    /* The GELU variant applies GELU to the sum, adapter included. */
    nn_linear_gelu_forward(&k, &la, tensor_f32(ya, ROWS * NOUT), tensor_f32(pa, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    nn_linear_gelu_forward(&k, &lm, tensor_f32(ym, ROWS * NOUT), tensor_f32(pm, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    CHECK_INT(s.forwards, 2);
    for (int i = 0; i < ROWS * NOUT; i++) {
        CHECK_NEAR(pa[i], pm[i], 1e-5);
        CHECK_NEAR(ya[i], ym[i], 1e-5);
    }

    float dxa[ROWS * NIN], dxm[ROWS * NIN];
    nn_linear_backward(&k, &la, tensor_f32(dxa, ROWS * NIN), tensor_f32(dout, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    nn_linear_backward(&k, &lm, tensor_f32(dxm, ROWS * NIN), tensor_f32(dout, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    CHECK_INT(s.backwards, 1);
    for (int i = 0; i < ROWS * NIN; i++)
        CHECK_NEAR(dxa[i], dxm[i], 1e-5);
    /* The base's gradients are the merged layer's (the same dout and x);
     * the adapter's own gradient is scale times the weight gradient. */
    for (int i = 0; i < NP; i++)
        CHECK_NEAR(ga[i], gm[i], 1e-6);
    for (int i = 0; i < NOUT * NIN; i++)
        CHECK_NEAR(dd[i], scale * gm[i], 1e-5);
    /* No input gradient wanted: the adapter still gets its own. */
    nn_linear_backward(&k, &la, tensor_none(), tensor_f32(dout, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    CHECK_INT(s.backwards, 2);
    CHECK_NEAR(dd[0], 2 * scale * gm[0], 1e-5);
    nn_params_free(&ta);
    nn_params_free(&tm);
    kctx_free(&k);
}

TEST(frozen_linear_writes_no_weight_gradient)
{
    struct kctx k;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 1), 0);
    const int NP = NOUT * NIN + NOUT;
    float vals[NOUT * NIN + NOUT];
    for (int i = 0; i < NP; i++)
        vals[i] = value(i);
    float x[ROWS * NIN], dout[ROWS * NOUT];
    for (int i = 0; i < ROWS * NIN; i++)
        x[i] = value(5 * i + 2);
    for (int i = 0; i < ROWS * NOUT; i++)
        dout[i] = value(7 * i + 3);
    struct nn_params tt, tf;
    struct nn_linear lt, lf;
    float wt[NOUT * NIN + NOUT], gt[NOUT * NIN + NOUT], wf[NOUT * NIN + NOUT], gf[NOUT * NIN + NOUT];
    small_linear(&tt, &lt, wt, gt, vals);
    small_linear(&tf, &lf, wf, gf, vals);
    /* Frozen in the table: the layer reads it at bind. */
    tf.p[lf.weight_id].trainable = tf.p[lf.bias_id].trainable = 0;
    nn_linear_bind(&lt, &tt, tensor_f32(wt, NP), tensor_f32(gt, NP));
    nn_linear_bind(&lf, &tf, tensor_f32(wf, NP), tensor_f32(gf, NP));
    CHECK_INT(lt.trainable, 1);
    CHECK_INT(lf.trainable, 0);
    for (int i = 0; i < NP; i++)
        gf[i] = 42.0f; /* untouched, not even overwritten with zeros */
    float dxt[ROWS * NIN], dxf[ROWS * NIN];
    nn_linear_backward(&k, &lt, tensor_f32(dxt, ROWS * NIN), tensor_f32(dout, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    nn_linear_backward(&k, &lf, tensor_f32(dxf, ROWS * NIN), tensor_f32(dout, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    CHECK(memcmp(dxt, dxf, sizeof dxt) == 0);
    int untouched = 1, nonzero = 0;
    for (int i = 0; i < NP; i++) {
        untouched &= gf[i] == 42.0f;
        nonzero |= gt[i] != 0.0f;
    }
    CHECK(untouched);
    CHECK(nonzero);
    /* The flag decides at backward time, whatever the views. */
    lf.trainable = 1;
    nn_linear_backward(&k, &lf, tensor_f32(dxf, ROWS * NIN), tensor_f32(dout, ROWS * NOUT), tensor_f32(x, ROWS * NIN), ROWS);
    CHECK_NEAR(gf[0], 42.0f + gt[0], 1e-5);
    nn_params_free(&tt);
    nn_params_free(&tf);
    kctx_free(&k);
}

#include "models/dit/dit.h"

static double max_rel(const float *a, const float *b, int64_t n)
{
    double err = 0, scale = 1e-12;
    for (int64_t i = 0; i < n; i++) {
        err = fmax(err, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return err / scale;
}

/* An adapter on one linear of a model reaches it without the model's code:
 * the DiT with the test adapter on a block's fc1 (the fused GELU path)
 * equals the DiT with that delta merged into the weight, and under gradient
 * checkpointing the adapter runs again in the recomputed forward. */
TEST(adapter_on_a_dit_linear_equals_merged_weights)
{
    struct dit_config cfg = {
        .input_size = 8, .patch_size = 2, .in_channels = 4, .hidden_size = 32, .depth = 2,
        .num_heads = 4, .mlp_ratio = 4.0f, .num_classes = 10, .class_dropout_prob = 0.1f,
        .learn_sigma = 1, .norm_eps = 1e-6f, .mlp_norm_eps = 1e-6f, .freq_shift = 0.0f,
    };
    struct kctx k;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 0), 0);
    struct dit_model a, b;
    const int B = 2, n_out = B * 8 * 8 * 8;
    CHECK_INT(dit_model_create(&a, &cfg, &k, B, DIT_MEM_CHECKPOINT, KDT_F32), 0);
    CHECK_INT(dit_model_create(&b, &cfg, &k, B, DIT_MEM_TRAIN, KDT_F32), 0);
    float *p = malloc((size_t)a.n_params * sizeof *p);
    dit_init(&cfg, p, 5);
    /* adaLN-Zero gates every block off at init: perturb so they pass. */
    for (int64_t i = 0; i < a.n_params; i++)
        p[i] += 0.01f * (float)((i * 7919) % 13 - 6);
    dit_params_upload(&a, p);
    struct nn_linear *fa = &a.layers.blocks[1].fc1;
    const int64_t nw = (int64_t)fa->out * fa->in;
    float *d = malloc((size_t)nw * sizeof *d), *dd = calloc((size_t)nw, sizeof *dd);
    const float scale = 0.25f;
    for (int64_t i = 0; i < nw; i++)
        d[i] = 0.05f * value((int)(i % 1000));
    const struct nn_param *e = nn_params_find(&b.table, "blocks.1.mlp.fc1.weight");
    CHECK(e && e->n == nw);
    for (int64_t i = 0; e && i < nw; i++)
        p[e->offset + i] += scale * d[i];
    dit_params_upload(&b, p);

    float x[2 * 256], t[2] = {20, 700}, *dout = malloc((size_t)n_out * sizeof *dout);
    int32_t y[2] = {3, 10};
    for (int i = 0; i < 2 * 256; i++)
        x[i] = value(i);
    for (int i = 0; i < n_out; i++)
        dout[i] = value(3 * i + 1);
    float *plain = malloc((size_t)n_out * sizeof *plain), *oa = malloc((size_t)n_out * sizeof *oa),
          *ob = malloc((size_t)n_out * sizeof *ob);
    dit_forward(&a, plain, x, t, y, B);
    struct delta s = {d, dd, scale, 0, 0};
    struct nn_adapter adapter = {delta_forward, delta_backward, &s};
    fa->adapter = &adapter;
    dit_forward(&a, oa, x, t, y, B);
    dit_forward(&b, ob, x, t, y, B);
    CHECK_INT(s.forwards, 1);
    double e_merged = max_rel(oa, ob, n_out), e_plain = max_rel(plain, ob, n_out);
    fprintf(stderr, "    adapted vs merged %.3g, without the adapter %.3g\n", e_merged, e_plain);
    CHECK(e_merged < 1e-5);
    CHECK(e_plain > 1e-3); /* the adapter changed the output */

    dit_zero_grads(&a);
    dit_zero_grads(&b);
    dit_backward(&a, dout, B);
    dit_backward(&b, dout, B);
    CHECK_INT(s.forwards, 2); /* the checkpointed block ran forward again */
    CHECK_INT(s.backwards, 1);
    float *ga = malloc((size_t)a.n_params * sizeof *ga), *gb = malloc((size_t)a.n_params * sizeof *gb);
    dit_grads_download(&a, ga);
    dit_grads_download(&b, gb);
    double eg = max_rel(ga, gb, a.n_params);
    fprintf(stderr, "    gradients: adapted vs merged %.3g\n", eg);
    CHECK(eg < 1e-4);
    int any = 0;
    for (int64_t i = 0; i < nw; i++)
        any |= dd[i] != 0.0f;
    CHECK(any);
    for (int64_t i = 0; e && i < nw; i++)
        dd[i] /= scale; /* the adapter's gradient is scale times the weight's */
    CHECK(e && max_rel(dd, gb + e->offset, nw) < 1e-4);
    free(ga), free(gb), free(plain), free(oa), free(ob), free(dout), free(d), free(dd), free(p);
    dit_model_free(&a);
    dit_model_free(&b);
    kctx_free(&k);
}

/* Frozen entries of a model's table (LoRA's base) get no gradient, the
 * label table included; what still trains gets its usual one. */
TEST(frozen_dit_entries_get_no_gradient)
{
    struct dit_config cfg = {
        .input_size = 8, .patch_size = 2, .in_channels = 4, .hidden_size = 32, .depth = 2,
        .num_heads = 4, .mlp_ratio = 4.0f, .num_classes = 10, .class_dropout_prob = 0.1f,
        .learn_sigma = 1, .norm_eps = 1e-6f, .mlp_norm_eps = 1e-6f, .freq_shift = 0.0f,
    };
    struct kctx k;
    CHECK_INT(kctx_init(&k, DEVICE_CPU, 0), 0);
    struct dit_model m, ref;
    const int B = 2, n_out = B * 8 * 8 * 8;
    CHECK_INT(dit_model_create(&m, &cfg, &k, B, DIT_MEM_TRAIN, KDT_F32), 0);
    CHECK_INT(dit_model_create(&ref, &cfg, &k, B, DIT_MEM_TRAIN, KDT_F32), 0);
    float *p = malloc((size_t)m.n_params * sizeof *p);
    dit_init(&cfg, p, 8);
    for (int64_t i = 0; i < m.n_params; i++)
        p[i] += 0.01f * (float)((i * 7919) % 13 - 6);
    dit_params_upload(&m, p);
    dit_params_upload(&ref, p);
    for (size_t i = 0; i < m.table.count; i++)
        m.table.p[i].trainable = strncmp(m.table.p[i].name, "blocks.1.attn.qkv.", 18) == 0;
    dit_layers_bind(&m.layers, &m.cfg, &m.table, m.weights, m.grads);
    CHECK_INT(nn_params_trainable(&m.table), 3 * 32 * 32 + 3 * 32);

    float x[2 * 256], t[2] = {20, 700}, *dout = malloc((size_t)n_out * sizeof *dout);
    float *out = malloc((size_t)n_out * sizeof *out);
    int32_t y[2] = {3, 10};
    for (int i = 0; i < 2 * 256; i++)
        x[i] = value(i);
    for (int i = 0; i < n_out; i++)
        dout[i] = value(3 * i + 1);
    struct dit_model *both[2] = {&m, &ref};
    for (int j = 0; j < 2; j++) {
        dit_forward(both[j], out, x, t, y, B);
        dit_zero_grads(both[j]);
        dit_backward(both[j], dout, B);
    }
    float *g = malloc((size_t)m.n_params * sizeof *g), *gr = malloc((size_t)m.n_params * sizeof *gr);
    dit_grads_download(&m, g);
    dit_grads_download(&ref, gr);
    for (size_t i = 0; i < m.table.count; i++) {
        const struct nn_param *e = &m.table.p[i];
        int zero = 1;
        for (int64_t q = 0; q < e->n; q++)
            zero &= g[e->offset + q] == 0.0f;
        if (e->trainable && memcmp(g + e->offset, gr + e->offset, (size_t)e->n * sizeof *g) != 0)
            test_fail(__FILE__, __LINE__, "%s: gradient differs from the unfrozen model's", e->name);
        if (e->trainable && zero)
            test_fail(__FILE__, __LINE__, "%s: no gradient", e->name);
        if (!e->trainable && !zero)
            test_fail(__FILE__, __LINE__, "%s: frozen but has a gradient", e->name);
    }
    free(g), free(gr), free(out), free(dout), free(p);
    dit_model_free(&m);
    dit_model_free(&ref);
    kctx_free(&k);
}
