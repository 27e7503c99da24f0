// lt.h for the CPU emulator: the build with DIT_CUDA_EMU links this file
// instead of kernels/cuda/lt.cu. Device memory is host memory here, so each
// product is plain loops doing what lt.cu asks cuBLASLt to do: inputs
// converted from their dtype, fp32 accumulation in float with k ascending,
// alpha and beta (D not read when beta is 0), the bias and GELU epilogue,
// and one rounding when D (and aux) are stored. The workspace is allocated
// as lt.cu does, since matmul.cu borrows it as scratch.
//
// What this checks is matmul.cu: operand order, transposes, dtypes,
// accumulation rules and its own kernels. The cuBLASLt descriptors of lt.cu
// are only checked on a GPU (make test-cuda).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lt.h"

#include <string.h>

extern "C" {
#include "libcommon/error.h"
}

namespace {

const size_t EMU_LT_WORKSPACE_BYTES = (size_t)32 << 20; // as lt.cu

struct emu_lt_state {
    int no_epilogue;
};

float emu_load(const void *p, enum kdtype dt, int64_t i)
{
    switch (dt) {
    case KDT_F32: return ld(((const float *)p)[i]);
    case KDT_BF16: return ld(((const bf16 *)p)[i]);
    case KDT_F16: return ld(((const f16 *)p)[i]);
    }
    abort();
}

void emu_store(void *p, enum kdtype dt, int64_t i, float v)
{
    switch (dt) {
    case KDT_F32: ((float *)p)[i] = st<float>(v); return;
    case KDT_BF16: ((bf16 *)p)[i] = st<bf16>(v); return;
    case KDT_F16: ((f16 *)p)[i] = st<f16>(v); return;
    }
    abort();
}

// The tanh approximation, as cuBLASLt's GELU epilogue and kernels/cpu.
float emu_gelu(float x)
{
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

} // namespace

int lt_init(struct kctx *ctx)
{
    struct cuda_state *s = cuda_state_of(ctx);
    struct emu_lt_state *lt = (struct emu_lt_state *)calloc(1, sizeof *lt);
    if (!lt) {
        err_set("CUDA backend: out of host memory");
        return -1;
    }
    if (cuda_mem_alloc(ctx, &s->lt_workspace, EMU_LT_WORKSPACE_BYTES) != 0) {
        err_prefix("cuBLASLt workspace");
        free(lt);
        return -1;
    }
    s->lt_workspace_bytes = EMU_LT_WORKSPACE_BYTES;
    const char *no_epi = getenv("DIT_LT_NO_EPILOGUE");
    lt->no_epilogue = no_epi && *no_epi && strcmp(no_epi, "0") != 0;
    s->lt = lt;
    return 0;
}

void lt_free(struct kctx *ctx)
{
    struct cuda_state *s = cuda_state_of(ctx);
    if (!s || !s->lt)
        return;
    cuda_mem_free(ctx, s->lt_workspace, s->lt_workspace_bytes);
    s->lt_workspace = NULL;
    s->lt_workspace_bytes = 0;
    free(s->lt);
    s->lt = NULL;
}

int lt_matmul(struct kctx *ctx, const struct lt_gemm *g)
{
    struct cuda_state *s = cuda_state_of(ctx);
    const struct emu_lt_state *lt = (const struct emu_lt_state *)s->lt;
    const int has_epilogue = lt_check_call(g);
    if (has_epilogue && (lt->no_epilogue || !lt_epilogue_possible(g)))
        return 1;
    // Earlier kernels on the stream must have finished before the host
    // reads their results.
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_of(ctx)));
    const int M = g->M, N = g->N, K = g->K;
    // Element strides of op(A)[m,k] and op(B)[k,n] in the stored matrices.
    const int64_t a_sm = g->trans_a ? 1 : K, a_sk = g->trans_a ? M : 1;
    const int64_t b_sk = g->trans_b ? 1 : N, b_sn = g->trans_b ? K : 1;
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc += emu_load(g->a, g->ab_dtype, m * a_sm + k * a_sk) *
                       emu_load(g->b, g->ab_dtype, k * b_sk + n * b_sn);
            const int64_t i = (int64_t)m * N + n;
            float v = g->alpha * acc;
            if (g->beta != 0.0f)
                v += g->beta * emu_load(g->d, g->d_dtype, i);
            if (g->bias)
                v += emu_load(g->bias, g->d_dtype, n);
            if (g->gelu) {
                if (g->aux)
                    emu_store(g->aux, g->d_dtype, i, v);
                v = emu_gelu(v);
            }
            emu_store(g->d, g->d_dtype, i, v);
        }
    }
    return 0;
}
