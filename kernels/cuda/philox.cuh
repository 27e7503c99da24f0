// Philox4x32-10 on the device: philox_block is libcommon/philox_block.h's,
// the very function libcommon/philox.c computes, so that a kernel draws the
// numbers the CPU draws from a stream of libcommon/philox.h. The stream
// mapping (which key, counter words and block a value comes from) is
// philox.h's; a kernel builds ctr and key as it says.
#ifndef DIT_KERNELS_CUDA_PHILOX_CUH
#define DIT_KERNELS_CUDA_PHILOX_CUH

#include "libcommon/philox_block.h"

#include <stdint.h>

// rng_uniform_f32's value of the u32 word w: ((w >> 9) + 0.5) * 2^-23, in
// (0, 1). Every step is exact in float (23 bits, a half, a power of two), so
// no rounding mode or contraction can change it.
__device__ __forceinline__ float philox_uniform(uint32_t w)
{
    return ((float)(w >> 9) + 0.5f) * 0x1p-23f;
}

#endif
