#include "libcommon/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ERR_MAX 2048

static _Thread_local char err_buf[ERR_MAX];

void err_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
}

void err_prefix(const char *fmt, ...)
{
    char prefix[ERR_MAX];
    char old[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    snprintf(err_buf, sizeof err_buf, "%s: %s", prefix, old);
}

const char *err_get(void)
{
    return err_buf;
}

void err_clear(void)
{
    err_buf[0] = '\0';
}
