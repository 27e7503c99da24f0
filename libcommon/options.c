#include "libcommon/options.h"
#include "libcommon/error.h"
#include "libcommon/log.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *device = "auto";
static const char *device_arg;
static const struct opt_tool *current_tool;

const char *opt_device(void)
{
    return device;
}

int opt_device_given(void)
{
    return device_arg != NULL;
}

void opt_usage_error(const char *fmt, ...)
{
    va_list ap;
    const char *name = current_tool ? current_tool->name : log_program();
    fprintf(stderr, "%s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", name);
    exit(DIT_EXIT_USAGE);
}

/* Compares an option name typed by the user with a declared one, treating
 * '_' as '-'. typed_len bounds typed (it may be followed by "=value"). */
static int name_matches(const char *declared, const char *typed, size_t typed_len)
{
    size_t i = 0;
    for (; i < typed_len; i++) {
        char c = typed[i] == '_' ? '-' : typed[i];
        if (declared[i] != c)
            return 0;
    }
    return declared[i] == '\0';
}

static int parse_value(const struct opt *o, const char *v)
{
    char *end;
    errno = 0;
    switch (o->type) {
    case OPT_FLAG:
        *(int *)o->dest = 1;
        return 0;
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < INT_MIN || x > INT_MAX)
            opt_usage_error("--%s: '%s' is not an integer", o->name, v);
        *(int *)o->dest = (int)x;
        return 0;
    }
    case OPT_INT64: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            opt_usage_error("--%s: '%s' is not an integer", o->name, v);
        *(int64_t *)o->dest = x;
        return 0;
    }
    case OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || end == v || *end)
            opt_usage_error("--%s: '%s' is not a number", o->name, v);
        *(double *)o->dest = x;
        return 0;
    }
    case OPT_STRING:
        *(const char **)o->dest = v;
        return 0;
    case OPT_LIST: {
        struct opt_list *l = o->dest;
        if (l->n == OPT_LIST_MAX)
            return -1;
        l->v[l->n++] = v;
        return 0;
    }
    }
    return -1;
}

static int show_help, show_version, quiet, verbose;

static const struct opt common_opts[] = {
    {"device", 0, OPT_STRING, &device_arg, "cpu|cuda|auto",
     "where to compute: auto picks a visible GPU, else the CPU"},
    {"quiet", 'q', OPT_FLAG, &quiet, NULL, "print errors only"},
    {"verbose", 'v', OPT_FLAG, &verbose, NULL, "print debug detail"},
    {"help", 0, OPT_FLAG, &show_help, NULL, "show this help and exit"},
    {"version", 0, OPT_FLAG, &show_version, NULL, "show the version and exit"},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static void print_opts(const struct opt *opts)
{
    for (const struct opt *o = opts; o->name; o++) {
        char left[128];
        int n = 0;
        if (o->short_name)
            n = snprintf(left, sizeof left, "  -%c, --%s", o->short_name, o->name);
        else
            n = snprintf(left, sizeof left, "      --%s", o->name);
        if (o->type != OPT_FLAG && n < (int)sizeof left)
            snprintf(left + n, sizeof left - n, " %s", o->arg ? o->arg : "VALUE");
        printf("%-34s %s\n", left, o->help ? o->help : "");
    }
}

static void print_help(const struct opt_tool *tool, const struct opt *opts)
{
    printf("Usage: %s %s\n", tool->name, tool->usage);
    if (tool->summary)
        printf("%s\n", tool->summary);
    printf("\nOptions:\n");
    if (opts)
        print_opts(opts);
    print_opts(common_opts);
    printf("\nExit status: 0 done, 1 failure, 2 usage error. See %s(1).\n", tool->name);
}

static const struct opt *find_long(const struct opt *opts, const char *typed, size_t len)
{
    for (const struct opt *o = opts; o && o->name; o++)
        if (name_matches(o->name, typed, len))
            return o;
    for (const struct opt *o = common_opts; o->name; o++)
        if (name_matches(o->name, typed, len))
            return o;
    return NULL;
}

static const struct opt *find_short(const struct opt *opts, char c)
{
    for (const struct opt *o = opts; o && o->name; o++)
        if (o->short_name == c)
            return o;
    for (const struct opt *o = common_opts; o->name; o++)
        if (o->short_name == c)
            return o;
    return NULL;
}

/* Moves argv[i] to the operand list, keeping operand order. */
int opt_parse(const struct opt_tool *tool, const struct opt *opts, int argc, char **argv)
{
    current_tool = tool;
    log_set_program(tool->name);
    char **operands = calloc(argc + 1, sizeof *operands);
    int n_operands = 0;
    int i = 1;
    if (!operands)
        die(DIT_EXIT_FAILURE, "out of memory");
    for (; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            operands[n_operands++] = a;
            continue;
        }
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const struct opt *o = find_long(opts, name, len);
            if (!o)
                opt_usage_error("unknown option '--%.*s'", (int)len, name);
            if (o->type == OPT_FLAG) {
                if (eq)
                    opt_usage_error("--%s takes no value", o->name);
                parse_value(o, NULL);
            } else if (eq) {
                parse_value(o, eq + 1);
            } else {
                if (i + 1 >= argc)
                    opt_usage_error("--%s needs a value (%s)", o->name, o->arg ? o->arg : "VALUE");
                parse_value(o, argv[++i]);
            }
            continue;
        }
        /* Short options, possibly clustered: -qv, -jN, -j N. */
        for (char *c = a + 1; *c; c++) {
            const struct opt *o = find_short(opts, *c);
            if (!o)
                opt_usage_error("unknown option '-%c'", *c);
            if (o->type == OPT_FLAG) {
                parse_value(o, NULL);
                continue;
            }
            if (c[1]) {
                parse_value(o, c + 1);
            } else {
                if (i + 1 >= argc)
                    opt_usage_error("-%c needs a value (%s)", *c, o->arg ? o->arg : "VALUE");
                parse_value(o, argv[++i]);
            }
            break;
        }
    }
    for (; i < argc; i++)
        operands[n_operands++] = argv[i];

    if (show_help) {
        print_help(tool, opts);
        free(operands);
        exit(DIT_EXIT_OK);
    }
    if (show_version) {
        printf("%s %s\n", tool->name, DIT_VERSION);
        free(operands);
        exit(DIT_EXIT_OK);
    }
    if (quiet && verbose)
        opt_usage_error("-q and -v contradict each other");
    log_set_level(quiet ? LOG_QUIET : verbose ? LOG_VERBOSE : LOG_NORMAL);
    if (device_arg) {
        if (strcmp(device_arg, "cpu") && strcmp(device_arg, "cuda") && strcmp(device_arg, "auto"))
            opt_usage_error("--device: '%s' is not one of cpu, cuda, auto", device_arg);
        device = device_arg;
    }

    /* Operands go to the end of argv in their original order. */
    int first = argc - n_operands;
    for (int k = 0; k < n_operands; k++)
        argv[first + k] = operands[k];
    free(operands);
    return first;
}
