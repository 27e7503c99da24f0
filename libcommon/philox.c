#include "libcommon/philox.h"
#include "libcommon/philox_block.h"

#include <math.h>

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    philox_block(ctr, key, out);
}

struct rng_stream rng_stream(uint64_t seed, uint32_t purpose, uint64_t step, uint64_t sample_index)
{
    struct rng_stream s = {
        .key = {(uint32_t)seed, (uint32_t)(seed >> 32)},
        .ctr = {0, (uint32_t)sample_index, (uint32_t)step, purpose},
    };
    return s;
}

static void stream_block(const struct rng_stream *s, uint64_t block, uint32_t tweak, uint32_t out[4])
{
    uint32_t ctr[4] = {(uint32_t)block, s->ctr[1], s->ctr[2], s->ctr[3] | tweak};
    philox4x32_10(ctr, s->key, out);
}

void rng_u32(const struct rng_stream *s, uint64_t offset, size_t n, uint32_t *out)
{
    size_t i = 0;
    while (i < n) {
        uint64_t j = offset + i;
        uint32_t w[4];
        stream_block(s, j / 4, 0, w);
        for (unsigned k = (unsigned)(j % 4); k < 4 && i < n; k++)
            out[i++] = w[k];
    }
}

void rng_uniform_f32(const struct rng_stream *s, uint64_t offset, size_t n, float *out)
{
    /* 23 bits so that the largest cell centre, 1 - 2^-24, is exact in float;
     * 24 bits would put 1 - 2^-25 there, which rounds to 1. */
    size_t i = 0;
    while (i < n) {
        uint64_t j = offset + i;
        uint32_t w[4];
        stream_block(s, j / 4, 0, w);
        for (unsigned k = (unsigned)(j % 4); k < 4 && i < n; k++)
            out[i++] = ((float)(w[k] >> 9) + 0.5f) * 0x1p-23f;
    }
}

/* (0, 1) from the top 52 of 64 bits: the cell centre is exact in double. */
static double unit_open52(uint32_t hi, uint32_t lo)
{
    uint64_t a = ((uint64_t)hi << 32 | lo) >> 12;
    return ((double)a + 0.5) * 0x1p-52;
}

void rng_normal_f32(const struct rng_stream *s, uint64_t offset, size_t n, float *out)
{
    size_t i = 0;
    while (i < n) {
        uint64_t j = offset + i;
        uint32_t w[4];
        stream_block(s, j / 2, 0, w);
        double r = sqrt(-2.0 * log(unit_open52(w[0], w[1])));
        double t = 2.0 * M_PI * unit_open52(w[2], w[3]), sn, cs;
        /* glibc's sincos gives exactly sin's and cos's values, in one call. */
        sincos(t, &sn, &cs);
        if (j % 2 == 0) {
            out[i++] = (float)(r * cs);
            if (i == n)
                break;
        }
        out[i++] = (float)(r * sn);
    }
}

uint64_t rng_below(const struct rng_stream *s, uint64_t offset, uint64_t bound)
{
    if (bound == 0)
        return 0;
    /* Lemire: the high word of x * bound is uniform once products whose low
     * word falls below 2^64 mod bound are rejected. */
    uint64_t threshold = (0 - bound) % bound;
    for (uint32_t retry = 0;; retry++) {
        uint32_t w[4];
        stream_block(s, offset, retry << 16, w);
        for (int k = 0; k < 4; k += 2) {
            uint64_t x = (uint64_t)w[k] << 32 | w[k + 1];
            __extension__ unsigned __int128 m = (unsigned __int128)x * bound;
            if ((uint64_t)m >= threshold)
                return (uint64_t)(m >> 64);
        }
    }
}
