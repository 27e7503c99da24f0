/* Conversions between float32 and the 16- and 8-bit float formats.
 *
 * bf16 is float32's upper half (8-bit exponent, 7-bit mantissa); f16 is IEEE
 * binary16 (5-bit exponent, 10-bit mantissa, max finite 65504).
 *
 * float -> half rounds to nearest, ties to even, as numpy (float16),
 * ml_dtypes (bfloat16), PyTorch and the GPU's conversion instructions do, so
 * weights written here match what those tools write. Values beyond the
 * largest finite half round to infinity; f16 subnormals are produced and read
 * exactly (no flush to zero). A NaN stays a NaN of the same sign and comes
 * out quiet, keeping the upper bits of its payload.
 *
 * half -> float is exact. */
#ifndef DIT_HALF_H
#define DIT_HALF_H

#include <stddef.h>
#include <stdint.h>

uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t h);

/* fp8 E4M3 as torch.float8_e4m3fn and the OCP spec's "fn" form have it (1
 * sign, 4 exponent bits of bias 7, 3 mantissa bits; no infinities; NaN only
 * S.1111.111; largest finite 448; subnormals from 2^-9): float -> e4m3
 * rounds to nearest, ties to even, and saturates finite and infinite
 * values beyond 448 to +-448, as torch's conversion does; NaN gives 0x7f
 * with its sign. e4m3 -> float is exact. */
uint8_t f32_to_e4m3(float x);
float e4m3_to_f32(uint8_t b);

/* Element-wise versions; src and dst must not overlap. */
void f32_to_bf16_array(const float *src, uint16_t *dst, size_t n);
void bf16_to_f32_array(const uint16_t *src, float *dst, size_t n);
void f32_to_f16_array(const float *src, uint16_t *dst, size_t n);
void f16_to_f32_array(const uint16_t *src, float *dst, size_t n);
void f32_to_e4m3_array(const float *src, uint8_t *dst, size_t n);
void e4m3_to_f32_array(const uint8_t *src, float *dst, size_t n);
/* A weight [rows, cols] as e4m3 codes with one f32 scale per row (output
 * channel): scale = the row's largest magnitude / 448 (1 for a zero row),
 * codes = e4m3(w / scale); w ~ e4m3_to_f32(code) * scale. */
void f32_to_e4m3_rows(const float *w, int rows, int cols, uint8_t *codes, float *scale);

#endif
