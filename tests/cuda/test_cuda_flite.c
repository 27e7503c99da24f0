/* F-Lite on CUDA against F-Lite's own goldens (tests/fixtures/flite, from
 * tests/reference/make_flite_goldens.py) and against the CPU backend:
 * forward and every parameter's gradient in f32 (1e-5 / 1e-4 of the
 * goldens, as on the CPU) and with bf16 activations (1e-2 of the goldens
 * norm-wise; gradients of the CPU's within a few 1e-2), with and without
 * residual_v and the trainable norms, and with gradient checkpointing. */
#include "tests/cuda/cuda_test_util.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"
#include "models/flite/flite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fl_case {
    struct flite_config cfg;
    float *params, *x, *T, *ctx, *dout, *out;
    struct st_file *g;
    int B, C, H, W, L, Dc;
};

static int64_t dim_of(const struct st_file *g, const char *name, int k)
{
    const struct st_tensor *t = st_find(g, name);
    return t && k < t->ndim ? t->shape[k] : 0;
}

static int case_open(struct fl_case *d, const char *name)
{
    memset(d, 0, sizeof *d);
    char rel[256];
    snprintf(rel, sizeof rel, "../fixtures/flite/%s", name);
    if (flite_load_dir(test_source_path(rel), &d->cfg, &d->params) != 0) {
        test_fail(__FILE__, __LINE__, "flite_load_dir %s: %s", rel, err_get());
        return -1;
    }
    snprintf(rel, sizeof rel, "../fixtures/flite/%s_golden.safetensors", name);
    d->g = test_goldens_open(rel);
    if (!d->g)
        return -1;
    d->B = (int)dim_of(d->g, "x", 0), d->C = (int)dim_of(d->g, "x", 1);
    d->H = (int)dim_of(d->g, "x", 2), d->W = (int)dim_of(d->g, "x", 3);
    d->L = (int)dim_of(d->g, "context", 1), d->Dc = (int)dim_of(d->g, "context", 2);
    const size_t img = (size_t)d->B * d->C * d->H * d->W;
    d->x = test_golden_f32(d->g, "x", img);
    float *t = test_golden_f32(d->g, "t", (size_t)d->B);
    d->T = malloc((size_t)d->B * sizeof *d->T);
    for (int i = 0; i < d->B; i++)
        d->T[i] = t[i] * 1000.0f;
    free(t);
    d->ctx = test_golden_f32(d->g, "context", (size_t)d->B * d->L * d->Dc);
    d->dout = test_golden_f32(d->g, "dout", img);
    d->out = test_golden_f32(d->g, "out", img);
    d->cfg.height = d->H, d->cfg.width = d->W, d->cfg.text_len = d->L;
    return 0;
}

static void case_close(struct fl_case *d)
{
    free(d->params), free(d->x), free(d->T), free(d->ctx), free(d->dout), free(d->out);
    st_close(d->g);
}

static void run(struct kctx *k, struct fl_case *d, enum kdtype dt, enum denoiser_memory mem, float **out,
                float **grads)
{
    struct flite_model m;
    if (flite_model_create(&m, &d->cfg, k, d->B, mem, dt) != 0) {
        test_fail(__FILE__, __LINE__, "flite_model_create: %s", err_get());
        *out = *grads = NULL;
        return;
    }
    nn_weights_upload(&m.w, d->params);
    const size_t img = (size_t)d->B * d->C * d->H * d->W;
    *out = malloc(img * sizeof **out);
    CHECK_INT(flite_forward(&m, *out, d->x, d->T, d->ctx, NULL, d->L, d->B, d->H, d->W), 0);
    flite_backward(&m, d->dout, d->B);
    *grads = malloc((size_t)m.n_params * sizeof **grads);
    nn_weights_grads_download(&m.w, *grads);
    flite_model_free(&m);
}

static void check(const char *name, enum kdtype dt, enum denoiser_memory mem)
{
    struct fl_case d;
    if (case_open(&d, name) != 0)
        return;
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    float *out, *grads, *cout, *cgrads;
    run(&gpu, &d, dt, mem, &out, &grads);
    run(&cpu, &d, KDT_F32, DENOISER_MEM_TRAIN, &cout, &cgrads);
    if (!out || !cout)
        goto done;
    const size_t img = (size_t)d.B * d.C * d.H * d.W;
    char what[160];
    snprintf(what, sizeof what, "%s %s out vs F-Lite", name, kdtype_name(dt));
    CHECK_PARITY(what, out, d.out, img, tol_for(dt));
    struct nn_params table;
    CHECK_INT(flite_param_table(&d.cfg, &table, NULL), 0);
    for (size_t i = 0; i < table.count; i++) {
        const struct nn_param *p = &table.p[i];
        snprintf(what, sizeof what, "%s %s grad %s vs the CPU", name, kdtype_name(dt), p->name);
        /* A gradient that is zero on the CPU (block 0's lambda) must be on CUDA too. */
        test_check_parity(__FILE__, __LINE__, what, grads + p->offset, cgrads + p->offset, (size_t)p->n,
                          dt == KDT_F32 ? 1e-4 : 5e-2);
    }
    nn_params_free(&table);
done:
    free(out), free(grads), free(cout), free(cgrads);
    kctx_free(&cpu), kctx_free(&gpu);
    case_close(&d);
}

TEST(flite_f32_matches_f_lite_and_the_cpu)
{
    check("rv_bias", KDT_F32, DENOISER_MEM_TRAIN);
    check("plain", KDT_F32, DENOISER_MEM_TRAIN);
}

TEST(flite_bf16_matches_f_lite_and_the_cpu)
{
    check("rv_bias", KDT_BF16, DENOISER_MEM_TRAIN);
    check("plain", KDT_BF16, DENOISER_MEM_TRAIN);
}

TEST(flite_checkpointing_on_cuda_matches)
{
    check("rv_bias", KDT_F32, DENOISER_MEM_CHECKPOINT);
}
