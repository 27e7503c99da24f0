/* What every dispatcher of kernels/kernels.h shares (the files of kernels/ops/): the
 * contract checks, made once per call before it goes through the
 * context's backend table (kernels/backend.h).
 *
 * A failed check is a bug in the calling model code (a wrong shape, a tensor
 * left on the other device), never bad user input, and the arena it would
 * scribble over is shared by the whole step. So, unlike the rest of the
 * library, the dispatcher does not return an error: op_abort() names the op
 * and the problem on stderr and aborts, leaving a core at the faulty call.
 *
 * Gradient outputs (d...) may always be absent, meaning "no gradient wanted"
 * (a frozen weight, an input that needs none); then nothing is written.
 *
 * Each dispatcher names its op `op`, and (for the macros) the dtype of its
 * activations `dt`, as local variables. */
#ifndef DIT_KERNELS_OPS_DISPATCH_H
#define DIT_KERNELS_OPS_DISPATCH_H

#include "kernels/backend.h"
#include "kernels/kernels.h"

#include <stdint.h>

_Noreturn void op_abort(const char *op, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Every call goes through here first: a context set up by kctx_init. */
void op_check_ctx(const struct kctx *ctx, const char *op);

enum { OPTIONAL = 0, REQUIRED = 1 };
enum { EXACT = 0, AT_LEAST = 1 };

/* The dtype the activations of a call are kept in, taken from one of its
 * tensors: one the backend computes in (f32 on the CPU; f32, bf16, f16 on
 * CUDA). */
enum kdtype op_act_dtype(const struct kctx *ctx, const char *op, const char *name,
                         struct tensor t);

/* A tensor argument: present (or allowed absent), on the ctx's device, of
 * dtype dt, with n equal to (or, for views and scratch, at least) what the
 * shape needs. Returns the data pointer, NULL when absent. */
void *op_check_tensor(const struct kctx *ctx, const char *op, const char *name, struct tensor t,
                      int64_t need, int required, int at_least, enum kdtype dt);

/* A tensor of any known dtype, at least n elements (copies, conversions). */
void *op_check_any(const struct kctx *ctx, const char *op, const char *name, struct tensor t,
                   int64_t n);

void op_check_dims(const char *op, int n, const int *dims, const char *names);
void op_check_count(const char *op, int64_t n);

/* Rows of a [B, k*C] modulation buffer: B rows of C values, mod_stride
 * apart; the elements a view of them spans. */
int64_t op_mod_extent(const char *op, int B, int C, int mod_stride);

/* Activations (dtype dt of the call) and f32-only tensors (statistics,
 * scratch, parameter gradients, optimizer state). */
#define IN(t, need) op_check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT, dt)
#define OUT(t, need) op_check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT, dt)
#define GRAD(t, need) op_check_tensor(ctx, op, #t, t, need, OPTIONAL, EXACT, dt)
#define F32(t, need) op_check_tensor(ctx, op, #t, t, need, REQUIRED, EXACT, KDT_F32)
#define F32GRAD(t, need) op_check_tensor(ctx, op, #t, t, need, OPTIONAL, EXACT, KDT_F32)
/* A row view of a modulation buffer (see op_mod_extent). */
#define MOD(t, need, required) op_check_tensor(ctx, op, #t, t, need, required, AT_LEAST, dt)

#define DIMS(names, ...)                                                                         \
    do {                                                                                         \
        const int dims_[] = {__VA_ARGS__};                                                       \
        op_check_dims(op, (int)(sizeof dims_ / sizeof dims_[0]), dims_, names);                  \
    } while (0)

#endif
