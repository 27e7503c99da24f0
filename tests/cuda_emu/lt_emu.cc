// lt.h for the CPU emulator: the build with DIT_CUDA_EMU links this file
// instead of kernels/cuda/lt.cu. It takes the same cuBLASLt-level
// description of each product that lt.cu turns into descriptors
// (lt_call_of in lt.h: the swapped operands, column-major layouts, leading
// dimensions, epilogue, bias type, aux ld, alignment and reduction
// preferences), checks it against what NVIDIA documents (aborting with the
// rule and the product when it breaks one), and computes from it alone what
// the documentation says cublasLtMatmul computes. So CI checks our use of
// cuBLASLt, and a wrong operand order, transpose, ld or bias direction in
// lt_call_of gives wrong numbers here, not first on a GPU.
//
// The semantics emulated (column-major, the cuBLAS guide, cublasLtMatmul()
// and cublasLt.h):
//  - D[i + j ldd] = alpha sum_k op(A)[i,k] op(B)[k,j] + beta C[i + j ldc],
//    op(A)[i,k] = A[i + k lda] (N) or A[k + i lda] (T), likewise B; inputs
//    converted from their type, fp32 accumulation with k ascending; C is not
//    read when beta is 0 (the BLAS rule cuBLAS follows);
//  - then the epilogue: + bias[i] (one value per row of D, bias of the
//    type CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE names), the GELU input stored
//    to aux[i + j aux_ld] in D's type (EPILOGUE_AUX_DATA_TYPE unset), then
//    GELU, the tanh approximation (see kernels/cuda/README.md);
//  - one rounding to D's type on store, unless the reduction scheme mask
//    lets cuBLASLt split K with partial sums kept in D's type (INPLACE,
//    OUTPUT_TYPE): then, for a 16-bit D, the emulator does what that allows,
//    rounding each half of the sum to D's type, so that a product that
//    would lose precision on a GPU that picks such a split loses it here.
//
// Operands are read and written through cudaMemcpy, so each matrix's
// extent ((cols - 1) ld + rows elements) must lie inside one device
// allocation; under DIT_CUDA_EMU_DRYRUN the extents and every rule are
// still checked and the loops skipped. The workspace is allocated as lt.cu
// does, since matmul.cu borrows it as scratch.
//
// What it cannot check: which algorithm the heuristic picks, whether one
// exists (lt.cu's fallback for epilogues is tested with
// DIT_LT_NO_EPILOGUE), the exact GELU and rounding of the library, and the
// attribute value sizes lt.cu passes (cuBLASLt itself rejects a wrong size
// with CUBLAS_STATUS_INVALID_VALUE, which lt.cu aborts on).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lt.h"

#include <stdarg.h>
#include <string.h>

#include <vector>

extern "C" {
#include "libcommon/error.h"
}

namespace {

const size_t EMU_LT_WORKSPACE_BYTES = (size_t)32 << 20; // as lt.cu

struct emu_lt_state {
    int no_epilogue;
};

[[noreturn]] __attribute__((format(printf, 2, 3))) void emu_lt_fail(const struct lt_gemm *g,
                                                                    const char *fmt, ...)
{
    char msg[512], what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lt_describe(g, what, sizeof what);
    fprintf(stderr, "dit: cuBLASLt (emulated): %s; the product %s\n", msg, what);
    abort();
}

bool emu_is_16bit(cudaDataType_t t)
{
    return t == CUDA_R_16BF || t == CUDA_R_16F;
}

size_t emu_type_size(cudaDataType_t t)
{
    return t == CUDA_R_32F ? 4 : 2;
}

const char *emu_type_name(cudaDataType_t t)
{
    return t == CUDA_R_32F ? "CUDA_R_32F" : t == CUDA_R_16BF ? "CUDA_R_16BF"
                                        : t == CUDA_R_16F    ? "CUDA_R_16F"
                                                             : "another type";
}

float emu_get(const unsigned char *base, cudaDataType_t t, size_t i)
{
    if (t == CUDA_R_32F) {
        float v;
        memcpy(&v, base + 4 * i, 4);
        return v;
    }
    if (t == CUDA_R_16BF) {
        bf16 v;
        memcpy(&v, base + 2 * i, 2);
        return ld(v);
    }
    f16 v;
    memcpy(&v, base + 2 * i, 2);
    return ld(v);
}

// v rounded to t, as a store rounds it.
float emu_round(cudaDataType_t t, float v)
{
    if (t == CUDA_R_16BF)
        return ld(st<bf16>(v));
    if (t == CUDA_R_16F)
        return ld(st<f16>(v));
    return v;
}

void emu_put(unsigned char *base, cudaDataType_t t, size_t i, float v)
{
    if (t == CUDA_R_32F) {
        memcpy(base + 4 * i, &v, 4);
    } else if (t == CUDA_R_16BF) {
        bf16 x = st<bf16>(v);
        memcpy(base + 2 * i, &x, 2);
    } else {
        f16 x = st<f16>(v);
        memcpy(base + 2 * i, &x, 2);
    }
}

// The tanh approximation, as kernels/cpu and cuBLASLt's GELU epilogue.
float emu_gelu(float x)
{
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

// Elements a column-major layout spans from its first element.
size_t emu_extent(const struct lt_layout &l)
{
    return (size_t)((l.cols - 1) * (uint64_t)l.ld + l.rows);
}

// [p, p + bytes) must be device memory of one allocation: a copy onto
// itself checks that (and is skipped in a dry run's memory).
void emu_check_extent(const struct lt_gemm *g, const void *p, size_t bytes, const char *what)
{
    if (cudaMemcpy(const_cast<void *>(p), p, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess) {
        cudaGetLastError();
        emu_lt_fail(g, "%s: %zu bytes at %p do not lie inside one device allocation", what,
                    bytes, p);
    }
}

std::vector<unsigned char> emu_fetch(const void *p, size_t bytes)
{
    std::vector<unsigned char> h(bytes);
    CUDA_CHECK(cudaMemcpy(h.data(), p, bytes, cudaMemcpyDeviceToHost));
    return h;
}

void emu_check_layout(const struct lt_gemm *g, const struct lt_layout &l, const char *what)
{
    if (l.rows < 1 || l.cols < 1 || l.ld < (int64_t)l.rows)
        emu_lt_fail(g, "matrix %s is %llu x %llu with ld %lld: a column-major layout needs ld >= "
                    "rows (cublasLtMatrixLayoutCreate)",
                    what, (unsigned long long)l.rows, (unsigned long long)l.cols, (long long)l.ld);
}

// The pointer must be at least as aligned as the heuristic was told (it
// picks algorithms that rely on it) and as its element type.
void emu_check_align(const struct lt_gemm *g, const void *p, uint32_t told, cudaDataType_t t,
                     const char *what)
{
    const uint32_t have = lt_align(p);
    if (told < 1 || told > 256 || (told & (told - 1)) != 0)
        emu_lt_fail(g, "CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_%s_BYTES = %u is not a power of two "
                    "up to 256",
                    what, told);
    if (have < told)
        emu_lt_fail(g, "matrix %s at %p is %u-byte aligned but the heuristic was told %u "
                    "(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_%s_BYTES): its algorithm may need that",
                    what, p, have, told, what);
    if (have < emu_type_size(t))
        emu_lt_fail(g, "matrix %s at %p is not aligned to its %zu-byte elements", what, p,
                    emu_type_size(t));
}

// The rules of the cuBLAS guide and cublasLt.h that lt_call_of must keep;
// returns k.
uint64_t emu_check(const struct lt_gemm *g, const struct lt_call &c)
{
    if (c.compute != CUBLAS_COMPUTE_32F)
        emu_lt_fail(g, "compute type %d: the backend promises true fp32 products "
                    "(CUBLAS_COMPUTE_32F; _FAST_TF32 and the others round the inputs)",
                    (int)c.compute);
    if (c.scale != CUDA_R_32F || c.pointer_mode != CUBLASLT_POINTER_MODE_HOST)
        emu_lt_fail(g, "alpha and beta are host floats: scale type CUDA_R_32F and "
                    "CUBLASLT_POINTER_MODE_HOST, not %d and %d",
                    (int)c.scale, (int)c.pointer_mode);
    // The rows of the cublasLtMatmul() type table for CUBLAS_COMPUTE_32F
    // and scale CUDA_R_32F that the backend uses.
    const cudaDataType_t ab = c.a.type, dt = c.d.type;
    const bool row_ok = c.b.type == ab && c.c.type == dt &&
                        (dt == ab || (dt == CUDA_R_32F && emu_is_16bit(ab))) &&
                        (ab == CUDA_R_32F || emu_is_16bit(ab));
    if (!row_ok)
        emu_lt_fail(g, "types A %s, B %s, C %s, D %s are not a row of the cublasLtMatmul() "
                    "table for CUBLAS_COMPUTE_32F that this backend uses",
                    emu_type_name(c.a.type), emu_type_name(c.b.type), emu_type_name(c.c.type),
                    emu_type_name(c.d.type));
    if ((c.transa != CUBLAS_OP_N && c.transa != CUBLAS_OP_T) ||
        (c.transb != CUBLAS_OP_N && c.transb != CUBLAS_OP_T))
        emu_lt_fail(g, "transa %d, transb %d: only CUBLAS_OP_N and CUBLAS_OP_T", (int)c.transa,
                    (int)c.transb);
    emu_check_layout(g, c.a, "A");
    emu_check_layout(g, c.b, "B");
    emu_check_layout(g, c.d, "D");
    // In place: C and D are one matrix, so one layout.
    if (c.C != c.D || c.c.type != c.d.type || c.c.rows != c.d.rows || c.c.cols != c.d.cols ||
        c.c.ld != c.d.ld)
        emu_lt_fail(g, "C and D must be the same matrix with the same layout");
    const uint64_t m = c.d.rows, n = c.d.cols;
    const uint64_t a_rows = c.transa == CUBLAS_OP_N ? c.a.rows : c.a.cols;
    const uint64_t k = c.transa == CUBLAS_OP_N ? c.a.cols : c.a.rows;
    const uint64_t b_rows = c.transb == CUBLAS_OP_N ? c.b.rows : c.b.cols;
    const uint64_t b_cols = c.transb == CUBLAS_OP_N ? c.b.cols : c.b.rows;
    if (a_rows != m || b_rows != k || b_cols != n)
        emu_lt_fail(g, "op(A) is %llu x %llu, op(B) %llu x %llu and D %llu x %llu: not a product",
                    (unsigned long long)a_rows, (unsigned long long)k,
                    (unsigned long long)b_rows, (unsigned long long)b_cols,
                    (unsigned long long)m, (unsigned long long)n);
    if (!c.A || !c.B || !c.D)
        emu_lt_fail(g, "a NULL matrix pointer");
    emu_check_align(g, c.A, c.align_a, c.a.type, "A");
    emu_check_align(g, c.B, c.align_b, c.b.type, "B");
    emu_check_align(g, c.C, c.align_c, c.c.type, "C");
    emu_check_align(g, c.D, c.align_d, c.d.type, "D");

    const uint32_t e = c.epilogue;
    const bool known = e == CUBLASLT_EPILOGUE_DEFAULT || e == CUBLASLT_EPILOGUE_BIAS ||
                       e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
                       e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    if (!known)
        emu_lt_fail(g, "epilogue %u is not emulated", e);
    const bool bias = e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
                      e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    const bool aux = e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    if (bias != (c.bias != NULL))
        emu_lt_fail(g, "epilogue %u %s a bias pointer (CUBLASLT_MATMUL_DESC_BIAS_POINTER)", e,
                    bias ? "needs" : "does not read");
    if (bias && c.bias_type != (int32_t)dt)
        emu_lt_fail(g, "bias of %s with D of %s: the bias is of D's type "
                    "(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE)",
                    emu_type_name((cudaDataType_t)c.bias_type), emu_type_name(dt));
    if (bias && lt_align(c.bias) < emu_type_size(dt))
        emu_lt_fail(g, "the bias at %p is not aligned to its elements", c.bias);
    if (aux != (c.aux != NULL))
        emu_lt_fail(g, "epilogue %u %s an aux pointer (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER)",
                    e, aux ? "needs" : "does not write");
    if (aux && (c.aux_ld % 8 != 0 || c.aux_ld < (int64_t)m))
        emu_lt_fail(g, "CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD = %lld with %llu rows in D: the GELU "
                    "input's ld must be divisible by 8 and at least D's rows",
                    (long long)c.aux_ld, (unsigned long long)m);
    if (aux && lt_align(c.aux) < emu_type_size(dt))
        emu_lt_fail(g, "the aux matrix at %p is not aligned to its elements", c.aux);
    return k;
}

// D (and aux) from c, as the documentation defines them.
void emu_run(const struct lt_gemm *g, const struct lt_call &c, uint64_t k)
{
    const uint64_t m = c.d.rows, n = c.d.cols;
    const size_t a_bytes = emu_extent(c.a) * emu_type_size(c.a.type);
    const size_t b_bytes = emu_extent(c.b) * emu_type_size(c.b.type);
    const size_t d_bytes = emu_extent(c.d) * emu_type_size(c.d.type);
    const size_t bias_bytes = c.bias ? m * emu_type_size(c.d.type) : 0;
    const size_t aux_bytes =
        c.aux ? ((n - 1) * (size_t)c.aux_ld + m) * emu_type_size(c.d.type) : 0;
    emu_check_extent(g, c.A, a_bytes, "A");
    emu_check_extent(g, c.B, b_bytes, "B");
    emu_check_extent(g, c.D, d_bytes, "C = D");
    if (c.bias)
        emu_check_extent(g, c.bias, bias_bytes, "the bias");
    if (c.aux)
        emu_check_extent(g, c.aux, aux_bytes, "the aux matrix");
    if (emu::dryrun())
        return;

    const std::vector<unsigned char> A = emu_fetch(c.A, a_bytes), B = emu_fetch(c.B, b_bytes);
    std::vector<unsigned char> D = emu_fetch(c.D, d_bytes);
    std::vector<unsigned char> bias, aux;
    if (c.bias)
        bias = emu_fetch(c.bias, bias_bytes);
    if (c.aux)
        aux = emu_fetch(c.aux, aux_bytes);

    const bool gelu =
        c.epilogue == CUBLASLT_EPILOGUE_GELU || c.epilogue == CUBLASLT_EPILOGUE_GELU_BIAS ||
        c.epilogue == CUBLASLT_EPILOGUE_GELU_AUX || c.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    // Partial sums in D's type are allowed: take the worst of it.
    const uint32_t low = CUBLASLT_REDUCTION_SCHEME_INPLACE | CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE;
    const uint64_t split =
        (c.reduction_mask & low) && emu_is_16bit(c.d.type) && k >= 2 ? k / 2 : k;
    const size_t lda = (size_t)c.a.ld, ldb = (size_t)c.b.ld, ldd = (size_t)c.d.ld;
    for (uint64_t j = 0; j < n; j++) {
        for (uint64_t i = 0; i < m; i++) {
            float sum = 0.0f, part = 0.0f;
            for (uint64_t kk = 0; kk < k; kk++) {
                if (kk == split) {
                    sum = emu_round(c.d.type, c.alpha * part);
                    part = 0.0f;
                }
                const size_t ai = c.transa == CUBLAS_OP_N ? i + kk * lda : kk + i * lda;
                const size_t bi = c.transb == CUBLAS_OP_N ? kk + j * ldb : j + kk * ldb;
                part += emu_get(A.data(), c.a.type, ai) * emu_get(B.data(), c.b.type, bi);
            }
            float v = split < k ? sum + emu_round(c.d.type, c.alpha * part) : c.alpha * part;
            const size_t di = i + j * ldd;
            if (c.beta != 0.0f)
                v += c.beta * emu_get(D.data(), c.c.type, di);
            if (c.bias)
                v += emu_get(bias.data(), (cudaDataType_t)c.bias_type, i);
            if (c.aux)
                emu_put(aux.data(), c.d.type, i + j * (size_t)c.aux_ld, v);
            if (gelu)
                v = emu_gelu(v);
            emu_put(D.data(), c.d.type, di, v);
        }
    }
    CUDA_CHECK(cudaMemcpy(c.D, D.data(), d_bytes, cudaMemcpyHostToDevice));
    if (c.aux)
        CUDA_CHECK(cudaMemcpy(c.aux, aux.data(), aux_bytes, cudaMemcpyHostToDevice));
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

// cuBLASLt has an algorithm for every documented call here, so nothing is
// declined but what lt.cu declines before asking (lt_epilogue_possible,
// DIT_LT_NO_EPILOGUE); DIT_LT_STRICT changes nothing.
int lt_matmul(struct kctx *ctx, const struct lt_gemm *g)
{
    struct cuda_state *s = cuda_state_of(ctx);
    const struct emu_lt_state *lt = (const struct emu_lt_state *)s->lt;
    const int has_epilogue = lt_check_call(g);
    if (has_epilogue && (lt->no_epilogue || !lt_epilogue_possible(g)))
        return 1;
    const struct lt_call c = lt_call_of(g);
    const uint64_t k = emu_check(g, c);
    // Earlier kernels on the stream must have finished before the host
    // reads their results.
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_of(ctx)));
    emu_run(g, c, k);
    return 0;
}
