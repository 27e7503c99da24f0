#include "libcommon/hash.h"

#include "libcommon/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

struct hash_state {
    XXH3_state_t *xxh;
};

static struct hash128 from_xxh(XXH128_hash_t h)
{
    return (struct hash128){.hi = h.high64, .lo = h.low64};
}

struct hash128 hash_buffer(const void *data, size_t size)
{
    return from_xxh(XXH3_128bits(data, size));
}

struct hash_state *hash_begin(void)
{
    struct hash_state *s = malloc(sizeof *s);
    if (s)
        s->xxh = XXH3_createState();
    if (!s || !s->xxh) {
        free(s);
        err_set("hash: out of memory");
        return NULL;
    }
    XXH3_128bits_reset(s->xxh);
    return s;
}

void hash_update(struct hash_state *s, const void *data, size_t size)
{
    if (size)
        XXH3_128bits_update(s->xxh, data, size);
}

struct hash128 hash_end(struct hash_state *s)
{
    struct hash128 h = from_xxh(XXH3_128bits_digest(s->xxh));
    XXH3_freeState(s->xxh);
    free(s);
    return h;
}

/* Large enough that syscalls do not dominate, small enough for any stack
 * policy: it lives on the heap with the state. */
#define HASH_READ_SIZE (1 << 20)

int hash_file(const char *path, struct hash128 *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set("%s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(HASH_READ_SIZE);
    struct hash_state *s = hash_begin();
    if (!buf || !s) {
        free(buf);
        if (s)
            hash_end(s);
        close(fd);
        err_set("%s: out of memory", path);
        return -1;
    }
    for (;;) {
        ssize_t n = read(fd, buf, HASH_READ_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            hash_end(s);
            free(buf);
            close(fd);
            err_set("%s: %s", path, strerror(e));
            return -1;
        }
        if (n == 0)
            break;
        hash_update(s, buf, (size_t)n);
    }
    free(buf);
    close(fd);
    *out = hash_end(s);
    return 0;
}

void hash_hex(struct hash128 h, char out[33])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[i] = digits[(h.hi >> (60 - 4 * i)) & 0xf];
        out[16 + i] = digits[(h.lo >> (60 - 4 * i)) & 0xf];
    }
    out[32] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int hash_parse_hex(const char *s, struct hash128 *out)
{
    uint64_t w[2] = {0, 0};
    for (int i = 0; i < 32; i++) {
        int v = hex_value(s[i]); /* stops at the NUL of a short string */
        if (v < 0) {
            err_set("invalid hash \"%.40s\": expected 32 hex digits", s);
            return -1;
        }
        w[i / 16] = w[i / 16] << 4 | (uint64_t)v;
    }
    if (s[32] != '\0') {
        err_set("invalid hash \"%.40s\": expected 32 hex digits", s);
        return -1;
    }
    out->hi = w[0];
    out->lo = w[1];
    return 0;
}

int hash_equal(struct hash128 a, struct hash128 b)
{
    return a.hi == b.hi && a.lo == b.lo;
}
