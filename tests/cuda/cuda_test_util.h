/* Shared pieces of the CUDA tests (tests/cuda/): the same op on a CPU and
 * a CUDA context from the same random inputs, and a comparison that names
 * the first bad element. They run against the CPU emulator in CI (make
 * test-cuda-emu) and against a GPU with `make test-cuda`. */
#ifndef DIT_TESTS_CUDA_TEST_UTIL_H
#define DIT_TESTS_CUDA_TEST_UTIL_H

#include "kernels/kernels.h"
#include "tests/harness.h"

#include <stddef.h>
#include <stdint.h>

/* Tolerances of issue 8: relative error against the CPU backend. */
#define TOL_F32 1e-5
#define TOL_LOW 1e-2 /* bf16 and f16 activations */

static inline double tol_for(enum kdtype dt)
{
    return dt == KDT_F32 ? TOL_F32 : TOL_LOW;
}

/* Contexts; a failure to make one fails the test with the reason. */
struct kctx cuda_test_ctx(void);
struct kctx cpu_test_ctx(void);

/* n normal values times scale from the CUDA tests' stream of seed
 * (malloc'd); test_filled is the harness's. */
float *test_randn(size_t n, uint64_t seed, float scale);

/* A tensor of n elements of dt on ctx's device holding host (f32 values,
 * rounded to dt), or left as allocated when host is NULL. */
struct tensor test_tensor(struct kctx *ctx, enum kdtype dt, const float *host, size_t n);
/* The tensor's values as f32 (malloc'd); waits. */
float *test_values(struct kctx *ctx, struct tensor t);
/* Rounds host values through dt and back, in place: the inputs a bf16 run
 * really saw, for building the CPU reference from the same numbers. */
void test_round_to(enum kdtype dt, float *x, size_t n);

/* got against want: the norm-wise relative error ||got - want|| / ||want||
 * must be at most tol, and every element within tol * (|want| + rms(want))
 * * 8 (a loose bound, so that one wild element is named). */
void test_check_parity(const char *file, int line, const char *what, const float *got,
                       const float *want, size_t n, double tol);
#define CHECK_PARITY(what, got, want, n, tol)                                                 \
    test_check_parity(__FILE__, __LINE__, what, got, want, n, tol)

#endif
