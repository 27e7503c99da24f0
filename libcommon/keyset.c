#include "libcommon/keyset.h"
#include "libcommon/hash.h"

#include <stdlib.h>

struct slot {
    struct hash128 hash;
    uint64_t where; /* 0 = empty */
};

struct keyset {
    struct slot *slots;
    size_t cap, used;
};

struct keyset *keyset_new(void)
{
    return calloc(1, sizeof(struct keyset));
}

void keyset_free(struct keyset *s)
{
    if (s)
        free(s->slots);
    free(s);
}

size_t keyset_count(const struct keyset *s)
{
    return s->used;
}

static int keyset_grow(struct keyset *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    struct slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i].where)
            continue;
        size_t j = s->slots[i].hash.lo & (cap - 1);
        while (slots[j].where)
            j = (j + 1) & (cap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

uint64_t keyset_insert(struct keyset *s, const char *key, size_t len, uint64_t where)
{
    /* At most 70% full keeps linear probing short. */
    if ((s->used + 1) * 10 > s->cap * 7 && keyset_grow(s) != 0)
        return UINT64_MAX;
    struct hash128 h = hash_buffer(key, len);
    size_t j = h.lo & (s->cap - 1);
    while (s->slots[j].where) {
        if (hash_equal(s->slots[j].hash, h))
            return s->slots[j].where;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j].hash = h;
    s->slots[j].where = where;
    s->used++;
    return 0;
}
