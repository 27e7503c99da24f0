/* content hashes: xxh3-128 goldens, streaming, files, hex form */
#include "tests/harness.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"

#include <stdio.h>
#include <stdlib.h>

static unsigned char *pattern(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 31 + 7);
    return p;
}

static void check_hex(struct hash128 h, const char *want, const char *what)
{
    char hex[33];
    hash_hex(h, hex);
    if (strcmp(hex, want) != 0)
        test_fail(__FILE__, __LINE__, "%s: %s, want %s", what, hex, want);
}

TEST(xxh3_128_goldens)
{
    char *text = test_read_file(test_source_path("fixtures/numeric/xxh3_128.txt"), NULL);
    CHECK(text != NULL);
    if (!text)
        return;
    int strings = 0, patterns = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char kind[16], hex[40];
        int used = 0;
        if (sscanf(line, "%15s %39s%n", kind, hex, &used) != 2) {
            test_fail(__FILE__, __LINE__, "bad golden line: %s", line);
            continue;
        }
        const char *rest = line[used] == ' ' ? line + used + 1 : line + used;
        if (strcmp(kind, "string") == 0) {
            check_hex(hash_buffer(rest, strlen(rest)), hex, rest);
            strings++;
        } else if (strcmp(kind, "pattern") == 0) {
            size_t n = strtoul(rest, NULL, 10);
            unsigned char *p = pattern(n);
            check_hex(hash_buffer(p, n), hex, rest);
            free(p);
            patterns++;
        } else {
            test_fail(__FILE__, __LINE__, "bad golden kind: %s", kind);
        }
    }
    free(text);
    CHECK(strings >= 5);
    CHECK(patterns >= 10);
    /* The published hash of the empty input, independent of the fixture. */
    check_hex(hash_buffer("", 0), "99aa06d3014798d86001c324468d497f", "empty");
}

TEST(streaming_equals_one_shot)
{
    static const size_t sizes[] = {0, 1, 3, 16, 17, 240, 241, 1023, 4096, 65537, 300007};
    static const size_t chunks[] = {1, 2, 7, 63, 64, 255, 4099, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = pattern(n);
        struct hash128 one = hash_buffer(p, n);
        for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
            if (chunks[c] == 1 && n > 5000)
                continue; /* byte by byte is slow under the sanitizers */
            struct hash_state *s = hash_begin();
            CHECK(s != NULL);
            /* Uneven pieces: the chunk size, then growing by one. */
            size_t off = 0, step = chunks[c];
            while (off < n) {
                size_t k = n - off < step ? n - off : step;
                hash_update(s, p + off, k);
                off += k;
                step++;
            }
            hash_update(s, p, 0);
            struct hash128 h = hash_end(s);
            if (!hash_equal(h, one))
                test_fail(__FILE__, __LINE__, "size %zu chunk %zu differs", n, chunks[c]);
        }
        free(p);
    }
}

TEST(hash_file_equals_hash_buffer)
{
    static const size_t sizes[] = {0, 5, 1 << 20, (1 << 20) + 12345, 3 * (1 << 20) + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = pattern(sizes[i]);
        const char *path = test_tmp_path("data.bin");
        test_write_file(path, p, sizes[i]);
        struct hash128 h = {1, 2};
        CHECK_INT(hash_file(path, &h), 0);
        CHECK(hash_equal(h, hash_buffer(p, sizes[i])));
        free(p);
    }
}

TEST(hash_file_errors_name_the_path)
{
    struct hash128 h = {7, 8};
    const char *missing = test_tmp_path("no-such-file.bin");
    CHECK_INT(hash_file(missing, &h), -1);
    CHECK_CONTAINS(err_get(), missing);
    CHECK_CONTAINS(err_get(), "No such file");
    CHECK(h.hi == 7 && h.lo == 8);

    CHECK_INT(hash_file(test_tmpdir(), &h), -1); /* a directory cannot be read */
    CHECK_CONTAINS(err_get(), test_tmpdir());
}

TEST(hex_round_trip_and_parse_errors)
{
    struct hash128 h = {0x0123456789abcdefu, 0xfedcba9876543210u};
    char hex[33];
    hash_hex(h, hex);
    CHECK_STR(hex, "0123456789abcdeffedcba9876543210");
    struct hash128 back;
    CHECK_INT(hash_parse_hex(hex, &back), 0);
    CHECK(hash_equal(back, h));
    CHECK_INT(hash_parse_hex("0123456789ABCDEFFEDCBA9876543210", &back), 0);
    CHECK(hash_equal(back, h));

    for (int i = 0; i < 100; i++) {
        unsigned char b[8] = {(unsigned char)i};
        struct hash128 x = hash_buffer(b, sizeof b), y;
        hash_hex(x, hex);
        CHECK_INT(strlen(hex), 32);
        CHECK_INT(hash_parse_hex(hex, &y), 0);
        CHECK(hash_equal(x, y));
    }

    struct hash128 untouched = {5, 6};
    CHECK_INT(hash_parse_hex("", &untouched), -1);
    CHECK_INT(hash_parse_hex("0123456789abcdeffedcba987654321", &untouched), -1);   /* 31 */
    CHECK_INT(hash_parse_hex("0123456789abcdeffedcba98765432100", &untouched), -1); /* 33 */
    CHECK_INT(hash_parse_hex("0123456789abcdeffedcba987654321g", &untouched), -1);
    CHECK_INT(hash_parse_hex(" 123456789abcdeffedcba9876543210", &untouched), -1);
    CHECK_CONTAINS(err_get(), "expected 32 hex digits");
    CHECK(untouched.hi == 5 && untouched.lo == 6);
    CHECK(!hash_equal((struct hash128){1, 2}, (struct hash128){1, 3}));
    CHECK(!hash_equal((struct hash128){1, 2}, (struct hash128){0, 2}));
}
