/* A set of strings kept as 128-bit hashes, remembering where each was first
 * seen: duplicate-key checks over millions of records in 24 bytes each. */
#ifndef DIT_KEYSET_H
#define DIT_KEYSET_H

#include <stddef.h>
#include <stdint.h>

struct keyset;

struct keyset *keyset_new(void);
void keyset_free(struct keyset *s);
/* Adds key, seen at `where` (a line or record number, not 0). Returns 0 when
 * the key is new, the first `where` when it was already there, or
 * UINT64_MAX when out of memory. */
uint64_t keyset_insert(struct keyset *s, const char *key, size_t len, uint64_t where);
size_t keyset_count(const struct keyset *s);

#endif
