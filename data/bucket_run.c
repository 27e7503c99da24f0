/* bucket_run: one pass that writes (two with merge_small: the first counts
 * the buckets so that small ones can be planned into full ones). */
#include "data/bucket_run.h"
#include "formats/manifest.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { N_OUT_COLS = 6 };
static const char *const out_names[N_OUT_COLS] = {"bucket",   "resize_width", "resize_height",
                                                  "crop_left", "crop_top",    "resize_method"};

/* Why records were rejected, for the closing summary. */
enum reject_kind { REJ_UNREADABLE, REJ_WIDTH, REJ_HEIGHT, REJ_TOO_SMALL, REJ_NO_FIT, REJ_KINDS };
static const char *const reject_names[REJ_KINDS] = {
    "unreadable", "bad width", "bad height", "smaller than one step", "no bucket fits"};

struct run {
    const struct bucket_run_config *cfg;
    struct bucket_set set;
    const char *display; /* how messages name the input */
    const char *spool;   /* the copy read twice when the input is not a file, or NULL */
    char spool_path[4096];
    int merge; /* merge_small with a batch size */

    /* Columns: where width and height are, where each written column goes. */
    int width_col, height_col;
    size_t in_cols, out_cols, rej_cols;
    size_t out_index[N_OUT_COLS];
    size_t reason_index;
    const char **out_fields, **rej_fields;

    struct manifest_writer *out, *rejects;

    struct bucket_hist before;   /* buckets as first chosen (the first pass, when merging) */
    long *target;                /* per entry of before: where merging sends it, or -1 */
    uint64_t *merged, *stayed;   /* per entry of before */
    struct bucket_hist final;
    uint64_t n_read, n_bucketed, n_merged, rejected[REJ_KINDS];
};

void bucket_run_config_init(struct bucket_run_config *c)
{
    *c = (struct bucket_run_config){
        .input = "-",
        .output = "-",
        .buckets = {.step = 16, .resolution = 256, .min_aspect = 0.5, .max_aspect = 2.0},
    };
}

static int oom(void)
{
    err_set("out of memory");
    return -1;
}

/* Reading twice needs a file; standard input or a pipe is copied first.
 * 0, or -1 with err_set(). */
static int spool_input(struct run *run, const char *input)
{
    const char *dir = getenv("TMPDIR");
    snprintf(run->spool_path, sizeof run->spool_path, "%s/dit-bucket.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(run->spool_path);
    if (fd < 0) {
        run->spool_path[0] = '\0';
        err_set("cannot create a temporary file in %s: %s", dir && *dir ? dir : "/tmp", strerror(errno));
        return -1;
    }
    run->spool = run->spool_path;
    FILE *out = fdopen(fd, "wb");
    if (!out) {
        err_set("%s: %s", run->spool_path, strerror(errno));
        close(fd);
        return -1;
    }
    FILE *in = strcmp(input, "-") == 0 ? stdin : fopen(input, "rb");
    int rc = 0;
    if (!in) {
        err_set("%s: %s", input, strerror(errno));
        rc = -1;
    }
    char buf[65536];
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            err_set("%s: write failed: %s", run->spool_path, strerror(errno));
            rc = -1;
        }
    if (rc == 0 && ferror(in)) {
        err_set("%s: read error: %s", input, strerror(errno));
        rc = -1;
    }
    if (in && in != stdin)
        fclose(in);
    if (fclose(out) != 0 && rc == 0) {
        err_set("%s: write failed: %s", run->spool_path, strerror(errno));
        rc = -1;
    }
    return rc;
}

/* The reader names the file it opened; messages name the input as given.
 * fatal: the message becomes the error (err_set) instead of a warning. */
static void reader_error(const struct run *run, const struct manifest_reader *r, int fatal)
{
    const char *msg = err_get(), *path = manifest_path(r);
    size_t len = strlen(path);
    const char *rest = strncmp(msg, path, len) == 0 ? msg + len : NULL;
    if (fatal) {
        char *copy = strdup(rest ? rest : msg);
        err_set("%s%s", rest ? run->display : "", copy ? copy : "out of memory");
        free(copy);
    } else if (run->cfg->strict) {
        log_error("%s%s", rest ? run->display : "", rest ? rest : msg);
    } else {
        log_warn("%s%s", rest ? run->display : "", rest ? rest : msg);
    }
}

/* NULL with err_set() when the input cannot be opened or lacks the sizes. */
static struct manifest_reader *open_input(struct run *run)
{
    struct manifest_reader *r = manifest_open(run->spool ? run->spool : run->cfg->input, MANIFEST_CHECK_KEYS);
    if (!r) {
        size_t len = run->spool ? strlen(run->spool) : 0;
        if (len && strncmp(err_get(), run->spool, len) == 0) {
            char *rest = strdup(err_get() + len);
            err_set("%s%s", run->display, rest ? rest : ": cannot be read");
            free(rest);
        }
        return NULL;
    }
    run->width_col = manifest_column_index(r, "width");
    run->height_col = manifest_column_index(r, "height");
    if (run->width_col < 0 || run->height_col < 0) {
        manifest_close(r);
        err_set("%s:1: no '%s' column: dit-bucket needs the image sizes, as dit-index writes them", run->display,
                run->width_col < 0 ? "width" : "height");
        return NULL;
    }
    return r;
}

/* 1 a record, 0 the end, -1 a record the reader refused (reported by the
 * caller), -2 a read error that ends the run (err_set). A refused record
 * always advances the line count, a read error does not: that tells them
 * apart. */
static int next_record(const struct run *run, struct manifest_reader *r, struct manifest_record *rec)
{
    uint64_t line = manifest_line(r);
    int rc = manifest_next(r, rec);
    if (rc < 0 && manifest_line(r) == line) {
        reader_error(run, r, 1);
        return -2;
    }
    return rc;
}

static int parse_side(const char *text, const char *name, int *out, char *why, size_t why_size)
{
    if (!*text) {
        snprintf(why, why_size, "no %s", name);
        return -1;
    }
    long v = 0;
    for (const char *c = text; *c; c++) {
        if (*c < '0' || *c > '9') {
            snprintf(why, why_size, "%s '%s' is not a positive integer", name, text);
            return -1;
        }
        v = v * 10 + (*c - '0');
        if (v > BUCKET_MAX_SIDE) {
            snprintf(why, why_size, "%s %s is larger than %d", name, text, BUCKET_MAX_SIDE);
            return -1;
        }
    }
    if (v == 0) {
        snprintf(why, why_size, "%s '%s' is not a positive integer", name, text);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* The record's width and height: 0, or -1 with *kind and why set. */
static int parse_sizes(const struct run *run, const struct manifest_record *rec, int *w, int *h,
                       enum reject_kind *kind, char *why, size_t why_size)
{
    if (parse_side(rec->fields[run->width_col], "width", w, why, why_size) != 0) {
        *kind = REJ_WIDTH;
        return -1;
    }
    if (parse_side(rec->fields[run->height_col], "height", h, why, why_size) != 0) {
        *kind = REJ_HEIGHT;
        return -1;
    }
    return 0;
}

static int reject(struct run *run, struct manifest_reader *r, const struct manifest_record *rec,
                  const char *key, enum reject_kind kind, const char *why)
{
    run->rejected[kind]++;
    if (run->cfg->strict)
        log_error("%s:%" PRIu64 ": key '%s': %s", run->display, manifest_line(r), key, why);
    else
        log_warn("%s:%" PRIu64 ": key '%s': %s", run->display, manifest_line(r), key, why);
    if (!run->rejects)
        return 0;
    for (size_t i = 0; i < run->in_cols; i++)
        run->rej_fields[i] = rec->fields[i];
    run->rej_fields[run->reason_index] = why;
    return manifest_write(run->rejects, run->rej_fields);
}

/* The first of two passes, when merging: the bucket counts alone. */
static int count_pass(struct run *run)
{
    struct manifest_reader *r = open_input(run);
    if (!r)
        return -1;
    int key_col = manifest_column_index(r, "key");
    struct manifest_record rec;
    int rc;
    while ((rc = next_record(run, r, &rec)) != 0) {
        if (rc == -2)
            break;
        if (rc < 0)
            continue;
        int w, h;
        struct bucket_assignment a;
        enum reject_kind kind;
        char why[256];
        if (parse_sizes(run, &rec, &w, &h, &kind, why, sizeof why) != 0 ||
            bucket_assign(&run->set, w, h, rec.fields[key_col], &a) != 0)
            continue;
        if (bucket_hist_add(&run->before, a.bucket, 1) != 0) {
            rc = -2;
            break;
        }
    }
    manifest_close(r);
    if (rc == -2)
        return -1;
    bucket_hist_sort(&run->before);
    size_t n = run->before.n ? run->before.n : 1;
    run->target = calloc(n, sizeof *run->target);
    run->merged = calloc(n, sizeof *run->merged);
    run->stayed = calloc(n, sizeof *run->stayed);
    if (!run->target || !run->merged || !run->stayed ||
        bucket_merge_plan(&run->before, run->cfg->batch_size, run->target) < 0)
        return oom();
    return 0;
}

static int setup_columns(struct run *run, const struct manifest_reader *r)
{
    run->in_cols = manifest_ncols(r);
    const char **out_names_all = calloc(run->in_cols + N_OUT_COLS, sizeof *out_names_all);
    const char **rej_names = calloc(run->in_cols + 1, sizeof *rej_names);
    run->out_fields = calloc(run->in_cols + N_OUT_COLS, sizeof *run->out_fields);
    run->rej_fields = calloc(run->in_cols + 1, sizeof *run->rej_fields);
    if (!out_names_all || !rej_names || !run->out_fields || !run->rej_fields) {
        free(out_names_all);
        free(rej_names);
        return oom();
    }
    for (size_t i = 0; i < run->in_cols; i++)
        out_names_all[i] = rej_names[i] = manifest_column(r, i);
    /* Columns written replace same-named input columns in place. */
    run->out_cols = run->in_cols;
    for (int k = 0; k < N_OUT_COLS; k++) {
        int i = manifest_column_index(r, out_names[k]);
        run->out_index[k] = i >= 0 ? (size_t)i : run->out_cols++;
        out_names_all[run->out_index[k]] = out_names[k];
    }
    int i = manifest_column_index(r, "reject_reason");
    run->rej_cols = run->in_cols;
    run->reason_index = i >= 0 ? (size_t)i : run->rej_cols++;
    rej_names[run->reason_index] = "reject_reason";

    run->out = manifest_writer_open(run->cfg->output, run->out_cols, out_names_all);
    if (run->out && run->cfg->rejects)
        run->rejects = manifest_writer_open(run->cfg->rejects, run->rej_cols, rej_names);
    free(out_names_all);
    free(rej_names);
    return !run->out || (run->cfg->rejects && !run->rejects) ? -1 : 0;
}

static int write_record(struct run *run, const struct manifest_record *rec, const struct bucket_assignment *a)
{
    char text[N_OUT_COLS][48];
    snprintf(text[0], sizeof text[0], "%dx%d", a->bucket.width, a->bucket.height);
    snprintf(text[1], sizeof text[1], "%" PRId64, a->resize_width);
    snprintf(text[2], sizeof text[2], "%" PRId64, a->resize_height);
    snprintf(text[3], sizeof text[3], "%" PRId64, a->crop_left);
    snprintf(text[4], sizeof text[4], "%" PRId64, a->crop_top);
    snprintf(text[5], sizeof text[5], "%s", a->method == BUCKET_ADM ? "adm" : "fit");
    for (size_t i = 0; i < run->in_cols; i++)
        run->out_fields[i] = rec->fields[i];
    for (int k = 0; k < N_OUT_COLS; k++)
        run->out_fields[run->out_index[k]] = text[k];
    return manifest_write(run->out, run->out_fields);
}

/* Where merging sends a record first put in a: into a's target bucket,
 * unless no_upscale forbids it. */
static void merge_record(struct run *run, int w, int h, const char *key, struct bucket_assignment *a)
{
    long i = bucket_hist_find(&run->before, a->bucket);
    if (i < 0 || run->target[i] < 0)
        return;
    struct bucket_size t = run->before.entries[run->target[i]].size;
    /* no_upscale holds for merged records too. */
    if (!run->set.config.no_upscale || (int64_t)t.width * t.height <= (int64_t)w * h) {
        bucket_place(&run->set, w, h, t, key, a);
        run->merged[i]++;
        run->n_merged++;
    } else {
        run->stayed[i]++;
    }
}

/* The pass that writes: every record is either written or rejected. */
static int bucket_pass(struct run *run)
{
    struct manifest_reader *r = open_input(run);
    if (!r)
        return -1;
    int key_col = manifest_column_index(r, "key");
    int status = setup_columns(run, r);
    struct manifest_record rec;
    int rc;
    while (status == 0 && (rc = next_record(run, r, &rec)) != 0) {
        if (rc == -2) {
            status = -1;
            break;
        }
        run->n_read++;
        if (rc < 0) {
            run->rejected[REJ_UNREADABLE]++;
            reader_error(run, r, 0);
            continue;
        }
        const char *key = rec.fields[key_col];
        int w, h;
        struct bucket_assignment a;
        enum reject_kind kind;
        char why[256];
        if (parse_sizes(run, &rec, &w, &h, &kind, why, sizeof why) != 0) {
            status = reject(run, r, &rec, key, kind, why);
            continue;
        }
        if (bucket_assign(&run->set, w, h, key, &a) != 0) {
            int small = w < run->set.config.step || h < run->set.config.step;
            status = reject(run, r, &rec, key, small ? REJ_TOO_SMALL : REJ_NO_FIT, err_get());
            continue;
        }
        if (run->merge)
            merge_record(run, w, h, key, &a);
        if (bucket_hist_add(&run->final, a.bucket, 1) != 0)
            status = -1;
        else
            run->n_bucketed++, status = write_record(run, &rec, &a);
    }
    manifest_close(r);
    return status;
}

static double aspect_of(struct bucket_size b)
{
    return (double)b.width / (double)b.height;
}

static void print_histogram(const struct bucket_hist *h)
{
    uint64_t total = bucket_hist_total(h);
    if (!total)
        return;
    log_info("%-12s %10s %7s %7s", "bucket", "count", "share", "aspect");
    for (size_t i = 0; i < h->n; i++) {
        char name[32];
        snprintf(name, sizeof name, "%dx%d", h->entries[i].size.width, h->entries[i].size.height);
        log_info("%-12s %10" PRIu64 " %6.1f%% %7.3f", name, h->entries[i].count,
                 100.0 * (double)h->entries[i].count / (double)total, aspect_of(h->entries[i].size));
    }
}

static int write_stats(const struct bucket_hist *h, const char *path)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return oom();
    uint64_t total = bucket_hist_total(h);
    fprintf(f, "bucket\twidth\theight\taspect\tcount\tshare\n");
    for (size_t i = 0; i < h->n; i++) {
        const struct bucket_count *e = &h->entries[i];
        fprintf(f, "%dx%d\t%d\t%d\t%.6f\t%" PRIu64 "\t%.6f\n", e->size.width, e->size.height,
                e->size.width, e->size.height, aspect_of(e->size), e->count,
                total ? (double)e->count / (double)total : 0.0);
    }
    if (fclose(f) != 0) {
        free(buf);
        return oom();
    }
    int rc = 0;
    if (strcmp(path, "-") == 0) {
        if (fwrite(buf, 1, size, stdout) != size || fflush(stdout) != 0) {
            err_set("(stdout): write failed: %s", strerror(errno));
            rc = -1;
        }
    } else {
        rc = atomic_write(path, buf, size);
    }
    free(buf);
    return rc;
}

static const char *plural(uint64_t n)
{
    return n == 1 ? "" : "s";
}

static void warn_short(struct bucket_size b, uint64_t count, uint64_t batch)
{
    log_warn("bucket %dx%d has %" PRIu64 " record%s, fewer than a batch of %" PRIu64
             ": they train as short batches",
             b.width, b.height, count, plural(count), batch);
}

static void warn_small(const struct run *run)
{
    const uint64_t batch = run->cfg->batch_size;
    if (!batch)
        return;
    if (!run->merge) {
        for (size_t i = 0; i < run->final.n; i++)
            if (run->final.entries[i].count < batch)
                warn_short(run->final.entries[i].size, run->final.entries[i].count, batch);
        return;
    }
    int any_big = 0, any_small = 0;
    for (size_t i = 0; i < run->before.n; i++) {
        any_big |= run->before.entries[i].count >= batch;
        any_small |= run->before.entries[i].count < batch;
    }
    for (size_t i = 0; i < run->before.n; i++) {
        const struct bucket_count *e = &run->before.entries[i];
        if (e->count >= batch)
            continue;
        if (run->target[i] < 0) {
            warn_short(e->size, e->count, batch);
            continue;
        }
        struct bucket_size t = run->before.entries[run->target[i]].size;
        if (run->stayed[i])
            log_warn("bucket %dx%d has %" PRIu64 " record%s, fewer than a batch of %" PRIu64
                     ": %" PRIu64 " merged into %dx%d, %" PRIu64
                     " left (smaller than %dx%d, --no-upscale): they train as short batches",
                     e->size.width, e->size.height, e->count, plural(e->count), batch, run->merged[i], t.width,
                     t.height, run->stayed[i], t.width, t.height);
        else
            log_warn("bucket %dx%d has %" PRIu64 " record%s, fewer than a batch of %" PRIu64
                     ": merged into %dx%d",
                     e->size.width, e->size.height, e->count, plural(e->count), batch, t.width, t.height);
    }
    if (any_small && !any_big)
        log_warn("no bucket has a full batch of %" PRIu64 " records: --merge-small merged nothing", batch);
}

static uint64_t total_rejected(const struct run *run)
{
    uint64_t t = 0;
    for (int k = 0; k < REJ_KINDS; k++)
        t += run->rejected[k];
    return t;
}

static void print_summary(const struct run *run)
{
    char reasons[512] = "";
    size_t n = 0;
    for (int k = 0; k < REJ_KINDS; k++)
        if (run->rejected[k] && n < sizeof reasons)
            n += snprintf(reasons + n, sizeof reasons - n, "%s%" PRIu64 " %s", n ? ", " : " (",
                          run->rejected[k], reject_names[k]);
    if (n && n < sizeof reasons)
        snprintf(reasons + n, sizeof reasons - n, ")");
    char merged[64] = "";
    if (run->merge)
        snprintf(merged, sizeof merged, " (%" PRIu64 " merged)", run->n_merged);
    log_info("%" PRIu64 " record%s read: %" PRIu64 " bucketed%s, %" PRIu64 " rejected%s; %zu bucket%s",
             run->n_read, plural(run->n_read), run->n_bucketed, merged, total_rejected(run), reasons,
             run->final.n, plural(run->final.n));
}

static int same_path(const char *a, const char *b)
{
    return a && b && strcmp(a, "-") != 0 && strcmp(a, b) == 0;
}

static int check_config(const struct bucket_run_config *c)
{
    if (c->merge_small && !c->batch_size)
        err_set("--merge-small needs --batch-size");
    else if (c->stats && strcmp(c->stats, "-") == 0 && strcmp(c->output, "-") == 0)
        err_set("--stats -: standard output already carries the manifest (use -o FILE)");
    else if (c->rejects && strcmp(c->rejects, "-") == 0 && strcmp(c->output, "-") == 0)
        err_set("--rejects -: standard output already carries the manifest (use -o FILE)");
    else if (same_path(c->output, c->rejects) || same_path(c->output, c->stats) || same_path(c->rejects, c->stats))
        err_set("-o, --rejects and --stats must name different files");
    else
        return 0;
    return -1;
}

/* After the passes: commits (or, failed, drops) the outputs and reports. */
static int finish(struct run *run)
{
    const struct bucket_run_config *c = run->cfg;
    if (run->merge && run->n_bucketed != bucket_hist_total(&run->before)) {
        err_set("%s: changed while it was read", run->display);
        return STAGE_ERROR;
    }
    int failed = c->strict && total_rejected(run) > 0;
    struct manifest_writer *out = run->out, *rw = run->rejects;
    run->out = run->rejects = NULL;
    if (failed) {
        manifest_writer_abort(out);
    } else if (manifest_writer_commit(out) != 0) {
        manifest_writer_abort(rw);
        return STAGE_ERROR;
    }
    if (rw && manifest_writer_commit(rw) != 0)
        return STAGE_ERROR;
    bucket_hist_sort(&run->final);
    if (c->stats && write_stats(&run->final, c->stats) != 0)
        return STAGE_ERROR;
    print_histogram(&run->final);
    warn_small(run);
    print_summary(run);
    if (failed)
        log_error("%" PRIu64 " record%s rejected (--strict)%s", total_rejected(run), plural(total_rejected(run)),
                  strcmp(c->output, "-") ? ": the output was not written" : "");
    return failed ? STAGE_FAILED : STAGE_DONE;
}

static void run_free(struct run *run)
{
    manifest_writer_abort(run->out);
    manifest_writer_abort(run->rejects);
    if (run->spool_path[0])
        unlink(run->spool_path);
    bucket_set_free(&run->set);
    bucket_hist_free(&run->before);
    bucket_hist_free(&run->final);
    free(run->target);
    free(run->merged);
    free(run->stayed);
    free(run->out_fields);
    free(run->rej_fields);
}

int bucket_run(const struct bucket_run_config *c, struct bucket_run_summary *summary)
{
    if (check_config(c) != 0)
        return STAGE_BAD_CONFIG;
    struct run *run = calloc(1, sizeof *run);
    if (!run)
        return oom();
    run->cfg = c;
    if (bucket_set_init(&run->set, &c->buckets) != 0) {
        free(run);
        return STAGE_BAD_CONFIG;
    }
    if (log_level() >= LOG_VERBOSE)
        for (size_t i = 0; i < run->set.n; i++)
            log_debug("candidate bucket %dx%d (aspect %.3f)", run->set.sizes[i].width, run->set.sizes[i].height,
                      aspect_of(run->set.sizes[i]));
    run->display = strcmp(c->input, "-") == 0 ? "(stdin)" : c->input;
    run->merge = c->merge_small && c->batch_size > 0;
    int status = 0;
    if (run->merge) {
        struct stat st;
        if (strcmp(c->input, "-") == 0 || stat(c->input, &st) != 0 || !S_ISREG(st.st_mode))
            status = spool_input(run, c->input);
        if (status == 0)
            status = count_pass(run);
    }
    if (status == 0)
        status = bucket_pass(run);
    status = status == 0 ? finish(run) : STAGE_ERROR;
    if (summary && status >= 0)
        *summary = (struct bucket_run_summary){run->n_read, run->n_bucketed, run->n_merged, total_rejected(run),
                                               run->final.n};
    run_free(run);
    free(run);
    return status;
}
