/* The whole DiT on CUDA against the CPU backend: forward, backward, and
 * training steps through the trainer (objective, AdamW with the compute
 * copy, EMA), in f32 (relative error 1e-5) and in bf16 mixed precision
 * (1e-2). A tiny configuration with every parameter random, so that no
 * adaLN-Zero weight hides a path. */
#include "tests/cuda/cuda_test_util.h"
#include "libcommon/error.h"
#include "models/dit/dit.h"
#include "models/dit/denoiser.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct dit_config tiny(int depth, int hidden, int heads)
{
    struct dit_config c = {
        .input_size = 8, .patch_size = 2, .in_channels = 4, .hidden_size = hidden, .depth = depth,
        .num_heads = heads, .mlp_ratio = 4.0f, .num_classes = 10, .class_dropout_prob = 0.1f,
        .learn_sigma = 1, .norm_eps = 1e-6f, .mlp_norm_eps = 1e-6f, .freq_shift = 0.0f,
    };
    return c;
}

/* Random parameters of a size that keeps activations O(1). */
static float *random_params(const struct dit_config *cfg, uint64_t seed)
{
    int64_t n = dit_param_count(cfg);
    return test_randn((size_t)n, seed, 0.05f);
}

struct run {
    float *out, *grads, *params_after;
};

/* One forward and backward of batch B on ctx in dt, from the same inputs. */
static struct run forward_backward(struct kctx *ctx, const struct dit_config *cfg, enum kdtype dt,
                                   int B, int checkpointing)
{
    struct dit_model m;
    if (dit_model_create(&m, cfg, ctx, B, checkpointing, dt) != 0)
        test_fail(__FILE__, __LINE__, "dit_model_create: %s", err_get());
    float *params = random_params(cfg, 5);
    dit_params_upload(&m, params);
    const int H = cfg->input_size, CI = cfg->in_channels, CO = dit_out_channels(cfg);
    size_t nin = (size_t)B * CI * H * H, nout = (size_t)B * CO * H * H;
    float *x = test_randn(nin, 6, 1.0f), *dout = test_randn(nout, 7, 1.0f);
    float t[8];
    int32_t y[8];
    for (int i = 0; i < B; i++) {
        t[i] = (float)(i * 377 % 1000);
        y[i] = i % (cfg->num_classes + 1); /* the null class too */
    }
    struct run r;
    r.out = malloc(nout * sizeof *r.out);
    r.grads = malloc((size_t)m.n_params * sizeof *r.grads);
    r.params_after = NULL;
    dit_forward(&m, r.out, x, t, y, B);
    dit_zero_grads(&m);
    dit_backward(&m, dout, B);
    dit_grads_download(&m, r.grads);
    free(params), free(x), free(dout);
    dit_model_free(&m);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out), free(r->grads), free(r->params_after);
}

/* Per parameter tensor, so that a failure names the layer. */
static void check_grads(const struct dit_config *cfg, const float *got, const float *want,
                        double tol)
{
    struct nn_params table;
    CHECK_INT(dit_param_table(cfg, &table, NULL), 0);
    for (size_t i = 0; i < table.count; i++)
        test_check_parity(__FILE__, __LINE__, table.p[i].name, got + table.p[i].offset,
                          want + table.p[i].offset, (size_t)table.p[i].n, tol);
    nn_params_free(&table);
}

static void check_model(enum kdtype dt, int checkpointing)
{
    struct dit_config cfg = tiny(2, 32, 4);
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    struct run want = forward_backward(&cpu, &cfg, KDT_F32, 3, 0);
    struct run got = forward_backward(&gpu, &cfg, dt, 3, checkpointing);
    size_t nout = (size_t)3 * dit_out_channels(&cfg) * 8 * 8;
    CHECK_PARITY("out", got.out, want.out, nout, tol_for(dt));
    /* bf16 activations through two blocks and back: gradients of small
     * tensors wander further than outputs, still within a few 1e-2. */
    check_grads(&cfg, got.grads, want.grads, dt == KDT_F32 ? 1e-5 : 3e-2);
    run_free(&want), run_free(&got);
    kctx_free(&cpu), kctx_free(&gpu);
}

TEST(dit_forward_backward_f32_matches_cpu)
{
    check_model(KDT_F32, 0);
}

TEST(dit_forward_backward_bf16_matches_cpu)
{
    check_model(KDT_BF16, 0);
}

TEST(dit_gradient_checkpointing_on_cuda_matches_cpu)
{
    check_model(KDT_F32, 1);
}

/* Two optimizer steps of the DDPM objective through the trainer; mem: where
 * the linears live (DIT_MEM_BASE, DIT_MEM_GRADS_BF16; 0: the plain layout). */
static float *train_two_steps(struct kctx *ctx, enum kdtype dt, int mem, float **ema_out)
{
    struct dit_config cfg = tiny(2, 32, 4);
    const int B = 4;
    struct dit_model m;
    if (dit_model_create(&m, &cfg, ctx, B, (enum dit_memory)mem, dt) != 0)
        test_fail(__FILE__, __LINE__, "dit_model_create: %s", err_get());
    float *params = random_params(&cfg, 9);
    dit_params_upload(&m, params);
    struct trainer_config tc = {.objective = OBJECTIVE_DDPM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
                                .eps = 1e-8, .weight_decay = 0.01, .schedule = LR_CONSTANT,
                                .total_steps = 2, .grad_accum = 1, .max_grad_norm = 1.0,
                                .ema_decay = 0.99, .seed = 3, .loss_scaling = dt == KDT_F16};
    struct trainer tr;
    struct denoiser dn;
    if (dit_denoiser_wrap(&dn, &m) != 0 || trainer_init(&tr, &dn, &tc) != 0)
        test_fail(__FILE__, __LINE__, "trainer_init: %s", err_get());
    float *x = test_randn((size_t)B * 4 * 64, 10, 1.0f);
    int32_t labels[4] = {0, 3, 7, 9};
    uint64_t records[4] = {11, 12, 13, 14};
    for (int step = 0; step < 2; step++) {
        double loss = trainer_micro_step(&tr, x, &(struct cond){.labels = labels}, records, B, step);
        if (!isfinite(loss))
            test_fail(__FILE__, __LINE__, "loss %g at step %d", loss, step);
        trainer_optimizer_step(&tr);
    }
    float *after = malloc((size_t)m.n_params * sizeof *after);
    *ema_out = malloc((size_t)m.n_params * sizeof **ema_out);
    dit_params_download(&m, after);
    k_download(ctx, *ema_out, tr.ema, m.n_params);
    trainer_free(&tr);
    denoiser_free(&dn);
    dit_model_free(&m);
    free(params), free(x);
    return after;
}

static double norm_error(const float *got, const float *want, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        den += (double)want[i] * want[i];
    }
    return sqrt(num / den);
}

static void check_training(enum kdtype dt, int cpu_mem, int gpu_mem)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    float *ema_want, *ema_got;
    float *want = train_two_steps(&cpu, KDT_F32, cpu_mem, &ema_want);
    float *got = train_two_steps(&gpu, dt, gpu_mem, &ema_got);
    struct dit_config cfg = tiny(2, 32, 4);
    /* The parameters moved by lr * (a unit step) from the same start: the
     * update itself is compared, relative to its own size. */
    size_t n = (size_t)dit_param_count(&cfg);
    float *start = random_params(&cfg, 9);
    for (size_t i = 0; i < n; i++) {
        want[i] -= start[i], got[i] -= start[i];
        ema_want[i] -= start[i], ema_got[i] -= start[i];
    }
    if (dt == KDT_F32 && !(cpu_mem & DIT_MEM_GRADS_BF16)) {
        CHECK_PARITY("parameter update", got, want, n, 1e-4);
        CHECK_PARITY("ema update", ema_got, ema_want, n, 1e-4);
    } else {
        /* AdamW's first steps move each weight by about lr * sign(gradient):
         * where a gradient is near zero, bf16 rounding flips that sign and
         * the element differs by 2 lr. Elementwise bounds mean nothing
         * there; the update as a whole must still agree (the gradients
         * themselves are compared elementwise above). bf16 gradients flip
         * them the same way. */
        double e1 = norm_error(got, want, n), e2 = norm_error(ema_got, ema_want, n);
        fprintf(stderr, "    %s: update relative error %.3g, ema %.3g\n", kdtype_name(dt), e1, e2);
        CHECK(e1 < 0.1);
        CHECK(e2 < 0.1);
    }
    free(want), free(got), free(ema_want), free(ema_got), free(start);
    kctx_free(&cpu), kctx_free(&gpu);
}

TEST(dit_training_steps_f32_match_cpu)
{
    check_training(KDT_F32, 0, 0);
}

TEST(dit_training_steps_bf16_match_cpu)
{
    check_training(KDT_BF16, 0, 0);
}

TEST(dit_training_steps_f16_with_loss_scaling_match_cpu)
{
    check_training(KDT_F16, 0, 0);
}

/* A model that reads its linears from the f32 master (no compute copy of
 * them) computes the same bits as one with the full bf16 copy: the
 * per-layer conversion rounds as the refresh does. */
TEST(dit_training_from_the_master_alone_is_the_same_bits)
{
    struct kctx gpu = cuda_test_ctx();
    float *ema_full, *ema_master;
    float *full = train_two_steps(&gpu, KDT_BF16, 0, &ema_full);
    float *master = train_two_steps(&gpu, KDT_BF16, DIT_MEM_BASE(NN_BASE_F32), &ema_master);
    struct dit_config cfg = tiny(2, 32, 4);
    const size_t n = (size_t)dit_param_count(&cfg);
    CHECK(memcmp(full, master, n * sizeof *full) == 0);
    CHECK(memcmp(ema_full, ema_master, n * sizeof *ema_full) == 0);
    free(full), free(master), free(ema_full), free(ema_master);
    kctx_free(&gpu);
}

/* The linears' gradients in bf16, on CUDA as on the CPU: in f32 compute,
 * and in bf16 with the linears read from the master. */
TEST(dit_training_with_bf16_gradients_matches_cpu)
{
    check_training(KDT_F32, DIT_MEM_GRADS_BF16, DIT_MEM_GRADS_BF16);
    check_training(KDT_BF16, DIT_MEM_GRADS_BF16, DIT_MEM_GRADS_BF16 | DIT_MEM_BASE(NN_BASE_F32));
}

TEST(dit_device_memory_is_counted_and_released)
{
    struct kctx gpu = cuda_test_ctx();
    struct dit_config cfg = tiny(1, 32, 2);
    struct dit_model m;
    int64_t now0, peak0, now1, peak1;
    k_mem_usage(&gpu, &now0, &peak0);
    CHECK_INT(dit_model_create(&m, &cfg, &gpu, 2, 0, KDT_BF16), 0);
    k_mem_usage(&gpu, &now1, &peak1);
    int64_t pbytes, abytes;
    dit_model_sizes(&m, &pbytes, &abytes);
    CHECK(now1 - now0 >= pbytes + abytes);
    dit_model_free(&m);
    k_mem_usage(&gpu, &now1, &peak1);
    CHECK(now1 == now0);
    CHECK(peak1 >= pbytes + abytes);
    kctx_free(&gpu);
}

/* The inference plan on the device in bf16 (no f32 master copy: the host
 * values are rounded on upload, as k_convert rounds them on the device)
 * gives the training plan's outputs bit for bit, and holds less. */
TEST(dit_inference_plan_bf16_matches_training_plan)
{
    struct kctx gpu = cuda_test_ctx();
    struct dit_config cfg = tiny(2, 32, 2);
    const int B = 3, H = cfg.input_size, CO = dit_out_channels(&cfg);
    size_t nout = (size_t)B * CO * H * H;
    float *params = random_params(&cfg, 5), *x = test_randn((size_t)B * cfg.in_channels * H * H, 6, 1.0f);
    float t[3] = {0.0f, 377.0f, 999.0f};
    int32_t y[3] = {0, 4, 10};
    float *out[2];
    int64_t pbytes[2], abytes[2];
    for (int mode = 0; mode < 2; mode++) {
        struct dit_model m;
        CHECK_INT(dit_model_create(&m, &cfg, &gpu, B, mode ? DIT_MEM_INFERENCE : DIT_MEM_TRAIN, KDT_BF16), 0);
        CHECK(mode == 0 || (m.params.data == NULL && m.grads.data == NULL));
        dit_params_upload(&m, params);
        out[mode] = malloc(nout * sizeof(float));
        dit_forward(&m, out[mode], x, t, y, B);
        dit_model_sizes(&m, &pbytes[mode], &abytes[mode]);
        dit_model_free(&m);
    }
    CHECK(memcmp(out[0], out[1], nout * sizeof(float)) == 0);
    CHECK(abytes[1] * 2 < abytes[0]);
    CHECK(pbytes[1] * 5 == pbytes[0]); /* bf16 weights only, against f32 master + f32 grads + bf16 */
    free(out[0]), free(out[1]), free(params), free(x);
    kctx_free(&gpu);
}
