/* What is wrong with one input (a weights file against the model that reads
 * it, say), gathered so that one message names the first few problems
 * rather than only the first: "FILE: 12 problems: missing a; b has shape
 * [3], the configuration needs [4]; ...". */
#ifndef DIT_PROBLEMS_H
#define DIT_PROBLEMS_H

#include <stddef.h>

#define PROBLEMS_SHOWN 8

struct problems {
    char text[4096]; /* the first PROBLEMS_SHOWN, "; " between them */
    size_t len;
    int count;       /* all of them */
};

void problems_add(struct problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 0 when there are none; else err_set("WHERE: N problems: ...") and -1. */
int problems_report(const struct problems *p, const char *where);

#endif
