// Matrix products through cuBLASLt, loaded at run time: lt.cu is the only
// file that calls it (under the CPU emulator, tests/cuda_emu/lt_emu.cc
// stands in for it with plain loops that do what the same call asks of
// cuBLASLt).
#ifndef DIT_KERNELS_CUDA_LT_H
#define DIT_KERNELS_CUDA_LT_H

#include "kernels/kernels.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

// The handle, its algorithm cache and the workspace of ctx (struct
// cuda_state fields lt, lt_workspace, lt_workspace_bytes); -1 with err_set()
// when libcublasLt cannot be loaded or set up. Called by cuda_ctx_init only,
// so a binary built with CUDA still starts where the library is missing.
//
// DIT_LT_NO_EPILOGUE=1 in the environment makes lt_matmul decline every
// epilogue, so that the fallback of matmul.cu can be tested and compared.
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
// epilogue (or DIT_LT_NO_EPILOGUE is set): the caller then does a plain
// product and the epilogue itself. Needs M, N, K > 0. A plain product that
// cuBLASLt cannot run, or any other cuBLASLt error, is a broken install or a
// bug: printed with cuBLASLt's status string, then abort().
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
//  - GELU on f32 output: cuBLASLt does not document how exactly it computes
//    tanh, and f32 runs must match the CPU to 1e-5, so matmul.cu's kernel
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

#endif
