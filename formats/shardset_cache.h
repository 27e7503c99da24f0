/* What a shard-set directory already holds, for reuse across runs: every
 * valid dit-shard file's records (key, cache key, data hash, fields), read
 * from the shards' metadata, whether or not a manifest names them, so the
 * work of a killed run is found again. */
#ifndef DIT_SHARDSET_CACHE_H
#define DIT_SHARDSET_CACHE_H

#include "libcommon/hash.h"

#include <stddef.h>

struct shard_cache_entry {
    char *key;
    char *shard;  /* file name in the directory */
    char *bucket;
    char *fields; /* "latent,latent_flip" */
    struct hash128 cache_key, data_xxh3;
};

struct shard_cache {
    size_t n;
    struct shard_cache_entry *entries; /* sorted by key, then shard name */
    size_t n_shards;
    char **shards;   /* every valid shard file, sorted */
    size_t n_skipped; /* files that were not valid dit-shard files */
};

/* Scans dir (which may not exist yet: an empty cache). Hidden temporary
 * files of interrupted writes (".shard-*.tmp.*", ".manifest.tsv.tmp.*") are
 * removed. Invalid shards are skipped with a warning each. -1 with err_set()
 * only when dir exists but cannot be read. */
int shard_cache_scan(struct shard_cache *c, const char *dir);
void shard_cache_free(struct shard_cache *c);

/* The entry for key whose cache key matches, or NULL. */
const struct shard_cache_entry *shard_cache_find(const struct shard_cache *c, const char *key,
                                                 struct hash128 cache_key);

#endif
