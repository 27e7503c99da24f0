/* bitsandbytes' blockwise 8-bit AdamW (kernels/kernels.h), block by block
 * in the order of its CUDA kernel; kernels/cuda/adamw8bit.cu computes the
 * same f32 operations in the same order, so the backends agree bit for bit. */
#include "kernels/adamw8bit.h"
#include "kernels/cpu/cpu.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const float qmap_signed[256] = QMAP_SIGNED_VALUES;
static const float qmap_unsigned[256] = QMAP_UNSIGNED_VALUES;

/* qmap_quantize by table: a binary search is a chain of dependent loads
 * and data-dependent branches, which left the CPU waiting most of the
 * step. The search of that binary tree always ends between the two codes
 * around x, on whichever of them is the tree's leaf, and returns the
 * nearer by their midpoint, the leaf on a tie; so it is found here as the
 * first code not below x (a table over x's bits, in buckets of 2^13
 * ordered-bits, which never hold two codes of these maps, then one
 * compare), the midpoint, and for the tie the search's own answer at that
 * midpoint. Exact, not approximate: the same code as qmap_quantize for
 * every x in [-1, 1] (what m / absmax and v / absmax are), which the CUDA
 * kernel calls. */
enum { LUT_SHIFT = 13 };
#define LUT_KMIN 0x407FFFFFu /* the ordered bits of -1.0f */
#define LUT_SIZE (((0xBF800000u - LUT_KMIN) >> LUT_SHIFT) + 1)

struct qlut {
    const float *code;
    float mid[255];       /* (code[j] + code[j + 1]) * 0.5f, as the search computes it */
    uint8_t tie[255];     /* the search's code at mid[j] */
    uint8_t first[LUT_SIZE]; /* the first code not below the bucket's start (255 past the last) */
};

static inline uint32_t ordered_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u >> 31 ? ~u : u | 0x80000000u;
}

static void qlut_build(struct qlut *q, const float *code, int is_signed)
{
    q->code = code;
    for (int j = 0; j < 255; j++) {
        q->mid[j] = (code[j] + code[j + 1]) * 0.5f;
        q->tie[j] = qmap_quantize(code, is_signed, q->mid[j]);
        if (ordered_bits(code[j + 1]) - ordered_bits(code[j]) <= 1u << LUT_SHIFT)
            abort(); /* two codes in one bucket: the table's premise fails */
    }
    int s = 0;
    for (uint32_t b = 0; b < LUT_SIZE; b++) {
        const uint32_t start = LUT_KMIN + (b << LUT_SHIFT);
        while (s < 255 && ordered_bits(code[s]) < start)
            s++;
        q->first[b] = (uint8_t)s;
    }
}

static inline uint8_t qlut_quantize(const struct qlut *q, float x)
{
    int s = q->first[(ordered_bits(x) - LUT_KMIN) >> LUT_SHIFT];
    s += q->code[s] < x; /* 256 only for x above 1.0, never given */
    if (s == 0)
        return 0;
    const float mid = q->mid[s - 1];
    return (uint8_t)(x > mid ? s : x < mid ? s - 1 : q->tie[s - 1]);
}

static struct qlut lut_signed, lut_unsigned;
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void luts_build(void)
{
    qlut_build(&lut_signed, qmap_signed, 1);
    qlut_build(&lut_unsigned, qmap_unsigned, 0);
}

uint8_t cpu_qmap_quantize(int is_signed, float x)
{
    pthread_once(&lut_once, luts_build);
    return qlut_quantize(is_signed ? &lut_signed : &lut_unsigned, x);
}

/* The block's codes as qmap_code1 and qmap_code2 give them. */
static void codes_of(const float *m, const float *v, float a1, float a2, int len, uint8_t *c1, uint8_t *c2)
{
    for (int j = 0; j < len; j++) {
        c1[j] = a1 > 0.0f ? qmap_sign_kept(qmap_signed, qlut_quantize(&lut_signed, m[j] / a1), m[j]) : 127;
        c2[j] = a2 > 0.0f ? qlut_quantize(&lut_unsigned, v[j] / a2) : 0;
    }
}

void cpu_adamw8bit_update(float *param, const float *grad, uint8_t *state1, uint8_t *state2, float *absmax1,
                          float *absmax2, int64_t n, const struct adamw_params *hp)
{
    const struct adamw8bit_scalars s = adamw8bit_scalars_of(hp);
    const int64_t blocks = (n + K_ADAMW8BIT_BLOCK - 1) / K_ADAMW8BIT_BLOCK;
    pthread_once(&lut_once, luts_build);
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
        codes_of(m, v, new1, new2, len, state1 + i0, state2 + i0);
        absmax1[b] = new1;
        absmax2[b] = new2;
    }
}
