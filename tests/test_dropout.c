/* dropout: k_dropout_forward on the CPU backend. The mask against the one
 * drawn here from libcommon/philox.h (rng_stream, rng_uniform_f32), kept
 * values exactly inp * (1.0f / (1.0f - p)), the fraction dropped near p,
 * the same bits on every call and thread count, a sample's mask whatever
 * else is in the batch, p = 0 an exact copy, in place, and the dispatcher
 * refusing broken calls, naming the op. (CUDA's kernel is checked against
 * this one bit for bit by tests/cuda/parity_dropout.c.) */
#include "tests/harness.h"
#include "kernels/kernels.h"
#include "libcommon/philox.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* A purpose of this file's own for its random inputs. */
#define TEST_PURPOSE 0xd70fu

/* Both key words set, and a step past 2^32 (its low 32 bits count). */
#define SEED 0x0123456789abcdefull
#define STEP ((1ull << 32) + 77u)

static struct tensor t32(float *p, size_t n)
{
    return tensor_f32(p, (int64_t)n);
}

static void dropout(struct kctx *ctx, float *out, float *inp, float p, const uint64_t *ids, int B,
                    int64_t per)
{
    const size_t n = (size_t)B * (size_t)per;
    k_dropout_forward(ctx, t32(out, n), t32(inp, n), p, SEED, RNG_LORA_DROPOUT, STEP, ids, B,
                      per);
}

/* What sample b's element j must be: the definition of kernels.h, from
 * philox.h's own functions. */
static float *dropout_expected(const float *inp, float p, const uint64_t *ids, int B, int64_t per)
{
    float *want = malloc((size_t)B * (size_t)per * sizeof *want);
    float *u = malloc((size_t)per * sizeof *u);
    const float scale = 1.0f / (1.0f - p);
    for (int b = 0; b < B; b++) {
        struct rng_stream s = rng_stream(SEED, RNG_LORA_DROPOUT, STEP, ids[b]);
        rng_uniform_f32(&s, 0, (size_t)per, u);
        for (int64_t j = 0; j < per; j++) {
            const int64_t i = b * per + j;
            want[i] = u[j] >= p ? inp[i] * scale : 0.0f;
        }
    }
    free(u);
    return want;
}

/* Inputs never 0, so a 0 out means dropped. */
static float *nonzero_inputs(size_t n, uint64_t seed)
{
    float *x = test_normal(n, seed, 1.0f, TEST_PURPOSE);
    for (size_t i = 0; i < n; i++)
        if (x[i] == 0.0f)
            x[i] = 1.0f;
    return x;
}

/* (1) and (2): sample lengths not a multiple of 4 (the last Philox block
 * short), ids far apart, one past 2^32; kept elements exactly inp * s. */
TEST(dropout_mask_is_the_philox_stream)
{
    struct kctx ctx = test_cpu_ctx(0);
    const uint64_t ids[] = {7, 123456789012ull, 3};
    const float ps[] = {0.1f, 0.3f, 0.5f, 0.9f};
    const int64_t pers[] = {1001, 3, 4096};
    for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++)
        for (size_t k = 0; k < sizeof pers / sizeof pers[0]; k++) {
            const int B = 3;
            const int64_t per = pers[k];
            const size_t n = (size_t)B * (size_t)per;
            float *inp = nonzero_inputs(n, 100 + k);
            float *out = test_filled(n, 7.0f);
            dropout(&ctx, out, inp, ps[pi], ids, B, per);
            float *want = dropout_expected(inp, ps[pi], ids, B, per);
            char what[64];
            snprintf(what, sizeof what, "p %g per %lld", (double)ps[pi], (long long)per);
            test_check_same_bits(__FILE__, __LINE__, what, out, want, n);
            const float scale = 1.0f / (1.0f - ps[pi]);
            int kept_wrong = 0, zero_not_plus = 0;
            for (size_t i = 0; i < n; i++) {
                if (out[i] != 0.0f && out[i] != inp[i] * scale)
                    kept_wrong++;
                if (out[i] == 0.0f && signbit(out[i]))
                    zero_not_plus++;
            }
            CHECK_INT(kept_wrong, 0);
            CHECK_INT(zero_not_plus, 0);
            free(inp);
            free(out);
            free(want);
        }
    kctx_free(&ctx);
}

/* (3): over 1e5 elements the fraction dropped is within one percentage
 * point of p (its standard deviation is at most 0.0016 there). */
TEST(dropout_fraction_dropped_is_p)
{
    struct kctx ctx = test_cpu_ctx(0);
    const uint64_t ids[] = {0, 1, 2, 3};
    const int B = 4;
    const int64_t per = 25000;
    const size_t n = (size_t)B * (size_t)per;
    const float ps[] = {0.05f, 0.1f, 0.5f, 0.9f};
    for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++) {
        float *inp = test_filled(n, 1.0f);
        float *out = test_filled(n, 7.0f);
        dropout(&ctx, out, inp, ps[pi], ids, B, per);
        size_t dropped = 0;
        for (size_t i = 0; i < n; i++)
            dropped += out[i] == 0.0f;
        CHECK_NEAR((double)dropped / (double)n, ps[pi], 0.01);
        free(inp);
        free(out);
    }
    kctx_free(&ctx);
}

/* (4): the same bits on a second call and on 1 or 2 threads (enough
 * elements for the parallel loop), and a sample's mask depends on its id
 * alone: {9} alone gives the second half of {5, 9}. */
TEST(dropout_same_bits_every_call_and_batch)
{
    const int64_t per = 20001;
    const uint64_t pair[] = {5, 9}, alone[] = {9};
    const size_t n = 2 * (size_t)per;
    float *inp = nonzero_inputs(n, 200);
    float *first = test_filled(n, 7.0f), *again = test_filled(n, 7.0f);
    float *one = test_filled(n, 7.0f), *single = test_filled((size_t)per, 7.0f);
    struct kctx ctx = test_cpu_ctx(2), ctx1 = test_cpu_ctx(1);
    dropout(&ctx, first, inp, 0.25f, pair, 2, per);
    dropout(&ctx, again, inp, 0.25f, pair, 2, per);
    dropout(&ctx1, one, inp, 0.25f, pair, 2, per);
    dropout(&ctx, single, inp + per, 0.25f, alone, 1, per);
    test_check_same_bits(__FILE__, __LINE__, "second call", again, first, n);
    test_check_same_bits(__FILE__, __LINE__, "one thread", one, first, n);
    test_check_same_bits(__FILE__, __LINE__, "{9} alone", single, first + per, (size_t)per);
    /* and the two samples' masks differ (ids are part of the address) */
    size_t differ = 0;
    for (int64_t j = 0; j < per; j++)
        differ += (first[j] == 0.0f) != (first[per + j] == 0.0f);
    CHECK(differ > 0);
    free(inp);
    free(first);
    free(again);
    free(one);
    free(single);
    kctx_free(&ctx1);
    kctx_free(&ctx);
}

/* (5): p = 0 gives inp's bits, -0 and infinities included, out of place
 * and in place. */
TEST(dropout_p0_is_identity)
{
    struct kctx ctx = test_cpu_ctx(0);
    const uint64_t ids[] = {7, 123456789012ull};
    const int64_t per = 37;
    const size_t n = 2 * (size_t)per;
    float *inp = test_normal(n, 300, 1.0f, TEST_PURPOSE);
    inp[0] = -0.0f;
    inp[1] = INFINITY;
    inp[2] = -INFINITY;
    float *keep = malloc(n * sizeof *keep);
    memcpy(keep, inp, n * sizeof *keep);
    float *out = test_filled(n, 7.0f);
    dropout(&ctx, out, inp, 0.0f, ids, 2, per);
    test_check_same_bits(__FILE__, __LINE__, "out", out, keep, n);
    test_check_same_bits(__FILE__, __LINE__, "inp", inp, keep, n);
    dropout(&ctx, inp, inp, 0.0f, ids, 2, per);
    test_check_same_bits(__FILE__, __LINE__, "in place", inp, keep, n);
    free(inp);
    free(keep);
    free(out);
    kctx_free(&ctx);
}

/* (6): out == inp gives what a separate out does, on one thread and on the
 * parallel loop. */
TEST(dropout_in_place)
{
    const uint64_t ids[] = {7, 123456789012ull, 11};
    const int64_t pers[] = {1001, 20001};
    for (size_t k = 0; k < 2; k++)
        for (int threads = 1; threads <= 2; threads++) {
            struct kctx ctx = test_cpu_ctx(threads);
            const int64_t per = pers[k];
            const size_t n = 3 * (size_t)per;
            float *inp = nonzero_inputs(n, 400 + k);
            float *out = test_filled(n, 7.0f);
            dropout(&ctx, out, inp, 0.4f, ids, 3, per);
            dropout(&ctx, inp, inp, 0.4f, ids, 3, per);
            test_check_same_bits(__FILE__, __LINE__, "in place", inp, out, n);
            free(inp);
            free(out);
            kctx_free(&ctx);
        }
}

/* An empty batch or sample writes nothing and needs no ids. */
TEST(dropout_empty_is_a_no_op)
{
    struct kctx ctx = test_cpu_ctx(0);
    float x = 7.0f;
    k_dropout_forward(&ctx, t32(&x, 0), t32(&x, 0), 0.5f, SEED, RNG_LORA_DROPOUT, STEP, NULL, 0,
                      16);
    k_dropout_forward(&ctx, t32(&x, 0), t32(&x, 0), 0.5f, SEED, RNG_LORA_DROPOUT, STEP, NULL, 4,
                      0);
    CHECK(x == 7.0f);
    kctx_free(&ctx);
}

/* ---- broken calls --------------------------------------------------------- */

static float g_buf[8];
static const uint64_t g_ids[] = {1, 2};

static void call_with(float p, uint32_t purpose, const uint64_t *ids, int64_t n)
{
    struct kctx ctx = test_cpu_ctx(1);
    k_dropout_forward(&ctx, t32(g_buf, (size_t)n), t32(g_buf, 8), p, SEED, purpose, STEP, ids, 2,
                      4);
}

static void p_one(void)
{
    call_with(1.0f, RNG_LORA_DROPOUT, g_ids, 8);
}
static void p_negative(void)
{
    call_with(-0.1f, RNG_LORA_DROPOUT, g_ids, 8);
}
static void p_nan(void)
{
    call_with(NAN, RNG_LORA_DROPOUT, g_ids, 8);
}
static void purpose_too_big(void)
{
    call_with(0.5f, 1u << 16, g_ids, 8);
}
static void ids_null(void)
{
    call_with(0.5f, RNG_LORA_DROPOUT, NULL, 8);
}
static void out_too_small(void)
{
    call_with(0.5f, RNG_LORA_DROPOUT, g_ids, 7);
}
static void valid(void)
{
    call_with(0.5f, RNG_LORA_DROPOUT, g_ids, 8);
}

TEST(dropout_refuses_broken_calls)
{
    const struct {
        void (*fn)(void);
        const char *want;
    } cases[] = {
        {p_one, "dit: kernel dropout_forward: p 1 is outside [0, 1)"},
        {p_negative, "dit: kernel dropout_forward: p -0.1 is outside [0, 1)"},
        {p_nan, "dit: kernel dropout_forward: p nan is outside [0, 1)"},
        {purpose_too_big, "dit: kernel dropout_forward: purpose 65536 is not below 2^16"},
        {ids_null, "dit: kernel dropout_forward: ids is NULL"},
        {out_too_small, "dit: kernel dropout_forward: out has 7 elements, the shape needs 8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int sig = 0;
        char *msg = test_stderr_of(cases[i].fn, &sig);
        CHECK_INT(sig, SIGABRT);
        CHECK_CONTAINS(msg, cases[i].want);
        CHECK_CONTAINS(msg, "(a bug in the caller)");
        free(msg);
    }
    int sig = -1;
    char *msg = test_stderr_of(valid, &sig);
    CHECK_INT(sig, 0);
    free(msg);
}
