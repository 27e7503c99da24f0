/* Production shapes on the CUDA backend, as dry runs of the emulator
 * (DIT_CUDA_EMU_DRYRUN, tests/cuda_emu/cuda_emu.h): shapes far too large to
 * compute here, checked for what only they can break. Every op of
 * kernels/kernels.h in f32, bf16 and f16 at DiT-XL/2's 256 px shapes (T 256,
 * C 1152, 16 heads of 72, MLP 4608, 1001 labels, batch 512 as sampling with
 * guidance runs it) and at F-Lite-like 1024 px shapes (T 4096, C 3072, 24
 * heads of 128, MLP 12288, batch 64: MLP activations of 3.2e9 elements, past
 * int32), then the whole DiT-XL/2 forward and backward at batch 256, a
 * training step through the trainer, and sampling's forward at batch 512.
 *
 * In "last" mode every launch has its configuration checked as sm_90 checks
 * it (grid and block limits, dynamic shared memory against the kernel's
 * limit, pointer arguments inside live allocations) and runs its last block
 * (the largest block index, where offsets are largest) over reserved,
 * lazily mapped device memory: an offset past an allocation faults in its
 * guard, and in the SANITIZE=1 build UBSan names an int product that
 * overflows. No value is checked: a test passes when nothing aborts and
 * cudaGetLastError() stays clean.
 *
 * On a GPU (make test-cuda) the dry run does not exist, and these shapes do
 * not fit one device at once: every test here passes with a note. */
#include "tests/cuda/cuda_test_util.h"
#include "libcommon/error.h"
#include "models/dit/dit.h"
#include "models/dit/denoiser.h"
#include "train/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Defined by the emulator only (tests/cuda_emu/emu.cc): a weak reference is
 * NULL in the GPU build. */
extern int emu_dryrun_supported(void) __attribute__((weak));
/* The CUDA runtime's (C linkage; cudaError_t is an int-sized enum). */
extern int cudaGetLastError(void);

/* Starts a dry run of the given mode; 0 (the test passes) without the emulator. */
static int dry_start(const char *mode)
{
    if (!emu_dryrun_supported) {
        fprintf(stderr, "    skipped: production-shape dry runs need the CUDA emulator\n");
        return 0;
    }
    setenv("DIT_CUDA_EMU_DRYRUN", mode, 1);
    return 1;
}

static void dry_end(struct kctx *ctx)
{
    k_sync(ctx);
    CHECK_INT(cudaGetLastError(), 0);
}

struct shape {
    const char *name;
    int B, T, C, NH, MLP;
    int CH, H, p, CO; /* latents [B, CH, H, H], patch p, out channels CO */
    int rows;         /* label table */
    int64_t nparams;  /* the optimizer's flat vector; 0: DiT-XL/2's own count */
};

/* DiT-XL/2 at 256 px; batch 512: sampling with guidance doubles 256. */
static const struct shape DIT_XL2 = {"DiT-XL/2", 512, 256, 1152, 16, 4608, 4, 32, 2, 8, 1001, 0};
/* F-Lite-like at 1024 px: 128 x 128 latents of 16 channels, patch 2. The
 * optimizer vector is cut to 3e9 (past int32, and within 80 GB as four f32
 * tensors and a copy). */
static const struct shape FLITE = {"F-Lite 1024px", 64, 4096, 3072, 24, 12288, 16, 128, 2, 16,
                                   1001, 3000000000};

static struct dit_config xl2(void)
{
    struct dit_config cfg;
    if (dit_config_by_name(&cfg, "DiT-XL/2", 32) != 0)
        test_fail(__FILE__, __LINE__, "dit_config_by_name: %s", err_get());
    return cfg;
}

static struct tensor dev(struct kctx *ctx, enum kdtype dt, int64_t n)
{
    return test_tensor(ctx, dt, NULL, (size_t)n);
}

static void say(const struct shape *s, enum kdtype dt, const char *what)
{
    fprintf(stderr, "    %s %s: %s\n", s->name, kdtype_name(dt), what);
}

/* The Linear layers of a block: qkv, the MLP pair, the adaLN modulation. */
static void dry_linear(struct kctx *ctx, const struct shape *s, enum kdtype dt)
{
    const int M = s->B * s->T, C = s->C, F = s->MLP;
    say(s, dt, "linear");
    {
        struct tensor x = dev(ctx, dt, (int64_t)M * C), y = dev(ctx, dt, (int64_t)M * 3 * C);
        struct tensor w = dev(ctx, dt, (int64_t)3 * C * C), b = dev(ctx, dt, 3 * C);
        struct tensor dw = dev(ctx, KDT_F32, (int64_t)3 * C * C), db = dev(ctx, KDT_F32, 3 * C);
        k_linear_forward(ctx, y, x, w, b, M, C, 3 * C);
        k_linear_backward(ctx, x, dw, db, y, x, w, M, C, 3 * C);
        k_gemm(ctx, y, x, w, M, 3 * C, C, 0, 1, 1.0f, 0.0f);
        k_gemm(ctx, w, y, x, 3 * C, C, M, 1, 0, 1.0f, 1.0f); /* y^T x, K = M */
        k_free(ctx, &x), k_free(ctx, &y), k_free(ctx, &w), k_free(ctx, &b);
        k_free(ctx, &dw), k_free(ctx, &db);
    }
    {
        struct tensor x = dev(ctx, dt, (int64_t)M * C), h = dev(ctx, dt, (int64_t)M * F);
        struct tensor pre = dev(ctx, dt, (int64_t)M * F);
        struct tensor w1 = dev(ctx, dt, (int64_t)F * C), b1 = dev(ctx, dt, F);
        struct tensor dw = dev(ctx, KDT_F32, (int64_t)F * C), db = dev(ctx, KDT_F32, F);
        k_linear_gelu_forward(ctx, h, pre, x, w1, b1, M, C, F);
        k_linear_backward(ctx, x, dw, db, h, x, w1, M, C, F);   /* fc1: dout [M, F] */
        k_free(ctx, &pre);
        struct tensor dh = dev(ctx, dt, (int64_t)M * F), dbc = dev(ctx, KDT_F32, C);
        k_linear_backward(ctx, dh, dw, dbc, x, h, w1, M, F, C); /* fc2: [M, F] -> [M, C] */
        k_free(ctx, &x), k_free(ctx, &h), k_free(ctx, &dh), k_free(ctx, &w1), k_free(ctx, &b1);
        k_free(ctx, &dw), k_free(ctx, &db), k_free(ctx, &dbc);
    }
    {
        struct tensor c = dev(ctx, dt, (int64_t)s->B * C);
        struct tensor mod = dev(ctx, dt, (int64_t)s->B * 6 * C);
        struct tensor w = dev(ctx, dt, (int64_t)6 * C * C), b = dev(ctx, dt, 6 * C);
        struct tensor dw = dev(ctx, KDT_F32, (int64_t)6 * C * C), db = dev(ctx, KDT_F32, 6 * C);
        k_linear_forward(ctx, mod, c, w, b, s->B, C, 6 * C);
        k_linear_backward(ctx, c, dw, db, mod, c, w, s->B, C, 6 * C);
        k_free(ctx, &c), k_free(ctx, &mod), k_free(ctx, &w), k_free(ctx, &b);
        k_free(ctx, &dw), k_free(ctx, &db);
    }
}

/* LayerNorm, modulate, the fused adaLN and the gated residual, with shift,
 * scale and gate as rows of a [B, 6C] modulation buffer. */
static void dry_norms(struct kctx *ctx, const struct shape *s, enum kdtype dt)
{
    const int B = s->B, T = s->T, C = s->C, M = B * T, ms = 6 * C;
    const int64_t n = (int64_t)M * C, nmod = (int64_t)(B - 1) * ms + C;
    say(s, dt, "norms");
    struct tensor x = dev(ctx, dt, n), y = dev(ctx, dt, n), d = dev(ctx, dt, n);
    struct tensor mean = dev(ctx, KDT_F32, M), rstd = dev(ctx, KDT_F32, M);
    struct tensor mod = dev(ctx, dt, (int64_t)B * ms), dmod = dev(ctx, dt, (int64_t)B * ms);
    struct tensor shift = tensor_view(mod, 0, nmod), scale = tensor_view(mod, C, nmod);
    struct tensor gate = tensor_view(mod, 2 * C, nmod);
    struct tensor dshift = tensor_view(dmod, 0, nmod), dscale = tensor_view(dmod, C, nmod);
    struct tensor dgate = tensor_view(dmod, 2 * C, nmod);
    k_layernorm_forward(ctx, y, mean, rstd, x, M, C, 1e-6f);
    k_layernorm_backward(ctx, d, y, x, mean, rstd, M, C);
    k_modulate_forward(ctx, y, x, shift, scale, B, T, C, ms);
    k_modulate_backward(ctx, d, dshift, dscale, y, x, scale, B, T, C, ms);
    k_modulate_backward(ctx, d, tensor_none(), tensor_none(), y, x, scale, B, T, C, ms);
    k_adaln_forward(ctx, y, mean, rstd, x, shift, scale, B, T, C, ms, 1e-6f);
    k_adaln_backward(ctx, d, dshift, dscale, y, x, mean, rstd, scale, B, T, C, ms);
    k_adaln_backward(ctx, d, tensor_none(), tensor_none(), y, x, mean, rstd, scale, B, T, C, ms);
    k_gated_residual_forward(ctx, x, x, y, gate, B, T, C, ms);
    k_gated_residual_forward(ctx, d, x, y, gate, B, T, C, ms);
    k_gated_residual_backward(ctx, d, dgate, y, x, gate, B, T, C, ms);
    k_gated_residual_backward(ctx, d, tensor_none(), y, x, gate, B, T, C, ms);
    k_free(ctx, &x), k_free(ctx, &y), k_free(ctx, &d), k_free(ctx, &mean), k_free(ctx, &rstd);
    k_free(ctx, &mod), k_free(ctx, &dmod);
}

static void dry_activations(struct kctx *ctx, const struct shape *s, enum kdtype dt)
{
    const int64_t n = (int64_t)s->B * s->T * s->MLP;
    say(s, dt, "activations");
    struct tensor x = dev(ctx, dt, n), y = dev(ctx, dt, n);
    k_gelu_forward(ctx, y, x, n);
    k_gelu_backward(ctx, x, y, x, n);
    k_free(ctx, &y);
    struct tensor c = dev(ctx, dt, (int64_t)s->B * s->C), sc = dev(ctx, dt, (int64_t)s->B * s->C);
    k_silu_forward(ctx, sc, c, (int64_t)s->B * s->C);
    k_silu_backward(ctx, c, sc, c, (int64_t)s->B * s->C);
    k_silu_forward(ctx, x, x, n); /* SiLU over a huge tensor too: the same map */
    k_free(ctx, &x), k_free(ctx, &c), k_free(ctx, &sc);
}

static void dry_attention(struct kctx *ctx, const struct shape *s, enum kdtype dt)
{
    const int B = s->B, T = s->T, C = s->C, NH = s->NH;
    say(s, dt, "attention");
    struct tensor qkv = dev(ctx, dt, (int64_t)B * T * 3 * C);
    struct tensor dqkv = dev(ctx, dt, (int64_t)B * T * 3 * C);
    struct tensor out = dev(ctx, dt, (int64_t)B * T * C), dout = dev(ctx, dt, (int64_t)B * T * C);
    struct tensor lse = dev(ctx, KDT_F32, (int64_t)B * NH * T);
    struct tensor scratch = dev(ctx, KDT_F32, k_attention_scratch(ctx, B, T, NH));
    /* A block of the tensor-core kernels walks all T keys through emulated
     * wmma (seconds at T = 4096, a minute under ASan): f16 runs the same
     * template as bf16, with the same offsets, so its last blocks are left
     * to bf16 and only its launches are checked. */
    const int config_only = T > 1024 && dt == KDT_F16;
    if (config_only)
        setenv("DIT_CUDA_EMU_DRYRUN", "1", 1);
    k_attention_forward(ctx, out, lse, qkv, scratch, B, T, C, NH);
    k_attention_backward(ctx, dqkv, dout, out, lse, qkv, scratch, B, T, C, NH);
    if (config_only)
        setenv("DIT_CUDA_EMU_DRYRUN", "last", 1);
    k_free(ctx, &qkv), k_free(ctx, &dqkv), k_free(ctx, &out), k_free(ctx, &dout);
    k_free(ctx, &lse), k_free(ctx, &scratch);
}

/* Patches, embeddings and the elementwise ops of the model's edges. */
static void dry_edges(struct kctx *ctx, const struct shape *s, enum kdtype dt)
{
    const int B = s->B, T = s->T, C = s->C, H = s->H, p = s->p;
    const int64_t nimg = (int64_t)B * s->CH * H * H, nout = (int64_t)B * s->CO * H * H;
    const int64_t n = (int64_t)B * T * C;
    say(s, dt, "patches, embeddings, elementwise");
    struct tensor img = dev(ctx, dt, nimg), tok = dev(ctx, dt, nimg);
    k_patchify_forward(ctx, tok, img, B, s->CH, H, H, p);
    k_free(ctx, &tok);
    struct tensor oimg = dev(ctx, dt, nout), otok = dev(ctx, dt, nout);
    k_unpatchify_forward(ctx, oimg, otok, B, s->CO, H, H, p);
    k_unpatchify_backward(ctx, otok, oimg, B, s->CO, H, H, p);
    float loss = k_mse_forward_backward(ctx, otok, oimg, oimg, nout, 1.0f);
    CHECK(loss == 0.0f); /* a dry run's memory reads as zeros on the host */
    k_free(ctx, &img), k_free(ctx, &oimg), k_free(ctx, &otok);

    struct tensor table = dev(ctx, dt, (int64_t)s->rows * C);
    struct tensor dtable = dev(ctx, KDT_F32, (int64_t)s->rows * C);
    struct tensor ids = dev(ctx, KDT_F32, B), t = dev(ctx, KDT_F32, B); /* int32 and f32 */
    struct tensor yemb = dev(ctx, dt, (int64_t)B * C);
    struct tensor temb = dev(ctx, dt, (int64_t)B * DIT_FREQ_DIM);
    k_embedding_forward(ctx, yemb, table, (const int32_t *)ids.data, B, C);
    k_embedding_backward(ctx, dtable, yemb, (const int32_t *)ids.data, B, C);
    k_timestep_embedding(ctx, temb, (const float *)t.data, B, DIT_FREQ_DIM, DIT_MAX_PERIOD, 0.0f);
    k_free(ctx, &table), k_free(ctx, &dtable), k_free(ctx, &ids), k_free(ctx, &t);
    k_free(ctx, &yemb), k_free(ctx, &temb);

    struct tensor a = dev(ctx, dt, n), b = dev(ctx, dt, n), pos = dev(ctx, dt, (int64_t)T * C);
    k_add_broadcast_forward(ctx, b, a, pos, B, T, C);
    k_add(ctx, b, a, b, n);
    k_axpy(ctx, b, 0.5f, a, n);
    k_fill(ctx, a, 1.0f, n);
    k_scale(ctx, a, 0.5f, n);
    CHECK(k_sum_squares(ctx, a, n) == 0.0);
    k_copy(ctx, b, a, n);
    k_free(ctx, &a), k_free(ctx, &b), k_free(ctx, &pos);
}

/* AdamW with the compute copy, the EMA, the norm and the conversions over
 * the whole flat parameter vector. */
static void dry_optimizer(struct kctx *ctx, const struct shape *s, enum kdtype dt)
{
    struct dit_config cfg = xl2();
    const int64_t n = s->nparams ? s->nparams : dit_param_count(&cfg);
    say(s, dt, "optimizer");
    struct tensor p = dev(ctx, KDT_F32, n), g = dev(ctx, KDT_F32, n);
    struct tensor m = dev(ctx, KDT_F32, n), v = dev(ctx, KDT_F32, n);
    struct tensor copy = dt == KDT_F32 ? tensor_none() : dev(ctx, dt, n);
    struct adamw_params hp = {1e-4, 0.9, 0.999, 1e-8, 0.0, 1};
    k_adamw_update(ctx, p, g, m, v, copy, n, &hp);
    CHECK(k_sum_squares(ctx, g, n) == 0.0);
    k_scale(ctx, g, 0.5f, n);
    k_fill(ctx, g, 0.0f, n);
    if (dt != KDT_F32) {
        k_convert(ctx, copy, p, n);
        k_convert(ctx, g, copy, n);
        k_free(ctx, &copy);
    }
    k_free(ctx, &m), k_free(ctx, &v);
    k_ema_update(ctx, g, p, 0.9999f, n);
    k_free(ctx, &p), k_free(ctx, &g);
}

typedef void (*dry_group)(struct kctx *ctx, const struct shape *s, enum kdtype dt);

/* One group of ops at shape s in f32, bf16 and f16, each dtype on a context
 * of its own. */
static void dry_ops(const struct shape *s, dry_group group)
{
    static const enum kdtype dts[3] = {KDT_F32, KDT_BF16, KDT_F16};
    if (!dry_start("last"))
        return;
    for (int i = 0; i < 3; i++) {
        struct kctx ctx = cuda_test_ctx();
        group(&ctx, s, dts[i]);
        dry_end(&ctx);
        int64_t now, peak;
        k_mem_usage(&ctx, &now, &peak);
        CHECK(peak <= (int64_t)80 << 30);
        kctx_free(&ctx);
    }
}

TEST(dry_dit_xl2_linear) { dry_ops(&DIT_XL2, dry_linear); }
TEST(dry_dit_xl2_norms) { dry_ops(&DIT_XL2, dry_norms); }
TEST(dry_dit_xl2_activations) { dry_ops(&DIT_XL2, dry_activations); }
TEST(dry_dit_xl2_attention) { dry_ops(&DIT_XL2, dry_attention); }
TEST(dry_dit_xl2_edges) { dry_ops(&DIT_XL2, dry_edges); }
TEST(dry_dit_xl2_optimizer) { dry_ops(&DIT_XL2, dry_optimizer); }
TEST(dry_flite_1024px_linear) { dry_ops(&FLITE, dry_linear); }
TEST(dry_flite_1024px_norms) { dry_ops(&FLITE, dry_norms); }
TEST(dry_flite_1024px_activations) { dry_ops(&FLITE, dry_activations); }
TEST(dry_flite_1024px_attention) { dry_ops(&FLITE, dry_attention); }
TEST(dry_flite_1024px_edges) { dry_ops(&FLITE, dry_edges); }
TEST(dry_flite_1024px_optimizer) { dry_ops(&FLITE, dry_optimizer); }

/* The dry run's own promises, through the public interface: an arena far
 * larger than this machine's memory is reserved and counted, copies into
 * it are skipped, copies out of it read zeros, and what does not fit the
 * device's 80 GB is still refused. */
TEST(dry_run_memory_is_reserved_not_filled)
{
    if (!dry_start("1"))
        return;
    struct kctx ctx = cuda_test_ctx();
    struct tensor big;
    const int64_t n = (int64_t)15 << 30; /* 60 GiB of f32 */
    CHECK_INT(k_alloc(&ctx, &big, KDT_F32, n), 0);
    int64_t now, peak;
    k_mem_usage(&ctx, &now, &peak);
    CHECK(now >= n * 4);
    float host[4] = {1, 2, 3, 4}, back[4] = {9, 9, 9, 9};
    k_upload(&ctx, tensor_view(big, n - 4, 4), host, 4);
    k_download(&ctx, back, tensor_view(big, n - 4, 4), 4);
    for (int i = 0; i < 4; i++)
        CHECK(back[i] == 0.0f);
    k_fill(&ctx, big, 1.0f, n); /* a launch over all of it: checked, not run */
    struct tensor more;
    CHECK(k_alloc(&ctx, &more, KDT_F32, (int64_t)6 << 30) != 0); /* 24 GiB more: over 80 */
    CHECK_CONTAINS(err_get(), "out of GPU memory");
    dry_end(&ctx);
    k_free(&ctx, &big);
    kctx_free(&ctx);
}

/* ---- the whole model ------------------------------------------------------- */

/* A model of batch B in dt on a dry-run context; 0 when it cannot be made
 * (the failure is recorded). */
static const char *const MEM_NAME[] = {"training", "checkpointing", "inference"};

static int dry_model(struct dit_model *m, struct kctx *ctx, int B, enum dit_memory mem,
                     enum kdtype dt)
{
    struct dit_config cfg = xl2();
    if (dit_model_create(m, &cfg, ctx, B, mem, dt) != 0) {
        test_fail(__FILE__, __LINE__, "DiT-XL/2 at batch %d in %s (%s plan): %s", B,
                  kdtype_name(dt), MEM_NAME[mem], err_get());
        return 0;
    }
    int64_t pbytes, abytes;
    dit_model_sizes(m, &pbytes, &abytes);
    fprintf(stderr,
            "    DiT-XL/2 batch %d %s, %s plan: %.1f GiB of parameters, %.1f GiB of "
            "activations\n",
            B, kdtype_name(dt), MEM_NAME[mem], (double)pbytes / (1 << 30),
            (double)abytes / (1 << 30));
    return 1;
}

static void dry_forward_backward(int B, enum dit_memory mem, enum kdtype dt)
{
    if (!dry_start("last"))
        return;
    struct kctx ctx = cuda_test_ctx();
    struct dit_model m;
    if (dry_model(&m, &ctx, B, mem, dt)) {
        const int H = m.cfg.input_size;
        float *x = calloc((size_t)B * m.cfg.in_channels * H * H, sizeof *x);
        float *out = malloc((size_t)B * dit_out_channels(&m.cfg) * H * H * sizeof *out);
        float *dout = calloc((size_t)B * dit_out_channels(&m.cfg) * H * H, sizeof *dout);
        float *t = calloc((size_t)B, sizeof *t);
        int32_t *y = calloc((size_t)B, sizeof *y);
        for (int i = 0; i < B; i++)
            y[i] = i % dit_table_rows(&m.cfg);
        dit_zero_grads(&m);
        dit_forward(&m, out, x, t, y, B);
        dit_backward(&m, dout, B);
        dry_end(&ctx);
        free(x), free(out), free(dout), free(t), free(y);
        dit_model_free(&m);
    }
    kctx_free(&ctx);
}

TEST(dry_dit_xl2_forward_backward_batch_256_bf16)
{
    dry_forward_backward(256, DIT_MEM_TRAIN, KDT_BF16);
}

TEST(dry_dit_xl2_forward_backward_batch_256_f32_checkpointing)
{
    dry_forward_backward(256, DIT_MEM_CHECKPOINT, KDT_F32);
}

/* Sampling with classifier-free guidance: the model runs 2 x 256, with the
 * forward-only memory plan dit-sample uses. */
TEST(dry_dit_xl2_sampling_forward_batch_512_bf16)
{
    if (!dry_start("last"))
        return;
    struct kctx ctx = cuda_test_ctx();
    struct dit_model m;
    const int B = 512;
    if (dry_model(&m, &ctx, B, DIT_MEM_INFERENCE, KDT_BF16)) {
        const int H = m.cfg.input_size;
        float *x = calloc((size_t)B * m.cfg.in_channels * H * H, sizeof *x);
        float *out = malloc((size_t)B * dit_out_channels(&m.cfg) * H * H * sizeof *out);
        float *t = calloc((size_t)B, sizeof *t);
        int32_t *y = calloc((size_t)B, sizeof *y);
        dit_forward(&m, out, x, t, y, B);
        dry_end(&ctx);
        free(x), free(out), free(t), free(y);
        dit_model_free(&m);
    }
    kctx_free(&ctx);
}

/* One optimizer step of the DDPM objective at batch 256: the trainer's
 * draws, AdamW with the compute copy, clipping, the EMA. f16 runs with
 * dynamic loss scaling. */
static void dry_training_step(enum kdtype dt)
{
    if (!dry_start("last"))
        return;
    struct kctx ctx = cuda_test_ctx();
    struct dit_model m;
    const int B = 256;
    if (dry_model(&m, &ctx, B, DIT_MEM_TRAIN, dt)) {
        struct trainer_config tc = {.objective = OBJECTIVE_DDPM, .lr = 1e-4, .beta1 = 0.9,
                                    .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0,
                                    .schedule = LR_CONSTANT, .total_steps = 1, .grad_accum = 1,
                                    .max_grad_norm = 1.0, .ema_decay = 0.9999, .seed = 1,
                                    .loss_scaling = dt == KDT_F16};
        struct trainer tr;
        struct denoiser dn;
        if (dit_denoiser_wrap(&dn, &m) != 0 || trainer_init(&tr, &dn, &tc) != 0) {
            test_fail(__FILE__, __LINE__, "trainer_init: %s", err_get());
        } else {
            const int H = m.cfg.input_size;
            float *x = calloc((size_t)B * m.cfg.in_channels * H * H, sizeof *x);
            int32_t *labels = calloc((size_t)B, sizeof *labels);
            uint64_t *records = malloc((size_t)B * sizeof *records);
            for (int i = 0; i < B; i++) {
                labels[i] = i % m.cfg.num_classes;
                records[i] = (uint64_t)i;
            }
            trainer_micro_step(&tr, x, &(struct cond){.labels = labels}, records, B, 0);
            trainer_optimizer_step(&tr);
            dry_end(&ctx);
            free(x), free(labels), free(records);
            trainer_free(&tr);
            denoiser_free(&dn);
        }
        dit_model_free(&m);
    }
    kctx_free(&ctx);
}

TEST(dry_dit_xl2_training_step_batch_256_bf16)
{
    dry_training_step(KDT_BF16);
}

TEST(dry_dit_xl2_training_step_batch_256_f16_loss_scaling)
{
    dry_training_step(KDT_F16);
}
