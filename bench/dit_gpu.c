/* DiT training steps or DDPM sampling on a device, as bench/gpu's PyTorch
 * scripts measure them, printing one JSON line with the same fields.
 *
 * Usage: dit_gpu --mode train|sample [--model DiT-XL/2] [--batch 256]
 *          [--steps 20] [--warmup 3] [--latent 32] [--precision bf16|fp16|fp32]
 *          [--device cuda|cpu] [--sample-steps 250] [--cfg-scale 4]
 *          [--peak-tflops 989.4] [--checkpointing] [--depth N]
 *
 * train: the DDPM objective with learned sigma (the loss on the host, as
 * dit-train computes it), backward, AdamW (lr 1e-4, no decay) with the
 * compute copy refreshed, EMA 0.9999 — one dit-train step without data
 * loading. sample: DiT's sample.py loop, 250 DDPM steps with classifier-
 * free guidance (the batch doubled with the null class); images/s counts
 * the guided images. FLOPs are counted analytically (bench/gpu/README.md):
 * matrix products at 2 M N K, attention at 4 T^2 C per block, training at
 * three times the forward. */
#include "kernels/kernels.h"
#include "nn/precision.h"
#include "libcommon/error.h"
#include "models/dit/dit.h"
#include "models/dit/denoiser.h"
#include "diffusion/generate.h"
#include "diffusion/sampler.h"
#include "train/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Forward FLOPs of one image. */
static double forward_flops(const struct dit_config *c)
{
    const double T = dit_tokens(c), C = c->hidden_size, MH = dit_mlp_hidden(c);
    const double PP = (double)c->patch_size * c->patch_size * c->in_channels;
    const double PO = (double)c->patch_size * c->patch_size * dit_out_channels(c);
    double per_block = T * 2 * (3 * C * C + C * C + 2 * C * MH) /* qkv, proj, fc1, fc2 */
                       + 4 * T * T * C                            /* QK^T and PV */
                       + 2 * C * 6 * C;                           /* adaLN, once per image */
    return c->depth * per_block + 2 * T * PP * C + 2 * T * C * PO + 2 * C * 2 * C /* final adaLN */
           + 2 * (DIT_FREQ_DIM * C + C * C);                                    /* timestep MLP */
}

static void usage(void)
{
    fprintf(stderr, "usage: dit_gpu --mode train|sample [--model M] [--batch N] [--steps N] [--warmup N]\n"
                    "  [--latent L] [--precision bf16|fp16|fp32] [--device cuda|cpu] [--sample-steps N]\n"
                    "  [--cfg-scale S] [--peak-tflops P] [--checkpointing] [--depth N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *mode = NULL, *model = "DiT-XL/2", *precision = "bf16", *device = "cuda";
    int batch = 256, steps = 20, warmup = 3, latent = 32, sample_steps = 250, checkpointing = 0, depth = 0;
    double cfg_scale = 4.0, peak = 989.4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--checkpointing") == 0) {
            checkpointing = 1;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (strcmp(a, "--mode") == 0) mode = v;
        else if (strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--batch") == 0) batch = atoi(v);
        else if (strcmp(a, "--steps") == 0) steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0) warmup = atoi(v);
        else if (strcmp(a, "--latent") == 0) latent = atoi(v);
        else if (strcmp(a, "--precision") == 0) precision = v;
        else if (strcmp(a, "--device") == 0) device = v;
        else if (strcmp(a, "--sample-steps") == 0) sample_steps = atoi(v);
        else if (strcmp(a, "--cfg-scale") == 0) cfg_scale = atof(v);
        else if (strcmp(a, "--peak-tflops") == 0) peak = atof(v);
        else if (strcmp(a, "--depth") == 0) depth = atoi(v);
        else usage();
    }
    if (!mode || (strcmp(mode, "train") && strcmp(mode, "sample")) || batch <= 0 || steps <= 0)
        usage();
    enum kdtype dt;
    enum device_kind dev;
    struct dit_config cfg;
    if (device_resolve(device, &dev) != 0 || kdtype_for_compute(precision, dev, &dt) < 0 ||
        dit_config_by_name(&cfg, model, latent) != 0) {
        fprintf(stderr, "dit_gpu: %s\n", err_get());
        return 1;
    }
    if (depth)
        cfg.depth = depth;
    struct kctx ctx;
    if (kctx_init(&ctx, dev, 0) != 0) {
        fprintf(stderr, "dit_gpu: %s\n", err_get());
        return 1;
    }
    int train = strcmp(mode, "train") == 0;
    int B = train ? batch : 2 * batch; /* guidance runs both halves together */
    struct dit_model m;
    enum dit_memory plan = !train ? DIT_MEM_INFERENCE : checkpointing ? DIT_MEM_CHECKPOINT : DIT_MEM_TRAIN;
    if (dit_model_create(&m, &cfg, &ctx, B, plan, dt) != 0) {
        fprintf(stderr, "dit_gpu: %s\n", err_get());
        return 1;
    }
    float *params = malloc((size_t)m.n_params * sizeof *params);
    dit_init(&cfg, params, 1);
    /* DiT's init zeroes adaLN and the final layer; small random values
     * there keep every path busy (the work is the same either way). */
    for (int64_t i = 0; i < m.n_params; i++)
        if (params[i] == 0.0f)
            params[i] = 1e-3f * (float)((i * 2654435761u) % 2001 - 1000) / 1000.0f;
    dit_params_upload(&m, params);
    free(params);
    struct denoiser dn;
    if (dit_denoiser_wrap(&dn, &m) != 0) {
        fprintf(stderr, "dit_gpu: %s\n", err_get());
        return 1;
    }

    const int64_t per = (int64_t)cfg.in_channels * latent * latent;
    double t_total = 0, flops_per_image = forward_flops(&cfg) * (train ? 3 : 2 * sample_steps);
    int images_per_step = batch;
    if (train) {
        struct trainer_config tc = {.objective = OBJECTIVE_DDPM, .lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999,
                                    .eps = 1e-8, .schedule = LR_CONSTANT, .total_steps = warmup + steps,
                                    .grad_accum = 1, .ema_decay = 0.9999, .seed = 0,
                                    .loss_scaling = dt == KDT_F16};
        struct trainer tr;
        if (trainer_init(&tr, &dn, &tc) != 0) {
            fprintf(stderr, "dit_gpu: %s\n", err_get());
            return 1;
        }
        float *x = malloc((size_t)(batch * per) * sizeof *x);
        int32_t *labels = malloc((size_t)batch * sizeof *labels);
        uint64_t *records = malloc((size_t)batch * sizeof *records);
        for (int64_t i = 0; i < batch * per; i++)
            x[i] = (float)((i * 40503u) % 1000) / 500.0f - 1.0f;
        for (int i = 0; i < batch; i++)
            labels[i] = i % cfg.num_classes, records[i] = (uint64_t)i;
        double t0 = 0;
        for (int s = 0; s < warmup + steps; s++) {
            if (s == warmup) {
                k_sync(&ctx);
                t0 = now();
            }
            trainer_micro_step(&tr, x, &(struct cond){.labels = labels}, records, batch, s);
            trainer_optimizer_step(&tr);
        }
        k_sync(&ctx);
        t_total = now() - t0;
        trainer_free(&tr);
        free(x), free(labels), free(records);
    } else {
        struct sampler s;
        struct sampler_options so = {0};
        if (sampler_init(&s, SAMPLER_DDPM, sample_steps, &so) != 0) {
            fprintf(stderr, "dit_gpu: %s\n", err_get());
            return 1;
        }
        int32_t *labels = malloc((size_t)batch * sizeof *labels);
        float *lat = malloc((size_t)(batch * per) * sizeof *lat);
        for (int i = 0; i < batch; i++)
            labels[i] = (i * 37) % cfg.num_classes;
        struct generate_options go = {.cfg_scale = (float)cfg_scale, .guided = 3};
        double t0 = 0;
        for (int r = 0; r < warmup + steps; r++) {
            if (r == warmup) {
                k_sync(&ctx);
                t0 = now();
            }
            struct cond cd = {.labels = labels};
            if (generate(&dn, &s, &cd, batch, &go, lat) != 0) {
                fprintf(stderr, "dit_gpu: %s\n", err_get());
                return 1;
            }
        }
        k_sync(&ctx);
        t_total = now() - t0;
        free(labels), free(lat);
        sampler_free(&s);
    }
    int64_t mem_now, mem_peak;
    k_mem_usage(&ctx, &mem_now, &mem_peak);
    double per_step = t_total / steps, ips = images_per_step / per_step;
    double tflops = flops_per_image * ips / 1e12;
    printf("{\"impl\":\"dit\",\"mode\":\"%s\",\"model\":\"%s\",\"batch\":%d,\"precision\":\"%s\",\"device\":\"%s\","
           "\"steps\":%d,\"ms_per_step\":%.3f,\"images_per_s\":%.3f,\"flops_per_image\":%.6g,\"tflops\":%.2f,"
           "\"mfu\":%.4f,\"peak_tflops\":%.1f,\"peak_mem_bytes\":%lld%s}\n",
           mode, model, batch, kdtype_name(dt), device_name(dev), steps, per_step * 1e3, ips, flops_per_image,
           tflops, tflops / peak, peak, (long long)mem_peak,
           train ? "" : ",\"note\":\"ms_per_step is one whole sampling loop of the batch\"");
    denoiser_free(&dn);
    dit_model_free(&m);
    kctx_free(&ctx);
    return 0;
}
