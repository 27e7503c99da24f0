/* dit-precompute: decode, resize, crop and encode the images of a bucketed
 * manifest into a shard set, reusing whatever an earlier run (finished or
 * killed) already encoded with the same parameters. */
#include "image/decode.h"
#include "image/resize.h"
#include "formats/manifest.h"
#include "formats/shardset.h"
#include "formats/shardset_cache.h"
#include "data/source.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/names.h"
#include "libcommon/options.h"
#include "libcommon/progress.h"
#include "libcommon/threadpool.h"
#include "models/encoder.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum reject {
    REJ_NONE,
    REJ_ROW,     /* bucket columns missing or malformed */
    REJ_READ,    /* the source cannot be read */
    REJ_CHANGED, /* the bytes no longer hash to the manifest's hash */
    REJ_DECODE,  /* truncated or corrupt image */
    REJ_SIZE,    /* the decoded size disagrees with the manifest */
    REJ_ENCODE,
    REJ_COUNT,
};
static const char *reject_names[REJ_COUNT] = {"", "bad bucket columns", "unreadable", "changed since indexing",
                                              "undecodable", "size mismatch", "encoder failure"};

/* Columns read from the bucketed manifest. */
enum { C_KEY, C_SOURCE, C_HASH, C_WIDTH, C_HEIGHT, C_BUCKET, C_RW, C_RH, C_LEFT, C_TOP, C_METHOD, N_REQ };
static const char *const required[N_REQ] = {"key", "source", "hash", "width", "height", "bucket",
                                            "resize_width", "resize_height", "crop_left", "crop_top",
                                            "resize_method"};

struct options {
    const char *output, *encoder, *filter_name, *flip_mode, *background, *dtype, *base_dir, *rejects;
    int jobs, strict, random_flip, prune, exact_decode;
    double shard_mb;
};

struct item {
    char **fields;  /* the input row (copied) */
    const char *key; /* fields[the key column] */
    char *where;    /* "manifest.tsv:LINE" */
    int w, h, bw, bh, rw, rh, left, top, adm;
    struct hash128 hash, cache_key;
    const struct shard_cache_entry *hit;
    void *bytes;    /* archive members are read on the main thread */
    size_t size;
    enum reject reject;
    char *reason;
    void *tensor[2]; /* plain, flipped encodings */
};

struct run {
    struct options o;
    struct encoder enc;
    enum resize_filter filter;
    enum st_dtype dtype;
    uint8_t bg[3];
    int flip_both;
    char *preprocess; /* canonical JSON of the global parameters */
    struct source_reader *src;
    size_t ncols;
    int col[N_REQ];
    struct shard_cache cache;
    struct shardset_writer *writer;
    struct manifest_writer *rejects;
    uint64_t read, encoded, reused, by_reason[REJ_COUNT];
    struct progress *progress;
};

static void item_reject(struct item *it, enum reject r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void item_reject(struct item *it, enum reject r, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    it->reject = r;
    free(it->reason);
    if (asprintf(&it->reason, "%s: key '%s': %s", it->where, it->key ? it->key : "?", msg) < 0)
        it->reason = NULL;
}

static int parse_int(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < 0 || v > 1 << 24)
        return -1;
    *out = (int)v;
    return 0;
}

/* Bytes of one encoding (the encoder's channels at the bucket / factor). */
static size_t encoding_bytes(const struct run *run, int bw, int bh)
{
    int f = run->enc.factor;
    return (size_t)run->enc.channels * (size_t)(bh / f) * (size_t)(bw / f) * st_dtype_size(run->dtype);
}

/* Stores the encoder's fp32 output in the run's dtype. */
static void store(const struct run *run, const float *src, void *dst, size_t n)
{
    if (run->dtype == ST_F32)
        memcpy(dst, src, n * sizeof(float));
    else if (run->dtype == ST_BF16)
        f32_to_bf16_array(src, dst, n);
    else
        f32_to_f16_array(src, dst, n);
}

/* The worker's part: read, check, decode, resize, crop, encode (and flip). */
static void process_item(struct run *run, struct item *it)
{
    if (it->reject || it->hit)
        return;
    const char *source = it->fields[run->col[C_SOURCE]];
    if (!it->bytes && source_read(run->src, source, &it->bytes, &it->size) != 0) {
        item_reject(it, REJ_READ, "%s", err_get());
        return;
    }
    if (!hash_equal(hash_buffer(it->bytes, it->size), it->hash)) {
        item_reject(it, REJ_CHANGED, "%s no longer has the hash dit-index recorded; index it again", source);
        return;
    }
    /* DCT scaling is exact for the JPEG decoder's own downscale, not for
     * Pillow's full decode: --exact-decode turns it off. ADM halves with a
     * box filter step by step, so it always decodes at full size. */
    int min_w = it->rw, min_h = it->rh;
    if (run->o.exact_decode || it->adm)
        min_w = min_h = 0;
    struct image_rgb img = {0};
    int scale = 1;
    if (image_decode(it->bytes, it->size, source, run->bg, min_w, min_h, &img, &scale) != 0) {
        item_reject(it, REJ_DECODE, "%s", err_get());
        return;
    }
    free(it->bytes);
    it->bytes = NULL;
    if ((img.width - 1) * scale >= it->w || img.width * scale < it->w || (img.height - 1) * scale >= it->h ||
        img.height * scale < it->h) {
        item_reject(it, REJ_SIZE, "decoded %dx%d (1/%d scale) but the manifest says %dx%d", img.width,
                    img.height, scale, it->w, it->h);
        image_rgb_free(&img);
        return;
    }
    uint8_t *crop = malloc((size_t)it->bw * it->bh * 3);
    float *enc = malloc((size_t)run->enc.channels * (it->bh / run->enc.factor) * (it->bw / run->enc.factor) *
                        sizeof *enc);
    size_t n = (size_t)run->enc.channels * (it->bh / run->enc.factor) * (it->bw / run->enc.factor);
    int rc = crop && enc ? 0 : -1;
    if (rc == 0) {
        if (it->adm)
            rc = image_center_crop_adm(img.pixels, img.width, img.height, crop, it->bw);
        else
            rc = image_resize_crop(img.pixels, img.width, img.height, run->filter, it->rw, it->rh,
                                   it->left, it->top, it->bw, it->bh, crop);
    }
    image_rgb_free(&img);
    for (int v = 0; rc == 0 && v < (run->flip_both ? 2 : 1); v++) {
        if (v == 1) {
            struct image_rgb view = {it->bw, it->bh, crop};
            image_rgb_flip(&view);
        }
        rc = run->enc.encode(&run->enc, crop, it->bw, it->bh, enc);
        if (rc == 0 && !(it->tensor[v] = malloc(encoding_bytes(run, it->bw, it->bh))))
            rc = -1;
        if (rc == 0)
            store(run, enc, it->tensor[v], n);
    }
    if (rc != 0)
        item_reject(it, REJ_ENCODE, "%s", *err_get() ? err_get() : "out of memory");
    free(crop);
    free(enc);
}

struct batch {
    struct run *run;
    struct item *items;
};

static void process_range(void *arg, size_t begin, size_t end)
{
    struct batch *b = arg;
    for (size_t i = begin; i < end; i++)
        process_item(b->run, &b->items[i]);
}

/* The cache key: everything that decides the record's tensors. */
static struct hash128 cache_key_of(const struct run *run, const struct item *it)
{
    char geometry[160], hash[33];
    snprintf(geometry, sizeof geometry, "%s %dx%d resize %dx%d crop %d,%d", it->adm ? "adm" : "fit", it->bw,
             it->bh, it->rw, it->rh, it->left, it->top);
    hash_hex(it->hash, hash);
    struct hash_state *h = hash_begin();
    const char *parts[] = {"dit-precompute/1", hash, run->enc.identity, run->preprocess, geometry};
    for (size_t i = 0; h && i < sizeof parts / sizeof parts[0]; i++)
        hash_update(h, parts[i], strlen(parts[i]) + 1);
    return h ? hash_end(h) : (struct hash128){0, 0};
}

/* The main thread's part before dispatch: parse, look up the cache, read
 * archive members (sequential by nature). */
static void prepare_item(struct run *run, struct item *it)
{
    const char *const *f = (const char *const *)it->fields;
    const char *bucket = f[run->col[C_BUCKET]];
    const char *method = f[run->col[C_METHOD]];
    if (parse_int(f[run->col[C_WIDTH]], &it->w) || parse_int(f[run->col[C_HEIGHT]], &it->h) ||
        shardset_parse_bucket(bucket, &it->bw, &it->bh) || parse_int(f[run->col[C_RW]], &it->rw) ||
        parse_int(f[run->col[C_RH]], &it->rh) || parse_int(f[run->col[C_LEFT]], &it->left) ||
        parse_int(f[run->col[C_TOP]], &it->top) || hash_parse_hex(f[run->col[C_HASH]], &it->hash) ||
        (strcmp(method, "fit") && strcmp(method, "adm"))) {
        item_reject(it, REJ_ROW, "width, height, hash, bucket, resize and crop columns must be valid "
                                 "(run dit-bucket on a dit-index manifest)");
        return;
    }
    it->adm = strcmp(method, "adm") == 0;
    if (it->bw % run->enc.factor || it->bh % run->enc.factor || (it->adm && it->bw != it->bh) ||
        it->left + it->bw > it->rw || it->top + it->bh > it->rh) {
        item_reject(it, REJ_ROW, "bucket %s does not fit its resize box or the encoder factor %d", bucket,
                    run->enc.factor);
        return;
    }
    it->cache_key = cache_key_of(run, it);
    it->hit = shard_cache_find(&run->cache, f[run->col[C_KEY]], it->cache_key);
    if (!it->hit && source_is_archive_member(f[run->col[C_SOURCE]]) &&
        source_read(run->src, f[run->col[C_SOURCE]], &it->bytes, &it->size) != 0)
        item_reject(it, REJ_READ, "%s", err_get());
}

static void emit(struct run *run, struct item *it)
{
    const char *const *in = (const char *const *)it->fields;
    progress_add(run->progress, 1);
    if (it->reject) {
        run->by_reason[it->reject]++;
        log_warn("%s", it->reason ? it->reason : "rejected");
        if (run->rejects) {
            const char *row[3] = {it->where, reject_names[it->reject], it->reason};
            if (manifest_write(run->rejects, row) != 0)
                die(DIT_EXIT_FAILURE, "%s", err_get());
        }
        return;
    }
    if (it->hit) {
        if (shardset_writer_add_existing(run->writer, in, it->hit->bucket, it->hit->shard, it->hit->fields,
                                         it->hit->data_xxh3, it->cache_key) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
        run->reused++;
        return;
    }
    int f = run->enc.factor;
    struct shard_tensor t[2];
    for (int v = 0; v < (run->flip_both ? 2 : 1); v++)
        t[v] = (struct shard_tensor){v ? "latent_flip" : "latent", run->dtype, 3,
                                     {run->enc.channels, it->bh / f, it->bw / f}, it->tensor[v]};
    if (shardset_writer_add(run->writer, in, in[run->col[C_BUCKET]], it->cache_key, run->flip_both ? 2 : 1, t) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    run->encoded++;
}

static void item_free(struct item *it, size_t ncols)
{
    for (size_t c = 0; c < ncols; c++)
        free(it->fields[c]);
    free(it->fields);
    free(it->where);
    free(it->bytes);
    free(it->reason);
    free(it->tensor[0]);
    free(it->tensor[1]);
    memset(it, 0, sizeof *it);
}

static int precompute_all(struct run *run, struct manifest_reader *mr, struct threadpool *tp, size_t batch)
{
    struct item *items = calloc(batch, sizeof *items);
    if (!items)
        die(DIT_EXIT_FAILURE, "out of memory");
    struct batch b = {run, items};
    int status = 0, more = 1;
    while (more) {
        size_t n = 0;
        while (n < batch) {
            struct manifest_record rec;
            int rc = manifest_next(mr, &rec);
            if (rc == 0) {
                more = 0;
                break;
            }
            run->read++;
            if (rc < 0) {
                /* A line the manifest reader refuses cannot be carried anywhere. */
                log_error("%s", err_get());
                run->by_reason[REJ_ROW]++;
                status = -1;
                continue;
            }
            struct item *it = &items[n++];
            it->fields = calloc(run->ncols, sizeof *it->fields);
            for (size_t c = 0; it->fields && c < run->ncols; c++)
                it->fields[c] = strdup(rec.fields[c]);
            if (asprintf(&it->where, "%s:%llu", manifest_path(mr), (unsigned long long)manifest_line(mr)) < 0)
                it->where = NULL;
            if (!it->fields || !it->where)
                die(DIT_EXIT_FAILURE, "out of memory");
            it->key = it->fields[run->col[C_KEY]];
            prepare_item(run, it);
        }
        threadpool_for(tp, n, process_range, &b);
        for (size_t i = 0; i < n; i++) {
            emit(run, &items[i]);
            item_free(&items[i], run->ncols);
        }
    }
    free(items);
    return status;
}

/* Removes the shards of dir that the new manifest does not name. */
static void prune(const char *dir, uint64_t *count)
{
    struct shardset *s = shardset_open(dir);
    size_t n = 0;
    char **names = s ? dir_list_sorted(dir, &n) : NULL;
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        if (!str_ends_with(names[i], ".safetensors") ||
            bsearch(&names[i], s->shard_names, s->n_shards, sizeof *s->shard_names, str_ptr_cmp))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (unlink(path) == 0)
            (*count)++;
    }
    names_free(names, n);
    shardset_close(s);
}

static void setup(struct run *run)
{
    struct options *o = &run->o;
    if (encoder_open(&run->enc, o->encoder) != 0)
        opt_usage_error("%s", err_get());
    if (resize_filter_parse(o->filter_name, &run->filter) != 0 ||
        (run->filter != RESIZE_BICUBIC && run->filter != RESIZE_LANCZOS))
        opt_usage_error("--resize-filter: '%s' is not bicubic or lanczos", o->filter_name);
    if (o->random_flip)
        o->flip_mode = "both";
    if (strcmp(o->flip_mode, "none") && strcmp(o->flip_mode, "both"))
        opt_usage_error("--flip-mode: '%s' is not none or both", o->flip_mode);
    run->flip_both = strcmp(o->flip_mode, "both") == 0;
    int r, g, b;
    char tail;
    if (sscanf(o->background, "%d,%d,%d%c", &r, &g, &b, &tail) != 3 || r < 0 || r > 255 || g < 0 || g > 255 ||
        b < 0 || b > 255)
        opt_usage_error("--background: '%s' is not R,G,B with values 0..255", o->background);
    run->bg[0] = (uint8_t)r, run->bg[1] = (uint8_t)g, run->bg[2] = (uint8_t)b;
    if (strcmp(o->dtype, "f32") == 0)
        run->dtype = ST_F32;
    else if (strcmp(o->dtype, "bf16") == 0)
        run->dtype = ST_BF16;
    else if (strcmp(o->dtype, "f16") == 0)
        run->dtype = ST_F16;
    else
        opt_usage_error("--dtype: '%s' is not f32, bf16 or f16", o->dtype);
    if (o->shard_mb <= 0)
        opt_usage_error("--shard-size must be positive (MB)");
    json_t *p = json_pack("{s:s, s:s, s:[i,i,i], s:s, s:b, s:s}", "resize_filter", resize_filter_name(run->filter),
                          "flip", o->flip_mode, "background", r, g, b, "dtype", o->dtype, "dct_scaling",
                          !o->exact_decode, "decoder", "libjpeg-turbo/libspng/libwebp, EXIF oriented");
    run->preprocess = p ? json_to_string(p) : NULL;
    json_decref(p);
    if (!run->preprocess)
        die(DIT_EXIT_FAILURE, "out of memory");
}

int main(int argc, char **argv)
{
    struct run run = {0};
    struct options *o = &run.o;
    *o = (struct options){.encoder = "pixel", .filter_name = "bicubic", .flip_mode = "none",
                          .background = "255,255,255", .dtype = "f32", .shard_mb = 256};
    const struct opt opts[] = {
        {"output-dir", 'o', OPT_STRING, &o->output, "DIR", "the shard set to write (required)"},
        {"encoder", 0, OPT_STRING, &o->encoder, "SPEC", "pixel or pixel:F (space-to-depth by F)"},
        {"resize-filter", 0, OPT_STRING, &o->filter_name, "NAME", "bicubic (default) or lanczos, as Pillow"},
        {"flip-mode", 0, OPT_STRING, &o->flip_mode, "MODE", "none, or both: also store the mirrored encoding"},
        {"random-flip", 0, OPT_FLAG, &o->random_flip, NULL, "the same as --flip-mode both"},
        {"background", 0, OPT_STRING, &o->background, "R,G,B", "colour under transparent pixels (255,255,255)"},
        {"dtype", 0, OPT_STRING, &o->dtype, "TYPE", "f32 (default), bf16 or f16"},
        {"shard-size", 0, OPT_DOUBLE, &o->shard_mb, "MB", "about how large a shard grows (256)"},
        {"base-dir", 0, OPT_STRING, &o->base_dir, "DIR", "relative sources are under DIR (default: the manifest's folder)"},
        {"exact-decode", 0, OPT_FLAG, &o->exact_decode, NULL, "decode JPEGs at full size, as Pillow does"},
        {"jobs", 'j', OPT_INT, &o->jobs, "N", "decode and resize threads (default: all cores)"},
        {"strict", 0, OPT_FLAG, &o->strict, NULL, "any rejected record makes the run fail"},
        {"rejects", 0, OPT_STRING, &o->rejects, "FILE", "write the rejected records as a manifest"},
        {"prune", 0, OPT_FLAG, &o->prune, NULL, "delete the shards the new manifest does not use"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-precompute", "[options] -o DIR [MANIFEST]",
                                  "Decode, resize, crop and encode a bucketed manifest into a shard set."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (!o->output)
        opt_usage_error("-o DIR is required");
    if (argc - first > 1)
        opt_usage_error("one MANIFEST at most (default: standard input)");
    if (o->jobs < 0)
        opt_usage_error("--jobs must not be negative");
    if (opt_device_given())
        device_select(opt_device()); /* the pixel encoder runs on the CPU */
    setup(&run);
    const char *input = first < argc ? argv[first] : "-";

    struct manifest_reader *mr = manifest_open(input, MANIFEST_CHECK_KEYS);
    if (!mr)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    run.ncols = manifest_ncols(mr);
    for (int i = 0; i < N_REQ; i++)
        if ((run.col[i] = manifest_column_index(mr, required[i])) < 0)
            die(DIT_EXIT_FAILURE, "%s: no '%s' column: dit-precompute reads the output of dit-index | dit-bucket",
                manifest_path(mr), required[i]);
    char *input_dir = NULL;
    if (!o->base_dir && strcmp(input, "-") != 0) {
        char *copy = strdup(input);
        input_dir = copy ? strdup(dirname(copy)) : NULL;
        free(copy);
    }
    run.src = source_reader_new(o->base_dir ? o->base_dir : input_dir);
    free(input_dir);
    if (!run.src || shard_cache_scan(&run.cache, o->output) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    if (run.cache.n)
        log_info("%s: %zu encoded records in %zu shards can be reused", o->output, run.cache.n,
                 run.cache.n_shards);
    char producer[64];
    snprintf(producer, sizeof producer, "dit-precompute %s", DIT_VERSION);
    struct shardset_meta meta = {producer, run.enc.identity, run.preprocess};
    run.writer = shardset_writer_open(o->output, run.ncols, manifest_columns(mr), &meta,
                                      (uint64_t)(o->shard_mb * 1e6));
    if (!run.writer)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    if (o->rejects) {
        const char *cols[] = {"key", "reject_reason", "message"};
        if (!(run.rejects = manifest_writer_open(o->rejects, 3, cols)))
            die(DIT_EXIT_FAILURE, "%s", err_get());
    }
    struct threadpool *tp = threadpool_new(o->jobs);
    if (!tp)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    /* Images already run one per thread: a resize must not fan out again. */
    image_resize_set_parallel_threshold(LONG_MAX);
    run.progress = progress_start("precompute", "img", 0);
    int status = precompute_all(&run, mr, tp, (size_t)threadpool_size(tp) * 16);
    progress_finish(run.progress);
    threadpool_free(tp);
    manifest_close(mr);

    uint64_t rejected = 0;
    char reasons[1024] = "";
    size_t len = 0;
    for (int i = 1; i < REJ_COUNT; i++)
        if (run.by_reason[i]) {
            rejected += run.by_reason[i];
            len += snprintf(reasons + len, sizeof reasons - len, "%s%llu %s", len ? ", " : "",
                            (unsigned long long)run.by_reason[i], reject_names[i]);
        }
    int fail = status != 0 || (o->strict && rejected);
    if (fail) {
        shardset_writer_abort(run.writer); /* shards written so far stay, for the next run */
        log_error("%s/manifest.tsv was not written%s", o->output, o->strict && rejected ? " (--strict)" : "");
    } else if (shardset_writer_commit(run.writer) != 0) {
        die(DIT_EXIT_FAILURE, "%s", err_get());
    }
    if (run.rejects && manifest_writer_commit(run.rejects) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    log_info("%llu records read: %llu encoded, %llu reused, %llu rejected%s%s%s", (unsigned long long)run.read,
             (unsigned long long)run.encoded, (unsigned long long)run.reused, (unsigned long long)rejected,
             rejected ? " (" : "", reasons, rejected ? ")" : "");
    if (!fail && o->prune) {
        uint64_t pruned;
        prune(o->output, &pruned);
        log_info("pruned %llu shard%s no longer used", (unsigned long long)pruned, pruned == 1 ? "" : "s");
    }
    shard_cache_free(&run.cache);
    source_reader_free(run.src);
    encoder_close(&run.enc);
    free(run.preprocess);
    return fail ? DIT_EXIT_FAILURE : DIT_EXIT_OK;
}
