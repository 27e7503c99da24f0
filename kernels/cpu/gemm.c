/* Matrix multiply and the Linear layer on OpenBLAS. */
#include "kernels/cpu/cpu.h"

#include <cblas.h>

void cpu_gemm(float *c, const float *a, const float *b, int M, int N, int K, int trans_a,
              int trans_b, float alpha, float beta)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        /* BLAS rejects a zero leading dimension (xerbla prints); the product
         * is empty, so only the beta scaling is left. */
        int64_t mn = (int64_t)M * N;
        for (int64_t i = 0; i < mn; i++)
            c[i] = beta == 0.0f ? 0.0f : beta * c[i];
        return;
    }
    int lda = trans_a ? M : K; /* A is stored [K,M] when transposed */
    int ldb = trans_b ? K : N; /* B is stored [N,K] when transposed */
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, a, lda, b, ldb, beta, c, N);
}

/* out[M,OC] = inp[M,C] weight[OC,C]^T + bias[OC] */
void cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int M, int C, int OC)
{
    float beta = 0.0f;
    if (bias) {
        /* Seed every row with the bias and let the gemm add onto it, which
         * saves a second pass over out. */
#pragma omp parallel for schedule(static) if ((int64_t)M * OC >= CPU_PARALLEL_MIN)
        for (int m = 0; m < M; m++)
            for (int o = 0; o < OC; o++)
                out[(int64_t)m * OC + o] = bias[o];
        beta = 1.0f;
    }
    cpu_gemm(out, inp, weight, M, OC, C, 0, 1, 1.0f, beta);
}

/* Columns of dout summed per thread block; a block's width keeps its partial
 * sums in registers or L1 while the rows stream by. */
#define BIAS_BLOCK 64

/* dbias[OC] += sum over m of dout[M,OC], each column in row order. */
static void linear_bias_backward(float *dbias, const float *dout, int M, int OC)
{
    int nblocks = (OC + BIAS_BLOCK - 1) / BIAS_BLOCK;
#pragma omp parallel for schedule(static) if ((int64_t)M * OC >= CPU_PARALLEL_MIN)
    for (int blk = 0; blk < nblocks; blk++) {
        int o0 = blk * BIAS_BLOCK;
        int width = OC - o0 < BIAS_BLOCK ? OC - o0 : BIAS_BLOCK;
        double acc[BIAS_BLOCK] = {0};
        for (int m = 0; m < M; m++) {
            const float *row = dout + (int64_t)m * OC + o0;
            for (int j = 0; j < width; j++)
                acc[j] += row[j];
        }
        for (int j = 0; j < width; j++)
            dbias[o0 + j] += (float)acc[j];
    }
}

void cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int C, int OC)
{
    /* dinp[M,C] = dout[M,OC] weight[OC,C] */
    if (dinp)
        cpu_gemm(dinp, dout, weight, M, C, OC, 0, 0, 1.0f, 0.0f);
    /* dweight[OC,C] += dout^T[OC,M] inp[M,C] */
    if (dweight)
        cpu_gemm(dweight, dout, inp, OC, C, M, 1, 0, 1.0f, 1.0f);
    if (dbias)
        linear_bias_backward(dbias, dout, M, OC);
}
