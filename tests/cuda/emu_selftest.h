/* Host wrappers around the small kernels of emu_selftest.cu, which check the
 * CUDA emulator (tests/cuda_emu) against what a GPU does. Each takes and
 * returns host arrays and returns a cudaError_t as int: 0 when every CUDA
 * call succeeded. The same file builds with nvcc, so `make test-cuda` runs
 * these checks on a real GPU too. */
#ifndef DIT_TESTS_CUDA_EMU_SELFTEST_H
#define DIT_TESTS_CUDA_EMU_SELFTEST_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 in the emulator build, 0 in the nvcc build. */
int emu_st_is_emulator(void);

/* out[b] = sum of in[b * n .. b * n + n), for blocks b, with `threads`
 * threads a block: once through block_sum (warp shuffles, common.cuh), once
 * through a tree in static shared memory with __syncthreads (out2). */
int emu_st_block_sum(const float *in, int n, int blocks, int threads, float *out, float *out2);

/* Each block reverses its n-element segment through n floats of dynamic
 * shared memory. */
int emu_st_reverse(const float *in, int n, int blocks, float *out);

/* Lane arithmetic of the shuffles, for a block of 64 threads laid out as
 * (bx, 64 / bx): per thread (linear id t) out[k * 64 + t] for
 * k = 0: __shfl_xor_sync(t, 1), 1: __shfl_xor_sync(t, 16),
 *     2: __shfl_down_sync(t, 3), 3: __shfl_up_sync(t, 5),
 *     4: __shfl_sync(t, (lane * 7) % 32), 5: __shfl_sync(t, 3, width 8),
 *     6: __shfl_down_sync(t, 2, width 8), 7: __shfl_up_sync(t, 1, width 16),
 *     8: __shfl_xor_sync(t, 12, width 8), 9: warp sum of t as float (warp_sum),
 *     10: __shfl_xor_sync of a double t + 0.5 (bits of the value read, as int),
 * where t is the thread's linear id. */
enum { EMU_ST_SHFL_CASES = 11 };
int emu_st_shuffles(int bx, int *out);

/* Votes in a block of 64 threads (t the thread, l = t % 32 its lane):
 * out[t * 8 + k] for k = 0: __ballot_sync(l % 3 == 0), 1: __any_sync(t == 37),
 * 2: __all_sync(t < 40), 3: __syncthreads_count(t % 5 == 0),
 * 4: __syncthreads_and(t < 64), 5: __syncthreads_or(t == 63),
 * 6: __reduce_add_sync(t), 7: __match_any_sync(l / 4). */
enum { EMU_ST_VOTE_CASES = 8 };
int emu_st_votes(int *out);

/* blocks x threads threads each add 1 to a float, an int and a double
 * counter, and to bin (global id % 7) of seven ints; max of the ids. */
int emu_st_atomics(int blocks, int threads, float *fsum, int *isum, double *dsum, int *bins,
                   int *imax);

/* Threads t >= valid of each 128-thread block return at once; the others
 * sum in[b * valid ..) through shared memory with __syncthreads. */
int emu_st_early_return(const float *in, int valid, int blocks, float *out);

/* A (21, 7, 3) volume covered by grid (3, 2, 2) x block (8, 4, 2): count[i]
 * how often element i was written, code[i] = 1000 * linear block +
 * linear thread of the writer; dims[0..6) = blockDim and gridDim. */
int emu_st_cover(int *count, int *code, int *dims);

/* Each thread adds its threadIdx.x to its by-value parameter k and stores
 * it: parameters are per thread. */
int emu_st_param_copy(int k, int threads, int *out);

/* Launch configurations: returns a bitmask of the checks that failed
 * (0 = all as on a GPU): bad block and grid sizes rejected and the error
 * cleared by cudaGetLastError, too much dynamic shared memory rejected
 * until cudaFuncSetAttribute raises the limit, then the kernel uses it. */
int emu_st_launch_config(void);

/* out[i] = 2 v[3 - i] read by a kernel from __constant__ memory that
 * cudaMemcpyToSymbol filled with v[0..4); out[4..8) = the table read back by
 * cudaMemcpyFromSymbol. */
int emu_st_constant(const float *v, float *out);

/* st<T>() and ld(): bits16[i] = st<bf16>(x[i]), bits16[n + i] = st<f16>(x[i]),
 * back[i] = ld(st<bf16>(x[i])), back[n + i] = ld(st<f16>(x[i])). */
int emu_st_convert(const float *x, int n, uint16_t *bits16, float *back);

/* One warp: d = a b + c through nvcuda::wmma, a [16,16] bf16 row major,
 * b [16,16] bf16 column major (b_cm[j * 16 + k] = b[k][j]), c and d f32 row
 * major. */
int emu_st_wmma(const float *a, const float *b_cm, const float *c, float *d);

/* blocks x threads threads, `rounds` rounds of neighbour exchange through
 * shared memory with two __syncthreads each, then a block_sum: out[b] the
 * block's sums; *ms the time by CUDA events. */
int emu_st_barrier_bench(int blocks, int threads, int rounds, float *out, float *ms);

/* Emulator only: out[0..n) read from dynamic shared memory before anything
 * was written (0xFF bytes: NaN), out[n..2n) from fresh cudaMalloc memory,
 * out[2n..2n+128) from a static __shared__ array by two blocks of 64 that
 * each read it before writing it. */
int emu_st_uninitialised(int n, float *out);

/* Emulator only: copies that leave their allocation must fail; returns a
 * bitmask of checks that did not. */
int emu_st_bad_copies(void);

/* Emulator only: runs a kernel that misbehaves in way `which` and does not
 * return (the emulator aborts with a message):
 * 0 deadlock (half a warp at __syncthreads, half at a shuffle),
 * 1 a shuffle reading a lane that has returned,
 * 2 a shuffle reading a lane past the block's partial last warp,
 * 3 a host pointer passed to a kernel,
 * 4 lanes of a warp at different warp intrinsics,
 * 5 __syncthreads called outside a kernel,
 * 6 a kernel that never ends (aborted by the launch time limit,
 *   DIT_CUDA_EMU_TIMEOUT, which the caller sets). */
void emu_st_misuse(int which);

#ifdef __cplusplus
}
#endif

#endif
