/* Patches: the im2col of the patch-embedding convolution, and the final
 * layer's unpatchify with its inverse. Pure permutations, so they are exact. */
#include "kernels/cpu/cpu.h"

/* img[B,CH,H,W] -> out[B, (H/p)(W/p), CH*p*p], features (channel, ky, kx) */
void cpu_patchify_forward(float *out, const float *img, int B, int CH, int H, int W, int p)
{
    int hp = H / p, wp = W / p;
    int64_t F = (int64_t)CH * p * p;
    int64_t tokens = (int64_t)B * hp * wp;
#pragma omp parallel for schedule(static) if (tokens * F >= CPU_PARALLEL_MIN)
    for (int64_t tok = 0; tok < tokens; tok++) {
        int64_t b = tok / ((int64_t)hp * wp);
        int py = (int)(tok / wp % hp), px = (int)(tok % wp);
        float *o = out + tok * F;
        for (int c = 0; c < CH; c++)
            for (int ky = 0; ky < p; ky++) {
                const float *src = img + ((b * CH + c) * H + (int64_t)py * p + ky) * W +
                                   (int64_t)px * p;
                for (int kx = 0; kx < p; kx++)
                    *o++ = src[kx];
            }
    }
}

/* The one index map both directions share: token feature (ky, kx, c) of
 * tok[B,T,p*p*CH] <-> img[b, c, py*p + ky, px*p + kx]. dir > 0 scatters
 * tokens into the image, dir < 0 gathers them back. */
static void unpatchify_map(float *tok, float *img, int B, int CH, int H, int W, int p, int dir)
{
    int hp = H / p, wp = W / p;
    int64_t F = (int64_t)CH * p * p;
    int64_t tokens = (int64_t)B * hp * wp;
#pragma omp parallel for schedule(static) if (tokens * F >= CPU_PARALLEL_MIN)
    for (int64_t t = 0; t < tokens; t++) {
        int64_t b = t / ((int64_t)hp * wp);
        int py = (int)(t / wp % hp), px = (int)(t % wp);
        float *f = tok + t * F;
        for (int ky = 0; ky < p; ky++)
            for (int kx = 0; kx < p; kx++)
                for (int c = 0; c < CH; c++) {
                    float *pix = img + ((b * CH + c) * H + (int64_t)py * p + ky) * W +
                                 (int64_t)px * p + kx;
                    if (dir > 0)
                        *pix = *f;
                    else
                        *f = *pix;
                    f++;
                }
    }
}

/* tok[B,T,p*p*CH] -> img[B,CH,H,W] */
void cpu_unpatchify_forward(float *img, const float *tok, int B, int CH, int H, int W, int p)
{
    /* The map only reads from tok in this direction. */
    unpatchify_map((float *)tok, img, B, CH, H, W, p, +1);
}

/* dimg[B,CH,H,W] -> dtok[B,T,p*p*CH] (overwrites) */
void cpu_unpatchify_backward(float *dtok, const float *dimg, int B, int CH, int H, int W, int p)
{
    unpatchify_map(dtok, (float *)dimg, B, CH, H, W, p, -1);
}
