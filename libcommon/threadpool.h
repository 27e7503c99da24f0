/* A fixed set of worker threads running queued tasks.
 *
 * For CPU work that OpenMP does not fit: overlapping file reads with
 * decoding, hashing many files, preprocessing images while the model runs.
 * Tasks run in no particular order; the queue grows as needed. */
#ifndef DIT_THREADPOOL_H
#define DIT_THREADPOOL_H

#include <stddef.h>

struct threadpool;

/* n_threads workers; 0 = number of online CPUs. NULL with err_set() when
 * threads or memory cannot be had. */
struct threadpool *threadpool_new(int n_threads);
int threadpool_size(const struct threadpool *tp);

/* Queues fn(arg). 0, or -1 with err_set() when out of memory. */
int threadpool_submit(struct threadpool *tp, void (*fn)(void *), void *arg);

/* Returns when every task submitted so far has finished, including tasks
 * those tasks submitted. Not to be called from a task (it would wait for
 * itself). */
void threadpool_wait(struct threadpool *tp);

/* Waits, stops and joins the workers, frees. NULL allowed. */
void threadpool_free(struct threadpool *tp);

/* Splits [0, n) into contiguous chunks, runs fn(arg, begin, end) on them
 * across the pool and the calling thread, and returns when all are done.
 * Each index is in exactly one chunk; chunk boundaries depend on the pool
 * size, so results must not. It waits only for its own chunks, so it may be
 * called from a task and alongside other submitted work. tp NULL, or no
 * memory, runs fn(arg, 0, n) in the caller. Nothing is called when n is 0. */
void threadpool_for(struct threadpool *tp, size_t n, void (*fn)(void *arg, size_t begin, size_t end),
                    void *arg);

#endif
