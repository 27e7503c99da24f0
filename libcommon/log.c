#include "libcommon/log.h"
#include "libcommon/progress.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const char *program = "dit";
static enum log_level level = LOG_NORMAL;
/* One lock so lines from worker threads and the progress bar never interleave. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void log_set_program(const char *name)
{
    program = name;
}

const char *log_program(void)
{
    return program;
}

void log_set_level(enum log_level l)
{
    level = l;
}

enum log_level log_level(void)
{
    return level;
}

static void log_emit(const char *tag, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&log_lock);
    progress_clear_line();
    fprintf(stderr, "%s: %s", program, tag);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

#define LOG_BODY(min, tag)                                                     \
    do {                                                                       \
        if (level < (min))                                                     \
            return;                                                            \
        va_list ap;                                                            \
        va_start(ap, fmt);                                                     \
        log_emit(tag, fmt, ap);                                                \
        va_end(ap);                                                            \
    } while (0)

void log_error(const char *fmt, ...)
{
    LOG_BODY(LOG_QUIET, "error: ");
}

void log_warn(const char *fmt, ...)
{
    LOG_BODY(LOG_NORMAL, "warning: ");
}

void log_info(const char *fmt, ...)
{
    LOG_BODY(LOG_NORMAL, "");
}

void log_debug(const char *fmt, ...)
{
    LOG_BODY(LOG_VERBOSE, "");
}

void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit("error: ", fmt, ap);
    va_end(ap);
    exit(status);
}
