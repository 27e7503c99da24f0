/* One Philox4x32-10 block (Random123's constants and round order), the one
 * definition the CPU (libcommon/philox.c) and the CUDA kernels
 * (kernels/cuda/philox.cuh) both compile, so that a kernel draws exactly
 * the numbers the CPU draws. The 32x32 -> 64 products are written as in C
 * (nvcc makes one mul.wide.u32 of each, the emulator the same integer
 * maths). */
#ifndef DIT_PHILOX_BLOCK_H
#define DIT_PHILOX_BLOCK_H

#include <stdint.h>

#if defined(__CUDACC__) || defined(DIT_CUDA_EMU)
#define PHILOX_FN __host__ __device__ __forceinline__ static
#else
#define PHILOX_FN static inline
#endif

/* Multipliers and Weyl key increments of Philox4x32. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* out = 10 rounds of ctr under key. */
PHILOX_FN void philox_block(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
#ifdef __CUDA_ARCH__ /* the device pass only: the host compiler knows no such pragma */
#pragma unroll
#endif
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        const uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

#endif
