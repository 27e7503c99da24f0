/* LoRA on CUDA: PEFT's adapter (tests/fixtures/lora) on the tiny F-Lite,
 * frozen, through the denoiser seam: the output against PEFT's golden and
 * the adapter's gradients (dropout on, the same Philox masks) against the
 * CPU backend's, in f32 and with bf16 activations, with and without
 * gradient checkpointing, and on a base stored apart in bf16 or fp8 (the
 * CPU's model of the same storage is the reference). */
#include "tests/cuda/cuda_test_util.h"
#include "libcommon/error.h"
#include "libcommon/names.h"
#include "libcommon/safetensors.h"
#include "models/denoiser.h"
#include "train/lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lora_run {
    float *out, *grads; /* [2, 4, 8, 12] and the adapter's gradients */
    int64_t n;
};

/* The model frozen on k with the adapter (dropout p), one forward and backward. */
static int lora_run(struct kctx *k, enum kdtype dt, int mem, float p, struct lora_run *r)
{
    memset(r, 0, sizeof *r);
    struct denoiser_config mc;
    float *params = NULL;
    if (denoiser_config_load_dir(&mc, test_source_path("../fixtures/flite/rv_bias"), &params) != 0) {
        test_fail(__FILE__, __LINE__, "%s", err_get());
        return -1;
    }
    const struct denoiser_spec fit = {.channels = 4, .height = 8, .width = 12, .text_len = 7};
    CHECK_INT(denoiser_config_fit(&mc, &fit), 0);
    struct denoiser d;
    CHECK_INT(denoiser_create(&d, &mc, k, 2, (enum denoiser_memory)(mem | DENOISER_MEM_FROZEN), dt), 0);
    denoiser_params_upload(&d, params);
    free(params);
    struct lora_file f;
    CHECK_INT(lora_file_read(test_source_path("../fixtures/lora/peft/adapter_model.safetensors"), &f), 0);
    struct nn_lora_module *mods;
    size_t nm;
    float *host;
    int64_t total;
    CHECK_INT(lora_files_combine(&f, (const float[]){1.0f}, 1, d.kind, d.table, &mods, &nm, &host, &total), 0);
    struct nn_lora l;
    struct nn_lora_binding b;
    CHECK_INT(nn_lora_create(&l, mods, nm), 0);
    l.dropout = p, l.seed = 3;
    CHECK_INT(nn_lora_alloc(&l, k, dt, 1), 0);
    nn_weights_upload(&l.w, host);
    CHECK_INT(denoiser_lora_bind(&d, &l, &b), 0);
    struct st_file *g = test_goldens_open("../fixtures/lora/golden.safetensors");
    const size_t img = 2 * 4 * 8 * 12;
    float *x = test_golden_f32(g, "x", img), *t = test_golden_f32(g, "t", 2);
    float *ctx = test_golden_f32(g, "context", 2 * 7 * 24);
    for (int i = 0; i < 2; i++)
        t[i] *= 1000.0f;
    const uint64_t rec[2] = {4, 9};
    nn_lora_binding_batch(&b, rec, 2, 1, 1);
    struct cond cd = {.text = ctx, .text_len = 7, .text_dim = 24};
    r->out = malloc(img * sizeof *r->out);
    denoiser_forward(&d, r->out, x, t, &cd, 2);
    float *dout = malloc(img * sizeof *dout);
    for (size_t i = 0; i < img; i++)
        dout[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    nn_weights_zero_grads(&l.w);
    denoiser_backward(&d, dout, 2);
    r->n = l.table.total;
    r->grads = malloc((size_t)r->n * sizeof *r->grads);
    nn_weights_grads_download(&l.w, r->grads);
    free(x), free(t), free(ctx), free(dout), free(mods), free(host);
    st_close(g);
    lora_file_free(&f);
    nn_lora_unbind(&b);
    nn_lora_free(&l);
    denoiser_free(&d);
    denoiser_config_free(&mc);
    return 0;
}

static void check(enum kdtype dt, int mem)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    struct lora_run c = {0}, u = {0}, c0 = {0};
    const int base = mem & NN_MEM_BASE_MASK, cmem = DENOISER_MEM_TRAIN | base;
    if (lora_run(&gpu, dt, mem, 0.1f, &u) == 0 && lora_run(&cpu, KDT_F32, cmem, 0.1f, &c) == 0 &&
        lora_run(&cpu, KDT_F32, cmem, 0.0f, &c0) == 0) {
        char what[128];
        snprintf(what, sizeof what, "%s%s%s%s adapter grads vs the CPU", kdtype_name(dt),
                 (mem & ~NN_MEM_BASE_MASK) == DENOISER_MEM_CHECKPOINT ? " checkpointing" : "",
                 base ? ", base " : "", base ? nn_base_name(nn_mem_base(mem)) : "");
        test_check_parity(__FILE__, __LINE__, what, u.grads, c.grads, (size_t)u.n, dt == KDT_F32 ? 1e-4 : 5e-2);
        snprintf(what, sizeof what, "%s out vs the CPU", kdtype_name(dt));
        test_check_parity(__FILE__, __LINE__, what, u.out, c.out, 2 * 4 * 8 * 12, tol_for(dt));
        /* dropout changes the output: the masks were drawn on both */
        CHECK(memcmp(c.out, c0.out, 2 * 4 * 8 * 12 * sizeof(float)) != 0);
    }
    free(c.out), free(c.grads), free(u.out), free(u.grads), free(c0.out), free(c0.grads);
    kctx_free(&cpu), kctx_free(&gpu);
}

TEST(lora_f32_on_cuda_matches_the_cpu)
{
    check(KDT_F32, DENOISER_MEM_TRAIN);
}

TEST(lora_bf16_on_cuda_matches_the_cpu)
{
    check(KDT_BF16, DENOISER_MEM_TRAIN);
}

TEST(lora_checkpointing_on_cuda_matches)
{
    check(KDT_F32, DENOISER_MEM_CHECKPOINT);
}

TEST(lora_on_an_fp8_base_on_cuda_matches_the_cpu)
{
    check(KDT_F32, DENOISER_MEM_TRAIN | DENOISER_MEM_BASE(NN_BASE_FP8));
    check(KDT_BF16, DENOISER_MEM_CHECKPOINT | DENOISER_MEM_BASE(NN_BASE_FP8));
}

TEST(lora_on_a_bf16_base_on_cuda_matches_the_cpu)
{
    check(KDT_F32, DENOISER_MEM_CHECKPOINT | DENOISER_MEM_BASE(NN_BASE_BF16));
}
