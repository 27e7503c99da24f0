/* Forward + backward time per image of a DiT on the CPU backend.
 * Usage: dit_step MODEL [BATCH [ITERS [LATENT]]], e.g. dit_step DiT-S/2 8 5 32.
 * Prints one line: model, batch, ms per step, ms per image, images/s. */
#include "kernels/kernels.h"
#include "libcommon/philox.h"
#include "models/dit/dit.h"

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
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [BATCH [ITERS [LATENT]]]\n", argv[0]);
        return 2;
    }
    int B = argc > 2 ? atoi(argv[2]) : 8, iters = argc > 3 ? atoi(argv[3]) : 5;
    int latent = argc > 4 ? atoi(argv[4]) : 32;
    struct dit_config cfg;
    struct kctx ctx;
    struct dit_model m;
    if (dit_config_by_name(&cfg, argv[1], latent) != 0 || kctx_init(&ctx, DEVICE_CPU, 0) != 0 ||
        dit_model_create(&m, &cfg, &ctx, B, 0, KDT_F32) != 0) {
        fprintf(stderr, "dit_step: cannot set up %s\n", argv[1]);
        return 1;
    }
    /* Random weights everywhere (DiT's init zeroes adaLN, which would skip work in no kernel
     * but make the numbers meaningless). */
    struct rng_stream s = rng_stream(1, RNG_PARAM_INIT, 0, 0);
    float *mp = m.params.data; /* host memory: the CPU backend */
    rng_normal_f32(&s, 0, (size_t)m.n_params, mp);
    for (int64_t i = 0; i < m.n_params; i++)
        mp[i] *= 0.02f;
    const int64_t nin = (int64_t)B * cfg.in_channels * latent * latent;
    const int64_t nout = (int64_t)B * dit_out_channels(&cfg) * latent * latent;
    float *x = malloc(nin * sizeof *x), *out = malloc(nout * sizeof *out), *dout = malloc(nout * sizeof *dout);
    float *t = malloc(B * sizeof *t);
    int32_t *y = malloc(B * sizeof *y);
    rng_normal_f32(&s, 1 << 30, (size_t)nin, x);
    rng_normal_f32(&s, 1u << 31, (size_t)nout, dout);
    for (int i = 0; i < B; i++) {
        t[i] = (float)(i * 997 % 1000);
        y[i] = i % 1000;
    }
    dit_forward(&m, out, x, t, y, B); /* warm-up */
    dit_backward(&m, dout, B);
    double t0 = now();
    for (int i = 0; i < iters; i++) {
        dit_forward(&m, out, x, t, y, B);
        dit_zero_grads(&m);
        dit_backward(&m, dout, B);
    }
    double ms = (now() - t0) / iters * 1e3;
    printf("%s\t%d\t%.1f\t%.2f\t%.2f\n", argv[1], B, ms, ms / B, B / ms * 1e3);
    dit_model_free(&m);
    kctx_free(&ctx);
    free(x), free(out), free(dout), free(t), free(y);
    return 0;
}
