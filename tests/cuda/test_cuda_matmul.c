/* Matrix products on CUDA (kernels/cuda/matmul.cu through lt.h) against the
 * CPU backend, from the same random inputs rounded to the storage dtype:
 * gemm in all four transpose combinations with alpha and beta, K = 0; the
 * Linear forward with and without bias; the fused Linear + GELU, both through
 * the epilogue and through the fallback (OC not a multiple of 8, f32,
 * DIT_LT_NO_EPILOGUE); the Linear backward with every output present, each
 * absent, accumulating into pre-filled dweight and dbias, and over enough
 * rows that dbias is summed in chunks; f32, bf16 and f16; sizes that are not
 * multiples of 8 or 16, M = 1, and views that are only 2 or 4 bytes aligned.
 * And what cuBLASLt is allowed to do with our requests: a bf16/f16 product
 * whose partial sums cancel (split-K partials rounded to the output type
 * would show), the same shape at other alignments in one context (a cached
 * plan must not serve less aligned pointers), and the fused epilogues under
 * DIT_LT_STRICT (cuBLASLt must accept them, not be quietly bypassed).
 * Under the emulator the products are tests/cuda_emu/lt_emu.cc computing,
 * from the cuBLASLt-level description lt.cu would pass (lt_call_of), what
 * NVIDIA documents for it, and checking it against the documented rules; on
 * a GPU (make test-cuda) they run cuBLASLt itself. */
#include "tests/cuda/cuda_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const enum kdtype ALL_DT[3] = {KDT_F32, KDT_BF16, KDT_F16};

/* n random values already rounded to dt: what both backends compute from. */
static float *rand_in(enum kdtype dt, size_t n, uint64_t seed, float scale)
{
    float *x = test_randn(n, seed, scale);
    test_round_to(dt, x, n);
    return x;
}

/* The CUDA tensor's values against want, then the tensor is freed. */
static void check_free(struct kctx *gpu, struct tensor *t, const float *want, size_t n,
                       double tol, const char *what)
{
    float *got = test_values(gpu, *t);
    CHECK_PARITY(what, got, want, n, tol);
    free(got);
    k_free(gpu, t);
}

/* ---- gemm ------------------------------------------------------------------ */

static void gemm_case(struct kctx *cpu, struct kctx *gpu, enum kdtype dt, int M, int N, int K,
                      int ta, int tb, float alpha, float beta, uint64_t seed)
{
    size_t na = (size_t)M * K, nb = (size_t)K * N, nc = (size_t)M * N;
    float *a = rand_in(dt, na, seed, 1.0f), *b = rand_in(dt, nb, seed + 1, 1.0f);
    float *c = rand_in(dt, nc, seed + 2, 1.0f);

    struct tensor ca = test_tensor(cpu, KDT_F32, a, na), cb = test_tensor(cpu, KDT_F32, b, nb);
    struct tensor cc = test_tensor(cpu, KDT_F32, c, nc);
    k_gemm(cpu, cc, ca, cb, M, N, K, ta, tb, alpha, beta);
    float *want = test_values(cpu, cc);

    struct tensor ga = test_tensor(gpu, dt, a, na), gb = test_tensor(gpu, dt, b, nb);
    struct tensor gc = test_tensor(gpu, dt, c, nc);
    k_gemm(gpu, gc, ga, gb, M, N, K, ta, tb, alpha, beta);
    char what[128];
    snprintf(what, sizeof what, "gemm %s M%d N%d K%d%s%s alpha %g beta %g", kdtype_name(dt), M,
             N, K, ta ? " A^T" : "", tb ? " B^T" : "", (double)alpha, (double)beta);
    check_free(gpu, &gc, want, nc, tol_for(dt), what);

    k_free(gpu, &ga);
    k_free(gpu, &gb);
    k_free(cpu, &ca);
    k_free(cpu, &cb);
    k_free(cpu, &cc);
    free(a);
    free(b);
    free(c);
    free(want);
}

static void gemm_all_transposes(enum kdtype dt)
{
    static const int shapes[][3] = {{7, 13, 19}, {1, 9, 33}, {17, 1, 5}, {24, 16, 40}};
    static const float scales[][2] = {{1.0f, 0.0f}, {0.75f, -1.25f}, {-2.0f, 1.0f}};
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    uint64_t seed = 100;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++)
                gemm_case(&cpu, &gpu, dt, shapes[s][0], shapes[s][1], shapes[s][2], t & 1,
                          t >> 1, scales[k][0], scales[k][1], seed += 3);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(gemm_f32_transposes_alpha_beta)
{
    gemm_all_transposes(KDT_F32);
}

TEST(gemm_bf16_transposes_alpha_beta)
{
    gemm_all_transposes(KDT_BF16);
}

TEST(gemm_f16_transposes_alpha_beta)
{
    gemm_all_transposes(KDT_F16);
}

/* An empty sum: C = beta C, and beta = 0 clears whatever C held. */
TEST(gemm_empty_k)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    for (int d = 0; d < 3; d++) {
        gemm_case(&cpu, &gpu, ALL_DT[d], 5, 11, 0, 0, 0, 1.0f, 0.5f, 7);
        gemm_case(&cpu, &gpu, ALL_DT[d], 5, 11, 0, 1, 1, 1.0f, 0.0f, 8);
    }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* C[M,N] = A[M,K] B[K,N] with K = 2S + 1 whose two halves cancel: A's row
 * repeats a[0..S) twice, B's second half is minus its first, and the last
 * column/row adds e[m] d[n]. The exact product is e[m] d[n] (about 1), but
 * each half sums to about sqrt(S) = 45: a split-K reduction that keeps its
 * partial sums in bf16 or f16 (cuBLASLt's INPLACE and OUTPUT_TYPE schemes)
 * is off by about 45 / 512 = 0.09, where one rounding of the fp32 sum is
 * off by 2^-9 of 1. K is long and M, N small, the shape a heuristic splits. */
static void cancel_case(enum kdtype dt)
{
    enum { M = 8, N = 16, S = 2048, K = 2 * S + 1 };
    float *a = test_randn((size_t)M * K, 7100, 1.0f), *b = test_randn((size_t)K * N, 7101, 1.0f);
    for (int m = 0; m < M; m++) {
        for (int k = 0; k < S; k++)
            a[(size_t)m * K + S + k] = a[(size_t)m * K + k];
        a[(size_t)m * K + 2 * S] = 0.5f + (float)m / 8.0f;
    }
    for (int k = 0; k < S; k++)
        for (int n = 0; n < N; n++)
            b[(size_t)(S + k) * N + n] = -b[(size_t)k * N + n];
    for (int n = 0; n < N; n++)
        b[(size_t)(2 * S) * N + n] = 1.0f + (float)n / 16.0f;
    test_round_to(dt, a, (size_t)M * K);
    test_round_to(dt, b, (size_t)K * N);

    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    struct tensor ca = test_tensor(&cpu, KDT_F32, a, (size_t)M * K);
    struct tensor cb = test_tensor(&cpu, KDT_F32, b, (size_t)K * N);
    struct tensor cc = test_tensor(&cpu, KDT_F32, NULL, (size_t)M * N);
    k_gemm(&cpu, cc, ca, cb, M, N, K, 0, 0, 1.0f, 0.0f);
    float *want = test_values(&cpu, cc);

    struct tensor ga = test_tensor(&gpu, dt, a, (size_t)M * K);
    struct tensor gb = test_tensor(&gpu, dt, b, (size_t)K * N);
    struct tensor gc = test_tensor(&gpu, dt, NULL, (size_t)M * N);
    k_gemm(&gpu, gc, ga, gb, M, N, K, 0, 0, 1.0f, 0.0f);
    char what[96];
    snprintf(what, sizeof what, "gemm %s M%d N%d K%d with cancelling halves", kdtype_name(dt), M,
             N, K);
    check_free(&gpu, &gc, want, (size_t)M * N, tol_for(dt), what);

    k_free(&gpu, &ga);
    k_free(&gpu, &gb);
    k_free(&cpu, &ca);
    k_free(&cpu, &cb);
    k_free(&cpu, &cc);
    kctx_free(&gpu);
    kctx_free(&cpu);
    free(a);
    free(b);
    free(want);
}

/* (In f32 the output type is the compute type: nothing to lose, and the
 * cancellation only magnifies fp32's summation-order differences.) */
TEST(gemm_partial_sums_stay_fp32)
{
    cancel_case(KDT_BF16);
    cancel_case(KDT_F16);
}

/* ---- Linear forward ---------------------------------------------------------- */

/* Element offset of every tensor in its allocation: 1 makes them 2-byte
 * (bf16, f16) or 4-byte (f32) aligned. */
struct lf_case {
    enum kdtype dt;
    int M, C, OC;
    int bias;
    int gelu;
    int offset;
};

/* A tensor of n values (or uninitialised when host is NULL) at element
 * `offset` of an allocation; *base is what to free. */
static struct tensor placed(struct kctx *ctx, enum kdtype dt, const float *host, size_t n,
                            int offset, struct tensor *base)
{
    *base = test_tensor(ctx, dt, NULL, n + (size_t)offset);
    struct tensor t = tensor_view(*base, offset, (int64_t)n);
    if (host && n)
        k_upload_f32(ctx, t, host, (int64_t)n);
    return t;
}

static void lf_check(struct kctx *cpu, struct kctx *gpu, const struct lf_case *c, uint64_t seed)
{
    size_t ni = (size_t)c->M * c->C, nw = (size_t)c->OC * c->C, no = (size_t)c->M * c->OC;
    float *inp = rand_in(c->dt, ni, seed, 1.0f);
    float *w = rand_in(c->dt, nw, seed + 1, 0.3f);
    float *bias = rand_in(c->dt, (size_t)c->OC, seed + 2, 1.0f);
    float *junk = test_filled(no, 7.0f); /* overwritten, never read */

    struct tensor ci = test_tensor(cpu, KDT_F32, inp, ni), cw = test_tensor(cpu, KDT_F32, w, nw);
    struct tensor cb = c->bias ? test_tensor(cpu, KDT_F32, bias, (size_t)c->OC) : tensor_none();
    struct tensor co = test_tensor(cpu, KDT_F32, NULL, no);
    struct tensor cp = c->gelu ? test_tensor(cpu, KDT_F32, NULL, no) : tensor_none();
    if (c->gelu)
        k_linear_gelu_forward(cpu, co, cp, ci, cw, cb, c->M, c->C, c->OC);
    else
        k_linear_forward(cpu, co, ci, cw, cb, c->M, c->C, c->OC);
    float *want = test_values(cpu, co);
    float *want_pre = c->gelu ? test_values(cpu, cp) : NULL;

    struct tensor bi, bw, bb, bo, bp;
    struct tensor gi = placed(gpu, c->dt, inp, ni, c->offset, &bi);
    struct tensor gw = placed(gpu, c->dt, w, nw, c->offset, &bw);
    struct tensor gb = tensor_none();
    if (c->bias)
        gb = placed(gpu, c->dt, bias, (size_t)c->OC, c->offset, &bb);
    struct tensor go = placed(gpu, c->dt, junk, no, c->offset, &bo);
    struct tensor gp = tensor_none();
    if (c->gelu) {
        gp = placed(gpu, c->dt, junk, no, c->offset, &bp);
        k_linear_gelu_forward(gpu, go, gp, gi, gw, gb, c->M, c->C, c->OC);
    } else {
        k_linear_forward(gpu, go, gi, gw, gb, c->M, c->C, c->OC);
    }
    char what[128];
    snprintf(what, sizeof what, "linear%s %s M%d C%d OC%d%s offset %d", c->gelu ? "_gelu" : "",
             kdtype_name(c->dt), c->M, c->C, c->OC, c->bias ? " bias" : "", c->offset);
    float *got = test_values(gpu, go);
    CHECK_PARITY(what, got, want, no, tol_for(c->dt));
    if (c->gelu) {
        float *got_pre = test_values(gpu, gp);
        strncat(what, " pre", sizeof what - strlen(what) - 1);
        CHECK_PARITY(what, got_pre, want_pre, no, tol_for(c->dt));
        free(got_pre);
        k_free(gpu, &bp);
    }

    free(got);
    k_free(gpu, &bi);
    k_free(gpu, &bw);
    if (c->bias)
        k_free(gpu, &bb);
    k_free(gpu, &bo);
    k_free(cpu, &ci);
    k_free(cpu, &cw);
    k_free(cpu, &cb);
    k_free(cpu, &co);
    k_free(cpu, &cp);
    free(inp);
    free(w);
    free(bias);
    free(junk);
    free(want);
    free(want_pre);
}

/* Shapes: one row; nothing a multiple of 8; OC a multiple of 8 (the GELU
 * epilogue's condition) with ragged M and C; big enough for tiled kernels. */
static const int LF_SHAPES[][3] = {{1, 5, 3}, {33, 19, 13}, {37, 40, 24}, {70, 72, 136}};

static void lf_all(int gelu, int offset)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    uint64_t seed = 500 + 100 * (uint64_t)gelu;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof LF_SHAPES / sizeof LF_SHAPES[0]; s++)
            for (int bias = 0; bias < 2; bias++) {
                struct lf_case c = {ALL_DT[d], LF_SHAPES[s][0], LF_SHAPES[s][1],
                                    LF_SHAPES[s][2], bias, gelu, offset};
                lf_check(&cpu, &gpu, &c, seed += 5);
            }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(linear_forward_bias_and_none)
{
    lf_all(0, 0);
}

TEST(linear_forward_unaligned_views)
{
    lf_all(0, 1);
}

TEST(linear_gelu_forward)
{
    lf_all(1, 0);
}

TEST(linear_gelu_forward_unaligned_views)
{
    lf_all(1, 1);
}

/* The plain product + our bias and GELU kernels, in place of every epilogue
 * (the context reads the variable when it is made; the test is a child
 * process of its own). */
TEST(linear_forward_without_epilogues)
{
    setenv("DIT_LT_NO_EPILOGUE", "1", 1);
    lf_all(0, 0);
    lf_all(1, 0);
}

/* The same shape again with other buffers: the cached plan must take the
 * new bias (and aux) pointers. */
TEST(linear_forward_repeated_shape)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    for (int d = 0; d < 3; d++)
        for (int rep = 0; rep < 3; rep++) {
            struct lf_case c = {ALL_DT[d], 20, 24, 32, 1, rep == 2, 0};
            lf_check(&cpu, &gpu, &c, 900 + 10 * (uint64_t)rep);
        }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* One context, one shape, the views aligned to 256, 2 (4 for f32) and 256
 * bytes again: cuBLASLt picks an algorithm for the alignments the plan was
 * made with, so a plan must never serve pointers less aligned than that
 * (on a GPU a misaligned vector load faults). */
TEST(linear_forward_same_shape_other_alignments)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    static const int offsets[] = {0, 1, 0, 1};
    for (int d = 0; d < 3; d++)
        for (int gelu = 0; gelu < 2; gelu++)
            for (int i = 0; i < 4; i++) {
                struct lf_case c = {ALL_DT[d], 37, 40, 24, 1, gelu, offsets[i]};
                lf_check(&cpu, &gpu, &c, 980 + 10 * (uint64_t)i);
            }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* Every epilogue lt.cu hands to cuBLASLt (bias for all dtypes; bias + GELU
 * + aux for bf16 and f16, OC a multiple of 8), on aligned buffers, with
 * DIT_LT_STRICT: on a GPU, cuBLASLt rejecting one of our fused descriptors
 * aborts with the product and its status instead of passing through the
 * fallback, so these results come from the fused epilogues themselves. */
TEST(linear_fused_epilogues_accepted)
{
    setenv("DIT_LT_STRICT", "1", 1);
    static const int shapes[][3] = {{37, 40, 24}, {64, 64, 128}, {70, 72, 136}};
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int gelu = 0; gelu < (ALL_DT[d] == KDT_F32 ? 1 : 2); gelu++) {
                struct lf_case c = {ALL_DT[d], shapes[s][0], shapes[s][1], shapes[s][2], 1,
                                    gelu, 0};
                lf_check(&cpu, &gpu, &c, 1100 + 10 * (uint64_t)s);
            }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* C = 0: out = bias (and gelu(bias)); M = 0: nothing. */
TEST(linear_forward_empty)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    for (int d = 0; d < 3; d++)
        for (int gelu = 0; gelu < 2; gelu++) {
            struct lf_case c = {ALL_DT[d], 6, 0, 16, 1, gelu, 0};
            lf_check(&cpu, &gpu, &c, 950);
            struct lf_case e = {ALL_DT[d], 0, 8, 16, 1, gelu, 0};
            lf_check(&cpu, &gpu, &e, 960);
        }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* ---- Linear backward --------------------------------------------------------- */

struct lb_case {
    enum kdtype dt;
    int M, C, OC;
    int dinp, dweight, dbias; /* which outputs are wanted */
};

static void lb_check(struct kctx *cpu, struct kctx *gpu, const struct lb_case *c, uint64_t seed)
{
    size_t ni = (size_t)c->M * c->C, nw = (size_t)c->OC * c->C, no = (size_t)c->M * c->OC;
    float *dout = rand_in(c->dt, no, seed, 1.0f);
    float *inp = rand_in(c->dt, ni, seed + 1, 1.0f);
    float *w = rand_in(c->dt, nw, seed + 2, 0.3f);
    /* Gradients accumulated so far (f32 whatever dt is). */
    float *dw0 = test_randn(nw, seed + 3, 2.0f), *db0 = test_randn((size_t)c->OC, seed + 4, 2.0f);
    float *junk = test_filled(ni, 7.0f);

    struct tensor cdo = test_tensor(cpu, KDT_F32, dout, no);
    struct tensor ci = test_tensor(cpu, KDT_F32, inp, ni), cw = test_tensor(cpu, KDT_F32, w, nw);
    struct tensor cdi = c->dinp ? test_tensor(cpu, KDT_F32, junk, ni) : tensor_none();
    struct tensor cdw = c->dweight ? test_tensor(cpu, KDT_F32, dw0, nw) : tensor_none();
    struct tensor cdb = c->dbias ? test_tensor(cpu, KDT_F32, db0, (size_t)c->OC) : tensor_none();
    k_linear_backward(cpu, cdi, cdw, cdb, cdo, ci, cw, c->M, c->C, c->OC);

    struct tensor gdo = test_tensor(gpu, c->dt, dout, no);
    struct tensor gi = test_tensor(gpu, c->dt, inp, ni), gw = test_tensor(gpu, c->dt, w, nw);
    struct tensor gdi = c->dinp ? test_tensor(gpu, c->dt, junk, ni) : tensor_none();
    struct tensor gdw = c->dweight ? test_tensor(gpu, KDT_F32, dw0, nw) : tensor_none();
    struct tensor gdb = c->dbias ? test_tensor(gpu, KDT_F32, db0, (size_t)c->OC) : tensor_none();
    k_linear_backward(gpu, gdi, gdw, gdb, gdo, gi, gw, c->M, c->C, c->OC);
    k_sync(gpu);

    char what[128];
    const char *dn = kdtype_name(c->dt);
    if (c->dinp) {
        float *want = test_values(cpu, cdi);
        snprintf(what, sizeof what, "%s M%d C%d OC%d dinp", dn, c->M, c->C, c->OC);
        check_free(gpu, &gdi, want, ni, tol_for(c->dt), what);
        free(want);
    }
    /* Parameter gradients are f32 sums of products of the same (rounded)
     * numbers on both sides: only the order of the sums differs. */
    if (c->dweight) {
        float *want = test_values(cpu, cdw);
        snprintf(what, sizeof what, "%s M%d C%d OC%d dweight", dn, c->M, c->C, c->OC);
        check_free(gpu, &gdw, want, nw, TOL_F32, what);
        free(want);
    }
    if (c->dbias) {
        float *want = test_values(cpu, cdb);
        snprintf(what, sizeof what, "%s M%d C%d OC%d dbias", dn, c->M, c->C, c->OC);
        check_free(gpu, &gdb, want, (size_t)c->OC, TOL_F32, what);
        free(want);
    }

    k_free(gpu, &gdo);
    k_free(gpu, &gi);
    k_free(gpu, &gw);
    k_free(cpu, &cdo);
    k_free(cpu, &ci);
    k_free(cpu, &cw);
    k_free(cpu, &cdi);
    k_free(cpu, &cdw);
    k_free(cpu, &cdb);
    free(dout);
    free(inp);
    free(w);
    free(dw0);
    free(db0);
    free(junk);
}

static const int LB_SHAPES[][3] = {{1, 5, 3}, {33, 19, 13}, {37, 40, 24}, {70, 72, 136}};

static void lb_all(enum kdtype dt)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    uint64_t seed = 2000 + 100 * (uint64_t)dt;
    for (size_t s = 0; s < sizeof LB_SHAPES / sizeof LB_SHAPES[0]; s++) {
        struct lb_case c = {dt, LB_SHAPES[s][0], LB_SHAPES[s][1], LB_SHAPES[s][2], 1, 1, 1};
        lb_check(&cpu, &gpu, &c, seed += 7);
    }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(linear_backward_f32)
{
    lb_all(KDT_F32);
}

TEST(linear_backward_bf16)
{
    lb_all(KDT_BF16);
}

TEST(linear_backward_f16)
{
    lb_all(KDT_F16);
}

/* Every subset of the three outputs, none included. */
TEST(linear_backward_absent_outputs)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    for (int d = 0; d < 3; d++)
        for (int mask = 0; mask < 8; mask++) {
            struct lb_case c = {ALL_DT[d], 21, 18, 11, mask & 1, (mask >> 1) & 1, mask >> 2};
            lb_check(&cpu, &gpu, &c, 3000 + 10 * (uint64_t)mask);
        }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* Enough rows that dbias is summed in several chunks (256 rows each), one of
 * them short; and the empty cases: M = 0 adds nothing, OC = 0 clears dinp. */
TEST(linear_backward_many_rows_and_empty)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    for (int d = 0; d < 3; d++) {
        struct lb_case many = {ALL_DT[d], 600, 7, 37, 1, 1, 1};
        lb_check(&cpu, &gpu, &many, 4000);
        struct lb_case no_rows = {ALL_DT[d], 0, 9, 5, 1, 1, 1};
        lb_check(&cpu, &gpu, &no_rows, 4010);
        struct lb_case no_out = {ALL_DT[d], 6, 9, 0, 1, 1, 1};
        lb_check(&cpu, &gpu, &no_out, 4020);
    }
    kctx_free(&gpu);
    kctx_free(&cpu);
}
