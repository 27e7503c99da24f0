/* Errors and exit statuses shared by every tool and library.
 *
 * Library functions never print and never exit: they return -1 (or NULL)
 * after err_set() has recorded a message naming the file, record and reason.
 * The caller decides whether that message becomes a warning, a rejected
 * record or a failure exit. */
#ifndef DIT_ERROR_H
#define DIT_ERROR_H

enum {
    DIT_EXIT_OK = 0,      /* done */
    DIT_EXIT_FAILURE = 1, /* bad input, I/O error, failed check */
    DIT_EXIT_USAGE = 2,   /* bad command line */
};

/* Records the message of the most recent failure in this thread. */
void err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prepends "PREFIX: " to the current message, so a lower layer's reason
 * ("offset out of bounds") gains the context of the caller ("a.safetensors"). */
void err_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The current message; "" when none was set. */
const char *err_get(void);

void err_clear(void);

#endif
