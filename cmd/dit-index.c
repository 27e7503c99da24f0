/* dit-index: any image collection (CSV, folders, tar/zip shards, lists of
 * paths) becomes a clean manifest; bad input is named, counted and kept out. */
#include "data/index.h"
#include "formats/manifest.h"
#include "kernels/device.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/keyset.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "libcommon/progress.h"
#include "libcommon/threadpool.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Pillow's DecompressionBombError threshold: twice MAX_IMAGE_PIXELS. */
#define DEFAULT_MAX_PIXELS 178956970LL

static const char *const std_columns[] = {"key", "source", "caption", "label", "width",
                                          "height", "format", "hash"};
#define N_STD (sizeof std_columns / sizeof std_columns[0])

struct run {
    struct index_reader **readers;
    size_t n_readers;
    size_t n_out;           /* output columns */
    const char **out_cols;
    int json_col;           /* -1 without archives */
    size_t **extra_map;     /* per reader: output column of each extra */
    struct manifest_writer *out, *rejects;
    struct keyset *keys;
    uint64_t read, kept, by_reason[INDEX_REJECT_COUNT];
    uint64_t max_pixels;
    struct progress *progress;
};

struct batch_work {
    struct index_item *items;
    uint64_t max_pixels;
};

static void process_range(void *arg, size_t begin, size_t end)
{
    struct batch_work *w = arg;
    for (size_t i = begin; i < end; i++)
        index_item_process(&w->items[i], w->max_pixels);
}

static int add_column(struct run *run, const char *name)
{
    for (size_t i = 0; i < run->n_out; i++)
        if (strcmp(run->out_cols[i], name) == 0)
            return (int)i;
    run->out_cols[run->n_out] = name;
    return (int)run->n_out++;
}

/* The header: the standard columns, "json" when an archive is read, then the
 * CSV columns carried through, in the order first seen. */
static void plan_columns(struct run *run, int any_archive)
{
    size_t max = N_STD + 1;
    for (size_t r = 0; r < run->n_readers; r++)
        max += run->readers[r]->n_extra;
    run->out_cols = calloc(max, sizeof *run->out_cols);
    run->extra_map = calloc(run->n_readers, sizeof *run->extra_map);
    if (!run->out_cols || !run->extra_map)
        die(DIT_EXIT_FAILURE, "out of memory");
    for (size_t i = 0; i < N_STD; i++)
        add_column(run, std_columns[i]);
    run->json_col = any_archive ? add_column(run, "json") : -1;
    for (size_t r = 0; r < run->n_readers; r++) {
        struct index_reader *rd = run->readers[r];
        run->extra_map[r] = calloc(rd->n_extra ? rd->n_extra : 1, sizeof **run->extra_map);
        if (!run->extra_map[r])
            die(DIT_EXIT_FAILURE, "out of memory");
        for (size_t e = 0; e < rd->n_extra; e++)
            run->extra_map[r][e] = (size_t)add_column(run, rd->extra_names[e]);
    }
}

static void reject(struct run *run, struct index_item *item)
{
    run->by_reason[item->reject]++;
    log_warn("%s", item->reason ? item->reason : "rejected");
    if (run->rejects) {
        const char *row[4] = {item->where, item->source ? item->source : "",
                              index_reject_name(item->reject), item->reason};
        if (manifest_write(run->rejects, row) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
    }
}

static void emit(struct run *run, size_t reader, struct index_item *item)
{
    run->read++;
    progress_add(run->progress, 1);
    if (item->reject == INDEX_KEPT) {
        uint64_t first = keyset_insert(run->keys, item->key, strlen(item->key), run->read);
        if (first == UINT64_MAX)
            die(DIT_EXIT_FAILURE, "out of memory");
        if (first)
            index_item_reject(item, INDEX_DUPLICATE, "duplicate key '%s' (first in record %llu)",
                              item->key, (unsigned long long)first);
    }
    if (item->reject != INDEX_KEPT) {
        reject(run, item);
        return;
    }
    run->kept++;
    const char **row = calloc(run->n_out, sizeof *row);
    char width[24], height[24], hash[33];
    snprintf(width, sizeof width, "%d", item->info.width);
    snprintf(height, sizeof height, "%d", item->info.height);
    hash_hex(item->hash, hash);
    if (!row)
        die(DIT_EXIT_FAILURE, "out of memory");
    const char *std[N_STD] = {item->key, item->source, item->caption, item->label, width,
                              height, image_format_name(item->info.format), hash};
    for (size_t i = 0; i < N_STD; i++)
        row[i] = std[i];
    if (run->json_col >= 0)
        row[run->json_col] = item->json;
    struct index_reader *rd = run->readers[reader];
    for (size_t e = 0; e < rd->n_extra && item->extra; e++)
        row[run->extra_map[reader][e]] = item->extra[e];
    if (manifest_write(run->out, row) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    free(row);
}

/* Reads every input in order, processing batches on the pool; returns -1
 * when an input failed part-way (after reporting it). */
static int index_all(struct run *run, struct threadpool *tp, size_t batch)
{
    struct index_item *items = calloc(batch, sizeof *items);
    if (!items)
        die(DIT_EXIT_FAILURE, "out of memory");
    int status = 0;
    for (size_t r = 0; r < run->n_readers; r++) {
        struct index_reader *rd = run->readers[r];
        int more = 1;
        while (more) {
            size_t n = 0;
            while (n < batch) {
                int rc = rd->next(rd, &items[n]);
                if (rc < 0) {
                    log_error("%s", err_get());
                    status = -1;
                }
                if (rc <= 0) {
                    more = 0;
                    break;
                }
                n++;
            }
            struct batch_work work = {items, run->max_pixels};
            threadpool_for(tp, n, process_range, &work);
            for (size_t i = 0; i < n; i++) {
                emit(run, r, &items[i]);
                index_item_free(&items[i], rd->n_extra);
            }
        }
    }
    free(items);
    return status;
}

static void write_classes(const char *path, const struct index_reader *rd)
{
    struct atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    for (size_t i = 0; i < rd->n_classes; i++)
        fprintf(af.fp, "%s\n", rd->classes[i]);
    if (atomic_file_commit(&af) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
}

/* Every folder read with --class-from-dir must name the same classes, or
 * the label ids would mean different things. */
static const struct index_reader *class_source(struct run *run)
{
    const struct index_reader *first = NULL;
    for (size_t r = 0; r < run->n_readers; r++) {
        const struct index_reader *rd = run->readers[r];
        if (!rd->n_classes)
            continue;
        if (!first) {
            first = rd;
            continue;
        }
        int same = rd->n_classes == first->n_classes;
        for (size_t i = 0; same && i < rd->n_classes; i++)
            same = strcmp(rd->classes[i], first->classes[i]) == 0;
        if (!same)
            die(DIT_EXIT_FAILURE, "%s and %s have different class folders: their label ids would disagree",
                first->name, rd->name);
    }
    return first;
}

static void summarise(const struct run *run)
{
    char reasons[2048] = "";
    size_t len = 0;
    uint64_t rejected = 0;
    for (int i = 1; i < INDEX_REJECT_COUNT; i++) {
        if (!run->by_reason[i])
            continue;
        rejected += run->by_reason[i];
        len += snprintf(reasons + len, sizeof reasons - len, "%s%llu %s", len ? ", " : "",
                        (unsigned long long)run->by_reason[i], index_reject_name(i));
    }
    uint64_t other = 0;
    for (size_t r = 0; r < run->n_readers; r++)
        other += run->readers[r]->n_other_files;
    log_info("%llu records read, %llu kept, %llu rejected%s%s%s", (unsigned long long)run->read,
             (unsigned long long)run->kept, (unsigned long long)rejected, rejected ? " (" : "",
             reasons, rejected ? ")" : "");
    if (other)
        log_info("%llu other files (captions, labels, metadata, non-images) were not indexed as images",
                 (unsigned long long)other);
}

int main(int argc, char **argv)
{
    struct index_options iopt = {"image_path", "caption", NULL, ".txt", 0, 0};
    const char *output = "-", *rejects_path = NULL, *classes_out = NULL;
    int64_t max_pixels = DEFAULT_MAX_PIXELS;
    int jobs = 0, strict = 0;
    const struct opt opts[] = {
        {"output", 'o', OPT_STRING, &output, "FILE", "write the manifest to FILE (default: standard output)"},
        {"image-column", 0, OPT_STRING, &iopt.image_column, "NAME", "CSV column of image paths (image_path)"},
        {"caption-column", 0, OPT_STRING, &iopt.caption_column, "NAME", "CSV column of captions (caption)"},
        {"base-image-dir", 0, OPT_STRING, &iopt.base_dir, "DIR", "CSV paths are relative to DIR (default: the CSV's folder)"},
        {"caption-ext", 0, OPT_STRING, &iopt.caption_ext, "EXT", "folders: sidecar caption extension (.txt)"},
        {"class-from-dir", 0, OPT_FLAG, &iopt.class_from_dir, NULL, "folders: label by top-level sub-folder"},
        {"classes-out", 0, OPT_STRING, &classes_out, "FILE", "write the class names, one per line by id"},
        {"allow-outside", 0, OPT_FLAG, &iopt.allow_outside, NULL, "accept absolute and '..' paths in CSVs and archives"},
        {"max-pixels", 0, OPT_INT64, &max_pixels, "N", "reject images of more than N pixels (178956970; 0: no limit)"},
        {"jobs", 'j', OPT_INT, &jobs, "N", "threads that read, hash and probe (default: all cores)"},
        {"strict", 0, OPT_FLAG, &strict, NULL, "any rejection makes the run fail"},
        {"rejects", 0, OPT_STRING, &rejects_path, "FILE", "write the rejected records and reasons as a manifest"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-index", "[options] INPUT...",
                                  "Index images from CSV files, folders, tar/zip archives or a list on stdin (-)."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first == argc)
        opt_usage_error("no INPUT given (a CSV file, a folder, an archive, or - for a list of paths)");
    if (jobs < 0 || max_pixels < 0)
        opt_usage_error("--jobs and --max-pixels must not be negative");
    if (iopt.caption_ext[0] != '.')
        opt_usage_error("--caption-ext must begin with a dot, e.g. .txt");
    if (opt_device_given())
        device_select(opt_device()); /* indexing reads headers on the CPU */

    struct run run = {0};
    run.max_pixels = (uint64_t)max_pixels;
    run.n_readers = (size_t)(argc - first);
    run.readers = calloc(run.n_readers, sizeof *run.readers);
    run.keys = keyset_new();
    if (!run.readers || !run.keys)
        die(DIT_EXIT_FAILURE, "out of memory");
    int any_archive = 0;
    for (size_t r = 0; r < run.n_readers; r++) {
        run.readers[r] = index_open(argv[first + r], &iopt);
        if (!run.readers[r])
            die(DIT_EXIT_FAILURE, "%s", err_get());
        any_archive |= run.readers[r]->is_archive;
    }
    const struct index_reader *classes = class_source(&run);
    if (iopt.class_from_dir && !classes)
        opt_usage_error("--class-from-dir needs a folder INPUT");
    if (classes_out && !classes)
        opt_usage_error("--classes-out needs --class-from-dir and a folder INPUT");
    plan_columns(&run, any_archive);

    run.out = manifest_writer_open(output, run.n_out, run.out_cols);
    if (!run.out)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    if (rejects_path) {
        const char *cols[] = {"key", "source", "reject_reason", "message"};
        run.rejects = manifest_writer_open(rejects_path, 4, cols);
        if (!run.rejects)
            die(DIT_EXIT_FAILURE, "%s", err_get());
    }
    struct threadpool *tp = threadpool_new(jobs);
    if (!tp)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    run.progress = progress_start("index", "img", 0);
    int status = index_all(&run, tp, (size_t)threadpool_size(tp) * 64);
    progress_finish(run.progress);
    threadpool_free(tp);
    summarise(&run);

    uint64_t rejected = run.read - run.kept;
    int fail = status != 0 || (strict && rejected);
    if (strict && rejected)
        log_error("--strict: %llu record%s rejected", (unsigned long long)rejected, rejected == 1 ? "" : "s");
    if (fail && strcmp(output, "-") != 0) {
        manifest_writer_abort(run.out);
        log_error("%s was not written", output);
    } else if (manifest_writer_commit(run.out) != 0) {
        die(DIT_EXIT_FAILURE, "%s", err_get());
    }
    if (run.rejects && manifest_writer_commit(run.rejects) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    if (classes_out && !fail)
        write_classes(classes_out, classes);

    for (size_t r = 0; r < run.n_readers; r++) {
        index_close(run.readers[r]);
        free(run.extra_map[r]);
    }
    free(run.extra_map);
    free(run.readers);
    free(run.out_cols);
    keyset_free(run.keys);
    return fail ? DIT_EXIT_FAILURE : DIT_EXIT_OK;
}
