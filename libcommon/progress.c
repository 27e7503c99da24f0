#include "libcommon/progress.h"
#include "libcommon/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct progress {
    char label[64];
    char unit[16];
    uint64_t total;
    _Atomic uint64_t done;
    double t_start;
    _Atomic int64_t last_draw_ms;
    int enabled;
    pthread_mutex_t draw_lock;
};

/* Set while a bar is on screen, so log lines can erase it first. */
static atomic_int bar_on_screen;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_format_duration(double s, char *buf, int size)
{
    if (s < 0 || s != s) {
        snprintf(buf, size, "?");
    } else if (s < 60) {
        snprintf(buf, size, "%.1fs", s);
    } else if (s < 3600) {
        long t = (long)s;
        snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    } else {
        long t = (long)s;
        snprintf(buf, size, "%ldh%02ldm%02lds", t / 3600, (t / 60) % 60, t % 60);
    }
}

struct progress *progress_start(const char *label, const char *unit, uint64_t total)
{
    struct progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    p->t_start = now_seconds();
    p->enabled = isatty(STDERR_FILENO) && log_level() >= LOG_NORMAL;
    pthread_mutex_init(&p->draw_lock, NULL);
    return p;
}

static void progress_draw(struct progress *p, int final)
{
    double elapsed = now_seconds() - p->t_start;
    uint64_t done = atomic_load(&p->done);
    double rate = elapsed > 0 ? done / elapsed : 0;
    char line[256];
    int n;
    if (p->total) {
        char eta[32];
        double left = rate > 0 ? (p->total - (done < p->total ? done : p->total)) / rate : -1;
        progress_format_duration(final ? elapsed : left, eta, sizeof eta);
        n = snprintf(line, sizeof line, "%s: %llu/%llu %s (%3.0f%%), %.1f %s/s, %s %s",
                     p->label, (unsigned long long)done, (unsigned long long)p->total,
                     p->unit, 100.0 * done / p->total, rate, p->unit,
                     final ? "took" : "ETA", eta);
    } else {
        char took[32];
        progress_format_duration(elapsed, took, sizeof took);
        n = snprintf(line, sizeof line, "%s: %llu %s, %.1f %s/s, %s", p->label,
                     (unsigned long long)done, p->unit, rate, p->unit, took);
    }
    (void)n;
    fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
    fflush(stderr);
    atomic_store(&bar_on_screen, !final);
}

void progress_add(struct progress *p, uint64_t n)
{
    if (!p)
        return;
    atomic_fetch_add(&p->done, n);
    if (!p->enabled)
        return;
    int64_t ms = (int64_t)((now_seconds() - p->t_start) * 1000);
    int64_t last = atomic_load(&p->last_draw_ms);
    if (ms - last < 100 || !atomic_compare_exchange_strong(&p->last_draw_ms, &last, ms))
        return;
    if (pthread_mutex_trylock(&p->draw_lock) == 0) {
        progress_draw(p, 0);
        pthread_mutex_unlock(&p->draw_lock);
    }
}

void progress_finish(struct progress *p)
{
    if (!p)
        return;
    if (p->enabled) {
        pthread_mutex_lock(&p->draw_lock);
        progress_draw(p, 1);
        pthread_mutex_unlock(&p->draw_lock);
    }
    pthread_mutex_destroy(&p->draw_lock);
    free(p);
}

void progress_clear_line(void)
{
    if (atomic_exchange(&bar_on_screen, 0))
        fputs("\r\033[K", stderr);
}
