/* VAE throughput alone: encode N random RGB images of S x S and decode N
 * random latents through the encoder seam, as dit-precompute and dit-sample
 * call it. Usage: vae_encode_decode SPEC SIZE N [decode]
 * Prints "encode X img/s decode Y img/s peak Z MB" (peak resident memory).
 * With "decode" only the decoder runs (the latents are random normals), so
 * the peak is the decoder's; N may then be 0 (the one untimed call). */
#include "libcommon/error.h"
#include "libcommon/philox.h"
#include "models/encoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "decode") == 0)) {
        fprintf(stderr, "usage: %s SPEC SIZE N [decode]\n", argv[0]);
        return 2;
    }
    const int S = atoi(argv[2]), N = atoi(argv[3]), decode_only = argc == 5;
    struct encoder e;
    const int args_ok = S > 0 && (decode_only ? N >= 0 : N > 0);
    if (!args_ok || encoder_open(&e, argv[1]) != 0) {
        fprintf(stderr, "%s\n", args_ok ? err_get() : "SIZE must be positive, and N too unless decode");
        return 1;
    }
    const size_t n = encoder_latent_elems(&e, S, S);
    uint8_t *rgb = malloc((size_t)S * S * 3);
    float *mean = malloc(n * sizeof(float)), *std = malloc(n * sizeof(float));
    if (!rgb || !mean || !std)
        return 1;
    struct rng_stream rs = rng_stream(1, RNG_PARAM_INIT, 0, 0);
    for (size_t i = 0; i < (size_t)S * S * 3; i++) {
        float u;
        rng_uniform_f32(&rs, i, 1, &u);
        rgb[i] = (uint8_t)(u * 255.0f);
    }
    if (decode_only) /* past the offsets the pixels took */
        rng_normal_f32(&rs, (uint64_t)S * S * 3, n, mean);
    /* One call first: the arena is planned on the first image. */
    if ((!decode_only && encoder_encode(&e, rgb, S, S, mean, e.has_std ? std : NULL) != 0) ||
        encoder_decode(&e, mean, S, S, rgb) != 0) {
        fprintf(stderr, "%s\n", err_get());
        return 1;
    }
    double t0 = now();
    for (int k = 0; k < N && !decode_only; k++)
        if (encoder_encode(&e, rgb, S, S, mean, e.has_std ? std : NULL) != 0)
            return 1;
    double t1 = now();
    for (int k = 0; k < N; k++)
        if (encoder_decode(&e, mean, S, S, rgb) != 0)
            return 1;
    double t2 = now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("encode %.3f img/s decode %.3f img/s peak %.0f MB\n", decode_only ? 0.0 : N / (t1 - t0),
           N ? N / (t2 - t1) : 0.0, ru.ru_maxrss / 1024.0);
    free(rgb), free(mean), free(std);
    encoder_close(&e);
    return 0;
}
