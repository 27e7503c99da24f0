/* 8-bit AdamW against fp32 AdamW on the CPU backend: state bytes and the
 * time of one optimizer step over a model's parameter table (the tensors a
 * model has, so the 8-bit rule and its blocks are the real ones).
 * Usage: adamw8bit_step MODEL [ITERS], e.g. adamw8bit_step DiT-B/2 5.
 * Prints one line per optimizer: name, parameters, state MB, ms per step. */
#include "kernels/kernels.h"
#include "libcommon/philox.h"
#include "models/registry.h"
#include "train/optimizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *model = argc > 1 ? argv[1] : "DiT-B/2";
    const int iters = argc > 2 ? atoi(argv[2]) : 5;
    const struct denoiser_spec spec = {4, 32, 32, 1000, 0, 0, 0, 0, 0};
    struct denoiser_config mc;
    struct nn_params t;
    struct kctx ctx;
    if (denoiser_config_preset(&mc, model, &spec) != 0 || denoiser_config_table(&mc, &t) != 0 ||
        kctx_init(&ctx, DEVICE_CPU, 0) != 0) {
        fprintf(stderr, "adamw8bit_step: %s\n", model);
        return 1;
    }
    const int64_t n = t.total;
    float *p = malloc((size_t)n * sizeof *p), *g = malloc((size_t)n * sizeof *g);
    if (!p || !g)
        return 1;
    const char *names[2] = {"adamw", "adamw8bit"};
    for (int k = 0; k < 2; k++) {
        struct rng_stream s = rng_stream(1, RNG_PARAM_INIT, 0, 0);
        rng_normal_f32(&s, 0, (size_t)n, p);
        struct optimizer o;
        const struct optimizer_config oc = {0.9, 0.999, 1e-8, 0.01};
        if (optimizer_create(&o, names[k], &ctx, n, &oc, &t) != 0)
            return 1;
        double best = 1e30;
        for (int it = 1; it <= iters + 1; it++) {
            struct rng_stream sg = rng_stream(2, RNG_NOISE, (uint64_t)it, 0);
            rng_normal_f32(&sg, 0, (size_t)n, g);
            double t0 = now();
            optimizer_step(&o, tensor_f32(p, n), tensor_f32(g, n), tensor_none(), 1e-4, it);
            k_sync(&ctx);
            double dt = now() - t0;
            if (it > 1 && dt < best) /* the first step touches the state's pages */
                best = dt;
        }
        printf("%s\t%lld\t%.1f\t%.1f\n", names[k], (long long)n, optimizer_state_bytes(&o) / 1e6, best * 1e3);
        optimizer_free(&o);
    }
    free(p), free(g);
    nn_params_free(&t);
    denoiser_config_free(&mc);
    kctx_free(&ctx);
    return 0;
}
