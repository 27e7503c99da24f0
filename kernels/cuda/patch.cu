// Patches: the im2col of the patch-embedding convolution and the final
// layer's unpatchify with its inverse (kernels/cpu/patch.c). Pure
// permutations, exact in every dtype. One thread per element of the output,
// so the writes are coalesced and the reads gather p contiguous values at a
// time; these ops touch only the latents, a small fraction of a step.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

// The geometry every map shares.
struct patch_geom {
    int CH, H, W, p, hp, wp;
    int64_t F; // features per token, CH * p * p
};

static patch_geom patch_geom_of(int CH, int H, int W, int p)
{
    patch_geom g = {CH, H, W, p, H / p, W / p, (int64_t)CH * p * p};
    return g;
}

// img[b, c, py*p + ky, px*p + kx] for token tok = (b, py, px).
__device__ __forceinline__ int64_t patch_pixel(const patch_geom &g, int64_t tok, int c, int ky,
                                               int kx)
{
    const int64_t per_img = (int64_t)g.hp * g.wp;
    const int64_t b = idiv(tok, per_img);
    const int64_t in_img = tok - b * per_img;
    const int64_t py = idiv(in_img, g.wp), px = in_img - py * g.wp;
    return ((b * g.CH + c) * g.H + py * g.p + ky) * (int64_t)g.W + px * g.p + kx;
}

// out[tok, f], f = (c, ky, kx) = img pixel.
template <typename T>
__global__ void patchify_kernel(T *out, const T *img, patch_geom g, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    const int pp = g.p * g.p;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < n; o += stride) {
        const int64_t tok = idiv(o, g.F);
        const int f = (int)(o - tok * g.F);
        const int c = f / pp, r = f - c * pp;
        const int ky = r / g.p, kx = r - ky * g.p;
        out[o] = img[patch_pixel(g, tok, c, ky, kx)];
    }
}

// img[b, c, y, x] = tok[(b, y/p, x/p), ((y%p) p + x%p) CH + c].
template <typename T>
__global__ void unpatchify_kernel(T *img, const T *tok, patch_geom g, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int64_t row = idiv(i, g.W); // (b, c, y)
        const int x = (int)(i - row * g.W);
        const int64_t plane = idiv(row, g.H); // (b, c)
        const int y = (int)(row - plane * g.H);
        const int64_t b = idiv(plane, g.CH);
        const int c = (int)(plane - b * g.CH);
        const int py = y / g.p, ky = y - py * g.p, px = x / g.p, kx = x - px * g.p;
        const int64_t t = (b * g.hp + py) * g.wp + px;
        img[i] = tok[t * g.F + (int64_t)(ky * g.p + kx) * g.CH + c];
    }
}

// dtok[tok, f], f = (ky, kx, c) = dimg pixel: the inverse of the above.
template <typename T>
__global__ void unpatchify_backward_kernel(T *dtok, const T *dimg, patch_geom g, int64_t n)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < n; o += stride) {
        const int64_t tok = idiv(o, g.F);
        const int f = (int)(o - tok * g.F);
        const int k = f / g.CH, c = f - k * g.CH;
        const int ky = k / g.p, kx = k - ky * g.p;
        dtok[o] = dimg[patch_pixel(g, tok, c, ky, kx)];
    }
}

enum { PATCH_THREADS = 256 };

extern "C" void cuda_patchify_forward(struct kctx *ctx, void *out, const void *img,
                                      enum kdtype dt, int B, int CH, int H, int W, int p)
{
    const int64_t n = (int64_t)B * CH * H * W;
    if (n <= 0)
        return;
    const patch_geom g = patch_geom_of(CH, H, W, p);
    DISPATCH_DTYPE(dt, S, {
        auto fn = patchify_kernel<S>;
        KLAUNCH(fn, cuda_blocks_for(n, PATCH_THREADS), PATCH_THREADS, 0, cuda_stream_of(ctx),
                (S *)out, (const S *)img, g, n);
    });
}

extern "C" void cuda_unpatchify_forward(struct kctx *ctx, void *img, const void *tok,
                                        enum kdtype dt, int B, int CH, int H, int W, int p)
{
    const int64_t n = (int64_t)B * CH * H * W;
    if (n <= 0)
        return;
    const patch_geom g = patch_geom_of(CH, H, W, p);
    DISPATCH_DTYPE(dt, S, {
        auto fn = unpatchify_kernel<S>;
        KLAUNCH(fn, cuda_blocks_for(n, PATCH_THREADS), PATCH_THREADS, 0, cuda_stream_of(ctx),
                (S *)img, (const S *)tok, g, n);
    });
}

extern "C" void cuda_unpatchify_backward(struct kctx *ctx, void *dtok, const void *dimg,
                                         enum kdtype dt, int B, int CH, int H, int W, int p)
{
    const int64_t n = (int64_t)B * CH * H * W;
    if (!dtok || n <= 0)
        return;
    const patch_geom g = patch_geom_of(CH, H, W, p);
    DISPATCH_DTYPE(dt, S, {
        auto fn = unpatchify_backward_kernel<S>;
        KLAUNCH(fn, cuda_blocks_for(n, PATCH_THREADS), PATCH_THREADS, 0, cuda_stream_of(ctx),
                (S *)dtok, (const S *)dimg, g, n);
    });
}
