/* Inverted dropout (k_dropout_forward) with the mask of libcommon/philox.h. */
#include "kernels/cpu/cpu.h"
#include "libcommon/philox.h"

#include <string.h>

/* Uniforms drawn at a time: a multiple of 4, so each piece starts on a
 * Philox block and no block is computed twice, and small enough for the
 * stack of every OpenMP thread. */
#define DROPOUT_CHUNK 1024

/* Elements [j0, j0 + len) of sample b. The uniforms come from
 * rng_uniform_f32 itself, so the mask is philox.h's by construction; the
 * CUDA kernel (kernels/cuda/dropout.cu) recomputes the same numbers. */
static void dropout_piece(float *out, const float *inp, float p, float scale,
                          const struct rng_stream *s, int64_t j0, size_t len)
{
    float u[DROPOUT_CHUNK];
    rng_uniform_f32(s, (uint64_t)j0, len, u);
    for (size_t k = 0; k < len; k++)
        out[j0 + (int64_t)k] = u[k] >= p ? inp[j0 + (int64_t)k] * scale : 0.0f;
}

/* Each piece is one (sample, chunk) pair and every element is read before
 * it is written at the same place, so out may be inp and the result does
 * not depend on how the pieces are shared between threads. */
void cpu_dropout_forward(float *out, const float *inp, float p, uint64_t seed, uint32_t purpose,
                         uint64_t step, const uint64_t *ids, int B, int64_t per)
{
    const int64_t n = (int64_t)B * per;
    if (n <= 0)
        return;
    if (p == 0.0f) {
        if (out != inp)
            memmove(out, inp, (size_t)n * sizeof *out);
        return;
    }
    /* Once, in float: the CUDA backend computes the same value on its host. */
    const float scale = 1.0f / (1.0f - p);
    const int64_t chunks = (per + DROPOUT_CHUNK - 1) / DROPOUT_CHUNK;
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t t = 0; t < (int64_t)B * chunks; t++) {
        const int64_t b = t / chunks, j0 = (t % chunks) * DROPOUT_CHUNK;
        const int64_t left = per - j0;
        const size_t len = (size_t)(left < DROPOUT_CHUNK ? left : DROPOUT_CHUNK);
        const struct rng_stream s = rng_stream(seed, purpose, step, ids[b]);
        dropout_piece(out + b * per, inp + b * per, p, scale, &s, j0, len);
    }
}
