/* dit-bucket: gives every record of a manifest a resolution bucket, a resize
 * size and a crop box (formats/bucket.h does the choosing); prints the
 * bucket histogram and warns about buckets smaller than a batch. */
#include "data/bucket.h"
#include "formats/manifest.h"
#include "kernels/device.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/options.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
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
    struct bucket_set set;
    const char *input;   /* as given: "-" or a path */
    const char *display; /* how messages name the input */
    const char *spool;   /* the copy read twice when the input is not a file, or NULL */
    int strict;
    int merge; /* --merge-small with --batch-size */
    uint64_t batch;

    /* Columns: where width and height are, where each written column goes. */
    int width_col, height_col;
    size_t in_cols, out_cols, rej_cols;
    size_t out_index[N_OUT_COLS];
    size_t reason_index;
    const char **out_fields, **rej_fields;

    struct manifest_writer *out, *rejects;

    struct bucket_hist before;   /* buckets as first chosen (the first pass, when merging) */
    long *target;                /* per entry of before: where --merge-small sends it, or -1 */
    uint64_t *merged, *stayed;   /* per entry of before */
    struct bucket_hist final;
    uint64_t n_read, n_bucketed, n_merged, rejected[REJ_KINDS];
};

/* Ends the run with exit 1, leaving no partial output under a final name. */
static struct run *active;

static _Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (active) {
        manifest_writer_abort(active->out);
        manifest_writer_abort(active->rejects);
        active->out = active->rejects = NULL;
    }
    die(DIT_EXIT_FAILURE, "%s", msg);
}

static char spool_path[4096];

static void spool_remove(void)
{
    if (spool_path[0])
        unlink(spool_path);
}

/* Reading twice needs a file; standard input or a pipe is copied first. */
static const char *spool_input(const char *input)
{
    const char *dir = getenv("TMPDIR");
    snprintf(spool_path, sizeof spool_path, "%s/dit-bucket.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(spool_path);
    if (fd < 0) {
        spool_path[0] = '\0';
        fail("cannot create a temporary file in %s: %s", dir && *dir ? dir : "/tmp",
            strerror(errno));
    }
    atexit(spool_remove);
    FILE *out = fdopen(fd, "wb");
    FILE *in = strcmp(input, "-") == 0 ? stdin : fopen(input, "rb");
    if (!out || !in)
        fail("%s: %s", out ? input : spool_path, strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            fail("%s: write failed: %s", spool_path, strerror(errno));
    if (ferror(in))
        fail("%s: read error: %s", input, strerror(errno));
    if (in != stdin)
        fclose(in);
    if (fclose(out) != 0)
        fail("%s: write failed: %s", spool_path, strerror(errno));
    return spool_path;
}

/* The reader names the file it opened; messages name the input as given. */
static void print_reader_error(const struct run *run, const struct manifest_reader *r, int fatal)
{
    const char *msg = err_get(), *path = manifest_path(r);
    size_t len = strlen(path);
    const char *rest = strncmp(msg, path, len) == 0 ? msg + len : NULL;
    if (fatal)
        fail("%s%s", rest ? run->display : "", rest ? rest : msg);
    if (run->strict)
        log_error("%s%s", rest ? run->display : "", rest ? rest : msg);
    else
        log_warn("%s%s", rest ? run->display : "", rest ? rest : msg);
}

static struct manifest_reader *open_input(struct run *run)
{
    struct manifest_reader *r = manifest_open(run->spool ? run->spool : run->input, MANIFEST_CHECK_KEYS);
    if (!r) {
        const char *msg = err_get();
        size_t len = run->spool ? strlen(run->spool) : 0;
        if (len && strncmp(msg, run->spool, len) == 0)
            fail("%s%s", run->display, msg + len);
        fail("%s", msg);
    }
    run->width_col = manifest_column_index(r, "width");
    run->height_col = manifest_column_index(r, "height");
    if (run->width_col < 0 || run->height_col < 0) {
        manifest_close(r);
        fail("%s:1: no '%s' column: dit-bucket needs the image sizes, as dit-index writes them",
             run->display, run->width_col < 0 ? "width" : "height");
    }
    return r;
}

/* 1 a record, 0 the end, -1 a record the reader refused (reported by the
 * caller); a read error ends the run. A refused record always advances the
 * line count, a read error does not: that tells them apart. */
static int next_record(const struct run *run, struct manifest_reader *r, struct manifest_record *rec)
{
    uint64_t line = manifest_line(r);
    int rc = manifest_next(r, rec);
    if (rc < 0 && manifest_line(r) == line)
        print_reader_error(run, r, 1);
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

static void reject(struct run *run, struct manifest_reader *r, const struct manifest_record *rec,
                   const char *key, enum reject_kind kind, const char *why)
{
    run->rejected[kind]++;
    if (run->strict)
        log_error("%s:%" PRIu64 ": key '%s': %s", run->display, manifest_line(r), key, why);
    else
        log_warn("%s:%" PRIu64 ": key '%s': %s", run->display, manifest_line(r), key, why);
    if (!run->rejects)
        return;
    for (size_t i = 0; i < run->in_cols; i++)
        run->rej_fields[i] = rec->fields[i];
    run->rej_fields[run->reason_index] = why;
    if (manifest_write(run->rejects, run->rej_fields) != 0)
        fail("%s", err_get());
}

static void oom(void)
{
    fail("out of memory");
}

/* The first of two passes, when merging: the bucket counts alone. */
static void count_pass(struct run *run)
{
    struct manifest_reader *r = open_input(run);
    int key_col = manifest_column_index(r, "key");
    struct manifest_record rec;
    int rc;
    while ((rc = next_record(run, r, &rec)) != 0) {
        if (rc < 0)
            continue;
        int w, h;
        struct bucket_assignment a;
        enum reject_kind kind;
        char why[256];
        if (parse_sizes(run, &rec, &w, &h, &kind, why, sizeof why) != 0 ||
            bucket_assign(&run->set, w, h, rec.fields[key_col], &a) != 0)
            continue;
        if (bucket_hist_add(&run->before, a.bucket, 1) != 0)
            oom();
    }
    manifest_close(r);
    bucket_hist_sort(&run->before);
    size_t n = run->before.n ? run->before.n : 1;
    run->target = calloc(n, sizeof *run->target);
    run->merged = calloc(n, sizeof *run->merged);
    run->stayed = calloc(n, sizeof *run->stayed);
    if (!run->target || !run->merged || !run->stayed ||
        bucket_merge_plan(&run->before, run->batch, run->target) < 0)
        oom();
}

static void setup_columns(struct run *run, const struct manifest_reader *r, const char *output,
                          const char *rejects_path)
{
    run->in_cols = manifest_ncols(r);
    const char **out_names_all = calloc(run->in_cols + N_OUT_COLS, sizeof *out_names_all);
    const char **rej_names = calloc(run->in_cols + 1, sizeof *rej_names);
    run->out_fields = calloc(run->in_cols + N_OUT_COLS, sizeof *run->out_fields);
    run->rej_fields = calloc(run->in_cols + 1, sizeof *run->rej_fields);
    if (!out_names_all || !rej_names || !run->out_fields || !run->rej_fields)
        oom();
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

    run->out = manifest_writer_open(output, run->out_cols, out_names_all);
    if (run->out && rejects_path)
        run->rejects = manifest_writer_open(rejects_path, run->rej_cols, rej_names);
    free(out_names_all);
    free(rej_names);
    if (!run->out || (rejects_path && !run->rejects))
        fail("%s", err_get());
}

static void write_record(struct run *run, const struct manifest_record *rec,
                         const struct bucket_assignment *a)
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
    if (manifest_write(run->out, run->out_fields) != 0)
        fail("%s", err_get());
}

/* The pass that writes: every record is either written or rejected. */
static void bucket_pass(struct run *run, const char *output, const char *rejects_path)
{
    struct manifest_reader *r = open_input(run);
    int key_col = manifest_column_index(r, "key");
    setup_columns(run, r, output, rejects_path);
    struct manifest_record rec;
    int rc;
    while ((rc = next_record(run, r, &rec)) != 0) {
        run->n_read++;
        if (rc < 0) {
            run->rejected[REJ_UNREADABLE]++;
            print_reader_error(run, r, 0);
            continue;
        }
        const char *key = rec.fields[key_col];
        int w, h;
        struct bucket_assignment a;
        enum reject_kind kind;
        char why[256];
        if (parse_sizes(run, &rec, &w, &h, &kind, why, sizeof why) != 0) {
            reject(run, r, &rec, key, kind, why);
            continue;
        }
        if (bucket_assign(&run->set, w, h, key, &a) != 0) {
            int small = w < run->set.config.step || h < run->set.config.step;
            reject(run, r, &rec, key, small ? REJ_TOO_SMALL : REJ_NO_FIT, err_get());
            continue;
        }
        if (run->merge) {
            long i = bucket_hist_find(&run->before, a.bucket);
            if (i >= 0 && run->target[i] >= 0) {
                struct bucket_size t = run->before.entries[run->target[i]].size;
                /* --no-upscale holds for merged records too. */
                if (!run->set.config.no_upscale || (int64_t)t.width * t.height <= (int64_t)w * h) {
                    bucket_place(&run->set, w, h, t, key, &a);
                    run->merged[i]++;
                    run->n_merged++;
                } else {
                    run->stayed[i]++;
                }
            }
        }
        if (bucket_hist_add(&run->final, a.bucket, 1) != 0)
            oom();
        run->n_bucketed++;
        write_record(run, &rec, &a);
    }
    manifest_close(r);
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
        oom();
    uint64_t total = bucket_hist_total(h);
    fprintf(f, "bucket\twidth\theight\taspect\tcount\tshare\n");
    for (size_t i = 0; i < h->n; i++) {
        const struct bucket_count *e = &h->entries[i];
        fprintf(f, "%dx%d\t%d\t%d\t%.6f\t%" PRIu64 "\t%.6f\n", e->size.width, e->size.height,
                e->size.width, e->size.height, aspect_of(e->size), e->count,
                total ? (double)e->count / (double)total : 0.0);
    }
    if (fclose(f) != 0)
        oom();
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

static void warn_small(const struct run *run)
{
    if (!run->batch)
        return;
    if (!run->merge) {
        for (size_t i = 0; i < run->final.n; i++) {
            const struct bucket_count *e = &run->final.entries[i];
            if (e->count < run->batch)
                log_warn("bucket %dx%d has %" PRIu64 " record%s, fewer than a batch of %" PRIu64
                         ": they train as short batches",
                         e->size.width, e->size.height, e->count, plural(e->count), run->batch);
        }
        return;
    }
    int any_big = 0, any_small = 0;
    for (size_t i = 0; i < run->before.n; i++) {
        any_big |= run->before.entries[i].count >= run->batch;
        any_small |= run->before.entries[i].count < run->batch;
    }
    for (size_t i = 0; i < run->before.n; i++) {
        const struct bucket_count *e = &run->before.entries[i];
        if (e->count >= run->batch)
            continue;
        if (run->target[i] < 0) {
            log_warn("bucket %dx%d has %" PRIu64 " record%s, fewer than a batch of %" PRIu64
                     ": they train as short batches",
                     e->size.width, e->size.height, e->count, plural(e->count), run->batch);
            continue;
        }
        struct bucket_size t = run->before.entries[run->target[i]].size;
        if (run->stayed[i])
            log_warn("bucket %dx%d has %" PRIu64 " record%s, fewer than a batch of %" PRIu64
                     ": %" PRIu64 " merged into %dx%d, %" PRIu64
                     " left (smaller than %dx%d, --no-upscale): they train as short batches",
                     e->size.width, e->size.height, e->count, plural(e->count), run->batch, run->merged[i], t.width,
                     t.height, run->stayed[i], t.width, t.height);
        else
            log_warn("bucket %dx%d has %" PRIu64 " record%s, fewer than a batch of %" PRIu64
                     ": merged into %dx%d",
                     e->size.width, e->size.height, e->count, plural(e->count), run->batch, t.width, t.height);
    }
    if (any_small && !any_big)
        log_warn("no bucket has a full batch of %" PRIu64 " records: --merge-small merged nothing",
                 run->batch);
}

static void print_summary(const struct run *run)
{
    char reasons[512] = "";
    size_t n = 0;
    uint64_t rejected = 0;
    for (int k = 0; k < REJ_KINDS; k++) {
        rejected += run->rejected[k];
        if (run->rejected[k] && n < sizeof reasons)
            n += snprintf(reasons + n, sizeof reasons - n, "%s%" PRIu64 " %s", n ? ", " : " (",
                          run->rejected[k], reject_names[k]);
    }
    if (n && n < sizeof reasons)
        snprintf(reasons + n, sizeof reasons - n, ")");
    char merged[64] = "";
    if (run->merge)
        snprintf(merged, sizeof merged, " (%" PRIu64 " merged)", run->n_merged);
    log_info("%" PRIu64 " record%s read: %" PRIu64 " bucketed%s, %" PRIu64 " rejected%s; %zu bucket%s",
             run->n_read, plural(run->n_read), run->n_bucketed, merged, rejected, reasons,
             run->final.n, plural(run->final.n));
}

static uint64_t total_rejected(const struct run *run)
{
    uint64_t t = 0;
    for (int k = 0; k < REJ_KINDS; k++)
        t += run->rejected[k];
    return t;
}

static int same_path(const char *a, const char *b)
{
    return a && b && strcmp(a, "-") != 0 && strcmp(a, b) == 0;
}

int main(int argc, char **argv)
{
    const char *output = "-", *buckets = NULL, *stats = NULL, *rejects = NULL;
    /* INT_MIN and NaN mean "not given": some options exclude others. */
    int resolution = INT_MIN, step = 16, center = INT_MIN, no_upscale = 0, random_crop = 0, batch = 0;
    int merge_small = 0, strict = 0;
    double min_aspect = NAN, max_aspect = NAN;
    int64_t seed = 0;
    const struct opt opts[] = {
        {"output", 'o', OPT_STRING, &output, "FILE", "write the manifest to FILE (default: standard output)"},
        {"resolution", 0, OPT_INT, &resolution, "N", "bucket area at most N*N pixels (default 256)"},
        {"step", 0, OPT_INT, &step, "N", "bucket sides are multiples of N (default 16)"},
        {"min-aspect", 0, OPT_DOUBLE, &min_aspect, "X", "smallest bucket width/height (default 0.5)"},
        {"max-aspect", 0, OPT_DOUBLE, &max_aspect, "X", "largest bucket width/height (default 2.0)"},
        {"buckets", 0, OPT_STRING, &buckets, "WxH,...", "use exactly these buckets"},
        {"no-upscale", 0, OPT_FLAG, &no_upscale, NULL, "no bucket larger in area than its image"},
        {"center-crop-size", 0, OPT_INT, &center, "N",
         "every record NxN by the ADM center crop (class-conditional DiT)"},
        {"random-crop", 0, OPT_FLAG, &random_crop, NULL, "random crop offsets instead of centered"},
        {"seed", 0, OPT_INT64, &seed, "N", "seed of the random crops (default 0)"},
        {"batch-size", 0, OPT_INT, &batch, "B", "warn about buckets with fewer than B records"},
        {"merge-small", 0, OPT_FLAG, &merge_small, NULL,
         "move records of buckets smaller than a batch to the nearest full bucket"},
        {"stats", 0, OPT_STRING, &stats, "FILE", "write the bucket histogram as TSV to FILE"},
        {"rejects", 0, OPT_STRING, &rejects, "FILE", "write rejected records, with reject_reason, to FILE"},
        {"strict", 0, OPT_FLAG, &strict, NULL, "fail (exit 1) if any record is rejected"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-bucket", "[options] [FILE]",
                                  "Give each record of a manifest a resolution bucket, a resize size and a crop box."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (argc - first > 1)
        opt_usage_error("one input FILE at most, %d given", argc - first);
    /* Bucketing is integer arithmetic on the CPU; the device matters only
     * when asked for, as in dit-inspect. */
    if (opt_device_given())
        device_select(opt_device());
    if (center != INT_MIN) {
        const char *clash = buckets ? "--buckets" : resolution != INT_MIN ? "--resolution"
                            : no_upscale ? "--no-upscale"
                            : random_crop ? "--random-crop" : !isnan(min_aspect) ? "--min-aspect"
                            : !isnan(max_aspect) ? "--max-aspect" : NULL;
        if (clash)
            opt_usage_error("%s does not apply with --center-crop-size", clash);
    }
    if (center != INT_MIN && center < 1)
        opt_usage_error("--center-crop-size %d: must be positive", center);
    if (buckets && resolution != INT_MIN)
        opt_usage_error("--resolution does not apply with --buckets");
    if (batch < 0)
        opt_usage_error("--batch-size %d: must be positive", batch);
    if (merge_small && !batch)
        opt_usage_error("--merge-small needs --batch-size");
    if (seed < 0)
        opt_usage_error("--seed %" PRId64 ": must be 0 or more", seed);
    if (stats && strcmp(stats, "-") == 0 && strcmp(output, "-") == 0)
        opt_usage_error("--stats -: standard output already carries the manifest (use -o FILE)");
    if (rejects && strcmp(rejects, "-") == 0 && strcmp(output, "-") == 0)
        opt_usage_error("--rejects -: standard output already carries the manifest (use -o FILE)");
    if (same_path(output, rejects) || same_path(output, stats) || same_path(rejects, stats))
        opt_usage_error("-o, --rejects and --stats must name different files");

    struct bucket_size *list = NULL;
    size_t n_list = 0;
    if (buckets && bucket_parse_list(buckets, step, &list, &n_list) != 0)
        opt_usage_error("--buckets: %s", err_get());
    struct bucket_config config = {
        .step = step,
        .resolution = resolution != INT_MIN ? resolution : 256,
        .min_aspect = isnan(min_aspect) ? 0.5 : min_aspect,
        .max_aspect = isnan(max_aspect) ? 2.0 : max_aspect,
        .no_upscale = no_upscale,
        .list = list,
        .n_list = n_list,
        .center_crop_size = center != INT_MIN ? center : 0,
        .random_crop = random_crop,
        .seed = (uint64_t)seed,
    };
    static struct run run;
    active = &run;
    if (bucket_set_init(&run.set, &config) != 0)
        opt_usage_error("%s", err_get());
    free(list);
    if (log_level() >= LOG_VERBOSE)
        for (size_t i = 0; i < run.set.n; i++)
            log_debug("candidate bucket %dx%d (aspect %.3f)", run.set.sizes[i].width,
                      run.set.sizes[i].height, aspect_of(run.set.sizes[i]));

    run.input = first < argc ? argv[first] : "-";
    run.display = strcmp(run.input, "-") == 0 ? "(stdin)" : run.input;
    run.strict = strict;
    run.batch = (uint64_t)batch;
    run.merge = merge_small && batch > 0;
    if (run.merge) {
        struct stat st;
        if (strcmp(run.input, "-") == 0 || stat(run.input, &st) != 0 || !S_ISREG(st.st_mode))
            run.spool = spool_input(run.input);
        count_pass(&run);
    }
    bucket_pass(&run, output, rejects);

    if (run.merge && run.n_bucketed != bucket_hist_total(&run.before))
        fail("%s: changed while it was read", run.display);
    int failed = strict && total_rejected(&run) > 0;
    if (failed) {
        manifest_writer_abort(run.out);
    } else if (manifest_writer_commit(run.out) != 0) {
        run.out = NULL;
        fail("%s", err_get());
    }
    run.out = NULL;
    struct manifest_writer *rw = run.rejects;
    run.rejects = NULL;
    if (rw && manifest_writer_commit(rw) != 0)
        fail("%s", err_get());
    bucket_hist_sort(&run.final);
    if (stats && write_stats(&run.final, stats) != 0)
        fail("%s", err_get());
    print_histogram(&run.final);
    warn_small(&run);
    print_summary(&run);
    if (failed)
        log_error("%" PRIu64 " record%s rejected (--strict)%s", total_rejected(&run),
                  total_rejected(&run) == 1 ? "" : "s",
                  strcmp(output, "-") ? ": the output was not written" : "");
    bucket_set_free(&run.set);
    bucket_hist_free(&run.before);
    bucket_hist_free(&run.final);
    free(run.target);
    free(run.merged);
    free(run.stayed);
    free(run.out_fields);
    free(run.rej_fields);
    return failed ? DIT_EXIT_FAILURE : DIT_EXIT_OK;
}
