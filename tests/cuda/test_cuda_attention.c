/* Flash attention on CUDA where the CPU's values are not the point:
 * bitwise reproducible gradients (no atomics), and empty heads. Its parity
 * with the CPU backend (out, lse, dq, dk, dv over tile edges, head sizes,
 * both load paths, every dtype) is the table's
 * (tests/cuda/parity_attention.c). */
#include "tests/cuda/cuda_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
