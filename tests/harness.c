/* The test runner: unit tests registered with TEST(), then tool scripts.
 *
 * Usage: run_tests [-k SUBSTRING]... (run only matching tests)
 * Environment: DIT_BIN (the tools' directory, for the scripts),
 *              DIT_TESTS (the tests/ source directory; default "tests"). */
#include "tests/harness.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"
#include "libcommon/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct test_case {
    const char *file;
    const char *name;
    test_fn fn;
};

static struct test_case *cases;
static int n_cases, cap_cases;
static int failures_in_child;
static char tmpdir[4096];

void test_register(const char *file, const char *name, test_fn fn)
{
    if (n_cases == cap_cases) {
        cap_cases = cap_cases ? cap_cases * 2 : 64;
        cases = realloc(cases, cap_cases * sizeof *cases);
        if (!cases)
            abort();
    }
    cases[n_cases++] = (struct test_case){file, name, fn};
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    failures_in_child++;
}

const char *test_tmpdir(void)
{
    return tmpdir;
}

const char *test_tmp_path(const char *name)
{
    static char ring[8][4096];
    static int next;
    char *buf = ring[next++ % 8];
    snprintf(buf, sizeof ring[0], "%s/%s", tmpdir, name);
    return buf;
}

static const char *tests_dir(void)
{
    const char *d = getenv("DIT_TESTS");
    return d && *d ? d : "tests";
}

const char *test_source_path(const char *rel)
{
    static char ring[8][4096];
    static int next;
    char *buf = ring[next++ % 8];
    snprintf(buf, sizeof ring[0], "%s/%s", tests_dir(), rel);
    return buf;
}

void test_write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size) {
        test_fail(__FILE__, __LINE__, "cannot write %s: %s", path, strerror(errno));
        if (f)
            fclose(f);
        return;
    }
    fclose(f);
}

char *test_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n + 1);
    if (buf && fread(buf, 1, n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (size)
            *size = n;
    }
    return buf;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void make_tmpdir(const char *name)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/dit-test-%s-XXXXXX", base && *base ? base : "/tmp", name);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
}

static int matches(const char *name, int nfilters, char **filters)
{
    if (nfilters == 0)
        return 1;
    for (int i = 0; i < nfilters; i++)
        if (strstr(name, filters[i]))
            return 1;
    return 0;
}

/* Runs fn in a child; returns 1 when it passed. */
static int run_case(const char *label, void (*body)(void *), void *arg)
{
    char safe[256];
    snprintf(safe, sizeof safe, "%s", label);
    for (char *c = safe; *c; c++)
        if (*c == '/' || *c == ' ')
            *c = '_';
    make_tmpdir(safe);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        failures_in_child = 0;
        body(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(failures_in_child ? 1 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (WIFSIGNALED(status))
        printf("FAIL %s (killed by signal %d)\n", label, WTERMSIG(status));
    else
        printf("%s %s\n", ok ? "ok  " : "FAIL", label);
    fflush(stdout);
    return ok;
}

static void run_unit(void *arg)
{
    ((struct test_case *)arg)->fn();
}

static void run_script(void *arg)
{
    const char *script = arg;
    setenv("DIT_TMP", tmpdir, 1);
    execl("/bin/sh", "sh", "-eu", script, (char *)NULL);
    perror("execl");
    _exit(127);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    char *filters[64];
    int nfilters = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-k") == 0 && i + 1 < argc && nfilters < 64)
            filters[nfilters++] = argv[++i];
        else {
            fprintf(stderr, "usage: %s [-k SUBSTRING]...\n", argv[0]);
            return 2;
        }
    }
    int passed = 0, failed = 0;
    for (int i = 0; i < n_cases; i++) {
        char label[512];
        const char *base = strrchr(cases[i].file, '/');
        snprintf(label, sizeof label, "%s:%s", base ? base + 1 : cases[i].file, cases[i].name);
        if (!matches(label, nfilters, filters))
            continue;
        if (run_case(label, run_unit, &cases[i]))
            passed++;
        else
            failed++;
    }

    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tools", tests_dir());
    DIR *d = opendir(dir);
    char *scripts[1024];
    int n_scripts = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && n_scripts < 1024) {
            size_t len = strlen(e->d_name);
            if (len > 3 && strcmp(e->d_name + len - 3, ".sh") == 0)
                scripts[n_scripts++] = strdup(e->d_name);
        }
        closedir(d);
    }
    qsort(scripts, n_scripts, sizeof *scripts, cmp_str);
    for (int i = 0; i < n_scripts; i++) {
        char label[512], path[8192];
        snprintf(label, sizeof label, "tools/%s", scripts[i]);
        snprintf(path, sizeof path, "%s/%s", dir, scripts[i]);
        if (matches(label, nfilters, filters)) {
            if (run_case(label, run_script, path))
                passed++;
            else
                failed++;
        }
        free(scripts[i]);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

char *test_stderr_of(void (*fn)(void), int *sig)
{
    const char *path = test_tmp_path("stderr.txt");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        fn();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    *sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return test_read_file(path, NULL);
}

float *test_normal(size_t n, uint64_t seed, float scale, uint32_t purpose)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    struct rng_stream s = rng_stream(seed, purpose, 0, 0);
    rng_normal_f32(&s, 0, n, x);
    for (size_t i = 0; i < n; i++)
        x[i] *= scale;
    return x;
}

float *test_filled(size_t n, float v)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = v;
    return x;
}

struct st_file *test_goldens_open(const char *rel)
{
    struct st_file *f = st_open(test_source_path(rel));
    if (!f)
        test_fail(__FILE__, __LINE__, "%s", err_get());
    return f;
}

float *test_golden_f32(const struct st_file *f, const char *name, size_t n)
{
    float *x = calloc(n ? n : 1, sizeof *x);
    const struct st_tensor *t = f ? st_find(f, name) : NULL;
    if (!t) {
        test_fail(__FILE__, __LINE__, "golden %s is missing", name);
        return x;
    }
    if (t->dtype != ST_F32 || t->nelem != n) {
        test_fail(__FILE__, __LINE__, "golden %s: %s with %llu elements, want F32 with %zu", name,
                  st_dtype_name(t->dtype), (unsigned long long)t->nelem, n);
        return x;
    }
    memcpy(x, t->data, n * sizeof *x);
    return x;
}

void test_write_model_variant(const char *dir, const char *weights, const char *config_text, const char *src_rel,
                              const char *drop, const char *rename, const char *reshape, const char *retype)
{
    mkdir(dir, 0755);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    test_write_file(p, config_text, strlen(config_text));
    struct st_file *f = st_open(test_source_path(src_rel));
    if (!f)
        test_fail(__FILE__, __LINE__, "%s", err_get());
    struct st_writer *w = st_writer_new();
    const char *eq = rename ? strchr(rename, '=') : NULL;
    for (size_t i = 0; f && i < f->n_tensors; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (drop && strcmp(t->name, drop) == 0)
            continue;
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int ndim = t->ndim;
        if (reshape && strcmp(t->name, reshape) == 0) /* same bytes, another shape */
            shape[0] = 1, shape[1] = (int64_t)t->nelem, ndim = 2;
        const char *name = t->name;
        if (eq && strncmp(t->name, rename, (size_t)(eq - rename)) == 0 && !t->name[eq - rename])
            name = eq + 1;
        st_writer_add(w, name, retype && strcmp(t->name, retype) == 0 ? ST_I32 : t->dtype, ndim, shape, t->data);
    }
    snprintf(p, sizeof p, "%s/%s", dir, weights);
    if (st_writer_write(w, p) != 0)
        test_fail(__FILE__, __LINE__, "%s: %s", p, err_get());
    st_writer_free(w);
    st_close(f);
}

void test_check_rel(const char *file, int line, const char *what, const float *got, const float *want, size_t n,
                    double tol)
{
    double num = 0, den = 0;
    size_t finite = 0;
    for (size_t i = 0; i < n; i++) {
        if (isinf(want[i]))
            continue;
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
        finite++;
    }
    double rms = finite ? sqrt(den / (double)finite) : 0, worst = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (isinf(want[i])) {
            if (got[i] != want[i] && bad++ < 5)
                test_fail(file, line, "%s[%zu]: got %.9g, want %g", what, i, (double)got[i],
                          (double)want[i]);
            continue;
        }
        double rel = fabs((double)got[i] - want[i]) / (fabs(want[i]) + rms + 1e-30);
        worst = rel > worst ? rel : worst;
        if (!(rel <= tol) && bad++ < 5)
            test_fail(file, line, "%s[%zu]: got %.9g, want %.9g (relative error %.3g)", what, i,
                      (double)got[i], (double)want[i], rel);
    }
    double normwise = den > 0 ? sqrt(num / den) : sqrt(num);
    if (!(normwise <= tol))
        test_fail(file, line, "%s: norm-wise relative error %.3g above %.3g", what, normwise, tol);
    fprintf(stderr, "    %s: largest relative error %.2g, norm-wise %.2g\n", what, worst,
            normwise);
}

void test_check_same_bits(const char *file, int line, const char *what, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof *a) != 0) {
            test_fail(file, line, "%s[%zu]: %.9g vs %.9g, not the same bits", what, i,
                      (double)a[i], (double)b[i]);
            return;
        }
}

struct kctx test_cpu_ctx(int threads)
{
    struct kctx ctx;
    if (kctx_init(&ctx, DEVICE_CPU, threads) != 0)
        test_fail(__FILE__, __LINE__, "kctx_init(cpu): %s", err_get());
    return ctx;
}
