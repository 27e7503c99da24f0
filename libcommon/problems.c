/* A bounded list of problems for one message (libcommon/problems.h). */
#include "libcommon/problems.h"
#include "libcommon/error.h"

#include <stdarg.h>
#include <stdio.h>

void problems_add(struct problems *p, const char *fmt, ...)
{
    if (p->count++ >= PROBLEMS_SHOWN || p->len >= sizeof p->text)
        return;
    if (p->len)
        p->len += (size_t)snprintf(p->text + p->len, sizeof p->text - p->len, "; ");
    if (p->len >= sizeof p->text)
        return;
    va_list ap;
    va_start(ap, fmt);
    p->len += (size_t)vsnprintf(p->text + p->len, sizeof p->text - p->len, fmt, ap);
    va_end(ap);
}

int problems_report(const struct problems *p, const char *where)
{
    if (!p->count)
        return 0;
    err_set("%s: %d problem%s: %s%s", where, p->count, p->count == 1 ? "" : "s", p->text,
            p->count > PROBLEMS_SHOWN ? "; ..." : "");
    return -1;
}
