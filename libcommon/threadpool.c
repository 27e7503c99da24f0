#include "libcommon/threadpool.h"

#include "libcommon/error.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct task {
    void (*fn)(void *);
    void *arg;
};

struct threadpool {
    pthread_mutex_t lock;
    pthread_cond_t work;  /* a task was queued, or shutdown */
    pthread_cond_t idle;  /* pending dropped to zero */
    struct task *queue;   /* ring buffer */
    size_t cap, head, count;
    size_t pending;       /* queued + running */
    int shutdown;
    int n_threads;
    pthread_t *threads;
};

static void *worker_main(void *p)
{
    struct threadpool *tp = p;
    pthread_mutex_lock(&tp->lock);
    for (;;) {
        while (tp->count == 0 && !tp->shutdown)
            pthread_cond_wait(&tp->work, &tp->lock);
        if (tp->count == 0) /* shutdown, and the queue is drained */
            break;
        struct task t = tp->queue[tp->head];
        tp->head = (tp->head + 1) % tp->cap;
        tp->count--;
        pthread_mutex_unlock(&tp->lock);
        t.fn(t.arg);
        pthread_mutex_lock(&tp->lock);
        if (--tp->pending == 0)
            pthread_cond_broadcast(&tp->idle);
    }
    pthread_mutex_unlock(&tp->lock);
    return NULL;
}

struct threadpool *threadpool_new(int n_threads)
{
    if (n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cpus > 0 ? (int)cpus : 1;
    }
    struct threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) {
        err_set("threadpool: out of memory");
        return NULL;
    }
    tp->cap = 64;
    tp->queue = malloc(tp->cap * sizeof *tp->queue);
    tp->threads = calloc((size_t)n_threads, sizeof *tp->threads);
    if (!tp->queue || !tp->threads) {
        free(tp->queue);
        free(tp->threads);
        free(tp);
        err_set("threadpool: out of memory");
        return NULL;
    }
    pthread_mutex_init(&tp->lock, NULL);
    pthread_cond_init(&tp->work, NULL);
    pthread_cond_init(&tp->idle, NULL);
    for (int i = 0; i < n_threads; i++) {
        int rc = pthread_create(&tp->threads[i], NULL, worker_main, tp);
        if (rc != 0) {
            err_set("threadpool: cannot start thread %d of %d: %s", i + 1, n_threads, strerror(rc));
            tp->n_threads = i;
            threadpool_free(tp);
            return NULL;
        }
    }
    tp->n_threads = n_threads;
    return tp;
}

int threadpool_size(const struct threadpool *tp)
{
    return tp->n_threads;
}

/* Called with the lock held; unwraps the ring into a buffer twice the size. */
static int queue_grow(struct threadpool *tp)
{
    size_t cap = tp->cap * 2;
    struct task *q = malloc(cap * sizeof *q);
    if (!q)
        return -1;
    for (size_t i = 0; i < tp->count; i++)
        q[i] = tp->queue[(tp->head + i) % tp->cap];
    free(tp->queue);
    tp->queue = q;
    tp->cap = cap;
    tp->head = 0;
    return 0;
}

/* Queues without touching the error message, for threadpool_for, which
 * never fails. */
static int queue_push(struct threadpool *tp, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&tp->lock);
    if (tp->count == tp->cap && queue_grow(tp) < 0) {
        pthread_mutex_unlock(&tp->lock);
        return -1;
    }
    tp->queue[(tp->head + tp->count) % tp->cap] = (struct task){fn, arg};
    tp->count++;
    tp->pending++;
    pthread_cond_signal(&tp->work);
    pthread_mutex_unlock(&tp->lock);
    return 0;
}

int threadpool_submit(struct threadpool *tp, void (*fn)(void *), void *arg)
{
    if (queue_push(tp, fn, arg) < 0) {
        err_set("threadpool: out of memory queueing a task");
        return -1;
    }
    return 0;
}

void threadpool_wait(struct threadpool *tp)
{
    pthread_mutex_lock(&tp->lock);
    while (tp->pending > 0)
        pthread_cond_wait(&tp->idle, &tp->lock);
    pthread_mutex_unlock(&tp->lock);
}

void threadpool_free(struct threadpool *tp)
{
    if (!tp)
        return;
    threadpool_wait(tp);
    pthread_mutex_lock(&tp->lock);
    tp->shutdown = 1;
    pthread_cond_broadcast(&tp->work);
    pthread_mutex_unlock(&tp->lock);
    for (int i = 0; i < tp->n_threads; i++)
        pthread_join(tp->threads[i], NULL);
    pthread_cond_destroy(&tp->idle);
    pthread_cond_destroy(&tp->work);
    pthread_mutex_destroy(&tp->lock);
    free(tp->threads);
    free(tp->queue);
    free(tp);
}

/* One threadpool_for call. Helpers that start after the caller has returned
 * still touch it, so it lives on the heap until the last reference drops. */
struct for_job {
    void (*fn)(void *arg, size_t begin, size_t end);
    void *arg;
    size_t n, chunk, n_chunks;
    atomic_size_t next;  /* next chunk to claim */
    size_t done;         /* chunks finished, under lock */
    atomic_int refs;
    pthread_mutex_t lock;
    pthread_cond_t finished;
};

static void for_job_release(struct for_job *job)
{
    if (atomic_fetch_sub(&job->refs, 1) == 1) {
        pthread_cond_destroy(&job->finished);
        pthread_mutex_destroy(&job->lock);
        free(job);
    }
}

/* Claims and runs chunks until none are left. */
static void for_job_run(struct for_job *job)
{
    size_t ran = 0;
    for (;;) {
        size_t c = atomic_fetch_add(&job->next, 1);
        if (c >= job->n_chunks)
            break;
        size_t begin = c * job->chunk;
        size_t end = begin + job->chunk < job->n ? begin + job->chunk : job->n;
        job->fn(job->arg, begin, end);
        ran++;
    }
    if (ran) {
        pthread_mutex_lock(&job->lock);
        job->done += ran;
        if (job->done == job->n_chunks)
            pthread_cond_broadcast(&job->finished);
        pthread_mutex_unlock(&job->lock);
    }
}

static void for_job_helper(void *p)
{
    struct for_job *job = p;
    for_job_run(job);
    for_job_release(job);
}

void threadpool_for(struct threadpool *tp, size_t n, void (*fn)(void *arg, size_t begin, size_t end),
                    void *arg)
{
    if (n == 0)
        return;
    struct for_job *job = tp && tp->n_threads > 0 && n > 1 ? malloc(sizeof *job) : NULL;
    if (!job) {
        fn(arg, 0, n);
        return;
    }
    /* A few chunks per thread evens out uneven chunk costs. */
    size_t want = (size_t)tp->n_threads * 4;
    job->fn = fn;
    job->arg = arg;
    job->n = n;
    job->chunk = (n + want - 1) / want;
    job->n_chunks = (n + job->chunk - 1) / job->chunk;
    atomic_init(&job->next, 0);
    job->done = 0;
    atomic_init(&job->refs, 1);
    pthread_mutex_init(&job->lock, NULL);
    pthread_cond_init(&job->finished, NULL);

    size_t helpers = job->n_chunks - 1 < (size_t)tp->n_threads ? job->n_chunks - 1 : (size_t)tp->n_threads;
    for (size_t i = 0; i < helpers; i++) {
        atomic_fetch_add(&job->refs, 1);
        if (queue_push(tp, for_job_helper, job) < 0) {
            atomic_fetch_sub(&job->refs, 1); /* the caller does that share */
            break;
        }
    }
    for_job_run(job);
    pthread_mutex_lock(&job->lock);
    while (job->done < job->n_chunks)
        pthread_cond_wait(&job->finished, &job->lock);
    pthread_mutex_unlock(&job->lock);
    for_job_release(job);
}
