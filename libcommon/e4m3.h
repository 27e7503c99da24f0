/* fp8 E4M3 ("fn": no infinities, NaN only S.1111.111) decoded exactly, the
 * one definition the host (libcommon/half.c's e4m3_to_f32) and the CUDA
 * kernels that widen fp8 weights (kernels/cuda/fp8.cu) compile. */
#ifndef DIT_E4M3_H
#define DIT_E4M3_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__) || defined(DIT_CUDA_EMU)
#define E4M3_FN __host__ __device__ __forceinline__ static
#else
#define E4M3_FN static inline
#endif

E4M3_FN float e4m3_decode(uint8_t b)
{
    const uint32_t sign = (uint32_t)(b & 0x80u) << 24, e = (b >> 3) & 0xfu, m = b & 7u;
    uint32_t u;
    if (e == 0xf && m == 7) {
        u = sign | 0x7fc00000u;
    } else if (e == 0) {
        /* m units of 2^-9: exact in float */
        const float v = (float)m * 0x1p-9f;
        return sign ? -v : v;
    } else {
        u = sign | ((e + 120u) << 23) | (m << 20); /* rebias 7 -> 127 */
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#endif
