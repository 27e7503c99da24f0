// The CUDA context: one stream per kctx, the cuBLASLt handle (lt.cu), the
// scratch of the blocking reductions, and device memory with a running
// count, so that the tools can print what a run holds and its peak.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lt.h"

extern "C" {
#include "libcommon/error.h"
}

// Enough partial sums for the largest grid the reductions launch.
enum { REDUCE_SLOTS = 4096 };

extern "C" int cuda_ctx_init(struct kctx *ctx)
{
    struct cuda_state *s = (struct cuda_state *)calloc(1, sizeof *s);
    if (!s) {
        err_set("CUDA context: out of host memory");
        return -1;
    }
    cudaError_t e = cudaGetDevice(&s->device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&s->sm_count, cudaDevAttrMultiProcessorCount, s->device);
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&s->reduce, REDUCE_SLOTS * sizeof(double));
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&s->reduce_host, REDUCE_SLOTS * sizeof(double));
    if (e != cudaSuccess) {
        err_set("CUDA context: %s", cudaGetErrorString(e));
        cudaGetLastError();
        ctx->backend = s;
        cuda_ctx_free(ctx);
        return -1;
    }
    s->reduce_slots = REDUCE_SLOTS;
    ctx->backend = s;
    if (lt_init(ctx) != 0) {
        cuda_ctx_free(ctx);
        return -1;
    }
    return 0;
}

extern "C" void cuda_ctx_free(struct kctx *ctx)
{
    struct cuda_state *s = cuda_state_of(ctx);
    if (!s)
        return;
    if (s->stream)
        cudaStreamSynchronize(s->stream);
    lt_free(ctx);
    cudaFree(s->reduce);
    cudaFreeHost(s->reduce_host);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    free(s);
    ctx->backend = NULL;
}

extern "C" int cuda_mem_alloc(struct kctx *ctx, void **ptr, size_t bytes)
{
    struct cuda_state *s = cuda_state_of(ctx);
    *ptr = NULL;
    if (bytes == 0)
        return 0;
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        err_set("out of GPU memory: %.1f MiB wanted, %.1f MiB free of %.1f MiB (%s)",
                bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0,
                cudaGetErrorString(e));
        *ptr = NULL;
        return -1;
    }
    s->mem_now += bytes;
    if (s->mem_now > s->mem_peak)
        s->mem_peak = s->mem_now;
    return 0;
}

extern "C" void cuda_mem_free(struct kctx *ctx, void *ptr, size_t bytes)
{
    if (!ptr)
        return;
    cuda_state_of(ctx)->mem_now -= bytes;
    // Memory still in use by queued work must not be handed back early.
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_of(ctx)));
    CUDA_CHECK(cudaFree(ptr));
}

extern "C" void cuda_mem_usage(struct kctx *ctx, size_t *now, size_t *peak)
{
    struct cuda_state *s = cuda_state_of(ctx);
    *now = s->mem_now;
    *peak = s->mem_peak;
}

extern "C" void cuda_mem_upload(struct kctx *ctx, void *dst, const void *host_src, size_t bytes)
{
    if (bytes == 0)
        return;
    // From pageable memory the copy is staged by the runtime and the host
    // buffer may be reused as soon as the call returns.
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cuda_stream_of(ctx)));
}

extern "C" void cuda_mem_download(struct kctx *ctx, void *host_dst, const void *src, size_t bytes)
{
    if (bytes == 0)
        return;
    cudaStream_t st = cuda_stream_of(ctx);
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
}

extern "C" void cuda_mem_copy(struct kctx *ctx, void *dst, const void *src, size_t bytes)
{
    if (bytes == 0 || dst == src)
        return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream_of(ctx)));
}

extern "C" void cuda_sync(struct kctx *ctx)
{
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_of(ctx)));
}
