/* Content hashes: XXH3-128 (seed 0) through the system xxHash library.
 *
 * Manifests and shard sets record these hashes, and users check them with
 * `xxh128sum`, so the text form is the one that tool prints. The library is
 * the reference implementation; nothing here reimplements xxh3. */
#ifndef DIT_HASH_H
#define DIT_HASH_H

#include <stddef.h>
#include <stdint.h>

/* hi is the upper 64 bits: the first 16 hex digits of the canonical form. */
struct hash128 {
    uint64_t hi, lo;
};

struct hash128 hash_buffer(const void *data, size_t size);

/* Hashes a whole file by streaming reads (any size, little memory).
 * 0, or -1 with err_set("PATH: reason"); *out is untouched on failure. */
int hash_file(const char *path, struct hash128 *out);

/* Streaming: begin, any number of updates, end. Splitting the input into
 * updates does not change the result. hash_begin returns NULL with err_set()
 * when out of memory; hash_end frees the state. */
struct hash_state;
struct hash_state *hash_begin(void);
void hash_update(struct hash_state *s, const void *data, size_t size);
struct hash128 hash_end(struct hash_state *s);

/* 32 lowercase hex digits and a NUL: the canonical big-endian form, as
 * `xxh128sum` and `xxhsum -H2` print it. */
void hash_hex(struct hash128 h, char out[33]);
/* Parses exactly 32 hex digits (either case). 0, or -1 with err_set(). */
int hash_parse_hex(const char *s, struct hash128 *out);
int hash_equal(struct hash128 a, struct hash128 b);

#endif
