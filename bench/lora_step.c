/* LoRA against full fine-tuning of a DiT on the CPU backend: trainable
 * parameters, optimizer state, and the time of one training step (forward,
 * backward, AdamW) through the trainer, as dit-train runs it.
 * Usage: lora_step MODEL [BATCH [ITERS [RANK [LATENT]]]], e.g. lora_step DiT-B/2 4 3 16 32.
 * Prints one line per mode: mode, trainable parameters, optimizer MB, weights+grads MB, ms per step. */
#include "kernels/kernels.h"
#include "libcommon/philox.h"
#include "models/registry.h"
#include "train/lora.h"
#include "train/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run(const char *model, int B, int iters, int rank, int latent, int lora)
{
    struct denoiser_spec spec = {4, latent, latent, 1000, 0, 0, 0, 0, 0};
    struct denoiser_config mc;
    struct kctx ctx;
    struct denoiser d;
    if (denoiser_config_preset(&mc, model, &spec) != 0 || kctx_init(&ctx, DEVICE_CPU, 0) != 0 ||
        denoiser_create(&d, &mc, &ctx, B, DENOISER_MEM_TRAIN | (lora ? DENOISER_MEM_FROZEN : 0), KDT_F32) != 0)
        return -1;
    float *p = malloc((size_t)d.n_params * sizeof *p);
    struct rng_stream s = rng_stream(1, RNG_PARAM_INIT, 0, 0);
    rng_normal_f32(&s, 0, (size_t)d.n_params, p);
    for (int64_t i = 0; i < d.n_params; i++)
        p[i] *= 0.02f;
    denoiser_params_upload(&d, p);
    free(p);
    struct trainer tr;
    struct trainer_config tc = {.objective = OBJECTIVE_DDPM, .lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                .schedule = LR_CONSTANT, .total_steps = 1000, .grad_accum = 1, .seed = 1};
    struct nn_lora l;
    struct nn_lora_binding b;
    struct lora_options lo = {rank, (float)rank, 0.0f, 0, "qkv,proj", NN_LORA_INIT_GAUSSIAN, NULL};
    if (trainer_init(&tr, &d, &tc) != 0 || (lora && (train_lora_create(&l, &b, &d, &lo, 1) != 0 ||
                                                     trainer_add_lora(&tr, &l, &b) != 0)))
        return -1;
    const int64_t per = (int64_t)4 * latent * latent;
    float *x = malloc((size_t)(B * per) * sizeof *x);
    int32_t *y = malloc((size_t)B * sizeof *y);
    uint64_t *rec = malloc((size_t)B * sizeof *rec);
    rng_normal_f32(&s, 1u << 30, (size_t)(B * per), x);
    for (int i = 0; i < B; i++)
        y[i] = i % 1000, rec[i] = (uint64_t)i;
    struct cond c = {.labels = y};
    trainer_micro_step(&tr, x, &c, rec, B, 0); /* warm-up */
    trainer_optimizer_step(&tr);
    double t0 = now();
    for (int i = 0; i < iters; i++) {
        trainer_micro_step(&tr, x, &c, rec, B, 0);
        trainer_optimizer_step(&tr);
    }
    double ms = (now() - t0) / iters * 1e3;
    int64_t pbytes, abytes;
    denoiser_sizes(&d, &pbytes, &abytes);
    const int64_t trainable = lora ? l.table.total : d.n_params;
    const int64_t opt = lora ? optimizer_state_bytes(&tr.lora_opt) : optimizer_state_bytes(&tr.opt);
    const int64_t wg = pbytes + (lora ? nn_weights_bytes(l.table.total, KDT_F32, 0) : 0);
    printf("%s\t%s\t%lld\t%.1f\t%.1f\t%.0f\n", model, lora ? "lora" : "full", (long long)trainable, opt / 1e6,
           wg / 1e6, ms);
    free(x), free(y), free(rec);
    trainer_free(&tr);
    if (lora) {
        nn_lora_unbind(&b);
        nn_lora_free(&l);
    }
    denoiser_free(&d);
    denoiser_config_free(&mc);
    kctx_free(&ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [BATCH [ITERS [RANK [LATENT]]]]\n", argv[0]);
        return 2;
    }
    int B = argc > 2 ? atoi(argv[2]) : 4, iters = argc > 3 ? atoi(argv[3]) : 3;
    int rank = argc > 4 ? atoi(argv[4]) : 16, latent = argc > 5 ? atoi(argv[5]) : 32;
    for (int lora = 0; lora < 2; lora++)
        if (run(argv[1], B, iters, rank, latent, lora) != 0) {
            fprintf(stderr, "lora_step: %s\n", "cannot set up the model");
            return 1;
        }
    return 0;
}
