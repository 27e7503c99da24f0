/* What cuBLASLt is allowed to do with our requests (kernels/cuda/matmul.cu
 * through lt.h), against the CPU backend: a bf16/f16 product whose partial
 * sums cancel (split-K partials rounded to the output type would show), the
 * Linear through the fallback of every epilogue (DIT_LT_NO_EPILOGUE), the
 * same shape again with other buffers (a cached plan must take the new bias
 * and aux pointers) and at other alignments in one context (a cached plan
 * must not serve less aligned pointers), and the fused epilogues under
 * DIT_LT_STRICT (cuBLASLt must accept them, not be quietly bypassed). The
 * products' parity in general (transposes, alpha and beta, bias, GELU,
 * backward, unaligned views, empty shapes) is the table's
 * (tests/cuda/parity_gemm.c).
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
