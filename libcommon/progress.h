/* A progress bar on stderr: count, rate and ETA.
 *
 * Drawn only when stderr is a terminal and the log level is not quiet, so
 * logs captured to a file or a pipe never fill with carriage returns. */
#ifndef DIT_PROGRESS_H
#define DIT_PROGRESS_H

#include <stdint.h>

struct progress;

/* total 0 means unknown: count and rate are shown, no ETA. */
struct progress *progress_start(const char *label, const char *unit, uint64_t total);
/* Thread safe; redraws at most ten times a second. */
void progress_add(struct progress *p, uint64_t n);
/* Draws the final state, ends the line and frees p. NULL is allowed. */
void progress_finish(struct progress *p);

/* Erases a bar being drawn so that a log line can be printed cleanly. */
void progress_clear_line(void);

/* Formats seconds as "1h02m03s" / "2m03s" / "3.1s" into buf. */
void progress_format_duration(double seconds, char *buf, int size);

#endif
