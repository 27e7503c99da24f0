/* Counter-based random numbers: Philox4x32-10 (Salmon, Moraes, Dror, Shaw,
 * "Parallel random numbers: as easy as 1, 2, 3", SC11; Random123).
 *
 * There is no generator state to save, share or advance: every number is a
 * pure function of its address. A stream is addressed by
 * (seed, purpose, step, sample index), and a number by its offset inside the
 * stream, so what a sample gets does not depend on batch size, rank, device
 * or resume point, and the CUDA kernels can compute the same numbers.
 *
 * The mapping, exactly (other implementations must follow it):
 *
 *   key[0] = seed bits 0..31          key[1] = seed bits 32..63
 *   ctr[0] = block index inside the stream (see each function)
 *   ctr[1] = sample index bits 0..31
 *   ctr[2] = step bits 0..31
 *   ctr[3] = purpose (bits 16..31 are set only by rng_below's retries)
 *
 *   rng_u32:     value j is word (j mod 4) of block j / 4
 *   rng_uniform: value j is ((u32 value j >> 9) + 0.5) * 2^-23
 *   rng_normal:  value j comes from block j / 2, words w0..w3:
 *                u1 = (((w0 << 32 | w1) >> 12) + 0.5) * 2^-52
 *                u2 = (((w2 << 32 | w3) >> 12) + 0.5) * 2^-52
 *                r = sqrt(-2 ln u1), t = 2 pi u2, in double;
 *                even j: (float)(r cos t), odd j: (float)(r sin t)
 *   rng_below:   offset j uses block j: the 64-bit candidates w0 << 32 | w1,
 *                then w2 << 32 | w3; if Lemire's method rejects both, retry
 *                k = 1, 2, ... takes block j again with ctr[3] = purpose | k << 16
 *
 * Limits this implies:
 *   - step and sample index are taken modulo 2^32 (distinct values below
 *     2^32 never share numbers; beyond, they alias);
 *   - purpose must be below 2^16, so retries never meet another purpose;
 *   - a stream holds 2^34 u32/uniform values, 2^33 normals, 2^32 rng_below
 *     draws; offsets beyond wrap around to the start of the stream.
 *   - The kinds of draw index blocks differently, so a stream is used for
 *     one kind only: give each use its own purpose (or step, or sample).
 *
 * Normals use the C library's log, sqrt, cos and sin in double before the
 * rounding to float; another libm (or the GPU's) agrees to within an ulp of
 * the float and nearly always exactly. */
#ifndef DIT_PHILOX_H
#define DIT_PHILOX_H

#include <stddef.h>
#include <stdint.h>

/* One block: 10 rounds of Philox4x32 on ctr under key. */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* What a stream is used for; part of its address so that uses never share
 * numbers. Values are fixed forever: checkpoints depend on them. */
enum rng_purpose {
    RNG_PARAM_INIT = 1,
    RNG_NOISE = 2,
    RNG_TIMESTEP = 3,
    RNG_LABEL_DROP = 4,
    RNG_FLIP = 5,
    RNG_SHUFFLE = 6,
    RNG_SAMPLE_NOISE = 7,
    RNG_VALIDATION = 8,
    RNG_CROP = 9, /* dit-bucket --random-crop */
    RNG_LATENT = 10, /* a latent drawn from its stored distribution (mean + std * eps) */
    RNG_LORA_DROPOUT = 11, /* LoRA's dropout of an adapted layer's input (step: epoch, layer) */
};

/* ctr[0] is the block counter inside the stream, filled per call (0 here). */
struct rng_stream {
    uint32_t key[2];
    uint32_t ctr[4];
};

struct rng_stream rng_stream(uint64_t seed, uint32_t purpose, uint64_t step, uint64_t sample_index);

/* Values offset .. offset+n-1 of the stream. In every function, value i
 * depends only on (stream, offset + i): asking for a range in one call or in
 * pieces gives the same numbers. */
void rng_u32(const struct rng_stream *s, uint64_t offset, size_t n, uint32_t *out);
/* Uniform in (0, 1), never 0 or 1: the centres of 2^23 equal cells. */
void rng_uniform_f32(const struct rng_stream *s, uint64_t offset, size_t n, float *out);
/* Standard normal (Box-Muller in double, rounded to float). */
void rng_normal_f32(const struct rng_stream *s, uint64_t offset, size_t n, float *out);
/* Unbiased integer in [0, bound) (Lemire's multiply and reject); 0 when
 * bound is 0. For shuffles: draw j of a shuffle uses offset j. */
uint64_t rng_below(const struct rng_stream *s, uint64_t offset, uint64_t bound);

#endif
