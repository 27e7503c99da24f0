/* Multi-head self-attention without a mask.
 *
 * One (batch, head) pair is one task; a thread works through one query row at
 * a time with a single T-float row of scores from the scratch buffer, so
 * memory is O(threads * T), never O(B * NH * T^2). Forward saves only the
 * log-sum-exp of each row; backward recomputes the probabilities from q, k
 * and lse. Each task writes only its own head's slices of out and dqkv, so
 * the results are the same bits for any thread count. */
#include "kernels/cpu/cpu.h"

#include <math.h>
#include <omp.h>
#include <string.h>

int64_t cpu_attention_scratch(int T, int threads)
{
    if (threads <= 0)
        threads = omp_get_max_threads();
    return (int64_t)T * threads;
}

/* Threads that the scratch buffer has rows for, and no more than tasks. */
static int attention_threads(int64_t scratch_n, int T, int64_t tasks)
{
    int64_t n = scratch_n / (T > 0 ? T : 1);
    int64_t max = omp_get_max_threads();
    if (n > max)
        n = max;
    if (n > tasks)
        n = tasks;
    return n < 1 ? 1 : (int)n;
}

static float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* qkv[B,T,3C] -> out[B,T,C], lse[B,NH,T] */
void cpu_attention_forward(float *out, float *lse, const float *qkv, float *scratch,
                           int64_t scratch_n, int B, int T, int C, int NH)
{
    int HS = C / NH;
    int64_t C3 = 3 * (int64_t)C;
    int64_t tasks = (int64_t)B * NH;
    float scale = 1.0f / sqrtf((float)HS);
    int nthreads = attention_threads(scratch_n, T, tasks);
#pragma omp parallel num_threads(nthreads)
    {
        float *row = scratch + (int64_t)omp_get_thread_num() * T;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            int64_t b = task / NH;
            int h = (int)(task % NH);
            const float *base = qkv + b * T * C3 + (int64_t)h * HS;
            for (int t = 0; t < T; t++) {
                const float *q = base + t * C3;
                float maxv = -INFINITY;
                for (int s = 0; s < T; s++) {
                    row[s] = dot(q, base + s * C3 + C, HS) * scale;
                    if (row[s] > maxv)
                        maxv = row[s];
                }
                /* exp after subtracting the row max: no overflow, and the
                 * largest term is exactly 1 so the sum is >= 1. */
                float sum = 0.0f;
                for (int s = 0; s < T; s++) {
                    row[s] = expf(row[s] - maxv);
                    sum += row[s];
                }
                lse[task * T + t] = maxv + logf(sum);
                float inv = 1.0f / sum;
                float *o = out + (b * T + t) * C + (int64_t)h * HS;
                memset(o, 0, (size_t)HS * sizeof *o);
                for (int s = 0; s < T; s++) {
                    const float *v = base + s * C3 + 2 * (int64_t)C;
                    float p = row[s] * inv;
                    for (int d = 0; d < HS; d++)
                        o[d] += p * v[d];
                }
            }
        }
    }
}

/* With P = softmax(S), S = scale q k^T, O = P v:
 *   dv_s = sum_t P_ts dO_t
 *   dS_ts = P_ts (dO_t . v_s - D_t),  D_t = sum_s P_ts dO_t . v_s = dO_t . O_t
 *   dq_t = scale sum_s dS_ts k_s,  dk_s = scale sum_t dS_ts q_t */
void cpu_attention_backward(float *dqkv, const float *dout, const float *out, const float *lse,
                            const float *qkv, float *scratch, int64_t scratch_n, int B, int T,
                            int C, int NH)
{
    int HS = C / NH;
    int64_t C3 = 3 * (int64_t)C;
    int64_t tasks = (int64_t)B * NH;
    float scale = 1.0f / sqrtf((float)HS);
    int nthreads = attention_threads(scratch_n, T, tasks);
#pragma omp parallel num_threads(nthreads)
    {
        float *row = scratch + (int64_t)omp_get_thread_num() * T;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            int64_t b = task / NH;
            int h = (int)(task % NH);
            const float *base = qkv + b * T * C3 + (int64_t)h * HS;
            float *dbase = dqkv + b * T * C3 + (int64_t)h * HS;
            /* dq, dk and dv of this head are sums over rows: start at zero. */
            for (int t = 0; t < T; t++)
                for (int part = 0; part < 3; part++)
                    memset(dbase + t * C3 + part * (int64_t)C, 0, (size_t)HS * sizeof(float));
            for (int t = 0; t < T; t++) {
                const float *q = base + t * C3;
                const float *dO = dout + (b * T + t) * C + (int64_t)h * HS;
                const float *O = out + (b * T + t) * C + (int64_t)h * HS;
                float row_lse = lse[task * T + t];
                float D = dot(dO, O, HS);
                for (int s = 0; s < T; s++)
                    row[s] = expf(dot(q, base + s * C3 + C, HS) * scale - row_lse);
                float *dq = dbase + t * C3;
                for (int s = 0; s < T; s++) {
                    const float *k = base + s * C3 + C;
                    const float *v = base + s * C3 + 2 * (int64_t)C;
                    float *dk = dbase + s * C3 + C;
                    float *dv = dbase + s * C3 + 2 * (int64_t)C;
                    float p = row[s];
                    float ds = p * (dot(dO, v, HS) - D) * scale;
                    for (int d = 0; d < HS; d++) {
                        dv[d] += p * dO[d];
                        dq[d] += ds * k[d];
                        dk[d] += ds * q[d];
                    }
                }
            }
        }
    }
}
