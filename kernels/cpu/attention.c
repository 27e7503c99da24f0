/* Multi-head self-attention without a mask, on sgemm.
 *
 * One (batch, head) pair is one task, run by one OpenMP thread with
 * sequential OpenBLAS calls on strided views of qkv (rows 3C apart), so no
 * head is ever copied out. Queries go in blocks of ATT_QBLOCK rows: a thread
 * holds at most two ATT_QBLOCK x T score blocks of scratch, which for DiT
 * sizes (T <= 256) is the whole T x T matrix and stays bounded for long
 * sequences. Forward saves only the log-sum-exp of each row; backward
 * recomputes the probabilities from q, k and lse.
 *
 * Each task writes only its own head's slices of out and dqkv, and the
 * products inside it are the same calls whatever the thread count, so the
 * results are the same bits for 1 thread or 64. */
#include "kernels/cpu/cpu.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#define ATT_QBLOCK 256

static int attention_qblock(int T)
{
    return T < ATT_QBLOCK ? T : ATT_QBLOCK;
}

/* Floats one thread needs: the probabilities and their gradient. */
static int64_t attention_per_thread(int T)
{
    return 2 * (int64_t)attention_qblock(T) * T;
}

int64_t cpu_attention_scratch(int T, int threads)
{
    if (threads <= 0)
        threads = omp_get_max_threads();
    return attention_per_thread(T) * threads;
}

/* Threads that the scratch buffer has room for, and no more than tasks. */
static int attention_threads(int64_t scratch_n, int T, int64_t tasks)
{
    int64_t per = attention_per_thread(T);
    int64_t n = scratch_n / (per > 0 ? per : 1);
    int64_t max = omp_get_max_threads();
    if (n > max)
        n = max;
    if (n > tasks)
        n = tasks;
    return n < 1 ? 1 : (int)n;
}

/* Each row of S[nq, T] becomes exp(S - max) in place; lse[i] gets the row's
 * log-sum-exp and inv[i] 1 / its sum. */
CPU_VECTOR_CLONES static void softmax_rows(float *S, int nq, int T, float *lse, float *inv)
{
    for (int i = 0; i < nq; i++) {
        float *s = S + (int64_t)i * T;
        float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
        for (int j = 0; j < T; j++)
            maxv = s[j] > maxv ? s[j] : maxv;
        /* exp after subtracting the row max: no overflow, and the largest
         * term is exactly 1 so the sum is >= 1. */
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < T; j++) {
            float e = cpu_expf(s[j] - maxv);
            s[j] = e;
            sum += e;
        }
        inv[i] = 1.0f / sum;
        lse[i] = maxv + logf(sum);
    }
}

/* out rows (C apart) *= inv[i] */
CPU_VECTOR_CLONES static void scale_rows(float *out, int nq, int HS, int C, const float *inv)
{
    for (int i = 0; i < nq; i++) {
        float *o = out + (int64_t)i * C;
        float r = inv[i];
#pragma omp simd
        for (int d = 0; d < HS; d++)
            o[d] *= r;
    }
}

/* P = exp(scale q k^T - lse), in place on the scores */
CPU_VECTOR_CLONES static void probs_rows(float *P, int nq, int T, const float *lse)
{
    for (int i = 0; i < nq; i++) {
        float *p = P + (int64_t)i * T;
        float l = lse[i];
#pragma omp simd
        for (int j = 0; j < T; j++)
            p[j] = cpu_expf(p[j] - l);
    }
}

/* dS = P * (dP - D) in place on dP, D_i = dO_i . O_i (rows of dO, O C apart) */
CPU_VECTOR_CLONES static void dscores_rows(float *dS, const float *P, const float *dO,
                                           const float *O, int nq, int T, int HS, int C)
{
    for (int i = 0; i < nq; i++) {
        const float *dOi = dO + (int64_t)i * C, *Oi = O + (int64_t)i * C;
        float D = 0.0f;
#pragma omp simd reduction(+ : D)
        for (int d = 0; d < HS; d++)
            D += dOi[d] * Oi[d];
        const float *p = P + (int64_t)i * T;
        float *ds = dS + (int64_t)i * T;
#pragma omp simd
        for (int j = 0; j < T; j++)
            ds[j] = p[j] * (ds[j] - D);
    }
}

/* qkv[B,T,3C] -> out[B,T,C], lse[B,NH,T] */
void cpu_attention_forward(float *out, float *lse, const float *qkv, float *scratch,
                           int64_t scratch_n, int B, int T, int C, int NH)
{
    int HS = C / NH;
    int C3 = 3 * C;
    int64_t tasks = (int64_t)B * NH;
    if (T <= 0 || tasks <= 0)
        return;
    if (HS == 0) {
        /* Empty heads: every score is 0, the softmax uniform, out empty. */
        for (int64_t i = 0; i < tasks * T; i++)
            lse[i] = logf((float)T);
        return;
    }
    float scale = 1.0f / sqrtf((float)HS);
    int qb = attention_qblock(T);
    int nthreads = attention_threads(scratch_n, T, tasks);
#pragma omp parallel num_threads(nthreads)
    {
        float *S = scratch + (int64_t)omp_get_thread_num() * attention_per_thread(T);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            int64_t b = task / NH;
            int h = (int)(task % NH);
            const float *Q = qkv + b * T * C3 + (int64_t)h * HS;
            const float *K = Q + C, *V = Q + 2 * (int64_t)C;
            for (int t0 = 0; t0 < T; t0 += qb) {
                int nq = T - t0 < qb ? T - t0 : qb;
                /* S = scale Q K^T */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, T, HS, scale,
                            Q + (int64_t)t0 * C3, C3, K, C3, 0.0f, S, T);
                float inv[ATT_QBLOCK];
                softmax_rows(S, nq, T, lse + task * T + t0, inv);
                /* O = exp(S - max) V, then each row over its sum: nq * HS
                 * multiplications instead of nq * T. */
                float *O = out + (b * T + t0) * C + (int64_t)h * HS;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, HS, T, 1.0f, S, T, V,
                            C3, 0.0f, O, C);
                scale_rows(O, nq, HS, C, inv);
            }
        }
    }
}

/* With P = softmax(S), S = scale Q K^T, O = P V:
 *   dV = P^T dO
 *   dP = dO V^T,  dS = P * (dP - D),  D_t = sum_s P_ts dP_ts = dO_t . O_t
 *   dQ = scale dS K,  dK = scale dS^T Q
 * dV and dK sum over query rows, so over query blocks too: the first block
 * overwrites them (beta 0), the later ones add (beta 1), always in block
 * order. */
void cpu_attention_backward(float *dqkv, const float *dout, const float *out, const float *lse,
                            const float *qkv, float *scratch, int64_t scratch_n, int B, int T,
                            int C, int NH)
{
    int HS = C / NH;
    int C3 = 3 * C;
    int64_t tasks = (int64_t)B * NH;
    if (T <= 0 || tasks <= 0 || HS == 0)
        return; /* nothing to write: dqkv is empty */
    float scale = 1.0f / sqrtf((float)HS);
    int qb = attention_qblock(T);
    int nthreads = attention_threads(scratch_n, T, tasks);
#pragma omp parallel num_threads(nthreads)
    {
        float *P = scratch + (int64_t)omp_get_thread_num() * attention_per_thread(T);
        float *dS = P + (int64_t)qb * T;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            int64_t b = task / NH;
            int h = (int)(task % NH);
            const float *Q = qkv + b * T * C3 + (int64_t)h * HS;
            const float *K = Q + C, *V = Q + 2 * (int64_t)C;
            float *dQ = dqkv + b * T * C3 + (int64_t)h * HS;
            float *dK = dQ + C, *dV = dQ + 2 * (int64_t)C;
            const float *dO = dout + b * T * C + (int64_t)h * HS;
            const float *O = out + b * T * C + (int64_t)h * HS;
            for (int t0 = 0; t0 < T; t0 += qb) {
                int nq = T - t0 < qb ? T - t0 : qb;
                float beta = t0 == 0 ? 0.0f : 1.0f;
                const float *Qb = Q + (int64_t)t0 * C3, *dOb = dO + (int64_t)t0 * C;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, T, HS, scale, Qb, C3, K,
                            C3, 0.0f, P, T);
                probs_rows(P, nq, T, lse + task * T + t0);
                /* dV (+)= P^T dO */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, nq, 1.0f, P, T, dOb,
                            C, beta, dV, C3);
                /* dP = dO V^T, then dS = P * (dP - D) in place */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, T, HS, 1.0f, dOb, C, V,
                            C3, 0.0f, dS, T);
                dscores_rows(dS, P, dOb, O + (int64_t)t0 * C, nq, T, HS, C);
                /* dQ = scale dS K;  dK (+)= scale dS^T Q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, HS, T, scale, dS, T, K,
                            C3, 0.0f, dQ + (int64_t)t0 * C3, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, nq, scale, dS, T, Qb,
                            C3, beta, dK, C3);
            }
        }
    }
}
