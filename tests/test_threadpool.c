/* thread pool: tasks, waiting, parallel for */
#include "tests/harness.h"
#include "libcommon/threadpool.h"

#include <stdatomic.h>
#include <stdlib.h>

struct counters {
    atomic_long sum;
    atomic_int calls;
};

static void add_task(void *arg)
{
    struct counters *c = arg;
    atomic_fetch_add(&c->sum, 3);
    atomic_fetch_add(&c->calls, 1);
}

TEST(many_tasks_sum_into_atomics)
{
    struct threadpool *tp = threadpool_new(4);
    CHECK(tp != NULL);
    if (!tp)
        return;
    CHECK_INT(threadpool_size(tp), 4);
    struct counters c;
    atomic_init(&c.sum, 0);
    atomic_init(&c.calls, 0);
    /* Far more than the initial queue, so it has to grow. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 10000; i++)
            CHECK_INT(threadpool_submit(tp, add_task, &c), 0);
        threadpool_wait(tp);
        CHECK_INT(atomic_load(&c.calls), 10000 * (round + 1));
    }
    CHECK_INT(atomic_load(&c.sum), 3L * 30000);
    threadpool_free(tp);
}

/* A binary tree of tasks: node i queues nodes 2i+1 and 2i+2. */
enum { TREE_NODES = 2047 };

struct tree {
    struct threadpool *tp;
    atomic_int visits[TREE_NODES];
    struct tree_node {
        struct tree *t;
        int index;
    } nodes[TREE_NODES];
};

static void tree_task(void *arg)
{
    struct tree_node *n = arg;
    atomic_fetch_add(&n->t->visits[n->index], 1);
    for (int k = 1; k <= 2; k++) {
        int child = 2 * n->index + k;
        if (child < TREE_NODES)
            threadpool_submit(n->t->tp, tree_task, &n->t->nodes[child]);
    }
}

TEST(wait_covers_tasks_submitted_by_tasks)
{
    struct tree *t = calloc(1, sizeof *t);
    t->tp = threadpool_new(3);
    for (int i = 0; i < TREE_NODES; i++) {
        atomic_init(&t->visits[i], 0);
        t->nodes[i] = (struct tree_node){t, i};
    }
    CHECK_INT(threadpool_submit(t->tp, tree_task, &t->nodes[0]), 0);
    threadpool_wait(t->tp);
    int wrong = 0;
    for (int i = 0; i < TREE_NODES; i++)
        wrong += atomic_load(&t->visits[i]) != 1;
    CHECK_INT(wrong, 0);
    threadpool_free(t->tp);
    free(t);
}

struct coverage {
    atomic_int *hits;
    atomic_int chunks;
    size_t n;
    atomic_int bad_range;
};

static void mark_range(void *arg, size_t begin, size_t end)
{
    struct coverage *cv = arg;
    if (!(begin < end && end <= cv->n))
        atomic_store(&cv->bad_range, 1);
    for (size_t i = begin; i < end && i < cv->n; i++)
        atomic_fetch_add(&cv->hits[i], 1);
    atomic_fetch_add(&cv->chunks, 1);
}

static void check_for_covers(struct threadpool *tp, size_t n)
{
    struct coverage cv = {.hits = malloc((n ? n : 1) * sizeof *cv.hits), .n = n};
    for (size_t i = 0; i < n; i++)
        atomic_init(&cv.hits[i], 0);
    atomic_init(&cv.chunks, 0);
    atomic_init(&cv.bad_range, 0);
    threadpool_for(tp, n, mark_range, &cv);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++)
        wrong += atomic_load(&cv.hits[i]) != 1;
    int bad_range = atomic_load(&cv.bad_range);
    if (wrong || bad_range)
        test_fail(__FILE__, __LINE__, "n = %zu: %zu indices not hit exactly once%s", n, wrong,
                  bad_range ? ", bad range" : "");
    if (n == 0)
        CHECK_INT(atomic_load(&cv.chunks), 0);
    free(cv.hits);
}

TEST(for_covers_every_index_once)
{
    static const size_t sizes[] = {0, 1, 2, 3, 7, 13, 31, 97, 1009, 65537, 1000003};
    for (int threads = 1; threads <= 5; threads += 2) {
        struct threadpool *tp = threadpool_new(threads);
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
            check_for_covers(tp, sizes[i]);
        threadpool_free(tp);
    }
    /* Without a pool it runs in the caller. */
    check_for_covers(NULL, 0);
    check_for_covers(NULL, 101);
}

struct nested {
    struct threadpool *tp;
    atomic_long total;
};

static void add_range(void *arg, size_t begin, size_t end)
{
    struct nested *ns = arg;
    long s = 0;
    for (size_t i = begin; i < end; i++)
        s += (long)i;
    atomic_fetch_add(&ns->total, s);
}

static void outer_range(void *arg, size_t begin, size_t end)
{
    struct nested *ns = arg;
    for (size_t i = begin; i < end; i++)
        threadpool_for(ns->tp, 1000, add_range, ns);
}

TEST(for_nests_inside_tasks)
{
    /* Every worker busy in an outer loop still finishes: callers run chunks
     * themselves and wait only for their own. */
    struct nested ns = {.tp = threadpool_new(2)};
    atomic_init(&ns.total, 0);
    threadpool_for(ns.tp, 50, outer_range, &ns);
    CHECK_INT(atomic_load(&ns.total), 50L * (999L * 1000 / 2));
    threadpool_free(ns.tp);
}

TEST(idle_pool_waits_and_frees)
{
    struct threadpool *tp = threadpool_new(0);
    CHECK(tp != NULL);
    CHECK(threadpool_size(tp) >= 1);
    threadpool_wait(tp); /* nothing submitted: returns at once */
    threadpool_wait(tp);
    threadpool_free(tp);
    threadpool_free(NULL);

    struct threadpool *one = threadpool_new(1);
    CHECK_INT(threadpool_size(one), 1);
    threadpool_free(one); /* never used */
}
