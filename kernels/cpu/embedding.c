/* Table lookups (class labels) and the sinusoidal timestep embedding. */
#include "kernels/cpu/cpu.h"

#include <math.h>
#include <string.h>

/* out[B,C] = table[ids[b], :] */
void cpu_embedding_forward(float *out, const float *table, const int32_t *ids, int B, int C)
{
#pragma omp parallel for schedule(static) if ((int64_t)B * C >= CPU_PARALLEL_MIN)
    for (int b = 0; b < B; b++)
        memcpy(out + (int64_t)b * C, table + (int64_t)ids[b] * C, (size_t)C * sizeof(float));
}

#define EMB_BLOCK 256

/* dtable[ids[b], :] += dout[b, :]. Ids repeat inside a batch (two images of
 * one class), so threads split the columns, never the rows: each table
 * entry then has one owner, which adds the batch rows in order. */
void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int B, int C)
{
    int nblk = (C + EMB_BLOCK - 1) / EMB_BLOCK;
#pragma omp parallel for schedule(static) if ((int64_t)B * C >= CPU_PARALLEL_MIN)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * EMB_BLOCK;
        int width = C - c0 < EMB_BLOCK ? C - c0 : EMB_BLOCK;
        for (int b = 0; b < B; b++) {
            float *dst = dtable + (int64_t)ids[b] * C + c0;
            const float *src = dout + (int64_t)b * C + c0;
            for (int j = 0; j < width; j++)
                dst[j] += src[j];
        }
    }
}

/* out[B,D] = [cos(t freq) | sin(t freq)]. The float operations follow the
 * order of the PyTorch code of DiT and diffusers
 * (-ln(max_period) * i / (half - shift), exp, t * freq, all in fp32): the
 * arguments reach 1000 radians, where a different rounding of freq moves
 * the result by 1e-4, so they should round as they do there. */
void cpu_timestep_embedding(float *out, const float *t, int B, int D, float max_period,
                            float freq_shift)
{
    int half = D / 2;
    float neg_log = (float)-log((double)max_period);
    float denom = (float)half - freq_shift;
#pragma omp parallel for schedule(static) if ((int64_t)B * D >= CPU_PARALLEL_MIN)
    for (int b = 0; b < B; b++) {
        float *o = out + (int64_t)b * D;
        for (int i = 0; i < half; i++) {
            float freq = expf(neg_log * (float)i / denom);
            float arg = t[b] * freq;
            o[i] = cosf(arg);
            o[half + i] = sinf(arg);
        }
    }
}
