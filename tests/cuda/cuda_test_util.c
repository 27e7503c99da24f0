#include "tests/cuda/cuda_test_util.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/philox.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A purpose of the tests' own, so no product stream is reused here. */
#define TEST_PURPOSE 0x7e58u

/* A failure nothing after it can survive (no context, no memory): the
 * test's child process ends here, failed, instead of aborting later in
 * the op that gets the missing context. */
static _Noreturn void fatal(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static _Noreturn void fatal(int line, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    test_fail(__FILE__, line, "%s", msg);
    fflush(stderr);
    _exit(1);
}

struct kctx cuda_test_ctx(void)
{
    struct kctx ctx;
    if (kctx_init(&ctx, DEVICE_CUDA, 0) != 0)
        fatal(__LINE__, "kctx_init(cuda): %s", err_get());
    return ctx;
}

struct kctx cpu_test_ctx(void)
{
    struct kctx ctx;
    if (kctx_init(&ctx, DEVICE_CPU, 0) != 0)
        fatal(__LINE__, "kctx_init(cpu): %s", err_get());
    return ctx;
}

float *test_randn(size_t n, uint64_t seed, float scale)
{
    return test_normal(n, seed, scale, TEST_PURPOSE);
}

struct tensor test_tensor(struct kctx *ctx, enum kdtype dt, const float *host, size_t n)
{
    struct tensor t;
    if (k_alloc(ctx, &t, dt, (int64_t)n) != 0)
        fatal(__LINE__, "k_alloc of %zu: %s", n, err_get());
    if (host)
        k_upload_f32(ctx, t, host, (int64_t)n);
    return t;
}

float *test_values(struct kctx *ctx, struct tensor t)
{
    float *x = malloc((t.n ? (size_t)t.n : 1) * sizeof *x);
    k_download_f32(ctx, x, t, t.n);
    return x;
}

void test_round_to(enum kdtype dt, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == KDT_BF16)
            x[i] = bf16_to_f32(f32_to_bf16(x[i]));
        else if (dt == KDT_F16)
            x[i] = f16_to_f32(f32_to_f16(x[i]));
    }
}

void test_check_parity(const char *file, int line, const char *what, const float *got,
                       const float *want, size_t n, double tol)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    double rms = n ? sqrt(den / (double)n) : 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= 8 * tol * (fabs(want[i]) + rms) + 1e-30) && bad++ < 5)
            test_fail(file, line, "%s[%zu]: got %.9g, want %.9g (err %.3g, rms %.3g)", what, i,
                      (double)got[i], (double)want[i], err, rms);
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(rel <= tol))
        test_fail(file, line, "%s: relative error %.3g above %.3g over %zu values", what, rel, tol,
                  n);
}
