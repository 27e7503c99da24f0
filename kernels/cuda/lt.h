// Matrix products through cuBLASLt, loaded at run time: lt.cu is the only
// file that calls it. Under the CPU emulator, tests/cuda_emu/lt_emu.cc
// stands in for it: it takes the same cuBLASLt-level description of each
// product (lt_call_of below, which lt.cu turns into descriptors one field
// to one attribute), checks it against what NVIDIA documents and computes
// what the documentation says cuBLASLt computes for it, so that CI checks
// our use of the library, not only matmul.cu.
#ifndef DIT_KERNELS_CUDA_LT_H
#define DIT_KERNELS_CUDA_LT_H

#include "kernels/kernels.h"

// Types and enum values only: the library itself is opened with dlopen.
#include <cublasLt.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The handle, its algorithm cache and the workspace of ctx (struct
// cuda_state fields lt, lt_workspace, lt_workspace_bytes); -1 with err_set()
// when libcublasLt cannot be loaded or set up. Called by cuda_ctx_init only,
// so a binary built with CUDA still starts where the library is missing.
//
// DIT_LT_NO_EPILOGUE=1 in the environment makes lt_matmul decline every
// epilogue, so that the fallback of matmul.cu can be tested and compared.
// DIT_LT_STRICT=1 makes an epilogue that cuBLASLt itself rejects (its
// heuristic returns no algorithm, or an error) abort with the product and
// the status instead of falling back, so that a GPU test run proves the
// fused descriptors are accepted and exercised rather than silently skipped.
int lt_init(struct kctx *ctx);
void lt_free(struct kctx *ctx);

// One product, row-major: D[M,N] = alpha op(A) op(B) + beta D, then the
// epilogue. A is [M,K] ([K,M] when trans_a), B is [K,N] ([N,K] when trans_b),
// both contiguous. Accumulation and alpha/beta are fp32; D is rounded once
// to its dtype on store. With beta = 0, D is not read.
//
// Epilogue (only with beta = 0): bias[N] (dtype of D) added to every row,
// then, with gelu, out = gelu_tanh(x + bias) stored in D and, when aux is not
// NULL, the pre-activation x + bias stored in aux ([M,N] contiguous, dtype
// of D).
struct lt_gemm {
    int M, N, K;
    int trans_a, trans_b;
    const void *a, *b;
    enum kdtype ab_dtype; // f32, bf16 or f16
    void *d;
    enum kdtype d_dtype;  // ab_dtype, or f32 (parameter gradients)
    float alpha, beta;
    const void *bias;     // NULL: none
    int gelu;
    void *aux;            // NULL: not stored; only with gelu
};

// Runs g on the context's stream (asynchronously) and returns 0, or returns
// 1 without touching anything when cuBLASLt has no algorithm for g's
// epilogue (or DIT_LT_NO_EPILOGUE is set; with DIT_LT_STRICT it aborts
// instead): the caller then does a plain product and the epilogue itself.
// Needs M, N, K > 0. A plain product that cuBLASLt cannot run, or any other
// cuBLASLt error, is a broken install or a bug: printed with the product and
// cuBLASLt's status string, then abort().
//
// The workspace (cuda_state's lt_workspace) is in use only while a product
// runs on the stream; between products, kernels on the same stream may
// borrow it as scratch (matmul.cu sums dbias partials there).
int lt_matmul(struct kctx *ctx, const struct lt_gemm *g);

// Epilogues lt_matmul declines before asking cuBLASLt (the emulator
// declines the same, so CI runs both paths of matmul.cu):
//  - the GELU aux matrix's leading dimension (N, as the operands are swapped
//    into column-major) must be a multiple of 8, as cuBLASLt documents for
//    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD;
//  - GELU on f32 output: cuBLASLt does not document which GELU it computes
//    (the tanh approximation, by every account; see README.md) nor how
//    exactly, and f32 runs must match the CPU to 1e-5, so matmul.cu's kernel
//    does it; for bf16 and f16 the rounding of the result dominates.
// What both implementations of lt_matmul accept: M, N, K > 0, aux only
// with GELU, an epilogue only with beta 0. A bad call is a bug in matmul.cu:
// printed, then abort(). Returns whether g has an epilogue.
static inline int lt_check_call(const struct lt_gemm *g)
{
    const int has_epilogue = g->bias || g->gelu;
    if (g->M <= 0 || g->N <= 0 || g->K <= 0 || (g->aux && !g->gelu) ||
        (has_epilogue && g->beta != 0.0f)) {
        fprintf(stderr, "dit: lt_matmul: bad call M=%d N=%d K=%d gelu=%d aux=%p beta=%g\n",
                g->M, g->N, g->K, g->gelu, g->aux, (double)g->beta);
        abort();
    }
    return has_epilogue;
}

static inline int lt_epilogue_possible(const struct lt_gemm *g)
{
    if (g->aux && g->N % 8 != 0)
        return 0;
    return !(g->gelu && g->d_dtype == KDT_F32);
}

// ---- the call as cuBLASLt sees it ------------------------------------------------

// A matrix layout in cuBLASLt's terms: column-major (CUBLASLT_ORDER_COL,
// the default order), rows x cols, ld elements from one column to the next.
struct lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};

// Everything lt.cu passes to cuBLASLt for one product: the descriptor's
// attributes, the layouts, the pointers and scalars of cublasLtMatmul, and
// the heuristic's preferences. lt.cu sets exactly these (one field, one
// attribute); lt_emu.cc checks them and computes D from them alone.
struct lt_call {
    cublasComputeType_t compute;
    cudaDataType_t scale;        // type of alpha and beta
    int32_t pointer_mode;        // cublasLtPointerMode_t: host alpha and beta
    int32_t transa, transb;      // cublasOperation_t
    uint32_t epilogue;           // cublasLtEpilogue_t
    int32_t bias_type;           // cudaDataType_t, with a bias epilogue
    int64_t aux_ld;              // with a GELU_AUX epilogue
    struct lt_layout a, b, c, d; // c is d: the product is in place
    const void *A, *B, *C;
    void *D;
    const void *bias; // BIAS_POINTER, or NULL
    void *aux;        // EPILOGUE_AUX_POINTER, or NULL
    float alpha, beta;
    // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES
    uint32_t align_a, align_b, align_c, align_d;
    uint32_t reduction_mask; // CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK
};

// lt.cu passes each field with its sizeof; cublasLt.h names the type of
// every attribute, and cuBLASLt rejects another size (INVALID_VALUE).
static_assert(sizeof(lt_call::pointer_mode) == sizeof(int32_t), "POINTER_MODE is int32_t");
static_assert(sizeof(lt_call::transa) == sizeof(int32_t) &&
                  sizeof(lt_call::transb) == sizeof(int32_t),
              "TRANSA, TRANSB are int32_t");
static_assert(sizeof(lt_call::epilogue) == sizeof(uint32_t), "EPILOGUE is uint32_t");
static_assert(sizeof(lt_call::bias_type) == sizeof(int32_t), "BIAS_DATA_TYPE is int32_t");
static_assert(sizeof(lt_call::aux_ld) == sizeof(int64_t), "EPILOGUE_AUX_LD is int64_t");
static_assert(sizeof(lt_call::align_a) == sizeof(uint32_t) &&
                  sizeof(lt_call::reduction_mask) == sizeof(uint32_t),
              "MIN_ALIGNMENT_*_BYTES and REDUCTION_SCHEME_MASK are uint32_t");

static inline struct lt_layout lt_layout_of(cudaDataType_t type, uint64_t rows, uint64_t cols,
                                            int64_t ld)
{
    struct lt_layout l;
    l.type = type;
    l.rows = rows;
    l.cols = cols;
    l.ld = ld;
    return l;
}

static inline cudaDataType_t lt_type(enum kdtype dt)
{
    switch (dt) {
    case KDT_F32: return CUDA_R_32F;
    case KDT_BF16: return CUDA_R_16BF;
    case KDT_F16: return CUDA_R_16F;
    default: break;
    }
    fprintf(stderr, "dit: cuBLASLt: unknown dtype %d\n", (int)dt);
    abort();
}

// The largest power of two up to 256 that divides the address (256 for
// NULL): what the MIN_ALIGNMENT preferences ask for.
static inline uint32_t lt_align(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    uint32_t a = 256;
    while (a > 1 && (v & (a - 1)) != 0)
        a >>= 1;
    return a;
}

static inline uint32_t lt_epilogue_of(const struct lt_gemm *g)
{
    if (!g->gelu)
        return g->bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (g->aux)
        return g->bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    return g->bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
}

// Row-major products through a column-major library: row-major D[M,N] is
// column-major D^T[N,M] with the same bytes, and D^T = op(B)^T op(A)^T, so
// cuBLASLt is asked for the product with the operands swapped (its A is our
// B, its B our A, m = N, n = M, k = K) and the same transpose flags (a
// row-major [r,c] matrix read as column-major is already its transpose).
// Its D has N rows, so the bias vector (one value per row of D) runs along
// our columns, and the GELU aux matrix has our row length N as its leading
// dimension.
static inline struct lt_call lt_call_of(const struct lt_gemm *g)
{
    struct lt_call c;
    memset(&c, 0, sizeof c);
    // True fp32 accumulation: never _FAST_TF32 or a 16-bit compute type.
    c.compute = CUBLAS_COMPUTE_32F;
    c.scale = CUDA_R_32F;
    c.pointer_mode = CUBLASLT_POINTER_MODE_HOST;
    c.transa = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    c.transb = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    c.epilogue = lt_epilogue_of(g);
    const cudaDataType_t ab = lt_type(g->ab_dtype), dt = lt_type(g->d_dtype);
    const uint64_t M = (uint64_t)g->M, N = (uint64_t)g->N, K = (uint64_t)g->K;
    // Stored row-major [r,c] is column-major [c,r] with ld c.
    if (g->trans_b) // our B stored [N,K]
        c.a = lt_layout_of(ab, K, N, (int64_t)K);
    else // our B stored [K,N]
        c.a = lt_layout_of(ab, N, K, (int64_t)N);
    if (g->trans_a) // our A stored [K,M]
        c.b = lt_layout_of(ab, M, K, (int64_t)M);
    else // our A stored [M,K]
        c.b = lt_layout_of(ab, K, M, (int64_t)K);
    c.d = lt_layout_of(dt, N, M, (int64_t)N);
    c.c = c.d;
    c.A = g->b;
    c.B = g->a;
    c.C = g->d;
    c.D = g->d;
    if (g->bias) {
        c.bias = g->bias;
        c.bias_type = dt;
    }
    if (g->aux) {
        c.aux = g->aux;
        c.aux_ld = (int64_t)N;
    }
    c.alpha = g->alpha;
    c.beta = g->beta;
    c.align_a = lt_align(c.A);
    c.align_b = lt_align(c.B);
    c.align_c = lt_align(c.C);
    c.align_d = lt_align(c.D);
    // Split-K partial sums kept in fp32: the default mask also allows
    // INPLACE and OUTPUT_TYPE, which store them in D's type (cublasLt.h,
    // cublasLtReductionScheme_t), rounding a bf16 or f16 product several
    // times. NONE (no split) always passes the mask.
    c.reduction_mask = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    return c;
}

// One line naming the product, for messages: our row-major shapes and
// dtypes.
static inline void lt_describe(const struct lt_gemm *g, char *buf, size_t size)
{
    static const char *const names[] = {"f32", "bf16", "f16"};
    const int ab = (int)g->ab_dtype, d = (int)g->d_dtype;
    snprintf(buf, size,
             "[%d,%d] = [%d,%d]%s x [%d,%d]%s, %s inputs, %s output, alpha %g beta %g%s%s%s",
             g->M, g->N, g->trans_a ? g->K : g->M, g->trans_a ? g->M : g->K,
             g->trans_a ? "^T" : "", g->trans_b ? g->N : g->K, g->trans_b ? g->K : g->N,
             g->trans_b ? "^T" : "", ab >= 0 && ab < 3 ? names[ab] : "?",
             d >= 0 && d < 3 ? names[d] : "?", (double)g->alpha, (double)g->beta,
             g->bias ? ", bias" : "", g->gelu ? ", gelu" : "", g->aux ? " (aux)" : "");
}

#endif
