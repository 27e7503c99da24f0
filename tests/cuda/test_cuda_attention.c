/* Flash attention on CUDA against the CPU backend: out, lse and dqkv from the
 * same random inputs, for sequence lengths that are not a whole number of
 * tiles (1, 7, 33, 70, 130, 300), head sizes that are not powers of two (6,
 * 24, 40, 72) up to 128, both load paths (16-byte vectors and scalars), f32
 * (CUDA cores, 1e-5 parity) and bf16/f16 (tensor cores, 1e-2), an absent
 * dqkv, empty heads, and bitwise reproducible gradients. Shapes stay tiny:
 * the emulator runs every CUDA thread. */
#include "tests/cuda/cuda_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct att_case {
    int B, T, C, NH;
    enum kdtype dt;
    int backward; /* 0: forward only; 1: with dqkv; 2: dqkv absent */
};

/* The CPU reference: out, lse and, with dout, dqkv (all f32, malloc'd). */
static void att_cpu(const struct att_case *c, const float *qkv, const float *out_for_bwd,
                    const float *dout, float **out, float **lse, float **dqkv)
{
    struct kctx cpu = cpu_test_ctx();
    size_t nqkv = (size_t)c->B * c->T * 3 * c->C, nout = (size_t)c->B * c->T * c->C;
    size_t nlse = (size_t)c->B * c->NH * c->T;
    struct tensor tq = test_tensor(&cpu, KDT_F32, qkv, nqkv);
    struct tensor to = test_tensor(&cpu, KDT_F32, NULL, nout);
    struct tensor tl = test_tensor(&cpu, KDT_F32, NULL, nlse);
    struct tensor ts =
        test_tensor(&cpu, KDT_F32, NULL, (size_t)k_attention_scratch(&cpu, c->B, c->T, c->NH));
    k_attention_forward(&cpu, to, tl, tq, ts, c->B, c->T, c->C, c->NH);
    *out = test_values(&cpu, to);
    *lse = test_values(&cpu, tl);
    if (dqkv) {
        struct tensor tdo = test_tensor(&cpu, KDT_F32, dout, nout);
        struct tensor tob = test_tensor(&cpu, KDT_F32, out_for_bwd, nout);
        struct tensor tdq = test_tensor(&cpu, KDT_F32, NULL, nqkv);
        k_attention_backward(&cpu, tdq, tdo, tob, tl, tq, ts, c->B, c->T, c->C, c->NH);
        *dqkv = test_values(&cpu, tdq);
        k_free(&cpu, &tdo);
        k_free(&cpu, &tob);
        k_free(&cpu, &tdq);
    }
    k_free(&cpu, &tq);
    k_free(&cpu, &to);
    k_free(&cpu, &tl);
    k_free(&cpu, &ts);
    kctx_free(&cpu);
}

static void att_check(const struct att_case *c, uint64_t seed)
{
    size_t nqkv = (size_t)c->B * c->T * 3 * c->C, nout = (size_t)c->B * c->T * c->C;
    size_t nlse = (size_t)c->B * c->NH * c->T;
    double tol = tol_for(c->dt);
    char what[96];
    const char *dn = c->dt == KDT_F32 ? "f32" : c->dt == KDT_BF16 ? "bf16" : "f16";

    /* Scores of about unit spread: softmax rows neither flat nor one-hot. */
    float *qkv = test_randn(nqkv, seed, 1.2f);
    float *dout = test_randn(nout, seed + 1, 1.0f);
    test_round_to(c->dt, qkv, nqkv);
    test_round_to(c->dt, dout, nout);

    struct kctx gpu = cuda_test_ctx();
    struct tensor tq = test_tensor(&gpu, c->dt, qkv, nqkv);
    struct tensor to = test_tensor(&gpu, c->dt, NULL, nout);
    struct tensor tl = test_tensor(&gpu, KDT_F32, NULL, nlse);
    struct tensor ts =
        test_tensor(&gpu, KDT_F32, NULL, (size_t)k_attention_scratch(&gpu, c->B, c->T, c->NH));
    k_attention_forward(&gpu, to, tl, tq, ts, c->B, c->T, c->C, c->NH);
    float *out = test_values(&gpu, to), *lse = test_values(&gpu, tl);

    /* Backward's reference sees the out the GPU stored (rounded to dt). */
    float *out_ref, *lse_ref, *dqkv_ref = NULL;
    att_cpu(c, qkv, out, dout, &out_ref, &lse_ref, c->backward == 1 ? &dqkv_ref : NULL);

    snprintf(what, sizeof what, "%s B%d T%d C%d NH%d out", dn, c->B, c->T, c->C, c->NH);
    CHECK_PARITY(what, out, out_ref, nout, tol);
    snprintf(what, sizeof what, "%s B%d T%d C%d NH%d lse", dn, c->B, c->T, c->C, c->NH);
    /* lse is f32 in every dtype; bf16 inputs are the same numbers on both
     * sides, so only the order of the sums differs. */
    CHECK_PARITY(what, lse, lse_ref, nlse, TOL_F32);

    if (c->backward) {
        struct tensor tdo = test_tensor(&gpu, c->dt, dout, nout);
        struct tensor tdq = tensor_none();
        if (c->backward == 1)
            tdq = test_tensor(&gpu, c->dt, NULL, nqkv);
        k_attention_backward(&gpu, tdq, tdo, to, tl, tq, ts, c->B, c->T, c->C, c->NH);
        k_sync(&gpu);
        if (c->backward == 1) {
            float *dqkv = test_values(&gpu, tdq);
            /* q, k and v gradients separately: each has its own scale. */
            static const char *part[3] = {"dq", "dk", "dv"};
            for (int p = 0; p < 3; p++) {
                size_t n = (size_t)c->B * c->T * c->C;
                float *g = malloc(n * sizeof *g), *w = malloc(n * sizeof *w);
                for (size_t r = 0; r < (size_t)c->B * c->T; r++) {
                    memcpy(g + r * c->C, dqkv + r * 3 * c->C + (size_t)p * c->C,
                           (size_t)c->C * sizeof *g);
                    memcpy(w + r * c->C, dqkv_ref + r * 3 * c->C + (size_t)p * c->C,
                           (size_t)c->C * sizeof *w);
                }
                snprintf(what, sizeof what, "%s B%d T%d C%d NH%d %s", dn, c->B, c->T, c->C,
                         c->NH, part[p]);
                if (c->T == 1 && p < 2) {
                    /* One key: dS = P (dP - D) is rounding noise around 0,
                     * so there is no relative error to speak of. */
                    float worst = 0.0f;
                    for (size_t i = 0; i < n; i++)
                        worst = fabsf(g[i]) > worst ? fabsf(g[i]) : worst;
                    if (!(worst <= tol))
                        test_fail(__FILE__, __LINE__, "%s: |%g| is not ~0", what, worst);
                } else {
                    CHECK_PARITY(what, g, w, n, tol);
                }
                free(g);
                free(w);
            }
            free(dqkv);
            k_free(&gpu, &tdq);
        }
        k_free(&gpu, &tdo);
    }

    free(qkv);
    free(dout);
    free(out);
    free(lse);
    free(out_ref);
    free(lse_ref);
    free(dqkv_ref);
    k_free(&gpu, &tq);
    k_free(&gpu, &to);
    k_free(&gpu, &tl);
    k_free(&gpu, &ts);
    kctx_free(&gpu);
}

/* One query and one key: softmax of a single score is 1, out = v, dq = dk = 0. */
TEST(cuda_attention_f32_single_token)
{
    struct att_case c = {2, 1, 16, 2, KDT_F32, 1};
    att_check(&c, 11);
}

TEST(cuda_attention_f32_t7_hs16)
{
    struct att_case c = {2, 7, 32, 2, KDT_F32, 1};
    att_check(&c, 12);
}

/* HS 24 (not a power of two), T one past a tile. */
TEST(cuda_attention_f32_t33_hs24)
{
    struct att_case c = {2, 33, 48, 2, KDT_F32, 1};
    att_check(&c, 13);
}

/* Three query tiles and three key tiles, the last ones partial. */
TEST(cuda_attention_f32_t70_hs8_tiles)
{
    struct att_case c = {1, 70, 24, 3, KDT_F32, 1};
    att_check(&c, 14);
}

/* Ten tiles each way, and more than the CPU's 256-query blocks. */
TEST(cuda_attention_f32_t300_long)
{
    struct att_case c = {1, 300, 16, 1, KDT_F32, 1};
    att_check(&c, 28);
}

/* DiT-XL/2's head size, three lanes' worth of dims per row. */
TEST(cuda_attention_f32_hs72)
{
    struct att_case c = {1, 9, 144, 2, KDT_F32, 1};
    att_check(&c, 15);
}

/* The largest head size, four dims per lane. */
TEST(cuda_attention_f32_hs128)
{
    struct att_case c = {1, 5, 128, 1, KDT_F32, 1};
    att_check(&c, 16);
}

/* HS 6: rows not a whole number of 16-byte vectors, the scalar load path. */
TEST(cuda_attention_f32_hs6_scalar_loads)
{
    struct att_case c = {2, 19, 12, 2, KDT_F32, 1};
    att_check(&c, 17);
}

TEST(cuda_attention_bf16_t33_hs24)
{
    struct att_case c = {2, 33, 48, 2, KDT_BF16, 1};
    att_check(&c, 18);
}

TEST(cuda_attention_bf16_hs72)
{
    struct att_case c = {1, 9, 144, 2, KDT_BF16, 1};
    att_check(&c, 19);
}

/* HS 12 in f16: not a whole number of 8-element vectors, scalar loads. */
TEST(cuda_attention_f16_t20_hs12)
{
    struct att_case c = {1, 20, 24, 2, KDT_F16, 1};
    att_check(&c, 20);
}

/* bf16 and f16 run on tensor cores, in tiles of 64 rows and 64 columns,
 * head dims padded to a multiple of 16. */
TEST(cuda_attention_bf16_t70_hs8_tiles)
{
    struct att_case c = {2, 70, 24, 3, KDT_BF16, 1};
    att_check(&c, 22);
}

TEST(cuda_attention_bf16_t130_hs16_tiles)
{
    struct att_case c = {1, 130, 32, 2, KDT_BF16, 1};
    att_check(&c, 23);
}

TEST(cuda_attention_bf16_t300_long)
{
    struct att_case c = {1, 300, 32, 2, KDT_BF16, 1};
    att_check(&c, 29);
}

/* HS 40: whole 16-byte vectors, but padded from 40 to 48 dims. */
TEST(cuda_attention_bf16_hs40_padded)
{
    struct att_case c = {1, 33, 80, 2, KDT_BF16, 1};
    att_check(&c, 24);
}

TEST(cuda_attention_bf16_t70_hs72)
{
    struct att_case c = {1, 70, 144, 2, KDT_BF16, 1};
    att_check(&c, 25);
}

TEST(cuda_attention_f16_hs128)
{
    struct att_case c = {1, 5, 128, 1, KDT_F16, 1};
    att_check(&c, 26);
}

/* HS 6 in f16: scalar loads, ten dims of padding. */
TEST(cuda_attention_f16_hs6_scalar_loads)
{
    struct att_case c = {2, 19, 12, 2, KDT_F16, 1};
    att_check(&c, 27);
}

/* No gradient wanted: backward returns without touching anything. */
TEST(cuda_attention_dqkv_absent)
{
    struct att_case c = {1, 7, 16, 2, KDT_F32, 2};
    att_check(&c, 21);
}

/* The backward has no atomics: two runs give the same bits. */
static void att_check_deterministic(enum kdtype dt)
{
    const int B = 1, T = 70, C = 32, NH = 2;
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    size_t bytes = nqkv * kdtype_bytes(dt);
    float *qkv = test_randn(nqkv, 31, 1.0f), *dout = test_randn(nout, 32, 1.0f);
    struct kctx gpu = cuda_test_ctx();
    struct tensor tq = test_tensor(&gpu, dt, qkv, nqkv);
    struct tensor to = test_tensor(&gpu, dt, NULL, nout);
    struct tensor tl = test_tensor(&gpu, KDT_F32, NULL, nlse);
    struct tensor ts =
        test_tensor(&gpu, KDT_F32, NULL, (size_t)k_attention_scratch(&gpu, B, T, NH));
    struct tensor tdo = test_tensor(&gpu, dt, dout, nout);
    struct tensor tdq = test_tensor(&gpu, dt, NULL, nqkv);
    void *first = malloc(bytes), *second = malloc(bytes);
    k_attention_forward(&gpu, to, tl, tq, ts, B, T, C, NH);
    k_attention_backward(&gpu, tdq, tdo, to, tl, tq, ts, B, T, C, NH);
    k_download(&gpu, first, tdq, (int64_t)nqkv);
    k_fill(&gpu, tdq, 0.0f, (int64_t)nqkv);
    k_attention_backward(&gpu, tdq, tdo, to, tl, tq, ts, B, T, C, NH);
    k_download(&gpu, second, tdq, (int64_t)nqkv);
    CHECK(memcmp(first, second, bytes) == 0);
    free(first);
    free(second);
    free(qkv);
    free(dout);
    k_free(&gpu, &tq);
    k_free(&gpu, &to);
    k_free(&gpu, &tl);
    k_free(&gpu, &ts);
    k_free(&gpu, &tdo);
    k_free(&gpu, &tdq);
    kctx_free(&gpu);
}

TEST(cuda_attention_backward_deterministic)
{
    att_check_deterministic(KDT_F32);
    att_check_deterministic(KDT_BF16);
}

/* Empty heads (C = 0): uniform softmax, lse = log T, as on the CPU. */
TEST(cuda_attention_empty_heads)
{
    const int B = 2, T = 5, NH = 2;
    struct kctx gpu = cuda_test_ctx();
    struct tensor tq = test_tensor(&gpu, KDT_BF16, NULL, 0);
    struct tensor to = test_tensor(&gpu, KDT_BF16, NULL, 0);
    struct tensor tl = test_tensor(&gpu, KDT_F32, NULL, (size_t)B * NH * T);
    struct tensor ts =
        test_tensor(&gpu, KDT_F32, NULL, (size_t)k_attention_scratch(&gpu, B, T, NH));
    k_attention_forward(&gpu, to, tl, tq, ts, B, T, 0, NH);
    float *lse = test_values(&gpu, tl);
    for (int i = 0; i < B * NH * T; i++)
        CHECK_NEAR(lse[i], logf((float)T), 1e-6);
    free(lse);
    k_free(&gpu, &tq);
    k_free(&gpu, &to);
    k_free(&gpu, &tl);
    k_free(&gpu, &ts);
    kctx_free(&gpu);
}
