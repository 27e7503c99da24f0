#include "formats/shardset_cache.h"
#include "formats/shardset.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/names.h"
#include "libcommon/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_entry(const void *a, const void *b)
{
    const struct shard_cache_entry *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->shard, y->shard);
}

/* Adds the records of one shard; returns -1 when the shard is not a valid
 * dit-shard file (with err_set()), -2 when out of memory. */
static int add_shard(struct shard_cache *c, size_t *cap, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct st_file *f = st_open(path);
    if (!f)
        return -1;
    const char *format = st_meta_get(f, "format"), *version = st_meta_get(f, "format_version");
    const char *bucket = st_meta_get(f, "bucket"), *records = st_meta_get(f, "records");
    if (!format || strcmp(format, SHARDSET_FORMAT) || !version || strcmp(version, SHARDSET_FORMAT_VERSION) ||
        !bucket || !records) {
        err_set("%s: not a dit-shard %s file with records metadata", path, SHARDSET_FORMAT_VERSION);
        st_close(f);
        return -1;
    }
    json_t *j = json_read_buffer(path, records, strlen(records));
    if (!j || !json_is_object(j)) {
        json_decref(j);
        st_close(f);
        return -1;
    }
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(j, key, v) {
        struct shard_cache_entry e = {0};
        const char *ck = json_string_value(json_object_get(v, "cache_key"));
        const char *dx = json_string_value(json_object_get(v, "data_xxh3"));
        const char *fields = json_string_value(json_object_get(v, "fields"));
        if (!ck || !dx || !fields || hash_parse_hex(ck, &e.cache_key) || hash_parse_hex(dx, &e.data_xxh3)) {
            err_set("%s: record '%s' has malformed metadata", path, key);
            rc = -1;
            break;
        }
        /* The tensors must really be there: metadata alone is not trusted. */
        char fcopy[512];
        snprintf(fcopy, sizeof fcopy, "%s", fields);
        for (char *tok = strtok(fcopy, ","); tok && rc == 0; tok = strtok(NULL, ",")) {
            char tname[1024];
            snprintf(tname, sizeof tname, "%s/%s", key, tok);
            if (!st_find(f, tname)) {
                err_set("%s: record '%s' lists field %s but has no tensor %s", path, key, tok, tname);
                rc = -1;
            }
        }
        if (rc)
            break;
        if (c->n == *cap) {
            *cap = *cap ? *cap * 2 : 256;
            struct shard_cache_entry *g = realloc(c->entries, *cap * sizeof *g);
            if (!g) {
                rc = -2;
                break;
            }
            c->entries = g;
        }
        e.key = strdup(key);
        e.shard = strdup(name);
        e.bucket = strdup(bucket);
        e.fields = strdup(fields);
        c->entries[c->n++] = e;
        if (!e.key || !e.shard || !e.bucket || !e.fields) {
            rc = -2;
            break;
        }
    }
    json_decref(j);
    st_close(f);
    return rc;
}

int shard_cache_scan(struct shard_cache *c, const char *dir)
{
    memset(c, 0, sizeof *c);
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        err_set("%s: %s", dir, strerror(errno));
        return -1;
    }
    size_t cap = 0, cap_shards = 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        const char *name = e->d_name;
        if (name[0] == '.') {
            /* Leftovers of writes a kill interrupted: never visible as output. */
            if ((strncmp(name, ".shard-", 7) == 0 || strncmp(name, "." SHARDSET_MANIFEST ".tmp.", 14) == 0) &&
                strstr(name, ".tmp.")) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s", dir, name);
                unlink(path);
            }
            continue;
        }
        if (!str_ends_with(name, ".safetensors"))
            continue;
        int r = add_shard(c, &cap, dir, name);
        if (r == -2) {
            err_set("%s: out of memory", dir);
            rc = -1;
        } else if (r == -1) {
            log_warn("%s (not reused)", err_get());
            c->n_skipped++;
        } else {
            if (c->n_shards == cap_shards) {
                cap_shards = cap_shards ? cap_shards * 2 : 64;
                char **g = realloc(c->shards, cap_shards * sizeof *g);
                if (!g) {
                    err_set("%s: out of memory", dir);
                    rc = -1;
                    break;
                }
                c->shards = g;
            }
            c->shards[c->n_shards++] = strdup(name);
        }
    }
    closedir(d);
    /* An existing directory with no shards yet (another dit-precompute
     * writing the same set has just made it) has no arrays to sort. */
    if (rc == 0) {
        if (c->n)
            qsort(c->entries, c->n, sizeof *c->entries, cmp_entry);
        if (c->n_shards)
            qsort(c->shards, c->n_shards, sizeof *c->shards, str_ptr_cmp);
    } else {
        shard_cache_free(c);
    }
    return rc;
}

void shard_cache_free(struct shard_cache *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->entries[i].key);
        free(c->entries[i].shard);
        free(c->entries[i].bucket);
        free(c->entries[i].fields);
    }
    free(c->entries);
    for (size_t i = 0; i < c->n_shards; i++)
        free(c->shards[i]);
    free(c->shards);
    memset(c, 0, sizeof *c);
}

const struct shard_cache_entry *shard_cache_find(const struct shard_cache *c, const char *key,
                                                 struct hash128 cache_key)
{
    /* First entry with this key, then every shard holding it. */
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(c->entries[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < c->n && strcmp(c->entries[i].key, key) == 0; i++)
        if (hash_equal(c->entries[i].cache_key, cache_key))
            return &c->entries[i];
    return NULL;
}
