#include "libcommon/half.h"
#include "libcommon/e4m3.h"

#include <math.h>
#include <string.h>

/* memcpy is the defined way to reinterpret bits; compilers emit a move. */
static uint32_t float_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t f32_to_bf16(float x)
{
    uint32_t u = float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u); /* quiet bit; payload bits 6..0 kept */
    /* Adding 0x7fff plus the lowest kept bit rounds ties to even; a carry out
     * of the mantissa bumps the exponent, up to infinity when it overflows. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bf16_to_f32(uint16_t h)
{
    return bits_float((uint32_t)h << 16);
}

/* m >> shift (1 <= shift < 32) rounded to nearest, ties to even: a
 * subnormal's units from a mantissa with its implicit bit. */
static uint32_t shift_round_even(uint32_t m, unsigned shift)
{
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    return q + (rem > half || (rem == half && (q & 1u)));
}

uint16_t f32_to_f16(float x)
{
    uint32_t u = float_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;

    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    /* 65520 is halfway between 65504 (odd mantissa) and 2^16: the tie and
     * everything above rounds to infinity. */
    if (a >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* f16 normal range, from 2^-14 */
        uint32_t r = a - 0x38000000u; /* rebias the exponent from 127 to 15 */
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    uint32_t e = a >> 23;
    if (e < 102) /* below 2^-25, half the smallest subnormal: rounds to zero */
        return sign;
    /* The result counts units of 2^-24: the mantissa with its implicit bit,
     * shifted right by 14..24 places and rounded to nearest even. Rounding
     * up from the largest subnormal yields 0x400, the smallest normal. */
    return (uint16_t)(sign | shift_round_even((a & 0x7fffffu) | 0x800000u, 126 - e));
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0x1f)
        return bits_float(sign | 0x7f800000u | (m << 13));
    if (e != 0)
        return bits_float(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0)
        return bits_float(sign);
    /* Subnormal: normalise, m * 2^-24 becomes 1.f * 2^(e - 127). */
    e = 113;
    while (!(m & 0x400u)) {
        m <<= 1;
        e--;
    }
    return bits_float(sign | (e << 23) | ((m & 0x3ffu) << 13));
}

void f32_to_bf16_array(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}

void bf16_to_f32_array(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

void f32_to_f16_array(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_f16(src[i]);
}

void f16_to_f32_array(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f16_to_f32(src[i]);
}

uint8_t f32_to_e4m3(float x)
{
    uint32_t u = float_bits(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint8_t)(sign | 0x7fu);
    if (a >= 0x43e00000u) /* 448 and beyond, infinity included: saturate */
        return (uint8_t)(sign | 0x7eu);
    if (a >= 0x3c800000u) { /* normal, from 2^-6 */
        uint32_t r = a - 0x3c000000u; /* rebias the exponent from 127 to 7 */
        r += 0x7ffffu + ((r >> 20) & 1u);
        return (uint8_t)(sign | (r >> 20));
    }
    uint32_t e = a >> 23;
    if (e < 117) /* below 2^-10, half the smallest subnormal */
        return sign;
    /* units of 2^-9, rounded to nearest even; 8 units is the smallest normal */
    return (uint8_t)(sign | shift_round_even((a & 0x7fffffu) | 0x800000u, 141 - e));
}

float e4m3_to_f32(uint8_t b)
{
    return e4m3_decode(b);
}

void f32_to_e4m3_array(const float *src, uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_e4m3(src[i]);
}

void e4m3_to_f32_array(const uint8_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = e4m3_to_f32(src[i]);
}

void f32_to_e4m3_rows(const float *w, int rows, int cols, uint8_t *codes, float *scale)
{
    for (int r = 0; r < rows; r++) {
        const float *x = w + (size_t)r * cols;
        float amax = 0.0f;
        for (int c = 0; c < cols; c++)
            amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
        /* a zero row keeps scale 1 (codes 0): no division by zero */
        const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
        scale[r] = s;
        for (int c = 0; c < cols; c++)
            codes[(size_t)r * cols + c] = f32_to_e4m3(x[c] / s);
    }
}
