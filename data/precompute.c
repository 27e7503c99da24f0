/* precompute_run: manifest records in batches; the main thread parses each,
 * looks it up in the cache of earlier runs and reads archive members (which
 * are sequential); the pool reads files, checks, decodes, resizes and
 * encodes; the main thread then writes the records in manifest order. */
#include "data/precompute.h"
#include "data/precompute_text.h"
#include "data/source.h"
#include "formats/manifest.h"
#include "formats/shardset.h"
#include "formats/shardset_cache.h"
#include "image/decode.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/names.h"
#include "libcommon/philox.h"
#include "libcommon/progress.h"
#include "libcommon/threadpool.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Columns read from the bucketed manifest. */
enum { C_KEY, C_SOURCE, C_HASH, C_WIDTH, C_HEIGHT, C_BUCKET, C_RW, C_RH, C_LEFT, C_TOP, C_METHOD, N_REQ };
static const char *const required[N_REQ] = {"key", "source", "hash", "width", "height", "bucket",
                                            "resize_width", "resize_height", "crop_left", "crop_top",
                                            "resize_method"};

struct item {
    char **fields;   /* the input row (copied) */
    const char *key; /* fields[the key column] */
    char *where;     /* "manifest.tsv:LINE" */
    struct precompute_geometry g;
    struct hash128 hash, cache_key;
    const struct shard_cache_entry *hit;
    void *bytes; /* archive members are read on the main thread */
    size_t size;
    enum precompute_reject reject;
    char *reason;
    const char *caption; /* fields[the caption column], when there is a text encoder */
    /* mean, std (when the encoder gives one), of the image then of its
     * mirror; then the caption's text and text_mask */
    void *tensor[6];
};

struct run {
    const struct precompute_config *cfg;
    const struct encoder *enc;
    char *preprocess; /* canonical JSON of the global parameters */
    struct source_reader *src;
    size_t ncols;
    int col[N_REQ];
    int col_caption;
    struct precompute_text text; /* enc NULL: no captions */
    struct shard_cache cache;
    struct shardset_writer *writer;
    struct manifest_writer *rejects;
    uint64_t read, encoded, reused, by_reason[PRECOMPUTE_REJECT_COUNT];
    struct progress *progress;
};

void precompute_config_init(struct precompute_config *c)
{
    *c = (struct precompute_config){
        .input = "-",
        .filter = RESIZE_BICUBIC,
        .background = {255, 255, 255},
        .dtype = ST_F32,
        .shard_bytes = 256000000,
        .caption_column = "caption",
        .text_dtype = ST_BF16,
        .text_cache_bytes = 256u << 20,
    };
}

static void item_reject(struct item *it, enum precompute_reject r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void item_reject(struct item *it, enum precompute_reject r, const char *fmt, ...)
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

/* Stores the encoder's fp32 output in the run's dtype. */
static void store(const struct run *run, const float *src, void *dst, size_t n)
{
    if (run->cfg->dtype == ST_F32)
        memcpy(dst, src, n * sizeof(float));
    else if (run->cfg->dtype == ST_BF16)
        f32_to_bf16_array(src, dst, n);
    else
        f32_to_f16_array(src, dst, n);
}

static int keeps_std(const struct run *run)
{
    return run->enc->has_std && run->cfg->latent_mode == LATENT_DIST;
}

/* The encoder's z distribution to what is stored (see enum latent_mode):
 * scaled as the denoiser sees it; for LATENT_SAMPLE one draw first, fixed
 * by the image's hash and the variant (0, or 1 for the mirror). */
static void latent_finish(const struct run *run, const struct item *it, int variant, float *mean, float *std,
                          size_t n)
{
    if (std && run->cfg->latent_mode == LATENT_SAMPLE) {
        struct rng_stream s = rng_stream(it->hash.hi, RNG_LATENT, (uint64_t)variant, it->hash.lo);
        for (size_t i = 0; i < n; i += 4096) {
            float eps[4096];
            size_t m = n - i < 4096 ? n - i : 4096;
            rng_normal_f32(&s, i, m, eps);
            for (size_t j = 0; j < m; j++)
                mean[i + j] += std[i + j] * eps[j];
        }
    }
    encoder_scale(run->enc, mean, n);
    if (std)
        for (size_t i = 0; i < n; i++)
            std[i] *= run->enc->scale;
}

/* The worker's part: read, check, decode, resize, crop, encode (and flip). */
static void process_item(struct run *run, struct item *it)
{
    if (it->reject || it->hit)
        return;
    const char *source = it->fields[run->col[C_SOURCE]];
    if (!it->bytes && source_read(run->src, source, &it->bytes, &it->size) != 0) {
        item_reject(it, PRECOMPUTE_UNREADABLE, "%s", err_get());
        return;
    }
    if (!hash_equal(hash_buffer(it->bytes, it->size), it->hash)) {
        item_reject(it, PRECOMPUTE_CHANGED, "%s no longer has the hash dit-index recorded; index it again", source);
        return;
    }
    const int bw = it->g.bucket_width, bh = it->g.bucket_height, has_std = run->enc->has_std;
    const size_t n = encoder_latent_elems(run->enc, bw, bh);
    uint8_t *crop = malloc((size_t)bw * bh * 3);
    float *mean = malloc(n * sizeof *mean * (has_std ? 2 : 1)), *std = has_std && mean ? mean + n : NULL;
    enum precompute_reject r = crop && mean ? PRECOMPUTE_KEPT : PRECOMPUTE_ENCODER;
    if (r == PRECOMPUTE_KEPT)
        r = precompute_image(run->cfg, it->bytes, it->size, source, &it->g, crop);
    free(it->bytes);
    it->bytes = NULL;
    if (r == PRECOMPUTE_UNDECODABLE || r == PRECOMPUTE_SIZE) {
        item_reject(it, r, "%s", err_get());
        free(crop);
        free(mean);
        return;
    }
    int rc = r == PRECOMPUTE_KEPT ? 0 : -1;
    const size_t bytes = n * st_dtype_size(run->cfg->dtype);
    for (int v = 0; rc == 0 && v < (run->cfg->flip_both ? 2 : 1); v++) {
        if (v == 1) {
            struct image_rgb view = {bw, bh, crop};
            image_rgb_flip(&view);
        }
        rc = encoder_encode(run->enc, crop, bw, bh, mean, std);
        if (rc == 0)
            latent_finish(run, it, v, mean, std, n);
        for (int k = 0; rc == 0 && k < (keeps_std(run) ? 2 : 1); k++) {
            if (!(it->tensor[2 * v + k] = malloc(bytes)))
                rc = -1;
            else
                store(run, k ? std : mean, it->tensor[2 * v + k], n);
        }
    }
    if (rc != 0)
        item_reject(it, PRECOMPUTE_ENCODER, "%s", *err_get() ? err_get() : "out of memory");
    free(crop);
    free(mean);
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
    char geometry[160], hash[33], caption[40] = "";
    const struct precompute_geometry *g = &it->g;
    snprintf(geometry, sizeof geometry, "%s %dx%d resize %dx%d crop %d,%d", g->adm ? "adm" : "fit",
             g->bucket_width, g->bucket_height, g->resize_width, g->resize_height, g->crop_left, g->crop_top);
    hash_hex(it->hash, hash);
    if (it->caption) { /* the text encoder itself is in the preprocessing identity */
        memcpy(caption, "text ", 5);
        hash_hex(precompute_caption_hash(it->caption), caption + 5);
    }
    struct hash_state *h = hash_begin();
    const char *parts[] = {"dit-precompute/1", hash, run->enc->identity, run->preprocess, geometry, caption};
    /* Without captions the key is what it always was. */
    const size_t np = sizeof parts / sizeof parts[0] - (it->caption ? 0 : 1);
    for (size_t i = 0; h && i < np; i++)
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
    struct precompute_geometry *g = &it->g;
    if (parse_int(f[run->col[C_WIDTH]], &g->width) || parse_int(f[run->col[C_HEIGHT]], &g->height) ||
        shardset_parse_bucket(bucket, &g->bucket_width, &g->bucket_height) ||
        parse_int(f[run->col[C_RW]], &g->resize_width) || parse_int(f[run->col[C_RH]], &g->resize_height) ||
        parse_int(f[run->col[C_LEFT]], &g->crop_left) || parse_int(f[run->col[C_TOP]], &g->crop_top) ||
        hash_parse_hex(f[run->col[C_HASH]], &it->hash) || (strcmp(method, "fit") && strcmp(method, "adm"))) {
        item_reject(it, PRECOMPUTE_BAD_ROW, "width, height, hash, bucket, resize and crop columns must be valid "
                                            "(run dit-bucket on a dit-index manifest)");
        return;
    }
    g->adm = strcmp(method, "adm") == 0;
    /* Valid UTF-8: the manifest reader refuses a line that is not. */
    if (run->text.enc)
        it->caption = f[run->col_caption];
    const int factor = run->enc->factor;
    if (g->bucket_width % factor || g->bucket_height % factor || (g->adm && g->bucket_width != g->bucket_height) ||
        g->crop_left + g->bucket_width > g->resize_width || g->crop_top + g->bucket_height > g->resize_height) {
        item_reject(it, PRECOMPUTE_BAD_ROW, "bucket %s does not fit its resize box or the encoder factor %d", bucket,
                    factor);
        return;
    }
    it->cache_key = cache_key_of(run, it);
    it->hit = shard_cache_find(&run->cache, f[run->col[C_KEY]], it->cache_key);
    if (!it->hit && source_is_archive_member(f[run->col[C_SOURCE]]) &&
        source_read(run->src, f[run->col[C_SOURCE]], &it->bytes, &it->size) != 0)
        item_reject(it, PRECOMPUTE_UNREADABLE, "%s", err_get());
}

/* Writes, reuses or rejects one record; -1 with err_set() when an output
 * cannot be written. */
static int emit(struct run *run, struct item *it)
{
    const char *const *in = (const char *const *)it->fields;
    progress_add(run->progress, 1);
    if (it->reject) {
        run->by_reason[it->reject]++;
        log_warn("%s", it->reason ? it->reason : "rejected");
        const char *row[3] = {it->where, precompute_reject_name(it->reject), it->reason};
        return run->rejects ? manifest_write(run->rejects, row) : 0;
    }
    if (it->hit) {
        run->reused++;
        return shardset_writer_add_existing(run->writer, in, it->hit->bucket, it->hit->shard, it->hit->fields,
                                            it->hit->data_xxh3, it->cache_key);
    }
    /* The latent, its std (LATENT_DIST of a stochastic encoder) as
     * latent_std; the mirrored image's as latent_flip and latent_std_flip
     * (the loader's FIELD_flip rule). */
    static const char *const names[6] = {"latent",      "latent_std", "latent_flip", "latent_std_flip",
                                         "text", "text_mask"};
    const int f = run->enc->factor;
    struct shard_tensor t[6];
    size_t nt = 0;
    for (int i = 0; i < 4; i++)
        if (it->tensor[i])
            t[nt++] = (struct shard_tensor){names[i], run->cfg->dtype, 3,
                                            {run->enc->channels, it->g.bucket_height / f, it->g.bucket_width / f},
                                            it->tensor[i]};
    if (it->tensor[4]) { /* text [L, D], text_mask [L] */
        const int L = run->text.enc->max_length;
        t[nt++] = (struct shard_tensor){names[4], run->text.dtype, 2, {L, run->text.enc->dim}, it->tensor[4]};
        t[nt++] = (struct shard_tensor){names[5], run->text.dtype, 1, {L}, it->tensor[5]};
    }
    run->encoded++;
    return shardset_writer_add(run->writer, in, in[run->col[C_BUCKET]], it->cache_key, nt, t);
}

static void item_free(struct item *it, size_t ncols)
{
    if (it->fields)
        for (size_t c = 0; c < ncols; c++)
            free(it->fields[c]);
    free(it->fields);
    free(it->where);
    free(it->bytes);
    free(it->reason);
    for (int i = 0; i < 6; i++)
        free(it->tensor[i]);
    memset(it, 0, sizeof *it);
}

/* The captions of the batch's records still to encode (not rejected, not
 * reused) to their text and text_mask, on the main thread: the text
 * encoder parallelises inside. 0, or -1 with err_set(). */
static int encode_captions(struct run *run, struct item *items, size_t n)
{
    const char **captions = malloc((n ? n : 1) * sizeof *captions);
    size_t *which = malloc((n ? n : 1) * sizeof *which), m = 0;
    void **emb = malloc((n ? n : 1) * sizeof *emb), **mask = malloc((n ? n : 1) * sizeof *mask);
    int rc = captions && which && emb && mask ? 0 : -1;
    if (rc)
        err_set("out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!items[i].reject && !items[i].hit) {
            captions[m] = items[i].caption;
            which[m++] = i;
        }
    if (rc == 0 && m)
        rc = precompute_text_encode(&run->text, captions, m, emb, mask);
    for (size_t j = 0; rc == 0 && j < m; j++) {
        items[which[j]].tensor[4] = emb[j];
        items[which[j]].tensor[5] = mask[j];
    }
    free(captions);
    free(which);
    free(emb);
    free(mask);
    return rc;
}

/* Every record in batches. 0; 1 when a manifest line was refused
 * (reported); -1 with err_set() when an output cannot be written. */
static int precompute_all(struct run *run, struct manifest_reader *mr, struct threadpool *tp, size_t batch)
{
    struct item *items = calloc(batch, sizeof *items);
    if (!items) {
        err_set("out of memory");
        return -1;
    }
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
                run->by_reason[PRECOMPUTE_BAD_ROW]++;
                status = 1;
                continue;
            }
            struct item *it = &items[n++];
            it->fields = calloc(run->ncols, sizeof *it->fields);
            for (size_t c = 0; it->fields && c < run->ncols; c++)
                it->fields[c] = strdup(rec.fields[c]);
            if (asprintf(&it->where, "%s:%llu", manifest_path(mr), (unsigned long long)manifest_line(mr)) < 0)
                it->where = NULL;
            if (!it->fields || !it->where) {
                err_set("out of memory");
                status = -1, more = 0;
                break;
            }
            it->key = it->fields[run->col[C_KEY]];
            prepare_item(run, it);
        }
        if (status >= 0)
            threadpool_for(tp, n, process_range, &b);
        if (status >= 0 && run->text.enc && encode_captions(run, items, n) != 0)
            status = -1, more = 0;
        for (size_t i = 0; i < n; i++) {
            if (status >= 0 && emit(run, &items[i]) != 0)
                status = -1, more = 0;
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

static const char *dtype_option(enum st_dtype dt)
{
    return dt == ST_F32 ? "f32" : dt == ST_BF16 ? "bf16" : dt == ST_F16 ? "f16" : NULL;
}

/* The preprocessing identity: canonical JSON of what changes the pixels. */
static char *preprocess_identity(const struct precompute_config *c)
{
    json_t *p = json_pack("{s:s, s:s, s:[i,i,i], s:s, s:b, s:s}", "resize_filter", resize_filter_name(c->filter),
                          "flip", c->flip_both ? "both" : "none", "background", c->background[0], c->background[1],
                          c->background[2], "dtype", dtype_option(c->dtype), "dct_scaling", c->fast_decode != 0,
                          "decoder", "libjpeg-turbo/libspng/libwebp, EXIF oriented");
    /* Only a stochastic encoder's output depends on the mode: the keys of
     * deterministic sets stay what they were. */
    if (p && c->encoder && c->encoder->has_std)
        json_object_set_new(p, "latent", json_string(latent_mode_name(c->latent_mode)));
    /* Likewise the text encoder, only for sets that have captions encoded. */
    if (p && c->text_encoder) {
        json_object_set_new(p, "text_encoder", json_string(c->text_encoder->identity));
        json_object_set_new(p, "text_dtype", json_string(dtype_option(c->text_dtype)));
    }
    char *s = p ? json_to_string(p) : NULL;
    json_decref(p);
    return s;
}

static int check_config(const struct precompute_config *c)
{
    if (!c->output_dir || !c->encoder)
        err_set("precompute: no %s", c->output_dir ? "encoder" : "output directory");
    else if (c->filter != RESIZE_BICUBIC && c->filter != RESIZE_LANCZOS)
        err_set("--resize-filter: '%s' is not bicubic or lanczos", resize_filter_name(c->filter));
    else if (!dtype_option(c->dtype))
        err_set("--dtype: %s is not f32, bf16 or f16", st_dtype_name(c->dtype));
    else if (c->text_encoder && !dtype_option(c->text_dtype))
        err_set("--text-dtype: %s is not f32, bf16 or f16", st_dtype_name(c->text_dtype));
    else if (c->text_encoder && (!c->caption_column || !*c->caption_column))
        err_set("precompute: a text encoder but no caption column");
    else
        return 0;
    return -1;
}

/* Opens the input, the cache, the writers: STAGE_DONE or the status. */
static int open_all(struct run *run, struct manifest_reader **mr)
{
    const struct precompute_config *c = run->cfg;
    if (!(run->preprocess = preprocess_identity(c))) {
        err_set("out of memory");
        return STAGE_ERROR;
    }
    if (!(*mr = manifest_open(c->input, MANIFEST_CHECK_KEYS)))
        return STAGE_ERROR;
    run->ncols = manifest_ncols(*mr);
    for (int i = 0; i < N_REQ; i++)
        if ((run->col[i] = manifest_column_index(*mr, required[i])) < 0) {
            err_set("%s: no '%s' column: dit-precompute reads the output of dit-index | dit-bucket",
                    manifest_path(*mr), required[i]);
            return STAGE_ERROR;
        }
    if (c->text_encoder && (run->col_caption = manifest_column_index(*mr, c->caption_column)) < 0) {
        err_set("%s: no '%s' column for the captions (--caption-column names another)", manifest_path(*mr),
                c->caption_column);
        return STAGE_ERROR;
    }
    if (c->text_encoder && precompute_text_init(&run->text, c->text_encoder, c->text_dtype, c->text_cache_bytes) != 0)
        return STAGE_ERROR;
    char *input_dir = NULL;
    if (!c->base_dir && strcmp(c->input, "-") != 0) {
        char *copy = strdup(c->input);
        input_dir = copy ? strdup(dirname(copy)) : NULL;
        free(copy);
    }
    run->src = source_reader_new(c->base_dir ? c->base_dir : input_dir);
    free(input_dir);
    if (!run->src || shard_cache_scan(&run->cache, c->output_dir) != 0)
        return STAGE_ERROR;
    if (run->cache.n)
        log_info("%s: %zu encoded records in %zu shards can be reused", c->output_dir, run->cache.n,
                 run->cache.n_shards);
    struct shardset_meta meta = {"dit-precompute " DIT_VERSION, run->enc->identity, run->preprocess};
    run->writer = shardset_writer_open(c->output_dir, run->ncols, manifest_columns(*mr), &meta, c->shard_bytes);
    if (!run->writer)
        return STAGE_ERROR;
    if (c->rejects) {
        const char *cols[] = {"key", "reject_reason", "message"};
        if (!(run->rejects = manifest_writer_open(c->rejects, 3, cols)))
            return STAGE_ERROR;
    }
    return STAGE_DONE;
}

/* After the records: commits or leaves the outputs, reports, prunes. */
static int finish(struct run *run, int status, struct precompute_summary *s)
{
    const struct precompute_config *c = run->cfg;
    char reasons[1024] = "";
    size_t len = 0;
    memset(s, 0, sizeof *s);
    for (int i = 1; i < PRECOMPUTE_REJECT_COUNT; i++)
        if ((s->by_reason[i] = run->by_reason[i])) {
            s->rejected += run->by_reason[i];
            len += snprintf(reasons + len, sizeof reasons - len, "%s%llu %s", len ? ", " : "",
                            (unsigned long long)run->by_reason[i], precompute_reject_name(i));
        }
    s->read = run->read, s->encoded = run->encoded, s->reused = run->reused;
    s->captions_encoded = run->text.encoded, s->captions_truncated = run->text.truncated;
    int fail = status != 0 || (c->strict && s->rejected);
    struct shardset_writer *w = run->writer;
    run->writer = NULL;
    if (fail) {
        shardset_writer_abort(w); /* shards written so far stay, for the next run */
        log_error("%s/manifest.tsv was not written%s", c->output_dir, c->strict && s->rejected ? " (--strict)" : "");
    } else if (shardset_writer_commit(w) != 0) {
        return STAGE_ERROR;
    }
    struct manifest_writer *rej = run->rejects;
    run->rejects = NULL;
    if (rej && manifest_writer_commit(rej) != 0)
        return STAGE_ERROR;
    log_info("%llu records read: %llu encoded, %llu reused, %llu rejected%s%s%s", (unsigned long long)s->read,
             (unsigned long long)s->encoded, (unsigned long long)s->reused, (unsigned long long)s->rejected,
             s->rejected ? " (" : "", reasons, s->rejected ? ")" : "");
    if (run->text.enc && run->text.captions)
        log_info("%llu captions: %llu distinct encoded (%.2f captions/s), %llu cut at %d tokens",
                 (unsigned long long)run->text.captions, (unsigned long long)run->text.encoded,
                 run->text.seconds > 0 ? (double)run->text.encoded / run->text.seconds : 0.0,
                 (unsigned long long)run->text.truncated, run->text.enc->max_length);
    if (!fail && c->prune) {
        prune(c->output_dir, &s->pruned);
        log_info("pruned %llu shard%s no longer used", (unsigned long long)s->pruned, s->pruned == 1 ? "" : "s");
    }
    return fail ? STAGE_FAILED : STAGE_DONE;
}

int precompute_run(const struct precompute_config *c, struct precompute_summary *summary)
{
    if (check_config(c) != 0)
        return STAGE_BAD_CONFIG;
    struct run run = {.cfg = c, .enc = c->encoder};
    struct manifest_reader *mr = NULL;
    int status = open_all(&run, &mr);
    struct threadpool *tp = NULL;
    if (status == STAGE_DONE && !(tp = threadpool_new(c->jobs)))
        status = STAGE_ERROR;
    if (status == STAGE_DONE) {
        /* Images already run one per thread: a resize must not fan out again. */
        image_resize_set_parallel_threshold(LONG_MAX);
        /* A record is one image and, with a text encoder, one caption: the
         * rate is captions/s then (the encoder that dominates). */
        run.progress = progress_start("precompute", c->text_encoder ? "caption" : "img", 0);
        status = precompute_all(&run, mr, tp, (size_t)threadpool_size(tp) * 16);
        progress_finish(run.progress);
        image_resize_set_parallel_threshold(0);
        threadpool_free(tp);
        manifest_close(mr);
        mr = NULL;
        if (status >= 0) {
            struct precompute_summary s;
            status = finish(&run, status, &s);
            if (summary && status >= 0)
                *summary = s;
        }
    }
    if (mr)
        manifest_close(mr);
    shardset_writer_abort(run.writer);
    manifest_writer_abort(run.rejects);
    shard_cache_free(&run.cache);
    precompute_text_free(&run.text);
    source_reader_free(run.src);
    free(run.preprocess);
    return status;
}

int latent_mode_parse(const char *name, enum latent_mode *out)
{
    static const char *const names[] = {"dist", "mean", "sample"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0) {
            *out = (enum latent_mode)i;
            return 0;
        }
    return -1;
}

const char *latent_mode_name(enum latent_mode m)
{
    return m == LATENT_MEAN ? "mean" : m == LATENT_SAMPLE ? "sample" : "dist";
}
