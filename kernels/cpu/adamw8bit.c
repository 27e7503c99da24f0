/* bitsandbytes' blockwise 8-bit AdamW (kernels/kernels.h), block by block
 * in the order of its CUDA kernel; kernels/cuda/adamw8bit.cu computes the
 * same f32 operations in the same order, so the backends agree bit for bit. */
#include "kernels/adamw8bit.h"
#include "kernels/cpu/cpu.h"

#include <math.h>
#include <string.h>

static const float qmap_signed[256] = QMAP_SIGNED_VALUES;
static const float qmap_unsigned[256] = QMAP_UNSIGNED_VALUES;

/* qmap_quantize of x[0..len), QUANT_WIDTH searches in step: each search is
 * a chain of dependent loads, so one at a time leaves the core waiting;
 * side by side they overlap, and with masks instead of branches (the
 * directions are data: a mispredicted branch per step cost more than the
 * search). The same compares and the same choices as qmap_quantize,
 * element by element, so the same codes; the CUDA kernel calls
 * qmap_quantize itself. ext is the map with the search's lower bound
 * before it (ext[0] = -1 signed, 0 unsigned; ext[j + 1] = code[j]). */
enum { QUANT_WIDTH = 16 };
static void quantize_many(const float *code, const float *ext, const float *x, uint8_t *out, int len)
{
    for (int j0 = 0; j0 < len; j0 += QUANT_WIDTH) {
        const int w = len - j0 < QUANT_WIDTH ? len - j0 : QUANT_WIDTH;
        int pivot[QUANT_WIDTH], up[QUANT_WIDTH], lo[QUANT_WIDTH], lo_e[QUANT_WIDTH];
        float val[QUANT_WIDTH];
        for (int k = 0; k < w; k++)
            pivot[k] = 127, up[k] = 255, lo[k] = 0, lo_e[k] = 0, val[k] = code[127];
        for (int i = 64; i > 0; i >>= 1)
            for (int k = 0; k < w; k++) {
                const int m = -(x[j0 + k] > val[k]);
                lo[k] = (pivot[k] & m) | (lo[k] & ~m);
                lo_e[k] = ((pivot[k] + 1) & m) | (lo_e[k] & ~m);
                up[k] = (up[k] & m) | (pivot[k] & ~m);
                pivot[k] += (i & m) - (i & ~m);
                val[k] = code[pivot[k]];
            }
        for (int k = 0; k < w; k++) {
            const float xk = x[j0 + k];
            const int m = -(xk > val[k]);
            /* the neighbour on x's side: upper (code[up]) or lower (ext[lo_e]) */
            const float mid = (ext[((up[k] + 1) & m) | (lo_e[k] & ~m)] + val[k]) * 0.5f;
            const int away = ((xk > mid) & m) | ((xk < mid) & ~m);
            const int a = -away;
            out[j0 + k] = (uint8_t)((((up[k] & m) | (lo[k] & ~m)) & a) | (pivot[k] & ~a));
        }
    }
}

/* The block's codes as qmap_code1 and qmap_code2 give them; ext1 and ext2
 * the maps after their lower bounds (quantize_many). */
static void codes_of(const float *ext1, const float *ext2, const float *m, const float *v, float a1, float a2,
                     int len, uint8_t *c1, uint8_t *c2)
{
    float x[K_ADAMW8BIT_BLOCK];
    if (a1 > 0.0f) {
        for (int j = 0; j < len; j++)
            x[j] = m[j] / a1;
        quantize_many(qmap_signed, ext1, x, c1, len);
        for (int j = 0; j < len; j++)
            if (signbit(qmap_signed[c1[j]]) != signbit(m[j]))
                c1[j] = (uint8_t)(m[j] > 0.0f ? c1[j] + 1 : c1[j] - 1);
    } else {
        for (int j = 0; j < len; j++)
            c1[j] = 127;
    }
    if (a2 > 0.0f) {
        for (int j = 0; j < len; j++)
            x[j] = v[j] / a2;
        quantize_many(qmap_unsigned, ext2, x, c2, len);
    } else {
        for (int j = 0; j < len; j++)
            c2[j] = 0;
    }
}

void cpu_adamw8bit_update(float *param, const float *grad, uint8_t *state1, uint8_t *state2, float *absmax1,
                          float *absmax2, int64_t n, const struct adamw_params *hp)
{
    const struct adamw8bit_scalars s = adamw8bit_scalars_of(hp);
    const int64_t blocks = (n + K_ADAMW8BIT_BLOCK - 1) / K_ADAMW8BIT_BLOCK;
    float ext1[257], ext2[257];
    ext1[0] = -1.0f, ext2[0] = 0.0f;
    memcpy(ext1 + 1, qmap_signed, sizeof qmap_signed);
    memcpy(ext2 + 1, qmap_unsigned, sizeof qmap_unsigned);
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t i0 = b * K_ADAMW8BIT_BLOCK;
        const int len = (int)(n - i0 < K_ADAMW8BIT_BLOCK ? n - i0 : K_ADAMW8BIT_BLOCK);
        float m[K_ADAMW8BIT_BLOCK], v[K_ADAMW8BIT_BLOCK];
        const float a1 = absmax1[b], a2 = absmax2[b];
        float new1 = 0.0f, new2 = 0.0f;
        for (int j = 0; j < len; j++) {
            const int64_t i = i0 + j;
            const float g = grad[i];
            m[j] = v[j] = 0.0f;
            if (isfinite(g)) {
                v[j] = qmap_unsigned[state2[i]] * a2;
                v[j] = v[j] * s.b2 + s.one_b2 * g * g;
                m[j] = qmap_signed[state1[i]] * a1;
                m[j] = m[j] * s.b1 + s.one_b1 * g;
            }
            /* fmaxf's result (a NaN never wins) without its library call */
            new1 = fabsf(m[j]) > new1 ? fabsf(m[j]) : new1;
            new2 = fabsf(v[j]) > new2 ? fabsf(v[j]) : new2;
        }
        for (int j = 0; j < len; j++) {
            const int64_t i = i0 + j;
            if (!isfinite(grad[i]))
                continue;
            float p = param[i] + s.step_size * (m[j] / (sqrtf(v[j]) + s.c2eps));
            if (s.decays)
                p = p * s.decay;
            param[i] = p;
        }
        codes_of(ext1, ext2, m, v, new1, new2, len, state1 + i0, state2 + i0);
        absmax1[b] = new1;
        absmax2[b] = new2;
    }
}
