/* Matrix multiply and the Linear layer on OpenBLAS.
 *
 * OpenBLAS runs single-threaded (kctx_init) and the threads come from OpenMP
 * here: each thread multiplies its own block of output rows (or columns) with
 * one sequential sgemm. Two thread pools, OpenBLAS's and OpenMP's, spun
 * against each other on every op boundary (sched_yield took a tenth of a DiT
 * step on 2 cores); one pool, owned by us, also lets attention run its
 * per-(batch, head) products inside its own parallel loop.
 *
 * Splitting the output means every element is still summed over the whole K
 * by one thread: no reduction across threads, and dweight's accumulation
 * stays a single += per element.
 *
 * Measured on the 2-core bench machine, on the Linear shapes of DiT-S/2 and
 * DiT-B/2 at batch 8 (M = 2048; C, OC from 384 to 3072; forward, dinp and
 * dweight): two single-threaded halves and OpenBLAS's own two threads both
 * run at 300-350 GFLOP/s, equal within the noise, so the big products lose
 * nothing by running this way and the step loses the spinning. */
#include "kernels/cpu/cpu.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* Below this many multiply-adds one thread is quicker than a fork-join. */
#define GEMM_PARALLEL_MIN (1 << 20)
/* Blocks start on multiples of this, the widest sgemm micro-tile, so no
 * thread is left with a ragged edge tile that another block could take. */
#define GEMM_ALIGN 16

struct gemm_args {
    int trans_a, trans_b, M, N, K;
    float alpha, beta;
    const float *a, *b;
    float *c;
    int lda, ldb, ldc;
};

/* Rows [m0, m1) and columns [n0, n1) of C with one sequential sgemm. */
static void gemm_block(const struct gemm_args *g, int m0, int m1, int n0, int n1)
{
    if (m1 <= m0 || n1 <= n0)
        return;
    const float *a = g->trans_a ? g->a + m0 : g->a + (int64_t)m0 * g->lda;
    const float *b = g->trans_b ? g->b + (int64_t)n0 * g->ldb : g->b + n0;
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                g->trans_b ? CblasTrans : CblasNoTrans, m1 - m0, n1 - n0, g->K, g->alpha, a,
                g->lda, b, g->ldb, g->beta, g->c + (int64_t)m0 * g->ldc + n0, g->ldc);
}

/* Bounds of part `k` of `parts` over [0, n), on GEMM_ALIGN boundaries. */
static int part_bound(int n, int k, int parts)
{
    int64_t units = ((int64_t)n + GEMM_ALIGN - 1) / GEMM_ALIGN;
    int64_t at = units * k / parts * GEMM_ALIGN;
    return at < n ? (int)at : n;
}

static void gemm_run(const struct gemm_args *g)
{
    int64_t work = (int64_t)g->M * g->N * g->K;
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads <= 1 || work < GEMM_PARALLEL_MIN) {
        gemm_block(g, 0, g->M, 0, g->N);
        return;
    }
    /* Split the longer side: the other operand is then shared whole by every
     * thread, and the split one is read once in all. */
    int split_m = g->M >= g->N;
    int len = split_m ? g->M : g->N;
    int parts = (len + GEMM_ALIGN - 1) / GEMM_ALIGN;
    if (parts > threads)
        parts = threads;
#pragma omp parallel for schedule(static) num_threads(parts)
    for (int k = 0; k < parts; k++) {
        int lo = part_bound(len, k, parts), hi = part_bound(len, k + 1, parts);
        if (split_m)
            gemm_block(g, lo, hi, 0, g->N);
        else
            gemm_block(g, 0, g->M, lo, hi);
    }
}

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
    struct gemm_args g = {
        .trans_a = trans_a,
        .trans_b = trans_b,
        .M = M,
        .N = N,
        .K = K,
        .alpha = alpha,
        .beta = beta,
        .a = a,
        .b = b,
        .c = c,
        .lda = trans_a ? M : K, /* A is stored [K,M] when transposed */
        .ldb = trans_b ? K : N, /* B is stored [N,K] when transposed */
        .ldc = N,
    };
    gemm_run(&g);
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
            memcpy(out + (int64_t)m * OC, bias, (size_t)OC * sizeof *out);
        beta = 1.0f;
    }
    cpu_gemm(out, inp, weight, M, OC, C, 0, 1, 1.0f, beta);
}

/* Columns go in blocks whose double partial sums stay in L1 while the rows
 * of dout stream by. */
#define BIAS_BLOCK 512

/* dbias[0, width) += sum over m of dout rows (OC apart), each column in row
 * order. */
CPU_VECTOR_CLONES static void bias_block_backward(float *dbias, const float *dout, int M, int OC,
                                                  int width)
{
    double acc[BIAS_BLOCK];
    for (int j = 0; j < width; j++)
        acc[j] = 0.0;
    for (int m = 0; m < M; m++) {
        const float *row = dout + (int64_t)m * OC;
#pragma omp simd
        for (int j = 0; j < width; j++)
            acc[j] += row[j];
    }
    for (int j = 0; j < width; j++)
        dbias[j] += (float)acc[j];
}

/* dbias[OC] += sum over m of dout[M,OC]. Each thread owns a range of
 * columns, so every column is summed in row order by one thread: the same
 * bits for any thread count. */
static void linear_bias_backward(float *dbias, const float *dout, int M, int OC)
{
#pragma omp parallel if ((int64_t)M * OC >= CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cpu_thread_range(OC, &lo, &hi);
        for (int64_t o0 = lo; o0 < hi; o0 += BIAS_BLOCK) {
            int width = hi - o0 < BIAS_BLOCK ? (int)(hi - o0) : BIAS_BLOCK;
            bias_block_backward(dbias + o0, dout + o0, M, OC, width);
        }
    }
}

void cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int M, int C, int OC)
{
    /* dinp[M,C] = dout[M,OC] weight[OC,C] */
    if (dinp)
        cpu_gemm(dinp, dout, weight, M, C, OC, 0, 0, 1.0f, 0.0f);
    /* dweight[OC,C] += dout^T[OC,M] inp[M,C]; split by rows of OC (or
     * columns of C), never over M, so no partial sums meet across threads. */
    if (dweight)
        cpu_gemm(dweight, dout, inp, OC, C, M, 1, 0, 1.0f, 1.0f);
    if (dbias)
        linear_bias_backward(dbias, dout, M, OC);
}
