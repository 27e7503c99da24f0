/* index_run: the readers of data/index_*.c in order, items processed in
 * batches on a thread pool, records emitted in input order (so the manifest
 * does not depend on the number of threads). */
#include "data/index_run.h"
#include "formats/manifest.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/keyset.h"
#include "libcommon/log.h"
#include "libcommon/progress.h"
#include "libcommon/threadpool.h"

#include <stdlib.h>
#include <string.h>

static const char *const std_columns[] = {"key", "source", "caption", "label", "width",
                                          "height", "format", "hash"};
#define N_STD (sizeof std_columns / sizeof std_columns[0])

struct run {
    const struct index_config *cfg;
    struct index_reader **readers;
    size_t n_readers;
    size_t n_out;           /* output columns */
    const char **out_cols;
    int json_col;           /* -1 without archives */
    size_t **extra_map;     /* per reader: output column of each extra */
    struct manifest_writer *out, *rejects;
    struct keyset *keys;
    uint64_t read, kept, by_reason[INDEX_REJECT_COUNT];
    struct progress *progress;
};

void index_config_init(struct index_config *c)
{
    *c = (struct index_config){
        .read = {"image_path", "caption", NULL, ".txt", 0, 0},
        .output = "-",
        .max_pixels = INDEX_DEFAULT_MAX_PIXELS,
    };
}

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
static int plan_columns(struct run *run, int any_archive)
{
    size_t max = N_STD + 1;
    for (size_t r = 0; r < run->n_readers; r++)
        max += run->readers[r]->n_extra;
    run->out_cols = calloc(max, sizeof *run->out_cols);
    run->extra_map = calloc(run->n_readers, sizeof *run->extra_map);
    if (!run->out_cols || !run->extra_map)
        return -1;
    for (size_t i = 0; i < N_STD; i++)
        add_column(run, std_columns[i]);
    run->json_col = any_archive ? add_column(run, "json") : -1;
    for (size_t r = 0; r < run->n_readers; r++) {
        struct index_reader *rd = run->readers[r];
        run->extra_map[r] = calloc(rd->n_extra ? rd->n_extra : 1, sizeof **run->extra_map);
        if (!run->extra_map[r])
            return -1;
        for (size_t e = 0; e < rd->n_extra; e++)
            run->extra_map[r][e] = (size_t)add_column(run, rd->extra_names[e]);
    }
    return 0;
}

static int reject(struct run *run, struct index_item *item)
{
    run->by_reason[item->reject]++;
    log_warn("%s", item->reason ? item->reason : "rejected");
    if (!run->rejects)
        return 0;
    const char *row[4] = {item->where, item->source ? item->source : "", index_reject_name(item->reject),
                          item->reason};
    return manifest_write(run->rejects, row);
}

/* Writes one processed item, or rejects it; -1 with err_set() when an
 * output cannot be written. */
static int emit(struct run *run, size_t reader, struct index_item *item)
{
    run->read++;
    progress_add(run->progress, 1);
    if (item->reject == INDEX_KEPT) {
        uint64_t first = keyset_insert(run->keys, item->key, strlen(item->key), run->read);
        if (first == UINT64_MAX) {
            err_set("out of memory");
            return -1;
        }
        if (first)
            index_item_reject(item, INDEX_DUPLICATE, "duplicate key '%s' (first in record %llu)",
                              item->key, (unsigned long long)first);
    }
    if (item->reject != INDEX_KEPT)
        return reject(run, item);
    run->kept++;
    const char **row = calloc(run->n_out, sizeof *row);
    char width[24], height[24], hash[33];
    snprintf(width, sizeof width, "%d", item->info.width);
    snprintf(height, sizeof height, "%d", item->info.height);
    hash_hex(item->hash, hash);
    if (!row) {
        err_set("out of memory");
        return -1;
    }
    const char *std[N_STD] = {item->key, item->source, item->caption, item->label, width,
                              height, image_format_name(item->info.format), hash};
    for (size_t i = 0; i < N_STD; i++)
        row[i] = std[i];
    if (run->json_col >= 0)
        row[run->json_col] = item->json;
    struct index_reader *rd = run->readers[reader];
    for (size_t e = 0; e < rd->n_extra && item->extra; e++)
        row[run->extra_map[reader][e]] = item->extra[e];
    int rc = manifest_write(run->out, row);
    free(row);
    return rc;
}

/* Reads every input in order, processing batches on the pool. 0; 1 when an
 * input failed part-way (reported, the others still read); -1 with
 * err_set() when an output cannot be written. */
static int index_all(struct run *run, struct threadpool *tp, size_t batch)
{
    struct index_item *items = calloc(batch, sizeof *items);
    if (!items) {
        err_set("out of memory");
        return -1;
    }
    int status = 0;
    for (size_t r = 0; r < run->n_readers && status >= 0; r++) {
        struct index_reader *rd = run->readers[r];
        int more = 1;
        while (more) {
            size_t n = 0;
            while (n < batch) {
                int rc = rd->next(rd, &items[n]);
                if (rc < 0) {
                    log_error("%s", err_get());
                    status = 1;
                }
                if (rc <= 0) {
                    more = 0;
                    break;
                }
                n++;
            }
            struct batch_work work = {items, run->cfg->max_pixels};
            threadpool_for(tp, n, process_range, &work);
            for (size_t i = 0; i < n; i++) {
                if (status >= 0 && emit(run, r, &items[i]) != 0)
                    status = -1, more = 0;
                index_item_free(&items[i], rd->n_extra);
            }
        }
    }
    free(items);
    return status;
}

static int write_classes(const char *path, const struct index_reader *rd)
{
    struct atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        return -1;
    for (size_t i = 0; i < rd->n_classes; i++)
        fprintf(af.fp, "%s\n", rd->classes[i]);
    return atomic_file_commit(&af);
}

/* Every folder read with class_from_dir must name the same classes, or the
 * label ids would mean different things. 0 with *out the first (NULL when
 * none has classes), or -1 with err_set(). */
static int class_source(struct run *run, const struct index_reader **out)
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
        if (!same) {
            err_set("%s and %s have different class folders: their label ids would disagree", first->name,
                    rd->name);
            return -1;
        }
    }
    *out = first;
    return 0;
}

static void summarise(const struct run *run, struct index_summary *s)
{
    char reasons[2048] = "";
    size_t len = 0;
    memset(s, 0, sizeof *s);
    for (int i = 1; i < INDEX_REJECT_COUNT; i++) {
        s->by_reason[i] = run->by_reason[i];
        if (!run->by_reason[i])
            continue;
        s->rejected += run->by_reason[i];
        len += snprintf(reasons + len, sizeof reasons - len, "%s%llu %s", len ? ", " : "",
                        (unsigned long long)run->by_reason[i], index_reject_name(i));
    }
    for (size_t r = 0; r < run->n_readers; r++)
        s->other_files += run->readers[r]->n_other_files;
    s->read = run->read;
    s->kept = run->kept;
    log_info("%llu records read, %llu kept, %llu rejected%s%s%s", (unsigned long long)run->read,
             (unsigned long long)run->kept, (unsigned long long)s->rejected, s->rejected ? " (" : "", reasons,
             s->rejected ? ")" : "");
    if (s->other_files)
        log_info("%llu other files (captions, labels, metadata, non-images) were not indexed as images",
                 (unsigned long long)s->other_files);
}

/* Opens the readers and the outputs: STAGE_DONE, or the status to return. */
static int open_all(struct run *run, const struct index_reader **classes)
{
    const struct index_config *c = run->cfg;
    run->readers = calloc(c->n_inputs ? c->n_inputs : 1, sizeof *run->readers);
    run->keys = keyset_new();
    if (!run->readers || !run->keys) {
        err_set("out of memory");
        return STAGE_ERROR;
    }
    int any_archive = 0;
    for (; run->n_readers < c->n_inputs; run->n_readers++) {
        struct index_reader *rd = index_open(c->inputs[run->n_readers], &c->read);
        if (!rd)
            return STAGE_ERROR;
        run->readers[run->n_readers] = rd;
        any_archive |= rd->is_archive;
    }
    if (class_source(run, classes) != 0)
        return STAGE_ERROR;
    if (c->read.class_from_dir && !*classes) {
        err_set("--class-from-dir needs a folder INPUT");
        return STAGE_BAD_CONFIG;
    }
    if (c->classes_out && !*classes) {
        err_set("--classes-out needs --class-from-dir and a folder INPUT");
        return STAGE_BAD_CONFIG;
    }
    if (plan_columns(run, any_archive) != 0) {
        err_set("out of memory");
        return STAGE_ERROR;
    }
    if (!(run->out = manifest_writer_open(c->output, run->n_out, run->out_cols)))
        return STAGE_ERROR;
    if (c->rejects) {
        const char *cols[] = {"key", "source", "reject_reason", "message"};
        if (!(run->rejects = manifest_writer_open(c->rejects, 4, cols)))
            return STAGE_ERROR;
    }
    return STAGE_DONE;
}

/* Commits or drops the outputs after the reading: the status to return. */
static int finish(struct run *run, int status, const struct index_reader *classes)
{
    const struct index_config *c = run->cfg;
    uint64_t rejected = run->read - run->kept;
    int fail = status != 0 || (c->strict && rejected);
    if (c->strict && rejected)
        log_error("--strict: %llu record%s rejected", (unsigned long long)rejected, rejected == 1 ? "" : "s");
    struct manifest_writer *out = run->out, *rej = run->rejects;
    run->out = run->rejects = NULL;
    if (fail && strcmp(c->output, "-") != 0) {
        manifest_writer_abort(out);
        log_error("%s was not written", c->output);
    } else if (manifest_writer_commit(out) != 0) {
        manifest_writer_abort(rej);
        return STAGE_ERROR;
    }
    if (rej && manifest_writer_commit(rej) != 0)
        return STAGE_ERROR;
    if (c->classes_out && !fail && write_classes(c->classes_out, classes) != 0)
        return STAGE_ERROR;
    return fail ? STAGE_FAILED : STAGE_DONE;
}

static void run_free(struct run *run)
{
    manifest_writer_abort(run->out);
    manifest_writer_abort(run->rejects);
    for (size_t r = 0; r < run->n_readers; r++) {
        index_close(run->readers[r]);
        if (run->extra_map)
            free(run->extra_map[r]);
    }
    free(run->extra_map);
    free(run->readers);
    free(run->out_cols);
    keyset_free(run->keys);
}

int index_run(const struct index_config *c, struct index_summary *summary)
{
    if (!c->read.caption_ext || c->read.caption_ext[0] != '.') {
        err_set("--caption-ext must begin with a dot, e.g. .txt");
        return STAGE_BAD_CONFIG;
    }
    struct run run = {.cfg = c};
    const struct index_reader *classes = NULL;
    int status = open_all(&run, &classes);
    struct threadpool *tp = NULL;
    if (status == STAGE_DONE && !(tp = threadpool_new(c->jobs)))
        status = STAGE_ERROR;
    if (status == STAGE_DONE) {
        run.progress = progress_start("index", "img", 0);
        status = index_all(&run, tp, (size_t)threadpool_size(tp) * 64);
        progress_finish(run.progress);
        threadpool_free(tp);
        if (status >= 0) {
            struct index_summary s;
            summarise(&run, &s);
            if (summary)
                *summary = s;
            status = finish(&run, status, classes);
        }
    }
    run_free(&run);
    return status;
}
