/* The parity of the two backends, op by op, driven by the op list
 * (kernels/ops.def): one test per op, parity_<name>, running its spec
 * (tests/cuda/parity_<family>.c) as tests/cuda/parity.h describes; a
 * check that every op has cases in every dtype it takes; and one that the
 * dispatchers refuse the dtypes an op does not take. */
#include "tests/cuda/parity.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const enum kdtype ALL_DT[3] = {KDT_F32, KDT_BF16, KDT_F16};

struct tally {
    int compared, untouched, unchanged;
};

static int nargs_of(const struct parity_op *op)
{
    int n = 0;
    while (n < PARITY_MAX_ARGS && op->args[n].name)
        n++;
    return n;
}

static int arg_index(const struct parity_op *op, const char *name)
{
    for (int i = 0; i < nargs_of(op); i++)
        if (strcmp(op->args[i].name, name) == 0)
            return i;
    test_fail(__FILE__, __LINE__, "%s: no tensor named %s", op->name, name);
    return -1;
}

/* The dtype of tensor i on CUDA (gpu) or on the CPU. */
static enum kdtype dtype_of(const struct parity_arg *a, const struct parity_case *c,
                            enum kdtype dt, int gpu)
{
    if (a->flags & PA_U8)
        return KDT_U8;
    if (a->flags & (PA_F32 | PA_SCRATCH | PA_IDS))
        return KDT_F32;
    if (a->flags & PA_DT2)
        return c->dt2;
    if (gpu || (a->flags & PA_SAME))
        return dt;
    return KDT_F32;
}

/* Is tensor i absent in case c? */
static int is_absent(const struct parity_op *op, const struct parity_case *c, int i)
{
    if (!(op->args[i].flags & PA_OPT))
        return 0;
    int k = 0;
    for (int j = 0; j < i; j++)
        k += (op->args[j].flags & PA_OPT) != 0;
    return (c->absent >> k) & 1;
}

static uint64_t seed_of(const char *name, size_t ci, enum kdtype dt, int i, int step)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ ci) * 1099511628211ull;
    h = (h ^ (uint64_t)dt) * 1099511628211ull;
    h = (h ^ (uint64_t)i) * 1099511628211ull;
    return (h ^ (uint64_t)step) * 1099511628211ull;
}

/* The values tensor i starts with (or is refilled with at a step). */
static void fill_values(const struct parity_op *op, const struct parity_case *c, size_t ci,
                        enum kdtype dt, int i, int step, float *x, size_t n)
{
    const struct parity_arg *a = &op->args[i];
    if (a->flags & PA_OUT) {
        for (size_t k = 0; k < n; k++)
            x[k] = 7.0f;
        return;
    }
    float *r = test_randn(n, seed_of(op->name, ci, dt, i, step), a->scale != 0 ? a->scale : 1);
    for (size_t k = 0; k < n; k++)
        x[k] = r[k] + a->shift;
    free(r);
    if (op->fill)
        op->fill(c, i, step, x, n);
    if (!(a->flags & (PA_IDS | PA_U8)))
        test_round_to(dtype_of(a, c, dt, 1), x, n);
}

/* One backend's tensors for a case. */
struct side {
    struct kctx *ctx;
    struct tensor base[PARITY_MAX_ARGS], t[PARITY_MAX_ARGS], arg[PARITY_MAX_ARGS];
    int64_t n[PARITY_MAX_ARGS], at[PARITY_MAX_ARGS];
};

static void put_values(struct kctx *ctx, const struct parity_arg *a, struct tensor t,
                       const float *x, size_t n)
{
    if (!n)
        return;
    if (a->flags & PA_IDS) {
        int32_t *ids = malloc(n * sizeof *ids);
        for (size_t k = 0; k < n; k++)
            ids[k] = (int32_t)x[k];
        k_upload(ctx, t, ids, (int64_t)n);
        free(ids);
    } else if (a->flags & PA_U8) {
        uint8_t *codes = malloc(n);
        for (size_t k = 0; k < n; k++)
            codes[k] = (uint8_t)x[k];
        k_upload(ctx, t, codes, (int64_t)n);
        free(codes);
    } else {
        k_upload_f32(ctx, t, x, (int64_t)n);
    }
}

/* The values of t as f32 (ids as their int32 values); malloc'd. */
static float *get_values(struct kctx *ctx, const struct parity_arg *a, struct tensor t)
{
    float *x = malloc((t.n ? (size_t)t.n : 1) * sizeof *x);
    if (a->flags & PA_IDS) {
        int32_t *ids = malloc((t.n ? (size_t)t.n : 1) * sizeof *ids);
        k_download(ctx, ids, t, t.n);
        for (int64_t k = 0; k < t.n; k++)
            x[k] = (float)ids[k];
        free(ids);
    } else if (a->flags & PA_U8) {
        uint8_t *codes = malloc(t.n ? (size_t)t.n : 1);
        k_download(ctx, codes, t, t.n);
        for (int64_t k = 0; k < t.n; k++)
            x[k] = (float)codes[k];
        free(codes);
    } else {
        k_download_f32(ctx, x, t, t.n);
    }
    return x;
}

/* Allocates a side's tensors (views and aliases resolved) holding host[]. */
static void side_setup(struct side *s, const struct parity_op *op, const struct parity_case *c,
                       enum kdtype dt, int gpu, float **host)
{
    int na = nargs_of(op);
    memset(s->n, 0, sizeof s->n);
    memset(s->at, 0, sizeof s->at);
    op->layout(s->ctx, c, s->n, s->at);
    for (int i = 0; i < na; i++) {
        const struct parity_arg *a = &op->args[i];
        s->base[i] = tensor_none();
        if (a->view)
            continue;
        int off = gpu && !(a->flags & (PA_ALIGNED | PA_SCRATCH | PA_IDS | PA_U8)) ? c->offset : 0;
        s->base[i] = test_tensor(s->ctx, dtype_of(a, c, dt, gpu), NULL, (size_t)(s->n[i] + off));
        s->t[i] = tensor_view(s->base[i], off, s->n[i]);
        if (host[i])
            put_values(s->ctx, a, s->t[i], host[i], (size_t)s->n[i]);
    }
    for (int i = 0; i < na; i++)
        if (op->args[i].view)
            s->t[i] = tensor_view(s->t[arg_index(op, op->args[i].view)], s->at[i], s->n[i]);
    for (int i = 0; i < na; i++) {
        const struct parity_arg *a = &op->args[i];
        s->arg[i] = is_absent(op, c, i) ? tensor_none() : s->t[i];
        if (c->inplace && a->alias)
            s->arg[i] = s->t[i] = s->t[arg_index(op, a->alias)];
    }
}

static void side_free(struct side *s, const struct parity_op *op)
{
    for (int i = 0; i < nargs_of(op); i++)
        k_free(s->ctx, &s->base[i]);
}

static int written_in_place(const struct parity_op *op, const struct parity_case *c, int i)
{
    if (!c->inplace)
        return 0;
    for (int j = 0; j < nargs_of(op); j++)
        if (op->args[j].alias && strcmp(op->args[j].alias, op->args[i].name) == 0)
            return 1;
    return 0;
}

/* got must equal want bit for bit. */
static void check_bits(const char *what, const float *got, const float *want, size_t n)
{
    int bad = 0;
    for (size_t k = 0; k < n; k++)
        if (memcmp(&got[k], &want[k], sizeof(float)) != 0 && bad++ < 5)
            test_fail(__FILE__, __LINE__, "%s[%zu]: got %.9g, want %.9g (not bit-equal)", what, k,
                      (double)got[k], (double)want[k]);
}

static void check_result(const char *what, double got, double want)
{
    if (!(fabs(got - want) <= TOL_F32 * fabs(want)))
        test_fail(__FILE__, __LINE__, "%s: %.17g, the CPU %.17g", what, got, want);
}

static void describe(char *buf, size_t size, const struct parity_op *op,
                     const struct parity_case *c, size_t ci, enum kdtype dt)
{
    int at = snprintf(buf, size, "%s %s case %zu (", op->name, kdtype_name(dt), ci);
    for (int k = 0; k < PARITY_MAX_DIMS && at < (int)size; k++)
        at += snprintf(buf + at, size - (size_t)at, "%s%d", k ? " " : "", c->d[k]);
    if (at < (int)size)
        snprintf(buf + at, size - (size_t)at, "; offset %d absent %#x%s%s%s)", c->offset,
                 c->absent, c->inplace ? " in place" : "", c->dt2 != KDT_F32 ? " dt2 " : "",
                 c->dt2 != KDT_F32 ? kdtype_name(c->dt2) : "");
}

static void run_case(const struct parity_op *op, const struct parity_case *c, size_t ci,
                     enum kdtype dt, struct kctx *cpu, struct kctx *gpu, struct tally *tl)
{
    int na = nargs_of(op);
    char what[256], w2[320];
    describe(what, sizeof what, op, c, ci, dt);

    struct side sc = {.ctx = cpu}, sg = {.ctx = gpu};
    float *host[PARITY_MAX_ARGS] = {0};
    /* Sizes first (the CPU's layout; only scratch differs between sides). */
    op->layout(cpu, c, sc.n, sc.at);
    for (int i = 0; i < na; i++) {
        const struct parity_arg *a = &op->args[i];
        if (a->view || (a->flags & PA_SCRATCH))
            continue;
        size_t n = (size_t)sc.n[i];
        host[i] = malloc((n ? n : 1) * sizeof(float));
        fill_values(op, c, ci, dt, i, 0, host[i], n);
    }
    side_setup(&sc, op, c, dt, 0, host);
    side_setup(&sg, op, c, dt, 1, host);

    if (op->prepare) {
        op->prepare(cpu, sc.t, c);
        for (int i = 0; i < na; i++)
            if (op->args[i].flags & PA_PREP) {
                float *x = get_values(cpu, &op->args[i], sc.t[i]);
                test_round_to(dtype_of(&op->args[i], c, dt, 1), x, (size_t)sc.n[i]);
                memcpy(host[i], x, (size_t)sc.n[i] * sizeof *x);
                put_values(cpu, &op->args[i], sc.t[i], x, (size_t)sc.n[i]);
                put_values(gpu, &op->args[i], sg.t[i], x, (size_t)sc.n[i]);
                free(x);
            }
    }

    double rc = 0, rg = 0;
    int steps = op->steps > 0 ? op->steps : 1;
    for (int step = 0; step < steps; step++) {
        if (step > 0)
            for (int i = 0; i < na; i++)
                if (op->args[i].flags & PA_STEP) {
                    fill_values(op, c, ci, dt, i, step, host[i], (size_t)sc.n[i]);
                    put_values(cpu, &op->args[i], sc.t[i], host[i], (size_t)sc.n[i]);
                    put_values(gpu, &op->args[i], sg.t[i], host[i], (size_t)sc.n[i]);
                }
        rc = op->call(cpu, sc.arg, c, step);
        rg = op->call(gpu, sg.arg, c, step);
        if (op->repeat) {
            /* The same bits again: the reduction's order is fixed. */
            double again = op->call(gpu, sg.arg, c, step);
            if (memcmp(&again, &rg, sizeof rg) != 0)
                test_fail(__FILE__, __LINE__, "%s: %.17g, then %.17g", what, rg, again);
        }
    }
    k_sync(gpu);

    if (op->result) {
        snprintf(w2, sizeof w2, "%s: result", what);
        check_result(w2, rg, rc);
        tl->compared++;
    }
    for (int i = 0; i < na; i++) {
        const struct parity_arg *a = &op->args[i];
        if (a->view || (a->flags & PA_SCRATCH))
            continue;
        if (a->alias && c->inplace)
            continue; /* compared as the tensor it aliases */
        size_t n = (size_t)sc.n[i];
        snprintf(w2, sizeof w2, "%s: %s", what, a->name);
        float *got = get_values(gpu, a, sg.t[i]);
        int written = (a->flags & (PA_OUT | PA_ACC)) || written_in_place(op, c, i);
        if (!written || is_absent(op, c, i)) {
            /* An input, or an output not wanted: as it was. */
            strncat(w2, is_absent(op, c, i) ? " (absent: untouched)" : " (an input: unchanged)",
                    sizeof w2 - strlen(w2) - 1);
            check_bits(w2, got, host[i], n);
            if (is_absent(op, c, i))
                tl->untouched++;
            else
                tl->unchanged++;
            free(got);
            continue;
        }
        float *want = get_values(cpu, a, sc.t[i]);
        enum kdtype gdt = dtype_of(a, c, dt, 1);
        double tol = tol_for(gdt);
        int made = op->check ? op->check(c, i, got, want, n, tol, w2) : 0;
        if (made) {
            tl->compared += made - 1;
        } else if ((a->flags & PA_EXACT) || ((a->flags & PA_EXACT_F32) && dt == KDT_F32)) {
            test_round_to(gdt, want, n);
            check_bits(w2, got, want, n);
        } else {
            CHECK_PARITY(w2, got, want, n, tol);
        }
        tl->compared++;
        free(got);
        free(want);
    }
    side_free(&sc, op);
    side_free(&sg, op);
    for (int i = 0; i < na; i++)
        free(host[i]);
}

static unsigned dtypes_of(const struct parity_case *c, unsigned op_dts)
{
    return c->dts ? c->dts & op_dts : op_dts;
}

static void parity_run(const struct parity_op *op, unsigned op_dts)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    struct tally tl = {0};
    for (size_t ci = 0; ci < op->ncases; ci++)
        for (int d = 0; d < 3; d++)
            if (dtypes_of(&op->cases[ci], op_dts) & PARITY_BIT(ALL_DT[d]))
                run_case(op, &op->cases[ci], ci, ALL_DT[d], &cpu, &gpu, &tl);
    fprintf(stderr, "    %s: %d outputs compared with the cpu's, %d absent ones untouched, %d "
                    "inputs unchanged\n",
            op->name, tl.compared, tl.untouched, tl.unchanged);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* One test per line of the op list, registered as TEST does but under this
 * file's name (__FILE__ in the expansion would be kernels/ops.def's). */
static const char *const PARITY_FILE = __FILE__;

#define KOP(name, family, dtypes, ret, params)                                                \
    static void test_parity_##name(void)                                                      \
    {                                                                                         \
        parity_run(&parity_##name, KOP_DTYPES(dtypes));                                       \
    }                                                                                         \
    __attribute__((constructor)) static void register_parity_##name(void)                     \
    {                                                                                         \
        test_register(PARITY_FILE, "parity_" #name, test_parity_##name);                      \
    }
#include "kernels/ops.def"
#undef KOP

struct listed {
    const struct parity_op *op;
    unsigned dts;
};

static const struct listed LISTED[] = {
#define KOP(name, family, dtypes, ret, params) {&parity_##name, dtypes},
#include "kernels/ops.def"
#undef KOP
};

/* Every op of the list runs in every dtype it takes, with its own spec. */
TEST(parity_every_op_in_every_dtype)
{
    for (size_t k = 0; k < sizeof LISTED / sizeof LISTED[0]; k++) {
        const struct parity_op *op = LISTED[k].op;
        unsigned seen = 0;
        for (size_t ci = 0; ci < op->ncases; ci++)
            seen |= dtypes_of(&op->cases[ci], KOP_DTYPES(LISTED[k].dts));
        if (seen != KOP_DTYPES(LISTED[k].dts))
            test_fail(__FILE__, __LINE__, "%s: cases in dtypes %#x, the op takes %#x", op->name,
                      seen, KOP_DTYPES(LISTED[k].dts));
        CHECK(op->layout && op->call && nargs_of(op) > 0);
    }
}

/* Runs case 0 of op on one backend with every tensor in dt, in a child;
 * returns its stderr (malloc'd) and sets *sig to the signal that ended it. */
static char *run_refused(const struct parity_op *op, enum device_kind device, enum kdtype dt,
                         int *sig)
{
    const char *path = test_tmp_path("stderr.txt");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        struct kctx ctx = device == DEVICE_CPU ? cpu_test_ctx() : cuda_test_ctx();
        struct parity_case c = op->cases[0];
        c.dt2 = dt;
        struct side s = {.ctx = &ctx};
        float *host[PARITY_MAX_ARGS] = {0};
        struct parity_op same = *op;
        for (int i = 0; i < nargs_of(op); i++)
            if (!(same.args[i].flags & (PA_SCRATCH | PA_IDS)))
                same.args[i].flags = (same.args[i].flags & ~PA_F32) | PA_SAME;
        side_setup(&s, &same, &c, dt, device == DEVICE_CUDA, host);
        op->call(&ctx, s.arg, &c, 0);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    *sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return test_read_file(path, NULL);
}

/* The dispatchers' dtype contract, for every op of the list: on the CPU,
 * bf16 and f16 activations are refused; an f32-only op refuses them on
 * CUDA too; each names the op. */
TEST(dispatchers_refuse_dtypes_an_op_does_not_take)
{
    for (size_t k = 0; k < sizeof LISTED / sizeof LISTED[0]; k++) {
        const struct parity_op *op = LISTED[k].op;
        if (LISTED[k].dts & KOP_EVERY_BACKEND)
            continue; /* any dtype on any backend */
        for (int d = 1; d < 3; d++)
            for (int dev = 0; dev < 2; dev++) {
                if (dev == DEVICE_CUDA && (KOP_DTYPES(LISTED[k].dts) & PARITY_BIT(ALL_DT[d])))
                    continue;
                int sig = 0;
                char *msg = run_refused(op, (enum device_kind)dev, ALL_DT[d], &sig);
                char want[96];
                snprintf(want, sizeof want, "dit: kernel %s: ", op->name);
                if (sig != SIGABRT)
                    test_fail(__FILE__, __LINE__, "%s in %s on %s: not refused (signal %d): %s",
                              op->name, kdtype_name(ALL_DT[d]), dev ? "cuda" : "cpu", sig,
                              msg ? msg : "");
                CHECK_CONTAINS(msg, want);
                CHECK_CONTAINS(msg, KOP_DTYPES(LISTED[k].dts) == KOP_F32
                                        ? " where this call needs f32"
                                        : "; the cpu backend computes in f32 only");
                CHECK_CONTAINS(msg, "(a bug in the caller)");
                free(msg);
            }
    }
}
