/* Command-line options shared by every tool.
 *
 * `--long-name` and `--long_name` are the same option, so the commands of the
 * original Python scripts (`--train_batch_size 4`) work unchanged. Values come
 * as `--name VALUE` or `--name=VALUE`; `--` ends the options; a lone `-` is an
 * operand (standard input or output).
 *
 * Every tool also gets --help, --version, -q/--quiet, -v/--verbose and
 * --device cpu|cuda|auto without declaring them. */
#ifndef DIT_OPTIONS_H
#define DIT_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

enum opt_type {
    OPT_FLAG,   /* int *: set to 1 */
    OPT_INT,    /* int * */
    OPT_INT64,  /* int64_t * */
    OPT_DOUBLE, /* double * */
    OPT_STRING, /* const char **: points into argv */
    OPT_LIST,   /* struct opt_list *: each use appends a value (--lora a --lora b) */
};

#define OPT_LIST_MAX 16
struct opt_list {
    const char *v[OPT_LIST_MAX]; /* point into argv */
    int n;
};

struct opt {
    const char *name; /* long name spelled with dashes; NULL ends the table */
    char short_name;  /* 0 when none */
    enum opt_type type;
    void *dest;
    const char *arg;  /* value placeholder shown by --help, e.g. "N" */
    const char *help; /* one line */
};

struct opt_tool {
    const char *name;    /* "dit-inspect" */
    const char *usage;   /* "[options] FILE..." */
    const char *summary; /* one line shown by --help */
};

/* Parses argv against opts plus the common options. Exits 0 after --help or
 * --version, exits 2 with a message on a usage error. Returns the index of
 * the first operand. */
int opt_parse(const struct opt_tool *tool, const struct opt *opts, int argc, char **argv);

/* The --device value: "cpu", "cuda" or "auto" (the default). */
const char *opt_device(void);
/* Whether --device appeared on the command line. */
int opt_device_given(void);

/* For tools that check their operands: prints "NAME: MESSAGE" and a pointer
 * to --help, then exits 2. */
_Noreturn void opt_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
