/* Conversions between f32, bf16 and f16 on the host, through
 * libcommon/half (round to nearest even): k_convert on the CPU, the f32
 * transfers of every backend, and AdamW's compute copy. */
#include "kernels/cpu/cpu.h"
#include "libcommon/half.h"

#include <string.h>

void cpu_accumulate(void *dst, enum kdtype ddt, const float *src, int64_t n)
{
    switch (ddt) {
    case KDT_F32:
        for (int64_t i = 0; i < n; i++)
            ((float *)dst)[i] += src[i];
        break;
    case KDT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t *d = (uint16_t *)dst + i;
            *d = f32_to_bf16(bf16_to_f32(*d) + src[i]);
        }
        break;
    default:
        for (int64_t i = 0; i < n; i++) {
            uint16_t *d = (uint16_t *)dst + i;
            *d = f32_to_f16(f16_to_f32(*d) + src[i]);
        }
        break;
    }
}

void cpu_convert(void *dst, enum kdtype ddt, const void *src, enum kdtype sdt, int64_t n)
{
    if (ddt == sdt) {
        memmove(dst, src, (size_t)n * kdtype_bytes(ddt));
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        float v;
        switch (sdt) {
        case KDT_F32: v = ((const float *)src)[i]; break;
        case KDT_BF16: v = bf16_to_f32(((const uint16_t *)src)[i]); break;
        default: v = f16_to_f32(((const uint16_t *)src)[i]); break;
        }
        switch (ddt) {
        case KDT_F32: ((float *)dst)[i] = v; break;
        case KDT_BF16: ((uint16_t *)dst)[i] = f32_to_bf16(v); break;
        default: ((uint16_t *)dst)[i] = f32_to_f16(v); break;
        }
    }
}
