#include "formats/shardset.h"
#include "formats/manifest.h"
#include "libcommon/error.h"
#include "libcommon/names.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const shardset_columns[5] = {"shard", "bucket", "fields", "data_xxh3", "cache_key"};

int shardset_parse_bucket(const char *bucket, int *width, int *height)
{
    char *end;
    errno = 0;
    long w = strtol(bucket, &end, 10);
    if (end == bucket || *end != 'x' || w <= 0 || w > 1 << 20 || errno)
        return -1;
    const char *hs = end + 1;
    long h = strtol(hs, &end, 10);
    if (end == hs || *end || h <= 0 || h > 1 << 20 || errno)
        return -1;
    *width = (int)w;
    *height = (int)h;
    return 0;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void record_free(struct shardset_record *r, size_t ncols)
{
    if (r->values)
        for (size_t i = 0; i < ncols; i++)
            free(r->values[i]);
    free(r->values);
}

void shardset_close(struct shardset *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_records; i++)
        record_free(&s->records[i], s->ncols);
    free(s->records);
    for (size_t i = 0; i < s->n_shards; i++) {
        free(s->shard_names[i]);
        st_close(s->shards[i]);
    }
    free(s->shard_names);
    free(s->shards);
    for (size_t i = 0; i < s->ncols; i++)
        free(s->columns[i]);
    free(s->columns);
    free(s->dir);
    free(s);
}

/* A shard name must stay inside the directory. */
static int shard_name_valid(const char *name)
{
    return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

/* Fills the aliases and parsed fields of r from its values; -1 with err_set(). */
static int record_parse(struct shardset_record *r, const int *col)
{
    r->key = r->values[col[0]];
    r->shard = r->values[col[1]];
    r->bucket = r->values[col[2]];
    char *fields = r->values[col[3]];
    if (!shard_name_valid(r->shard)) {
        err_set("key '%s': shard '%s' is not a file name inside the shard set", r->key, r->shard);
        return -1;
    }
    if (shardset_parse_bucket(r->bucket, &r->width, &r->height) != 0) {
        err_set("key '%s': bucket '%s' is not WxH", r->key, r->bucket);
        return -1;
    }
    if (hash_parse_hex(r->values[col[4]], &r->data_xxh3) != 0) {
        err_set("key '%s': data_xxh3 '%s' is not 32 hex digits", r->key, r->values[col[4]]);
        return -1;
    }
    if (hash_parse_hex(r->values[col[5]], &r->cache_key) != 0) {
        err_set("key '%s': cache_key '%s' is not 32 hex digits", r->key, r->values[col[5]]);
        return -1;
    }
    /* fields is split in place: "latent,latent_flip" */
    r->nfields = 0;
    for (char *f = fields; *f;) {
        char *comma = strchr(f, ',');
        if (comma)
            *comma = '\0';
        if (!*f || r->nfields == SHARDSET_MAX_FIELDS) {
            err_set("key '%s': fields must be 1 to %d comma-separated names", r->key,
                    SHARDSET_MAX_FIELDS);
            return -1;
        }
        r->fields[r->nfields++] = f;
        if (!comma)
            break;
        f = comma + 1;
    }
    if (r->nfields == 0) {
        err_set("key '%s': no fields", r->key);
        return -1;
    }
    return 0;
}

static int index_shards(struct shardset *s)
{
    char **names = malloc((s->n_records ? s->n_records : 1) * sizeof *names);
    if (!names)
        return -1;
    for (size_t i = 0; i < s->n_records; i++)
        names[i] = s->records[i].shard;
    qsort(names, s->n_records, sizeof *names, str_ptr_cmp);
    size_t n = 0;
    for (size_t i = 0; i < s->n_records; i++)
        if (n == 0 || strcmp(names[n - 1], names[i]) != 0)
            names[n++] = names[i];
    s->n_shards = n;
    s->shard_names = calloc(n ? n : 1, sizeof *s->shard_names);
    s->shards = calloc(n ? n : 1, sizeof *s->shards);
    if (!s->shard_names || !s->shards) {
        free(names);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!(s->shard_names[i] = strdup(names[i]))) {
            free(names);
            return -1;
        }
    free(names);
    return 0;
}

struct shardset *shardset_open(const char *dir)
{
    struct shardset *s = calloc(1, sizeof *s);
    char *mpath = path_join(dir, SHARDSET_MANIFEST);
    if (!s || !mpath || !(s->dir = strdup(dir))) {
        free(mpath);
        shardset_close(s);
        err_set("%s: out of memory", dir);
        return NULL;
    }
    struct manifest_reader *r = manifest_open(mpath, MANIFEST_CHECK_KEYS);
    if (!r)
        goto fail;
    s->ncols = manifest_ncols(r);
    s->columns = calloc(s->ncols, sizeof *s->columns);
    if (!s->columns)
        goto oom;
    for (size_t i = 0; i < s->ncols; i++)
        if (!(s->columns[i] = strdup(manifest_column(r, i))))
            goto oom;
    int col[6] = {manifest_column_index(r, "key")};
    for (int i = 0; i < 5; i++) {
        col[i + 1] = manifest_column_index(r, shardset_columns[i]);
        if (col[i + 1] < 0) {
            err_set("%s:1: no '%s' column: not a shard manifest (dit-shard(5))", mpath,
                    shardset_columns[i]);
            goto fail;
        }
    }
    size_t cap = 0;
    struct manifest_record rec;
    int rc;
    while ((rc = manifest_next(r, &rec)) != 0) {
        if (rc < 0)
            goto fail;
        if (s->n_records == cap) {
            cap = cap ? cap * 2 : 256;
            struct shardset_record *grown = realloc(s->records, cap * sizeof *grown);
            if (!grown)
                goto oom;
            s->records = grown;
        }
        struct shardset_record *sr = &s->records[s->n_records];
        memset(sr, 0, sizeof *sr);
        sr->line = manifest_line(r);
        sr->values = calloc(s->ncols, sizeof *sr->values);
        if (!sr->values)
            goto oom;
        s->n_records++;
        for (size_t i = 0; i < s->ncols; i++)
            if (!(sr->values[i] = strdup(rec.fields[i])))
                goto oom;
        if (record_parse(sr, col) != 0) {
            err_prefix("%s:%llu", mpath, (unsigned long long)sr->line);
            goto fail;
        }
    }
    if (index_shards(s) != 0)
        goto oom;
    manifest_close(r);
    free(mpath);
    return s;
oom:
    err_set("%s: out of memory", mpath);
fail:
    manifest_close(r);
    free(mpath);
    shardset_close(s);
    return NULL;
}

static long shard_index(const struct shardset *s, const char *name)
{
    size_t lo = 0, hi = s->n_shards;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->shard_names[mid], name);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Opens a shard and checks its identity; NULL with err_set(). */
static struct st_file *shard_load(const struct shardset *s, const char *name)
{
    char *path = path_join(s->dir, name);
    if (!path) {
        err_set("%s: out of memory", name);
        return NULL;
    }
    struct st_file *f = st_open(path);
    if (f) {
        const char *format = st_meta_get(f, "format");
        const char *version = st_meta_get(f, "format_version");
        if (!format || strcmp(format, SHARDSET_FORMAT) != 0) {
            err_set("%s: __metadata__ format is '%s', not '%s'", path, format ? format : "(none)",
                    SHARDSET_FORMAT);
            st_close(f);
            f = NULL;
        } else if (!version || strcmp(version, SHARDSET_FORMAT_VERSION) != 0) {
            err_set("%s: format_version '%s' is not supported (this build reads %s)", path,
                    version ? version : "(none)", SHARDSET_FORMAT_VERSION);
            st_close(f);
            f = NULL;
        }
    }
    free(path);
    return f;
}

const struct st_file *shardset_shard(struct shardset *s, size_t record)
{
    const struct shardset_record *r = &s->records[record];
    long i = shard_index(s, r->shard);
    if (i < 0) {
        err_set("%s: shard '%s' is not indexed", s->dir, r->shard);
        return NULL;
    }
    if (!s->shards[i])
        s->shards[i] = shard_load(s, r->shard);
    return s->shards[i];
}

const struct st_tensor *shardset_tensor(struct shardset *s, size_t record, const char *field)
{
    const struct st_file *f = shardset_shard(s, record);
    if (!f)
        return NULL;
    const struct shardset_record *r = &s->records[record];
    size_t n = strlen(r->key) + strlen(field) + 2;
    char *name = malloc(n);
    if (!name) {
        err_set("%s: out of memory", s->dir);
        return NULL;
    }
    snprintf(name, n, "%s/%s", r->key, field);
    const struct st_tensor *t = st_find(f, name);
    if (!t)
        err_set("%s/%s: no tensor '%s'", s->dir, r->shard, name);
    free(name);
    return t;
}

int shardset_record_hash(struct shardset *s, size_t record, struct hash128 *out)
{
    const struct shardset_record *r = &s->records[record];
    struct hash_state *h = hash_begin();
    if (!h) {
        err_set("%s: out of memory", s->dir);
        return -1;
    }
    for (size_t i = 0; i < r->nfields; i++) {
        const struct st_tensor *t = shardset_tensor(s, record, r->fields[i]);
        if (!t) {
            hash_end(h);
            return -1;
        }
        hash_update(h, t->data, t->nbytes);
    }
    *out = hash_end(h);
    return 0;
}

static void report_problem(void (*report)(void *, const char *), void *ctx, long *problems,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void report_problem(void (*report)(void *, const char *), void *ctx, long *problems,
                           const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (*problems)++;
    if (report)
        report(ctx, msg);
}

long shardset_verify(struct shardset *s, void (*report)(void *ctx, const char *problem), void *ctx)
{
    long problems = 0;
    char *failed = calloc(s->n_shards ? s->n_shards : 1, 1); /* report a bad shard once */
    if (!failed) {
        report_problem(report, ctx, &problems, "%s: out of memory", s->dir);
        return problems;
    }
    for (size_t i = 0; i < s->n_records; i++) {
        const struct shardset_record *r = &s->records[i];
        long si = shard_index(s, r->shard);
        const struct st_file *f = shardset_shard(s, i);
        if (!f) {
            if (!failed[si]++)
                report_problem(report, ctx, &problems, "%s", err_get());
            continue;
        }
        const char *bucket = st_meta_get(f, "bucket");
        if (!bucket || strcmp(bucket, r->bucket) != 0)
            report_problem(report, ctx, &problems,
                           "%s/%s:%llu: key '%s': bucket %s, but shard %s holds bucket %s",
                           s->dir, SHARDSET_MANIFEST, (unsigned long long)r->line, r->key,
                           r->bucket, r->shard, bucket ? bucket : "(none)");
        struct hash128 h;
        if (shardset_record_hash(s, i, &h) != 0) {
            report_problem(report, ctx, &problems, "%s/%s:%llu: key '%s': %s", s->dir,
                           SHARDSET_MANIFEST, (unsigned long long)r->line, r->key, err_get());
        } else if (!hash_equal(h, r->data_xxh3)) {
            char want[33], got[33];
            hash_hex(r->data_xxh3, want);
            hash_hex(h, got);
            report_problem(report, ctx, &problems,
                           "%s/%s:%llu: key '%s': data_xxh3 is %s but the tensors hash to %s",
                           s->dir, SHARDSET_MANIFEST, (unsigned long long)r->line, r->key, want,
                           got);
        }
    }
    free(failed);
    return problems;
}
