#include "train/lora_merge.h"
#include "libcommon/error.h"
#include "libcommon/half.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's LAPACK (Fortran calling convention; Debian ships no LAPACKE
 * header with it). */
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork,
             int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
             const int *lwork, int *info);
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info);

int lora_merge_precision_parse(const char *name, enum st_dtype *out)
{
    if (strcmp(name, "float") == 0 || strcmp(name, "fp32") == 0)
        *out = ST_F32;
    else if (strcmp(name, "fp16") == 0)
        *out = ST_F16;
    else if (strcmp(name, "bf16") == 0)
        *out = ST_BF16;
    else
        return -1;
    return 0;
}

static float round_to(float v, enum st_dtype dt)
{
    return dt == ST_BF16 ? bf16_to_f32(f32_to_bf16(v)) : dt == ST_F16 ? f16_to_f32(f32_to_f16(v)) : v;
}

static float *rounded_copy(const float *v, size_t n, enum st_dtype dt)
{
    float *c = malloc((n ? n : 1) * sizeof *c);
    for (size_t i = 0; c && i < n; i++)
        c[i] = round_to(v[i], dt);
    return c;
}

int lora_merge_into(const struct lora_file *f, float ratio, const struct nn_params *t, float *params,
                    enum st_dtype precision)
{
    /* Every module checked before anything changes. */
    const struct nn_param **w = calloc(f->n ? f->n : 1, sizeof *w);
    if (!w) {
        err_set("out of memory");
        return -1;
    }
    for (size_t i = 0; i < f->n; i++) {
        const struct lora_entry *e = &f->e[i];
        char name[LORA_NAME_MAX + 8];
        snprintf(name, sizeof name, "%s.weight", e->name);
        w[i] = nn_params_find(t, name);
        if (!w[i] || w[i]->ndim != 2 || w[i]->shape[0] != e->out || w[i]->shape[1] != e->in) {
            if (!w[i])
                err_set("LoRA module %s: the model has no weight %s", e->name, name);
            else
                err_set("LoRA module %s: the adapter is for a [%d, %d] layer, the model's %s is [%lld, %lld]",
                        e->name, e->out, e->in, name, (long long)w[i]->shape[0],
                        (long long)(w[i]->ndim > 1 ? w[i]->shape[1] : 1));
            free(w);
            return -1;
        }
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < f->n; i++) {
        const struct lora_entry *e = &f->e[i];
        const float s = ratio * lora_entry_scale(f, e);
        float *W = params + w[i]->offset;
        const size_t nw = (size_t)e->out * e->in;
        if (precision == ST_F32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, e->out, e->in, e->rank, s, e->B, e->rank, e->A,
                        e->in, 1.0f, W, e->in);
            continue;
        }
        float *A = rounded_copy(e->A, (size_t)e->rank * e->in, precision);
        float *B = rounded_copy(e->B, (size_t)e->out * e->rank, precision);
        float *D = malloc(nw * sizeof *D);
        if (!A || !B || !D) {
            err_set("out of memory merging %s", e->name);
            rc = -1;
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, e->out, e->in, e->rank, 1.0f, B, e->rank, A,
                        e->in, 0.0f, D, e->in);
            for (size_t j = 0; j < nw; j++)
                W[j] = round_to(round_to(W[j], precision) + round_to(s * round_to(D[j], precision), precision),
                                precision);
        }
        free(A), free(B), free(D);
    }
    free(w);
    return rc;
}

/* In place: a (column-major m x k, m >= k) becomes Q; R (k x k, column-major) the triangle. */
static int qr(double *a, int m, int k, double *R)
{
    int info, lwork = -1;
    double q, *tau = malloc((size_t)k * sizeof *tau);
    dgeqrf_(&m, &k, a, &m, tau, &q, &lwork, &info);
    lwork = (int)q > k ? (int)q : k;
    double *work = malloc((size_t)lwork * sizeof *work);
    if (!tau || !work) {
        free(tau), free(work);
        return -1;
    }
    dgeqrf_(&m, &k, a, &m, tau, work, &lwork, &info);
    for (int j = 0; j < k; j++)
        for (int i = 0; i < k; i++)
            R[i + (size_t)j * k] = i <= j ? a[i + (size_t)j * m] : 0.0;
    if (info == 0)
        dorgqr_(&m, &k, &k, a, &m, tau, work, &lwork, &info);
    free(tau), free(work);
    return info == 0 ? 0 : -1;
}

/* The SVD of a (column-major m x n): u m x p, vt p x n, s p = min(m, n). */
static int svd(double *a, int m, int n, double *s, double *u, double *vt)
{
    const int p = m < n ? m : n;
    int info, lwork = -1;
    int *iwork = malloc(8 * (size_t)p * sizeof *iwork);
    double q;
    dgesdd_("S", &m, &n, a, &m, s, u, &m, vt, &p, &q, &lwork, iwork, &info);
    lwork = (int)q + 1;
    double *work = malloc((size_t)lwork * sizeof *work);
    if (!iwork || !work) {
        free(iwork), free(work);
        return -1;
    }
    dgesdd_("S", &m, &n, a, &m, s, u, &m, vt, &p, work, &lwork, iwork, &info);
    free(iwork), free(work);
    return info == 0 ? 0 : -1;
}

/* B [out, k] A [k, in] (row-major, host) re-ranked to r: B' = U_r S_r, A' = V_r^T. */
static int rerank(const float *A, const float *B, int k, int in, int out, int r, float *A2, float *B2)
{
    const int small = k <= in && k <= out;
    int rc = -1;
    double *s = NULL, *u = NULL, *vt = NULL, *q1 = NULL, *q2 = NULL, *r1 = NULL, *r2 = NULL, *M = NULL;
    if (small) {
        /* B = Q1 R1, A^T = Q2 R2, B A = Q1 (R1 R2^T) Q2^T: the SVD of k x k. */
        q1 = malloc((size_t)out * k * sizeof *q1), q2 = malloc((size_t)in * k * sizeof *q2);
        r1 = malloc((size_t)k * k * sizeof *r1), r2 = malloc((size_t)k * k * sizeof *r2);
        M = malloc((size_t)k * k * sizeof *M), s = malloc((size_t)k * sizeof *s);
        u = malloc((size_t)k * k * sizeof *u), vt = malloc((size_t)k * k * sizeof *vt);
        if (!q1 || !q2 || !r1 || !r2 || !M || !s || !u || !vt)
            goto done;
        for (int o = 0; o < out; o++)
            for (int i = 0; i < k; i++)
                q1[o + (size_t)i * out] = B[(size_t)o * k + i];
        for (int c = 0; c < in; c++)
            for (int i = 0; i < k; i++)
                q2[c + (size_t)i * in] = A[(size_t)i * in + c];
        if (qr(q1, out, k, r1) != 0 || qr(q2, in, k, r2) != 0)
            goto done;
        for (int j = 0; j < k; j++)
            for (int i = 0; i < k; i++) {
                double v = 0;
                for (int l = 0; l < k; l++)
                    v += r1[i + (size_t)l * k] * r2[j + (size_t)l * k];
                M[i + (size_t)j * k] = v;
            }
        if (svd(M, k, k, s, u, vt) != 0)
            goto done;
        for (int o = 0; o < out; o++)
            for (int j = 0; j < r; j++) {
                double v = 0;
                for (int i = 0; i < k; i++)
                    v += q1[o + (size_t)i * out] * u[i + (size_t)j * k];
                B2[(size_t)o * r + j] = (float)(v * s[j]);
            }
        for (int j = 0; j < r; j++)
            for (int c = 0; c < in; c++) {
                double v = 0;
                for (int i = 0; i < k; i++)
                    v += vt[j + (size_t)i * k] * q2[c + (size_t)i * in];
                A2[(size_t)j * in + c] = (float)v;
            }
        rc = 0;
    } else {
        /* a rank above the layer's sides: the SVD of B A itself */
        const int p = in < out ? in : out;
        M = malloc((size_t)out * in * sizeof *M), s = malloc((size_t)p * sizeof *s);
        u = malloc((size_t)out * p * sizeof *u), vt = malloc((size_t)p * in * sizeof *vt);
        if (!M || !s || !u || !vt)
            goto done;
        for (int o = 0; o < out; o++)
            for (int c = 0; c < in; c++) {
                double v = 0;
                for (int i = 0; i < k; i++)
                    v += (double)B[(size_t)o * k + i] * A[(size_t)i * in + c];
                M[o + (size_t)c * out] = v;
            }
        if (svd(M, out, in, s, u, vt) != 0)
            goto done;
        for (int o = 0; o < out; o++)
            for (int j = 0; j < r; j++)
                B2[(size_t)o * r + j] = (float)(u[o + (size_t)j * out] * s[j]);
        for (int j = 0; j < r; j++)
            for (int c = 0; c < in; c++)
                A2[(size_t)j * in + c] = (float)vt[j + (size_t)c * p];
        rc = 0;
    }
done:
    free(s), free(u), free(vt), free(q1), free(q2), free(r1), free(r2), free(M);
    return rc;
}

int lora_to_file(const struct nn_lora_module *mods, size_t n, const float *host, int rank, struct lora_file *out)
{
    memset(out, 0, sizeof *out);
    if (!(out->e = calloc(n ? n : 1, sizeof *out->e))) {
        err_set("out of memory");
        return -1;
    }
    out->format = LORA_FORMAT_DIFFUSERS;
    int64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const struct nn_lora_module *m = &mods[i];
        struct lora_entry *e = &out->e[i];
        const float *A = host + off, *B = A + (int64_t)m->rank * m->in;
        off += (int64_t)m->rank * (m->in + m->out);
        int r = m->rank;
        const int side = m->in < m->out ? m->in : m->out;
        if (rank > 0 && rank < r)
            r = rank < side ? rank : side;
        snprintf(e->name, sizeof e->name, "%s", m->name);
        e->rank = r, e->in = m->in, e->out = m->out;
        e->alpha = m->scale * (float)r; /* the scale as it was: 1 for a combined adapter */
        e->A = malloc((size_t)r * m->in * sizeof *e->A);
        e->B = malloc((size_t)m->out * r * sizeof *e->B);
        out->n = i + 1;
        if (!e->A || !e->B) {
            err_set("out of memory");
            lora_file_free(out);
            return -1;
        }
        if (r == m->rank) {
            memcpy(e->A, A, (size_t)r * m->in * sizeof *A);
            memcpy(e->B, B, (size_t)m->out * r * sizeof *B);
        } else if (rerank(A, B, m->rank, m->in, m->out, r, e->A, e->B) != 0) {
            err_set("LoRA module %s: the SVD of its rank-%d product failed", m->name, m->rank);
            lora_file_free(out);
            return -1;
        } else {
            /* B' A' already carries the old scale in its singular values */
            e->alpha = (float)r;
            for (size_t j = 0; m->scale != 1.0f && j < (size_t)m->out * r; j++)
                e->B[j] *= m->scale;
        }
    }
    return 0;
}
