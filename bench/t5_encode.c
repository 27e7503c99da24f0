/* T5 caption throughput alone: N captions encoded in batches of BATCH
 * through the text-encoder seam, as dit-precompute calls it.
 * Usage: t5_encode SPEC N BATCH
 * Prints "captions X/s peak Y MB" (peak resident memory). */
#include "libcommon/error.h"
#include "models/text_encoder.h"

#include <stdio.h>
#include <stdlib.h>
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
    if (argc != 4) {
        fprintf(stderr, "usage: %s SPEC N BATCH\n", argv[0]);
        return 2;
    }
    const int N = atoi(argv[2]), batch = atoi(argv[3]);
    struct text_encoder e;
    if (N <= 0 || batch <= 0 || text_encoder_open(&e, argv[1]) != 0) {
        fprintf(stderr, "%s\n", N > 0 && batch > 0 ? err_get() : "N and BATCH must be positive");
        return 1;
    }
    /* Captions of a typical length (padded to max_length all the same). */
    static const char *const words[] = {"a", "photo", "of", "red", "fox", "in", "the", "snow", "at", "dawn",
                                        "soft", "light", "wide", "angle", "detailed", "fur"};
    const char **caps = malloc((size_t)batch * sizeof *caps);
    char (*text)[256] = malloc((size_t)batch * sizeof *text);
    float *emb = malloc((size_t)batch * text_encoder_embedding_elems(&e) * sizeof *emb);
    uint8_t *mask = malloc((size_t)batch * e.max_length);
    if (!caps || !text || !emb || !mask)
        return 1;
    for (int i = 0; i < batch; i++) {
        int n = 0;
        for (int w = 0; w < 40; w++)
            n += snprintf(text[i] + n, sizeof text[i] - n, "%s%s", w ? " " : "", words[(i * 7 + w * 3) % 16]);
        caps[i] = text[i];
    }
    /* One call first, untimed: the arena is planned on it. */
    if (text_encoder_encode(&e, caps, batch, emb, mask, NULL) != 0) {
        fprintf(stderr, "%s\n", err_get());
        return 1;
    }
    double t0 = now();
    int done = 0;
    while (done < N) {
        int n = N - done < batch ? N - done : batch;
        if (text_encoder_encode(&e, caps, n, emb, mask, NULL) != 0) {
            fprintf(stderr, "%s\n", err_get());
            return 1;
        }
        done += n;
    }
    double t1 = now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("captions %.3f/s peak %.0f MB\n", N / (t1 - t0), ru.ru_maxrss / 1024.0);
    free(caps), free(text), free(emb), free(mask);
    text_encoder_close(&e);
    return 0;
}
