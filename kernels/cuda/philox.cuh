// Philox4x32-10 on the device: the function libcommon/philox.c computes
// (philox4x32_10, its constants and round order), so that a kernel draws the
// numbers the CPU draws from a stream of libcommon/philox.h. The stream
// mapping (which key, counter words and block a value comes from) is
// philox.h's; a kernel builds ctr and key as it says.
#ifndef DIT_KERNELS_CUDA_PHILOX_CUH
#define DIT_KERNELS_CUDA_PHILOX_CUH

#include <stdint.h>

// Multipliers and Weyl key increments of Philox4x32 (Random123), as in
// libcommon/philox.c.
static constexpr uint32_t PHILOX_DEV_M0 = 0xD2511F53u;
static constexpr uint32_t PHILOX_DEV_M1 = 0xCD9E8D57u;
static constexpr uint32_t PHILOX_DEV_W0 = 0x9E3779B9u;
static constexpr uint32_t PHILOX_DEV_W1 = 0xBB67AE85u;

// One block: 10 rounds on ctr under key. The 32x32 -> 64 products are
// written as in C (nvcc makes one mul.wide.u32 of each, the emulator the
// same integer maths), so the high and low words are exactly the CPU's.
__device__ __forceinline__ void philox_block(const uint32_t ctr[4], const uint32_t key[2],
                                             uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
#pragma unroll
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_DEV_W0;
            k1 += PHILOX_DEV_W1;
        }
        const uint64_t p0 = (uint64_t)PHILOX_DEV_M0 * c0;
        const uint64_t p1 = (uint64_t)PHILOX_DEV_M1 * c2;
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

// rng_uniform_f32's value of the u32 word w: ((w >> 9) + 0.5) * 2^-23, in
// (0, 1). Every step is exact in float (23 bits, a half, a power of two), so
// no rounding mode or contraction can change it.
__device__ __forceinline__ float philox_uniform(uint32_t w)
{
    return ((float)(w >> 9) + 0.5f) * 0x1p-23f;
}

#endif
