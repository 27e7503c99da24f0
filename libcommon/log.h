/* Messages on stderr, each prefixed with the program name.
 *
 * -q keeps errors only, -v adds debug lines. When stdout carries data, all
 * messages still go to stderr, so pipelines stay clean. */
#ifndef DIT_LOG_H
#define DIT_LOG_H

enum log_level {
    LOG_QUIET = 0,   /* errors only */
    LOG_NORMAL = 1,  /* warnings and information */
    LOG_VERBOSE = 2, /* debug detail */
};

void log_set_program(const char *name);
const char *log_program(void);
void log_set_level(enum log_level level);
enum log_level log_level(void);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* log_error() then exit(status). */
_Noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
