/* Writing a shard set: records are buffered per bucket and flushed as a
 * shard when a bucket's bytes reach the shard size; manifest.tsv is written
 * last, so a reader never sees a manifest naming a shard that is not there. */
#include "formats/manifest.h"
#include "formats/shardset.h"
#include "libcommon/error.h"
#include "libcommon/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct pending_tensor {
    char *name; /* KEY/FIELD */
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    void *data;
};

struct pending_bucket {
    char *bucket;
    size_t *rows; /* output rows waiting for this bucket's next shard */
    size_t n_rows, cap_rows;
    struct pending_tensor *tensors;
    size_t n_tensors, cap_tensors;
    uint64_t bytes;
};

struct shardset_writer {
    char *dir;
    char *producer, *encoder, *preprocess;
    uint64_t shard_bytes;
    size_t in_ncols, out_ncols;
    char **out_columns;
    int col_key, col_shard[5]; /* output positions of key and the shard columns */
    char ***rows;              /* output values, escaped at commit */
    size_t n_rows, cap_rows;
    struct pending_bucket *buckets;
    size_t n_buckets;
};

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * size);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static void bucket_clear(struct pending_bucket *b)
{
    for (size_t i = 0; i < b->n_tensors; i++) {
        free(b->tensors[i].name);
        free(b->tensors[i].data);
    }
    b->n_tensors = 0;
    b->n_rows = 0;
    b->bytes = 0;
}

void shardset_writer_abort(struct shardset_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_buckets; i++) {
        bucket_clear(&w->buckets[i]);
        free(w->buckets[i].bucket);
        free(w->buckets[i].rows);
        free(w->buckets[i].tensors);
    }
    free(w->buckets);
    for (size_t r = 0; r < w->n_rows; r++) {
        for (size_t c = 0; c < w->out_ncols; c++)
            free(w->rows[r][c]);
        free(w->rows[r]);
    }
    free(w->rows);
    for (size_t c = 0; c < w->out_ncols; c++)
        free(w->out_columns[c]);
    free(w->out_columns);
    free(w->dir);
    free(w->producer);
    free(w->encoder);
    free(w->preprocess);
    free(w);
}

struct shardset_writer *shardset_writer_open(const char *dir, size_t ncols,
                                             const char *const *columns,
                                             const struct shardset_meta *meta,
                                             uint64_t shard_bytes)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        err_set("%s: cannot create the shard set directory: %s", dir, strerror(errno));
        return NULL;
    }
    struct shardset_writer *w = calloc(1, sizeof *w);
    if (!w)
        goto oom;
    w->dir = strdup(dir);
    w->producer = strdup(meta->producer);
    w->encoder = strdup(meta->encoder);
    w->preprocess = strdup(meta->preprocess);
    w->out_columns = calloc(ncols + 5, sizeof *w->out_columns);
    if (!w->dir || !w->producer || !w->encoder || !w->preprocess || !w->out_columns)
        goto oom;
    w->shard_bytes = shard_bytes;
    w->in_ncols = ncols;
    w->col_key = -1;
    for (size_t c = 0; c < ncols; c++) {
        if (!(w->out_columns[c] = strdup(columns[c])))
            goto oom;
        if (strcmp(columns[c], "key") == 0)
            w->col_key = (int)c;
    }
    w->out_ncols = ncols;
    for (int k = 0; k < 5; k++) {
        w->col_shard[k] = -1;
        for (size_t c = 0; c < ncols; c++)
            if (strcmp(columns[c], shardset_columns[k]) == 0)
                w->col_shard[k] = (int)c;
        if (w->col_shard[k] < 0) {
            if (!(w->out_columns[w->out_ncols] = strdup(shardset_columns[k])))
                goto oom;
            w->col_shard[k] = (int)w->out_ncols++;
        }
    }
    if (w->col_key < 0) {
        err_set("%s: the input manifest has no 'key' column", dir);
        shardset_writer_abort(w);
        return NULL;
    }
    return w;
oom:
    err_set("%s: out of memory", dir);
    shardset_writer_abort(w);
    return NULL;
}

static struct pending_bucket *bucket_get(struct shardset_writer *w, const char *bucket)
{
    for (size_t i = 0; i < w->n_buckets; i++)
        if (strcmp(w->buckets[i].bucket, bucket) == 0)
            return &w->buckets[i];
    struct pending_bucket *grown = realloc(w->buckets, (w->n_buckets + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    w->buckets = grown;
    struct pending_bucket *b = &w->buckets[w->n_buckets];
    memset(b, 0, sizeof *b);
    if (!(b->bucket = strdup(bucket)))
        return NULL;
    w->n_buckets++;
    return b;
}

/* Writes a bucket's pending records as one shard, named by the hash of its
 * records' keys and data, so rerunning on the same input gives the same name. */
static int bucket_flush(struct shardset_writer *w, struct pending_bucket *b)
{
    if (b->n_rows == 0)
        return 0;
    struct hash_state *hs = hash_begin();
    if (!hs)
        goto oom;
    for (size_t i = 0; i < b->n_rows; i++) {
        char **row = w->rows[b->rows[i]];
        hash_update(hs, row[w->col_key], strlen(row[w->col_key]) + 1);
        hash_update(hs, row[w->col_shard[3]], strlen(row[w->col_shard[3]]) + 1);
    }
    char hex[33], name[128];
    hash_hex(hash_end(hs), hex);
    snprintf(name, sizeof name, "shard-%s-%.16s.safetensors", b->bucket, hex);

    struct st_writer *sw = st_writer_new();
    if (!sw)
        goto oom;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < b->n_tensors; i++) {
        struct pending_tensor *t = &b->tensors[i];
        rc = st_writer_add(sw, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    const char *meta[][2] = {{"format", SHARDSET_FORMAT}, {"format_version", SHARDSET_FORMAT_VERSION},
                             {"producer", w->producer}, {"encoder", w->encoder},
                             {"preprocess", w->preprocess}, {"bucket", b->bucket}};
    for (size_t i = 0; rc == 0 && i < sizeof meta / sizeof meta[0]; i++)
        rc = st_writer_meta(sw, meta[i][0], meta[i][1]);
    /* Each record's identity travels with its tensors, so a later run can
     * reuse a shard that no manifest names yet (one left by a killed run). */
    json_t *records = json_object();
    for (size_t i = 0; records && i < b->n_rows; i++) {
        char **row = w->rows[b->rows[i]];
        json_object_set_new(records, row[w->col_key],
                            json_pack("{s:s, s:s, s:s}", "cache_key", row[w->col_shard[4]], "data_xxh3",
                                      row[w->col_shard[3]], "fields", row[w->col_shard[2]]));
    }
    char *records_text = records ? json_to_string(records) : NULL;
    json_decref(records);
    if (!records_text) {
        st_writer_free(sw);
        goto oom;
    }
    if (rc == 0)
        rc = st_writer_meta(sw, "records", records_text);
    free(records_text);
    size_t plen = strlen(w->dir) + strlen(name) + 2;
    char *path = malloc(plen);
    if (!path) {
        st_writer_free(sw);
        goto oom;
    }
    snprintf(path, plen, "%s/%s", w->dir, name);
    if (rc == 0)
        rc = st_writer_write(sw, path);
    st_writer_free(sw);
    free(path);
    if (rc != 0)
        return -1;
    for (size_t i = 0; i < b->n_rows; i++) {
        char **row = w->rows[b->rows[i]];
        free(row[w->col_shard[0]]);
        if (!(row[w->col_shard[0]] = strdup(name)))
            goto oom;
    }
    bucket_clear(b);
    return 0;
oom:
    err_set("%s: out of memory", w->dir);
    return -1;
}

static int field_name_valid(const char *f)
{
    return f[0] && !strpbrk(f, ",/\t\n\r\\");
}

int shardset_writer_add(struct shardset_writer *w, const char *const *in_fields,
                        const char *bucket, struct hash128 cache_key, size_t ntensors,
                        const struct shard_tensor *tensors)
{
    const char *key = in_fields[w->col_key];
    int bw, bh;
    if (shardset_parse_bucket(bucket, &bw, &bh) != 0) {
        err_set("%s: key '%s': bucket '%s' is not WxH", w->dir, key, bucket);
        return -1;
    }
    if (ntensors == 0 || ntensors > SHARDSET_MAX_FIELDS) {
        err_set("%s: key '%s': a record holds 1 to %d tensors", w->dir, key, SHARDSET_MAX_FIELDS);
        return -1;
    }
    struct pending_bucket *b = bucket_get(w, bucket);
    if (!b || grow((void **)&w->rows, &w->cap_rows, w->n_rows + 1, sizeof *w->rows) ||
        grow((void **)&b->rows, &b->cap_rows, b->n_rows + 1, sizeof *b->rows) ||
        grow((void **)&b->tensors, &b->cap_tensors, b->n_tensors + ntensors, sizeof *b->tensors))
        goto oom;
    char **row = calloc(w->out_ncols, sizeof *row);
    if (!row)
        goto oom;
    w->rows[w->n_rows] = row;
    for (size_t c = 0; c < w->in_ncols; c++)
        if (!(row[c] = strdup(in_fields[c] ? in_fields[c] : "")))
            goto oom_row;

    size_t fields_len = 0;
    struct hash_state *hs = hash_begin();
    if (!hs)
        goto oom_row;
    size_t first = b->n_tensors;
    for (size_t i = 0; i < ntensors; i++) {
        const struct shard_tensor *t = &tensors[i];
        if (!field_name_valid(t->field) || t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            err_set("%s: key '%s': bad tensor field '%s' or rank %d", w->dir, key, t->field, t->ndim);
            goto fail_tensors;
        }
        uint64_t n = st_dtype_size(t->dtype);
        for (int d = 0; d < t->ndim; d++)
            n *= (uint64_t)t->shape[d];
        struct pending_tensor *p = &b->tensors[b->n_tensors];
        size_t nlen = strlen(key) + strlen(t->field) + 2;
        p->name = malloc(nlen);
        p->data = malloc(n ? n : 1);
        if (!p->name || !p->data) {
            free(p->name);
            free(p->data);
            err_set("%s: out of memory", w->dir);
            goto fail_tensors;
        }
        b->n_tensors++;
        snprintf(p->name, nlen, "%s/%s", key, t->field);
        if (n)
            memcpy(p->data, t->data, n);
        p->dtype = t->dtype;
        p->ndim = t->ndim;
        memcpy(p->shape, t->shape, sizeof p->shape);
        if (n)
            hash_update(hs, t->data, n);
        b->bytes += n;
        fields_len += strlen(t->field) + 1;
    }
    char hex[33];
    hash_hex(hash_end(hs), hex);
    hs = NULL;
    char *fields = malloc(fields_len);
    if (!fields)
        goto fail_tensors;
    fields[0] = '\0';
    for (size_t i = 0; i < ntensors; i++) {
        if (i)
            strcat(fields, ",");
        strcat(fields, tensors[i].field);
    }
    char ck[33];
    hash_hex(cache_key, ck);
    const char *values[5] = {"", bucket, fields, hex, ck};
    for (int k = 0; k < 5; k++) {
        free(row[w->col_shard[k]]);
        row[w->col_shard[k]] = strdup(values[k]);
    }
    free(fields);
    for (size_t c = 0; c < w->out_ncols; c++)
        if (!row[c])
            goto fail_tensors;
    b->rows[b->n_rows++] = w->n_rows++;
    if (w->shard_bytes && b->bytes >= w->shard_bytes)
        return bucket_flush(w, b);
    return 0;

fail_tensors:
    if (hs)
        hash_end(hs);
    while (b->n_tensors > first) {
        b->n_tensors--;
        free(b->tensors[b->n_tensors].name);
        free(b->tensors[b->n_tensors].data);
    }
    for (size_t c = 0; c < w->out_ncols; c++)
        free(row[c]);
    free(row);
    return -1;
oom_row:
    for (size_t c = 0; c < w->out_ncols; c++)
        free(row[c]);
    free(row);
oom:
    err_set("%s: out of memory", w->dir);
    return -1;
}

int shardset_writer_add_existing(struct shardset_writer *w, const char *const *in_fields,
                                 const char *bucket, const char *shard, const char *fields,
                                 struct hash128 data_xxh3, struct hash128 cache_key)
{
    if (grow((void **)&w->rows, &w->cap_rows, w->n_rows + 1, sizeof *w->rows))
        goto oom;
    char **row = calloc(w->out_ncols, sizeof *row);
    if (!row)
        goto oom;
    for (size_t c = 0; c < w->in_ncols; c++)
        row[c] = strdup(in_fields[c] ? in_fields[c] : "");
    char dx[33], ck[33];
    hash_hex(data_xxh3, dx);
    hash_hex(cache_key, ck);
    const char *values[5] = {shard, bucket, fields, dx, ck};
    for (int k = 0; k < 5; k++) {
        free(row[w->col_shard[k]]);
        row[w->col_shard[k]] = strdup(values[k]);
    }
    for (size_t c = 0; c < w->out_ncols; c++)
        if (!row[c]) {
            for (size_t k = 0; k < w->out_ncols; k++)
                free(row[k]);
            free(row);
            goto oom;
        }
    w->rows[w->n_rows++] = row;
    return 0;
oom:
    err_set("%s: out of memory", w->dir);
    return -1;
}

int shardset_writer_commit(struct shardset_writer *w)
{
    for (size_t i = 0; i < w->n_buckets; i++)
        if (bucket_flush(w, &w->buckets[i]) != 0) {
            shardset_writer_abort(w);
            return -1;
        }
    size_t plen = strlen(w->dir) + sizeof SHARDSET_MANIFEST + 1;
    char *path = malloc(plen);
    if (!path) {
        err_set("%s: out of memory", w->dir);
        shardset_writer_abort(w);
        return -1;
    }
    snprintf(path, plen, "%s/%s", w->dir, SHARDSET_MANIFEST);
    struct manifest_writer *mw =
        manifest_writer_open(path, w->out_ncols, (const char *const *)w->out_columns);
    int rc = mw ? 0 : -1;
    for (size_t r = 0; rc == 0 && r < w->n_rows; r++)
        rc = manifest_write(mw, (const char *const *)w->rows[r]);
    if (mw)
        rc = rc == 0 ? manifest_writer_commit(mw) : (manifest_writer_abort(mw), -1);
    free(path);
    shardset_writer_abort(w);
    return rc;
}
