/* The table-driven parity test: every op of kernels/ops.def on the CPU
 * backend and on the CUDA backend (the emulator in CI, a GPU with
 * `make test-cuda`) from the same inputs, in every dtype the op takes, and
 * their outputs compared (tests/cuda/test_cuda_parity.c runs it).
 *
 * An op's spec, parity_<name> in tests/cuda/parity_<family>.c, describes
 * its tensors (role, dtype, how to fill them), their sizes for a case
 * (layout), the call, and the cases: shapes, scalars, an offset that leaves
 * the CUDA tensors only 2 or 4 bytes aligned, absent outputs, in place. The
 * runner does the rest:
 *
 *  - inputs: normal values * scale + shift (or the spec's fill), rounded to
 *    the dtype the CUDA tensor has, so both backends compute from the same
 *    numbers; the CPU side is f32 (the CPU computes in f32 only);
 *  - outputs: pre-filled with junk (7.0), accumulating ones (and in-out
 *    ones) with random values, on both sides;
 *  - after the call: every output against the CPU's, within 1e-5 relative
 *    for f32 tensors and 1e-2 for bf16 and f16 (test_check_parity), or bit
 *    for bit once rounded to the dtype (PA_EXACT); an absent output's
 *    buffer must hold its junk still, and every input its values;
 *  - a returned value (mse, sum of squares) within 1e-5 relative.
 *
 * The op list names every spec, so an op added to kernels/ops.def without
 * one fails to link. */
#ifndef DIT_TESTS_CUDA_PARITY_H
#define DIT_TESTS_CUDA_PARITY_H

#include "tests/cuda/cuda_test_util.h"

#include <stddef.h>

enum { PARITY_MAX_ARGS = 12, PARITY_MAX_DIMS = 8 };

enum parity_arg_flags {
    PA_IN = 1 << 0,      /* read: filled, and must come back unchanged */
    PA_OUT = 1 << 1,     /* written: pre-filled with junk, compared */
    PA_ACC = 1 << 2,     /* read and written (accumulated, updated): random, compared */
    PA_OPT = 1 << 3,     /* may be absent: bit k of a case's `absent` is the k-th PA_OPT */
    PA_F32 = 1 << 4,     /* f32 whatever the call's dtype */
    PA_DT2 = 1 << 5,     /* in the case's dt2, on both backends (a conversion's source, a copy) */
    PA_SAME = 1 << 6,    /* in the call's dtype on the CPU too (a conversion's destination) */
    PA_ALIGNED = 1 << 7, /* not moved by the case's offset */
    PA_EXACT = 1 << 8,   /* bit-equal to the CPU's value rounded to the dtype */
    PA_EXACT_F32 = 1 << 9, /* bit-equal in an f32 call, within tolerance otherwise */
    PA_SCRATCH = 1 << 10,  /* f32 scratch: sized per backend, neither filled nor compared */
    PA_IDS = 1 << 11,      /* int32 indices, in the device's memory (fill gives them) */
    PA_STEP = 1 << 12,     /* refilled before every step (a gradient, new parameters) */
    PA_PREP = 1 << 13,     /* filled by the spec's prepare on the CPU, then given to both */
    PA_U8 = 1 << 14,       /* u8 codes (fill gives values 0..255), compared exactly */
};

struct parity_arg {
    const char *name;
    unsigned flags;
    float scale, shift; /* random values: normal * scale + shift (scale 0 means 1) */
    const char *view;   /* a view into this other tensor (at layout's `at`) */
    const char *alias;  /* in an in-place case, the tensor passed here instead */
};

struct parity_case {
    int d[PARITY_MAX_DIMS]; /* dimensions, as the spec's layout reads them */
    float f[4];             /* scalars (alpha, beta, eps, ...) */
    int offset;             /* element offset of the CUDA tensors in their allocations */
    unsigned absent;        /* bit k: the k-th optional tensor is absent */
    int inplace;            /* tensors with an alias get it */
    unsigned dts;           /* KDT_BIT of the dtypes to run; 0: every dtype of the op */
    enum kdtype dt2;        /* the second dtype of PA_DT2 tensors */
};

#define PARITY_BIT(dt) (1u << (unsigned)(dt))

struct parity_op {
    const char *name;
    struct parity_arg args[PARITY_MAX_ARGS]; /* up to the first without a name */
    /* Elements of each tensor, and a view's offset into its tensor. */
    void (*layout)(const struct kctx *ctx, const struct parity_case *c, int64_t *n, int64_t *at);
    /* The op on ctx; the value it returns (0 when none). */
    double (*call)(struct kctx *ctx, struct tensor *t, const struct parity_case *c, int step);
    /* Optional: fills the PA_PREP tensors on the CPU (saved statistics,
     * a forward's outputs). */
    void (*prepare)(struct kctx *cpu, struct tensor *t, const struct parity_case *c);
    /* Optional: replaces (or edits) the random values of tensor i. */
    void (*fill)(const struct parity_case *c, int i, int step, float *x, size_t n);
    /* Optional: compares output i itself and returns how many comparisons
     * it made; 0 leaves it to the runner. */
    int (*check)(const struct parity_case *c, int i, const float *got, const float *want,
                 size_t n, double tol, const char *what);
    int steps;  /* calls in a row (an optimizer's steps); 0 means 1 */
    int result; /* the call's return value is compared */
    int repeat; /* and a second CUDA call must return the same bits */
    const struct parity_case *cases;
    size_t ncases;
};

/* Initializers: a case's dims and scalars, a tensor's name, flags and the
 * rest of struct parity_arg by name. */
#define PD(...) .d = {__VA_ARGS__}
#define PF(...) .f = {__VA_ARGS__}
#define ARG(n, fl, ...) {.name = (n), .flags = (fl), __VA_ARGS__}

#define PARITY_CASES(a) .cases = (a), .ncases = sizeof(a) / sizeof((a)[0])

/* The dtypes column of kernels/ops.def: the PARITY_BIT of each dtype the
 * op takes on CUDA, and for KOP_ANY a flag: on the CPU too. */
enum { KOP_F32 = 1, KOP_ACT = 7, KOP_EVERY_BACKEND = 8, KOP_ANY = 7 | 8 };
#define KOP_DTYPES(dtypes) ((unsigned)(dtypes) & 7u)

#define KOP(name, family, dtypes, ret, params) extern const struct parity_op parity_##name;
#include "kernels/ops.def"
#undef KOP

#endif
