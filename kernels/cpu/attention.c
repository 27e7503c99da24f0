/* Multi-head self-attention without a mask, on sgemm.
 *
 * One (batch, head) pair is one task (forward: one (batch, head, query
 * block)), run by one OpenMP thread with sequential OpenBLAS calls on
 * strided views of qkv (rows 3C apart), so no head is ever copied out. Queries go in blocks of ATT_QBLOCK rows: a thread
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
    /* Forward tasks are (batch, head, query block): the blocks of a head
     * are independent, so one head (the VAE's) still fills every thread. */
    const int64_t blocks = (T + qb - 1) / qb, units = tasks * blocks;
    int nthreads = attention_threads(scratch_n, T, units);
#pragma omp parallel num_threads(nthreads)
    {
        float *S = scratch + (int64_t)omp_get_thread_num() * attention_per_thread(T);
#pragma omp for schedule(static)
        for (int64_t unit = 0; unit < units; unit++) {
            const int64_t task = unit / blocks;
            int64_t b = task / NH;
            int h = (int)(task % NH);
            const float *Q = qkv + b * T * C3 + (int64_t)h * HS;
            const float *K = Q + C, *V = Q + 2 * (int64_t)C;
            {
                const int t0 = (int)(unit % blocks) * qb;
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

/* ---- attention with a bias and a key mask (T5) ------------------------------
 *
 * Any Tq and Tk, strided q, k and v rows, an additive bias [NH, Tq, Tk] and
 * a key mask [B, Tk]. A task is one (batch, head, block of ATB_QBLOCK
 * queries): T5-base's B = 1, NH = 12, T = 512 makes 96 of them, enough for
 * every core, where (batch, head) tasks alone would leave most idle. Each
 * computes its block of scores S = scale Q K^T with one sgemm on the
 * strided views, adds the bias and drops masked keys in one pass over S
 * (two-pass softmax in f32: the row max, then exp(s - max) and the sum),
 * and O = P V with a second sgemm, each row then divided by its sum.
 * Masked keys get probability exactly 0, never a large negative score, and
 * the keys before the first and after the last attended one (T5's padding)
 * are left out of both products. The thread count changes only which
 * thread runs a task, so results are the same bits for any count. */

#define ATB_QBLOCK 64

static int atb_qblock(int Tq)
{
    return Tq < ATB_QBLOCK ? Tq : ATB_QBLOCK;
}

int64_t cpu_attention_bias_tasks(int B, int Tq, int NH)
{
    if (B <= 0 || Tq <= 0 || NH <= 0)
        return 0;
    return (int64_t)B * NH * ((Tq + ATB_QBLOCK - 1) / ATB_QBLOCK);
}

/* Floats one thread needs: a block of scores, its queries by every key. */
static int64_t atb_per_thread(int Tq, int Tk)
{
    return (int64_t)atb_qblock(Tq) * (Tk > 0 ? Tk : 0);
}

int64_t cpu_attention_bias_scratch(int Tq, int Tk, int threads)
{
    if (threads <= 0)
        threads = omp_get_max_threads();
    return atb_per_thread(Tq, Tk) * threads;
}

/* Row i of S[nq, nk] (the block's scores over its key range) becomes
 * p_j = exp(s_j - max) for the attended keys, s = S + bias, and 0 for the
 * others; lse[i] = max + log(sum p) and inv[i] = 1 / sum p, or -inf and 0
 * when the row attends to nothing. A masked score becomes -inf through
 * integer bit masks (a float ?: keeps GCC from vectorising, as cpu_expf
 * says), and cpu_expf(-inf) is exactly 0. */
CPU_VECTOR_CLONES static void atb_softmax_rows(float *S, int nq, int nk, const float *bias,
                                               int64_t bias_stride, const float *mask,
                                               float *lse, float *inv)
{
    const uint32_t neg_inf = 0xff800000u;
    for (int i = 0; i < nq; i++) {
        float *s = S + (int64_t)i * nk;
        if (bias) {
            const float *bi = bias + i * bias_stride;
#pragma omp simd
            for (int j = 0; j < nk; j++)
                s[j] += bi[j];
        }
        if (mask) {
#pragma omp simd
            for (int j = 0; j < nk; j++) {
                uint32_t keep = -(uint32_t)(mask[j] != 0.0f), sb;
                memcpy(&sb, &s[j], sizeof sb);
                sb = (sb & keep) | (neg_inf & ~keep);
                memcpy(&s[j], &sb, sizeof sb);
            }
        }
        float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
        for (int j = 0; j < nk; j++)
            maxv = s[j] > maxv ? s[j] : maxv;
        if (maxv == -INFINITY) {
            /* nothing attended: P = 0, so O = 0 */
            memset(s, 0, (size_t)nk * sizeof *s);
            lse[i] = -INFINITY;
            inv[i] = 0.0f;
            continue;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < nk; j++) {
            float e = cpu_expf(s[j] - maxv);
            s[j] = e;
            sum += e;
        }
        inv[i] = 1.0f / sum;
        lse[i] = maxv + logf(sum);
    }
}

/* out rows (C apart) *= inv[i] */
CPU_VECTOR_CLONES static void atb_scale_rows(float *out, int nq, int HS, int64_t C,
                                             const float *inv)
{
    for (int i = 0; i < nq; i++) {
        float *o = out + i * C;
        float r = inv[i];
#pragma omp simd
        for (int d = 0; d < HS; d++)
            o[d] *= r;
    }
}

/* q (B, Tq, NH, HS) rows q_stride apart, k and v (B, Tk, NH, HS) rows
 * kv_stride apart -> out (B, Tq, NH * HS), lse (B, NH, Tq) */
void cpu_attention_bias_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const float *bias, const float *key_mask,
                                float *scratch, int64_t scratch_n, int B, int Tq, int Tk, int NH,
                                int HS, int q_stride, int kv_stride, float scale)
{
    int64_t tasks = cpu_attention_bias_tasks(B, Tq, NH);
    if (tasks <= 0)
        return;
    const int64_t C = (int64_t)NH * HS;
    const int qb = atb_qblock(Tq), nblk = (Tq + qb - 1) / qb;
    const int64_t per = atb_per_thread(Tq, Tk);
    int64_t nthreads = omp_get_max_threads();
    if (per > 0 && scratch_n / per < nthreads)
        nthreads = scratch_n / per;
    if (nthreads > tasks)
        nthreads = tasks;
    if (nthreads < 1)
        nthreads = 1;
#pragma omp parallel num_threads((int)nthreads)
    {
        float *S = scratch ? scratch + (int64_t)omp_get_thread_num() * per : NULL;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t b = task / ((int64_t)NH * nblk);
            const int h = (int)(task / nblk % NH);
            const int t0 = (int)(task % nblk) * qb;
            const int nq = Tq - t0 < qb ? Tq - t0 : qb;
            float *O = HS ? out + (b * Tq + t0) * C + (int64_t)h * HS : NULL;
            float lrow[ATB_QBLOCK], inv[ATB_QBLOCK];
            /* the attended key range [k_lo, k_hi) of this batch row */
            const float *m = key_mask ? key_mask + b * Tk : NULL;
            int k_lo = 0, k_hi = Tk;
            while (m && k_lo < k_hi && m[k_lo] == 0.0f)
                k_lo++;
            while (m && k_hi > k_lo && m[k_hi - 1] == 0.0f)
                k_hi--;
            const int nk = k_hi - k_lo;
            if (nk == 0) {
                for (int i = 0; i < nq; i++) {
                    if (HS > 0)
                        memset(O + i * C, 0, (size_t)HS * sizeof *O);
                    lrow[i] = -INFINITY;
                }
            } else {
                /* (no head dims: every score is 0, and q, k, v and out may
                 * have no memory at all) */
                const float *Q = HS ? q + (b * Tq + t0) * q_stride + (int64_t)h * HS : NULL;
                const float *K = HS ? k + (b * Tk + k_lo) * kv_stride + (int64_t)h * HS : NULL;
                const float *V = HS ? v + (b * Tk + k_lo) * kv_stride + (int64_t)h * HS : NULL;
                /* S = scale Q K^T */
                if (HS > 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, HS, scale, Q,
                                q_stride, K, kv_stride, 0.0f, S, nk);
                else
                    memset(S, 0, (size_t)nq * nk * sizeof *S);
                const float *bias_blk = bias ? bias + ((int64_t)h * Tq + t0) * Tk + k_lo : NULL;
                atb_softmax_rows(S, nq, nk, bias_blk, Tk, m ? m + k_lo : NULL, lrow, inv);
                /* O = exp(S - max) V, then each row over its sum */
                if (HS > 0) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, HS, nk, 1.0f, S,
                                nk, V, kv_stride, 0.0f, O, (int)C);
                    atb_scale_rows(O, nq, HS, C, inv);
                }
            }
            if (lse)
                memcpy(lse + (b * NH + h) * Tq + t0, lrow, (size_t)nq * sizeof *lrow);
        }
    }
}

/* ---- its backward ------------------------------------------------------------
 *
 * A task is one (batch, head): dk and dv sum over every query, so the
 * task walks its query blocks in order, and its gradients are columns of
 * dq, dk and dv no other task writes. Per block of nq <= ATB_QBLOCK
 * queries, over the attended key range [k_lo, k_hi) as the forward takes
 * it, with P recomputed from lse (no max or sum needed):
 *   P = exp(scale Q K^T + bias - lse), 0 for masked keys and for a query
 *       with lse = -inf (it attended nothing)
 *   dV (+)= P^T dO
 *   dP = dO V^T,  dS = P * (dP - D),  D_i = dO_i . O_i
 *   dQ = scale dS K,  dK (+)= scale dS^T Q
 * The first block overwrites dK and dV (beta 0), the later ones add, in
 * block order; keys outside [k_lo, k_hi) are zeroed, and masked keys inside
 * it sum exact zeros. A thread holds P and dS of one block in scratch. */

/* Floats one thread needs: P and dS of a block of queries by every key. */
static int64_t atb_backward_per_thread(int Tq, int Tk)
{
    return 2 * atb_per_thread(Tq, Tk);
}

int64_t cpu_attention_bias_backward_scratch(int Tq, int Tk, int threads)
{
    if (threads <= 0)
        threads = omp_get_max_threads();
    return atb_backward_per_thread(Tq, Tk) * threads;
}

/* Row i of S[nq, nk] (scale q k^T over the block's key range) becomes
 * p_j = exp(s_j + bias_ij - lse_i), and 0 where the key is masked (integer
 * bit masks, as atb_softmax_rows does) or the row attended nothing. */
CPU_VECTOR_CLONES static void atb_probs_rows(float *S, int nq, int nk, const float *bias,
                                             int64_t bias_stride, const float *mask,
                                             const float *lse)
{
    for (int i = 0; i < nq; i++) {
        float *s = S + (int64_t)i * nk;
        const float l = lse[i];
        if (l == -INFINITY) {
            memset(s, 0, (size_t)nk * sizeof *s);
            continue;
        }
        if (bias) {
            const float *bi = bias + i * bias_stride;
#pragma omp simd
            for (int j = 0; j < nk; j++)
                s[j] += bi[j];
        }
#pragma omp simd
        for (int j = 0; j < nk; j++)
            s[j] = cpu_expf(s[j] - l);
        if (mask) {
#pragma omp simd
            for (int j = 0; j < nk; j++) {
                uint32_t keep = -(uint32_t)(mask[j] != 0.0f), sb;
                memcpy(&sb, &s[j], sizeof sb);
                sb &= keep;
                memcpy(&s[j], &sb, sizeof sb);
            }
        }
    }
}

/* dS = P * (dP - D) in place on dP; D_i = dO_i . O_i, rows of dO and O C
 * apart. */
CPU_VECTOR_CLONES static void atb_dscores_rows(float *dS, const float *P, const float *dO,
                                               const float *O, int nq, int nk, int HS, int64_t C)
{
    for (int i = 0; i < nq; i++) {
        const float *dOi = dO + i * C, *Oi = O + i * C;
        float D = 0.0f;
#pragma omp simd reduction(+ : D)
        for (int d = 0; d < HS; d++)
            D += dOi[d] * Oi[d];
        const float *p = P + (int64_t)i * nk;
        float *ds = dS + (int64_t)i * nk;
#pragma omp simd
        for (int j = 0; j < nk; j++)
            ds[j] = p[j] * (ds[j] - D);
    }
}

/* rows [r0, r1) of a head slice (rows `stride` apart) = 0 */
static void atb_zero_rows(float *x, int64_t r0, int64_t r1, int64_t stride, int HS)
{
    for (int64_t r = r0; r < r1; r++)
        memset(x + r * stride, 0, (size_t)HS * sizeof *x);
}

void cpu_attention_bias_backward(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const float *bias,
                                 const float *key_mask, float *scratch, int64_t scratch_n, int B,
                                 int Tq, int Tk, int NH, int HS, int q_stride, int kv_stride,
                                 float scale)
{
    const int64_t tasks = (int64_t)(B > 0 ? B : 0) * (NH > 0 ? NH : 0);
    if (tasks == 0 || HS <= 0 || (!dq && !dk && !dv))
        return; /* no gradient has an element */
    const int64_t C = (int64_t)NH * HS;
    const int qb = atb_qblock(Tq);
    const int64_t per = atb_backward_per_thread(Tq, Tk);
    int64_t nthreads = omp_get_max_threads();
    if (per > 0 && scratch_n / per < nthreads)
        nthreads = scratch_n / per;
    if (nthreads > tasks)
        nthreads = tasks;
    if (nthreads < 1)
        nthreads = 1;
#pragma omp parallel num_threads((int)nthreads)
    {
        float *P = scratch ? scratch + (int64_t)omp_get_thread_num() * per : NULL;
        float *dS = P ? P + per / 2 : NULL;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            const int64_t b = task / NH;
            const int h = (int)(task % NH);
            const float *Q = q + b * Tq * q_stride + (int64_t)h * HS;
            const float *dO = dout + b * Tq * C + (int64_t)h * HS;
            const float *O = out + b * Tq * C + (int64_t)h * HS;
            const float *lse_bh = lse + task * Tq;
            float *dQ = dq ? dq + b * Tq * q_stride + (int64_t)h * HS : NULL;
            float *dK = dk ? dk + b * Tk * kv_stride + (int64_t)h * HS : NULL;
            float *dV = dv ? dv + b * Tk * kv_stride + (int64_t)h * HS : NULL;
            const float *m = key_mask ? key_mask + b * Tk : NULL;
            int k_lo = 0, k_hi = Tk;
            while (m && k_lo < k_hi && m[k_lo] == 0.0f)
                k_lo++;
            while (m && k_hi > k_lo && m[k_hi - 1] == 0.0f)
                k_hi--;
            const int nk = k_hi - k_lo;
            if (nk == 0 || Tq == 0) {
                /* no key attended, or no query: every gradient is 0 */
                if (dQ)
                    atb_zero_rows(dQ, 0, Tq, q_stride, HS);
                if (dK)
                    atb_zero_rows(dK, 0, Tk, kv_stride, HS);
                if (dV)
                    atb_zero_rows(dV, 0, Tk, kv_stride, HS);
                continue;
            }
            /* the keys outside the range: no query attends them */
            if (dK) {
                atb_zero_rows(dK, 0, k_lo, kv_stride, HS);
                atb_zero_rows(dK, k_hi, Tk, kv_stride, HS);
            }
            if (dV) {
                atb_zero_rows(dV, 0, k_lo, kv_stride, HS);
                atb_zero_rows(dV, k_hi, Tk, kv_stride, HS);
            }
            const float *K = k + (b * Tk + k_lo) * kv_stride + (int64_t)h * HS;
            const float *V = v + (b * Tk + k_lo) * kv_stride + (int64_t)h * HS;
            float *dKr = dK ? dK + (int64_t)k_lo * kv_stride : NULL;
            float *dVr = dV ? dV + (int64_t)k_lo * kv_stride : NULL;
            for (int t0 = 0; t0 < Tq; t0 += qb) {
                const int nq = Tq - t0 < qb ? Tq - t0 : qb;
                const float beta = t0 == 0 ? 0.0f : 1.0f;
                const float *Qb = Q + (int64_t)t0 * q_stride, *dOb = dO + t0 * C;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, HS, scale, Qb,
                            q_stride, K, kv_stride, 0.0f, P, nk);
                const float *bias_blk = bias ? bias + ((int64_t)h * Tq + t0) * Tk + k_lo : NULL;
                atb_probs_rows(P, nq, nk, bias_blk, Tk, m ? m + k_lo : NULL, lse_bh + t0);
                /* dV (+)= P^T dO */
                if (dVr)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, nq, 1.0f, P, nk,
                                dOb, (int)C, beta, dVr, kv_stride);
                if (!dQ && !dKr)
                    continue;
                /* dP = dO V^T, then dS = P * (dP - D) in place */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, HS, 1.0f, dOb,
                            (int)C, V, kv_stride, 0.0f, dS, nk);
                atb_dscores_rows(dS, P, dOb, O + t0 * C, nq, nk, HS, C);
                /* dQ = scale dS K;  dK (+)= scale dS^T Q */
                if (dQ)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, HS, nk, scale, dS,
                                nk, K, kv_stride, 0.0f, dQ + (int64_t)t0 * q_stride, q_stride);
                if (dKr)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, HS, nq, scale, dS,
                                nk, Qb, q_stride, beta, dKr, kv_stride);
            }
        }
    }
}
