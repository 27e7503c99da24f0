/* safetensors: writer/reader round trip, the malformed-file corpus, brute
 * force on truncations and corruptions, the files the Python package wrote,
 * and the sharded form. Fixtures: tests/reference/make_safetensors_fixtures.py. */
#include "tests/harness.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/safetensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

static double f16_to_double(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
    double v;
    if (exp == 0)
        v = ldexp(mant, -24);
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp(mant + 1024, exp - 25);
    return sign ? -v : v;
}

static double bf16_to_double(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Element i of t as a double; the data may be unaligned, so memcpy. */
static double element(const struct st_tensor *t, uint64_t i)
{
    const unsigned char *p = (const unsigned char *)t->data + i * st_dtype_size(t->dtype);
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f32;
        double f64;
    } u;
    memcpy(&u, p, st_dtype_size(t->dtype));
    switch (t->dtype) {
    case ST_BOOL: return u.u8 != 0;
    case ST_U8: return u.u8;
    case ST_I8: return u.i8;
    case ST_U16: return u.u16;
    case ST_I16: return u.i16;
    case ST_F16: return f16_to_double(u.u16);
    case ST_BF16: return bf16_to_double(u.u16);
    case ST_U32: return u.u32;
    case ST_I32: return u.i32;
    case ST_F32: return u.f32;
    case ST_U64: return (double)u.u64;
    case ST_I64: return (double)u.i64;
    case ST_F64: return u.f64;
    default: return NAN;
    }
}

static void format_shape(char *buf, size_t cap, const struct st_tensor *t)
{
    size_t used = snprintf(buf, cap, "[");
    for (int i = 0; i < t->ndim && used < cap; i++)
        used += snprintf(buf + used, cap - used, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* Checks t against one row of an expected.tsv: name, dtype, shape, sum, first. */
static void check_row(const struct st_tensor *t, char **col)
{
    char shape[256];
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_STR(t->name, col[0]);
    CHECK_STR(st_dtype_name(t->dtype), col[1]);
    format_shape(shape, sizeof shape, t);
    CHECK_STR(shape, col[2]);
    double sum = 0;
    for (uint64_t i = 0; i < t->nelem; i++)
        sum += element(t, i);
    double want = strtod(col[3], NULL);
    CHECK_NEAR(sum, want, 1e-9 * (1 + fabs(want)));
    if (strcmp(col[4], "-") == 0)
        CHECK_INT(t->nelem, 0);
    else if (t->nelem)
        CHECK_NEAR(element(t, 0), strtod(col[4], NULL), 0);
}

/* Splits a TSV file (header row skipped) into rows of up to 8 columns. */
struct tsv {
    char *text;
    int n;
    char *rows[64][8];
};

static void tsv_load(struct tsv *tv, const char *path)
{
    memset(tv, 0, sizeof *tv);
    tv->text = test_read_file(path, NULL);
    CHECK(tv->text != NULL);
    if (!tv->text)
        return;
    char *save = NULL, *line = strtok_r(tv->text, "\n", &save);
    for (line = strtok_r(NULL, "\n", &save); line && tv->n < 64; line = strtok_r(NULL, "\n", &save)) {
        int c = 0;
        for (char *p = line; c < 8; c++) {
            tv->rows[tv->n][c] = p;
            p = strchr(p, '\t');
            if (!p)
                break;
            *p++ = '\0';
        }
        tv->n++;
    }
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ------------------------------------------------------------- dtypes */

TEST(st_dtype_names_and_sizes)
{
    static const size_t sizes[ST_DTYPE_COUNT] = {1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8, 1, 1};
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        enum st_dtype dt;
        CHECK_INT(st_dtype_parse(st_dtype_name((enum st_dtype)i), &dt), 0);
        CHECK_INT(dt, i);
        CHECK_INT(st_dtype_size((enum st_dtype)i), sizes[i]);
    }
    CHECK_STR(st_dtype_name(ST_BF16), "BF16");
    CHECK_STR(st_dtype_name(ST_F8_E4M3), "F8_E4M3");
    CHECK_STR(st_dtype_name(ST_F8_E5M2), "F8_E5M2");
    enum st_dtype dt;
    CHECK_INT(st_dtype_parse("f32", &dt), -1);
    CHECK_INT(st_dtype_parse("F33", &dt), -1);
    CHECK_INT(st_dtype_parse("", &dt), -1);
}

/* ------------------------------------------------------------- round trip */

TEST(st_round_trip)
{
    float m[6] = {1.5f, -2, 3, 4.25f, 5, -6};
    uint16_t bf[4] = {0x3f80, 0xc000, 0x4040, 0x0000}; /* 1, -2, 3, 0 */
    int64_t s = -1234567890123LL;
    uint8_t img[6] = {0, 1, 2, 253, 254, 255};
    uint8_t flags[3] = {1, 0, 1};
    double r8[2] = {0.25, -0.5};
    uint8_t f8[2] = {0x38, 0xb8};
    int64_t shape_m[] = {2, 3}, shape_bf[] = {4}, shape_img[] = {2, 1, 3}, shape_e[] = {0, 5},
            shape_b[] = {3}, shape_r8[] = {1, 1, 1, 1, 1, 1, 1, 2}, shape_f8[] = {2};

    struct st_writer *w = st_writer_new();
    CHECK_INT(st_writer_add(w, "f32.m", ST_F32, 2, shape_m, m), 0);
    CHECK_INT(st_writer_add(w, "bf16.v", ST_BF16, 1, shape_bf, bf), 0);
    CHECK_INT(st_writer_add(w, "i64.scalar", ST_I64, 0, NULL, &s), 0);
    CHECK_INT(st_writer_add(w, "u8.img", ST_U8, 3, shape_img, img), 0);
    CHECK_INT(st_writer_add(w, "empty", ST_F16, 2, shape_e, NULL), 0);
    CHECK_INT(st_writer_add(w, "bool.b", ST_BOOL, 1, shape_b, flags), 0);
    CHECK_INT(st_writer_add(w, "f64.rank8", ST_F64, 8, shape_r8, r8), 0);
    CHECK_INT(st_writer_add(w, "f8", ST_F8_E4M3, 1, shape_f8, f8), 0);
    CHECK_INT(st_writer_meta(w, "format", "dit"), 0);
    CHECK_INT(st_writer_meta(w, "k", "v1"), 0);
    CHECK_INT(st_writer_meta(w, "k", "v2"), 0);
    CHECK_INT(st_writer_count(w), 8);
    CHECK_INT(st_writer_total_bytes(w), 24 + 8 + 8 + 6 + 0 + 3 + 16 + 2);

    /* Refusals leave the writer as it was. */
    CHECK_INT(st_writer_add(w, "u8.img", ST_U8, 1, shape_b, flags), -1);
    CHECK_CONTAINS(err_get(), "u8.img");
    CHECK_CONTAINS(err_get(), "duplicate");
    int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, neg[2] = {2, -1};
    CHECK_INT(st_writer_add(w, "x", ST_U8, 9, nine, img), -1);
    CHECK_CONTAINS(err_get(), "rank 9");
    CHECK_INT(st_writer_add(w, "x", ST_U8, -1, nine, img), -1);
    CHECK_INT(st_writer_add(w, "x", ST_U8, 2, neg, img), -1);
    CHECK_CONTAINS(err_get(), "negative");
    CHECK_INT(st_writer_add(w, "__metadata__", ST_U8, 1, shape_b, flags), -1);
    CHECK_CONTAINS(err_get(), "reserved");
    CHECK_INT(st_writer_add(w, "caf\xe9", ST_U8, 1, shape_b, flags), -1);
    CHECK_CONTAINS(err_get(), "UTF-8");
    CHECK_INT(st_writer_add(w, "x", ST_U8, 1, shape_b, NULL), -1);
    CHECK_CONTAINS(err_get(), "no data");
    CHECK_INT(st_writer_add(w, "x", ST_DTYPE_COUNT, 1, shape_b, flags), -1);
    CHECK_CONTAINS(err_get(), "unknown dtype");
    int64_t huge[3] = {1LL << 32, 1LL << 32, 16};
    CHECK_INT(st_writer_add(w, "x", ST_U8, 3, huge, img), -1);
    CHECK_CONTAINS(err_get(), "overflows");
    CHECK_INT(st_writer_count(w), 8);

    const char *path = test_tmp_path("rt.safetensors");
    CHECK_INT(st_writer_write(w, path), 0);
    CHECK_INT(count_files(test_tmpdir()), 1); /* no temporary left behind */

    struct st_file *f = st_open(path);
    CHECK(f != NULL);
    if (!f) {
        fprintf(stderr, "    %s\n", err_get());
        st_writer_free(w);
        return;
    }
    CHECK_STR(f->path, path);
    CHECK_INT((8 + f->header_size) % 8, 0);
    CHECK_INT(f->n_tensors, 8);
    /* Listed by name; laid out by element size, then name, so each tensor is
     * aligned to its element size in the file and in the mapping. */
    for (size_t i = 0; i + 1 < f->n_tensors; i++)
        CHECK(strcmp(f->tensors[i].name, f->tensors[i + 1].name) < 0);
    for (size_t i = 0; i < st_writer_count(w); i++) {
        const struct st_tensor *t = st_writer_tensor(w, i);
        size_t es = st_dtype_size(t->dtype);
        CHECK_INT(t->offset % es, 0);
        if (i == 0)
            CHECK_INT(t->offset, 0);
        else {
            const struct st_tensor *prev = st_writer_tensor(w, i - 1);
            CHECK_INT(prev->offset + prev->nbytes, t->offset);
            CHECK(st_dtype_size(prev->dtype) >= es);
        }
        const struct st_tensor *got = st_find(f, t->name);
        CHECK(got && (uintptr_t)got->data % es == 0);
    }
    CHECK_INT(f->file_size, 8 + f->header_size + st_writer_total_bytes(w));
    for (size_t i = 0; i < st_writer_count(w); i++) {
        const struct st_tensor *want = st_writer_tensor(w, i);
        const struct st_tensor *got = st_find(f, want->name);
        CHECK(got != NULL);
        if (!got)
            continue;
        CHECK_INT(got->dtype, want->dtype);
        CHECK_INT(got->ndim, want->ndim);
        for (int d = 0; d < want->ndim; d++)
            CHECK_INT(got->shape[d], want->shape[d]);
        CHECK_INT(got->nelem, want->nelem);
        CHECK_INT(got->nbytes, want->nbytes);
        CHECK_INT(got->offset, want->offset);
        CHECK(want->nbytes == 0 || memcmp(got->data, want->data, want->nbytes) == 0);
    }
    const struct st_tensor *t = st_find(f, "i64.scalar");
    CHECK(t && t->ndim == 0 && t->nelem == 1 && t->nbytes == 8);
    t = st_find(f, "empty");
    CHECK(t && t->nelem == 0 && t->nbytes == 0 && t->ndim == 2 && t->shape[1] == 5);
    t = st_find(f, "bf16.v");
    CHECK(t && element(t, 1) == -2.0 && element(t, 2) == 3.0);
    CHECK(st_find(f, "nope") == NULL);
    CHECK(st_find(f, "__metadata__") == NULL);
    CHECK_INT(f->n_meta, 2);
    CHECK_STR(f->meta[0].key, "format");
    CHECK_STR(st_meta_get(f, "format"), "dit");
    CHECK_STR(st_meta_get(f, "k"), "v2");
    CHECK(st_meta_get(f, "absent") == NULL);

    /* The same bytes through the buffer reader. */
    size_t size;
    char *bytes = test_read_file(path, &size);
    struct st_file *b = st_open_buffer("mem", bytes, size);
    CHECK(b != NULL);
    if (b) {
        CHECK_STR(b->path, "mem");
        CHECK_INT(b->n_tensors, 8);
        CHECK(st_find(b, "f32.m") && element(st_find(b, "f32.m"), 3) == 4.25);
    }
    st_close(b);
    free(bytes);
    st_close(f);
    st_close(NULL);

    CHECK_INT(st_writer_write(w, test_tmp_path("no/such/dir/x.safetensors")), -1);
    CHECK_CONTAINS(err_get(), "no/such/dir/x.safetensors");
    st_writer_free(w);
    st_writer_free(NULL);
}

TEST(st_writer_empty_and_many)
{
    struct st_writer *w = st_writer_new();
    const char *path = test_tmp_path("empty.safetensors");
    CHECK_INT(st_writer_write(w, path), 0);
    struct st_file *f = st_open(path);
    CHECK(f && f->n_tensors == 0 && f->n_meta == 0 && f->file_size == 16);
    st_close(f);

    /* Enough names to grow the duplicate set several times. */
    static uint32_t vals[3000];
    char name[32];
    for (int i = 0; i < 3000; i++) {
        vals[i] = (uint32_t)i * 2654435761u;
        snprintf(name, sizeof name, "k%05d/latent", (i * 7919) % 3000);
        int64_t one = 1;
        CHECK_INT(st_writer_add(w, name, ST_U32, 1, &one, &vals[i]), 0);
    }
    int64_t one = 1;
    CHECK_INT(st_writer_add(w, "k01234/latent", ST_U32, 1, &one, &vals[0]), -1);
    CHECK_INT(st_writer_write(w, path), 0);
    f = st_open(path);
    CHECK(f && f->n_tensors == 3000);
    for (int i = 0; f && i < 3000; i += 97) {
        snprintf(name, sizeof name, "k%05d/latent", (i * 7919) % 3000);
        const struct st_tensor *t = st_find(f, name);
        CHECK(t && memcmp(t->data, &vals[i], 4) == 0);
    }
    st_close(f);
    st_writer_free(w);
}

TEST(st_open_reports_io_errors)
{
    CHECK(st_open(test_tmp_path("absent.safetensors")) == NULL);
    CHECK_CONTAINS(err_get(), "absent.safetensors: cannot open");
    CHECK(st_open(test_tmpdir()) == NULL);
    CHECK_CONTAINS(err_get(), "not a regular file");
}

/* ------------------------------------------------------------- corpus */

static const struct {
    const char *file, *reason;
} bad_files[] = {
    {"empty", "file is 0 bytes, shorter than the 8-byte header length"},
    {"short", "file is 5 bytes, shorter than the 8-byte header length"},
    {"header_past_file", "header length 120 exceeds the file size 51"},
    {"header_plus_prefix", "header length 16 exceeds the file size 20 less the 8-byte length field"},
    {"header_huge", "header length 4611686018427387904 exceeds the file size 16 and the 100000000-byte limit"},
    {"empty_header", "header is empty"},
    {"truncated_data", "tensor 'b': data_offsets [24,40] run past the end of the data section (30 bytes)"},
    {"bad_utf8", "header is not valid UTF-8 (header byte 5)"},
    {"overlong_utf8", "header is not valid UTF-8 (header byte 3)"},
    {"surrogate_utf8", "header is not valid UTF-8 (header byte 3)"},
    {"not_object", "header is not a JSON object: it begins with '['"},
    {"invalid_json", "header is not valid JSON: string or '}' expected near end of file"},
    {"trailing_garbage", "header is not valid JSON: end of file expected near 'x'"},
    {"nul_padding", "header contains a NUL byte (header byte 2)"},
    {"duplicate_names", "duplicate name in the header (duplicate object key near '\"a\"'"},
    {"entry_not_object", "tensor 'a': entry is not an object"},
    {"missing_dtype", "tensor 'a': dtype is missing or not a string"},
    {"unknown_dtype", "tensor 'a': unknown dtype 'F33'"},
    {"shape_missing", "tensor 'a': shape is missing or not an array"},
    {"shape_float", "tensor 'a': shape element 0 is not an integer"},
    {"negative_shape", "tensor 'a': shape [2,-3] has a negative dimension"},
    {"rank_too_big", "tensor 'a': rank 9 exceeds the maximum of 8"},
    {"shape_overflow", "tensor 'a': dtype U8 x shape [4294967296,4294967296,16] overflows 64 bits"},
    {"shape_mismatch", "tensor 'a': dtype F32 x shape [2,3] needs 24 bytes but data_offsets span 20"},
    {"offsets_bad", "tensor 'a': data_offsets is not an array of two non-negative integers"},
    {"offset_too_big", "header is not valid JSON: too big integer"},
    {"begin_after_end", "tensor 'a': data_offsets [24,0]: begin is after end"},
    {"out_of_bounds", "tensor 'b': data_offsets [8,4096] run past the end of the data section (16 bytes)"},
    {"overlap", "tensor 'b' at [16,40] overlaps tensor 'a' at [0,24]"},
    {"overlap_alias", "tensor 'b' at [0,24] overlaps tensor 'a' at [0,24]"},
    {"gap", "gap of 8 bytes between tensor 'a' (ends at 24) and tensor 'b' (begins at 32)"},
    {"gap_start", "gap of 8 bytes before the first tensor 'a' (begins at 8)"},
    {"trailing_bytes", "data section has 16 bytes but the tensors end at 8 (8 trailing bytes)"},
    {"metadata_non_string", "__metadata__ value for key 'step' is not a string"},
    {"metadata_not_object", "__metadata__ is not an object"},
};

TEST(st_bad_corpus)
{
    size_t n = sizeof bad_files / sizeof bad_files[0];
    /* A fixture without a row here would go untested. */
    CHECK_INT(count_files(test_source_path("fixtures/safetensors/bad")), n);
    for (size_t i = 0; i < n; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "fixtures/safetensors/bad/%s.safetensors", bad_files[i].file);
        const char *path = test_source_path(rel);
        err_clear();
        struct st_file *f = st_open(path);
        if (f) {
            test_fail(__FILE__, __LINE__, "%s opened", path);
            st_close(f);
            continue;
        }
        char want[512];
        snprintf(want, sizeof want, "%s: ", path);
        CHECK_CONTAINS(err_get(), want);
        CHECK_CONTAINS(err_get(), bad_files[i].reason);

        /* The buffer reader gives the same reason, on an exact-size heap
         * copy that ASan watches byte by byte. */
        size_t size;
        char *bytes = test_read_file(path, &size);
        char *exact = malloc(size ? size : 1);
        memcpy(exact, bytes, size);
        f = st_open_buffer(bad_files[i].file, exact, size);
        CHECK(f == NULL);
        st_close(f);
        CHECK_CONTAINS(err_get(), bad_files[i].reason);
        free(exact);
        free(bytes);
    }
}

static const struct {
    const char *file;
    size_t n_tensors;
} good_files[] = {
    {"newline_padding", 1},
    {"no_tensors", 0},
    {"unaligned", 1},
    {"zero_size_and_scalar", 5},
};

TEST(st_good_corpus)
{
    size_t n = sizeof good_files / sizeof good_files[0];
    CHECK_INT(count_files(test_source_path("fixtures/safetensors/good")), n);
    for (size_t i = 0; i < n; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "fixtures/safetensors/good/%s.safetensors", good_files[i].file);
        struct st_file *f = st_open(test_source_path(rel));
        CHECK(f != NULL);
        if (!f) {
            fprintf(stderr, "    %s\n", err_get());
            continue;
        }
        CHECK_INT(f->n_tensors, good_files[i].n_tensors);
        st_close(f);
    }
    struct st_file *f = st_open(test_source_path("fixtures/safetensors/good/unaligned.safetensors"));
    const struct st_tensor *t = st_find(f, "x");
    CHECK(t && t->nelem == 3 && element(t, 0) == 1.0 && element(t, 2) == 3.0);
    st_close(f);
    f = st_open(test_source_path("fixtures/safetensors/good/zero_size_and_scalar.safetensors"));
    CHECK(f && f->n_meta == 0);
    t = st_find(f, "s");
    CHECK(t && t->ndim == 0 && t->offset == 8 && element(t, 0) == 3.25);
    t = st_find(f, "e1");
    CHECK(t && t->nbytes == 0 && t->offset == 8);
    st_close(f);
}

/* A sparse file: the limit check must not need 100 MB of disk. */
TEST(st_header_limit)
{
    const char *path = test_tmp_path("big.safetensors");
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CHECK(fd >= 0);
    unsigned char prefix[8] = {0};
    uint64_t n = ST_MAX_HEADER_SIZE + 8;
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)(n >> (8 * i));
    CHECK_INT(write(fd, prefix, 8), 8);
    CHECK_INT(write(fd, "{", 1), 1);
    CHECK_INT(ftruncate(fd, (off_t)(ST_MAX_HEADER_SIZE + 64)), 0);
    close(fd);
    CHECK(st_open(path) == NULL);
    CHECK_CONTAINS(err_get(), "header length 100000008 exceeds the 100000000-byte limit");
}

/* ------------------------------------------------------------- brute force */

/* Opens bytes through st_open_buffer from an exact-size heap copy; whatever
 * the outcome, every byte of every tensor is read so ASan sees any stray
 * pointer, and the result is checked for the promised invariants. */
static void open_and_walk(const unsigned char *bytes, size_t size, unsigned *n_ok)
{
    unsigned char *copy = malloc(size ? size : 1);
    memcpy(copy, bytes, size);
    err_clear();
    struct st_file *f = st_open_buffer("fuzz.safetensors", copy, size);
    if (!f) {
        CHECK_CONTAINS(err_get(), "fuzz.safetensors: ");
    } else {
        (*n_ok)++;
        uint64_t data_size = f->file_size - 8 - f->header_size, total = 0;
        unsigned sum = 0;
        for (size_t i = 0; i < f->n_tensors; i++) {
            const struct st_tensor *t = &f->tensors[i];
            CHECK(t->nbytes == t->nelem * st_dtype_size(t->dtype));
            CHECK(t->offset + t->nbytes <= data_size);
            CHECK(i == 0 || strcmp(f->tensors[i - 1].name, t->name) < 0);
            for (uint64_t k = 0; k < t->nbytes; k++)
                sum += ((const unsigned char *)t->data)[k];
            total += t->nbytes;
        }
        CHECK_INT(total, data_size);
        for (size_t i = 0; i < f->n_meta; i++)
            sum += (unsigned)strlen(f->meta[i].key) + (unsigned)strlen(f->meta[i].value);
        (void)sum;
        st_close(f);
    }
    free(copy);
}

static void brute_force(const char *path)
{
    size_t size;
    unsigned char *bytes = (unsigned char *)test_read_file(path, &size);
    CHECK(bytes != NULL);
    if (!bytes)
        return;
    unsigned n_ok = 0;
    /* Every strict prefix drops bytes some part of the file needs. */
    for (size_t len = 0; len < size; len++)
        open_and_walk(bytes, len, &n_ok);
    CHECK_INT(n_ok, 0);
    open_and_walk(bytes, size, &n_ok);
    CHECK_INT(n_ok, 1);

    /* Single-byte corruptions from a fixed LCG: reproducible failures. */
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    unsigned char *work = malloc(size);
    for (int i = 0; i < 4000; i++) {
        memcpy(work, bytes, size);
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t pos = (size_t)((state >> 33) % size);
        /* Mostly the header and the length, where the parser lives. */
        if (i % 4 != 3)
            pos = (size_t)((state >> 33) % (size < 400 ? size : 400));
        unsigned char v = (unsigned char)(state >> 13);
        if (v == work[pos])
            v ^= 0x5A;
        work[pos] = v;
        open_and_walk(work, size, &n_ok);
    }
    free(work);

    /* A few truncations through the file reader too (mmap path). */
    const char *tmp = test_tmp_path("cut.safetensors");
    for (size_t len = 0; len < size; len += 1 + len / 4) {
        test_write_file(tmp, bytes, len);
        struct st_file *f = st_open(tmp);
        CHECK(f == NULL);
        CHECK_CONTAINS(err_get(), "cut.safetensors: ");
        st_close(f);
    }
    free(bytes);
}

TEST(st_brute_force_python_fixture)
{
    brute_force(test_source_path("fixtures/safetensors/python_fixture.safetensors"));
}

TEST(st_brute_force_written)
{
    uint16_t h[5] = {1, 2, 3, 4, 5};
    int64_t shape[] = {5}, zero[] = {0};
    struct st_writer *w = st_writer_new();
    CHECK_INT(st_writer_add(w, "a", ST_F16, 1, shape, h), 0);
    CHECK_INT(st_writer_add(w, "b", ST_U8, 1, shape, h), 0);
    CHECK_INT(st_writer_add(w, "z", ST_F32, 1, zero, NULL), 0);
    CHECK_INT(st_writer_meta(w, "format", "pt"), 0);
    const char *path = test_tmp_path("w.safetensors");
    CHECK_INT(st_writer_write(w, path), 0);
    st_writer_free(w);
    brute_force(path);
}

/* ------------------------------------------------------------- Python files */

TEST(st_python_fixture)
{
    struct st_file *f = st_open(test_source_path("fixtures/safetensors/python_fixture.safetensors"));
    CHECK(f != NULL);
    if (!f) {
        fprintf(stderr, "    %s\n", err_get());
        return;
    }
    struct tsv tv;
    tsv_load(&tv, test_source_path("fixtures/safetensors/python_fixture.expected.tsv"));
    CHECK_INT(tv.n, 7);
    CHECK_INT(f->n_tensors, tv.n);
    for (int i = 0; i < tv.n; i++) {
        check_row(st_find(f, tv.rows[i][0]), tv.rows[i]);
        /* The expected rows are in name order too. */
        if (i < (int)f->n_tensors)
            CHECK_STR(f->tensors[i].name, tv.rows[i][0]);
    }
    CHECK_STR(st_meta_get(f, "format"), "pt");
    CHECK_STR(st_meta_get(f, "producer"), "make_safetensors_fixtures.py");
    free(tv.text);
    st_close(f);
}

/* ------------------------------------------------------------- sets */

static const char *basename_of(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

TEST(st_set_python_sharded)
{
    const char *index = test_source_path("fixtures/safetensors/sharded/model.safetensors.index.json");
    struct st_set *s = st_set_open(index);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "    %s\n", err_get());
        return;
    }
    CHECK_STR(s->path, index);
    CHECK_INT(s->n_files, 2);
    struct tsv tv;
    tsv_load(&tv, test_source_path("fixtures/safetensors/sharded.expected.tsv"));
    CHECK_INT(tv.n, 5);
    CHECK_INT(s->n_tensors, tv.n);
    for (int i = 0; i < tv.n; i++) {
        const struct st_file *file = NULL;
        const struct st_tensor *t = st_set_tensor(s, (size_t)i, &file);
        check_row(t, tv.rows[i]);
        CHECK(file != NULL);
        if (file)
            CHECK_STR(basename_of(file->path), tv.rows[i][5]);
        const struct st_file *file2 = NULL;
        CHECK(st_set_find(s, tv.rows[i][0], &file2) == t);
        CHECK(file2 == file);
    }
    CHECK(st_set_tensor(s, 5, NULL) == NULL);
    CHECK(st_set_find(s, "absent", NULL) == NULL);
    CHECK_STR(st_meta_get(s->files[0], "format"), "pt");
    free(tv.text);
    st_set_close(s);

    /* A single file is a set of one. */
    s = st_set_open(test_source_path("fixtures/safetensors/python_fixture.safetensors"));
    CHECK(s && s->n_files == 1 && s->n_tensors == 7);
    CHECK(s && st_set_find(s, "bf16.cube", NULL) == st_find(s->files[0], "bf16.cube"));
    st_set_close(s);
    st_set_close(NULL);
}

static struct st_writer *sample_writer(float *buf)
{
    static const char *names[] = {"blk.0.w", "blk.0.b", "blk.1.w", "blk.1.b", "big", "tiny"};
    static const int64_t sizes[] = {8, 2, 8, 2, 40, 1};
    struct st_writer *w = st_writer_new();
    int used = 0;
    for (int i = 0; i < 6; i++) {
        for (int k = 0; k < sizes[i]; k++)
            buf[used + k] = (float)(i * 100 + k);
        CHECK_INT(st_writer_add(w, names[i], ST_F32, 1, &sizes[i], buf + used), 0);
        used += (int)sizes[i];
    }
    CHECK_INT(st_writer_meta(w, "format", "pt"), 0);
    return w;
}

static void check_set_matches(const struct st_set *s, struct st_writer *w)
{
    CHECK_INT(s->n_tensors, st_writer_count(w));
    for (size_t i = 0; i < st_writer_count(w); i++) {
        const struct st_tensor *want = st_writer_tensor(w, i);
        const struct st_file *file = NULL;
        const struct st_tensor *got = st_set_tensor(s, i, &file);
        CHECK(got != NULL);
        if (!got)
            continue;
        CHECK_STR(got->name, want->name);
        CHECK_INT(got->nbytes, want->nbytes);
        CHECK(memcmp(got->data, want->data, want->nbytes) == 0);
        CHECK_STR(st_meta_get(file, "format"), "pt");
    }
}

TEST(st_write_sharded_round_trip)
{
    float buf[64];
    struct st_writer *w = sample_writer(buf);
    /* Name order: big 160, blk.0.b 8, blk.0.w 32, blk.1.b 8, blk.1.w 32, tiny 4.
     * With 48 bytes a shard: [big] [blk.0.b blk.0.w blk.1.b] [blk.1.w tiny]. */
    const char *dir = test_tmpdir();
    CHECK_INT(st_write_sharded(w, dir, "model", 48), 0);
    CHECK(file_exists(test_tmp_path("model-00001-of-00003.safetensors")));
    CHECK(file_exists(test_tmp_path("model-00002-of-00003.safetensors")));
    CHECK(file_exists(test_tmp_path("model-00003-of-00003.safetensors")));
    CHECK(!file_exists(test_tmp_path("model.safetensors")));
    CHECK_INT(count_files(dir), 4);

    const char *index = test_tmp_path("model.safetensors.index.json");
    json_t *j = json_read_file(index);
    CHECK(j != NULL);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(j, "metadata"), "total_size")),
              st_writer_total_bytes(w));
    json_t *map = json_object_get(j, "weight_map");
    CHECK_INT(json_object_size(map), 6);
    CHECK_STR(json_string_value(json_object_get(map, "big")), "model-00001-of-00003.safetensors");
    CHECK_STR(json_string_value(json_object_get(map, "blk.1.b")), "model-00002-of-00003.safetensors");
    CHECK_STR(json_string_value(json_object_get(map, "tiny")), "model-00003-of-00003.safetensors");
    json_decref(j);

    struct st_set *s = st_set_open(index);
    CHECK(s != NULL);
    if (s) {
        CHECK_INT(s->n_files, 3);
        check_set_matches(s, w);
        const struct st_file *file = NULL;
        CHECK(st_set_find(s, "blk.0.w", &file) != NULL);
        CHECK(file && strstr(file->path, "model-00002-of-00003.safetensors"));
        CHECK_INT(st_set_find(s, "blk.0.w", NULL)->offset, 8); /* offsets restart per shard */
    }
    st_set_close(s);

    /* No limit, or a limit the total fits in: one plain file, no index. */
    char sub[2][4096];
    uint64_t limits[2] = {0, 1000};
    for (int k = 0; k < 2; k++) {
        snprintf(sub[k], sizeof sub[k], "%s/one%d/", dir, k);
        mkdir(sub[k], 0755);
        CHECK_INT(st_write_sharded(w, sub[k], "diffusion_pytorch_model", limits[k]), 0);
        CHECK_INT(count_files(sub[k]), 1);
        char path[4200];
        snprintf(path, sizeof path, "%sdiffusion_pytorch_model.safetensors", sub[k]);
        s = st_set_open(path);
        CHECK(s && s->n_files == 1);
        if (s)
            check_set_matches(s, w);
        st_set_close(s);
    }

    CHECK_INT(st_write_sharded(w, dir, "a/b", 0), -1);
    CHECK_INT(st_write_sharded(w, test_tmp_path("missing"), "m", 48), -1);
    CHECK_CONTAINS(err_get(), "missing/m-00001-of-00003.safetensors");
    st_writer_free(w);
}

/* Writes NAME.safetensors holding U8 tensors of one byte each. */
static void write_shard(const char *name, const char *t1, const char *t2)
{
    static const uint8_t bytes[2] = {7, 9};
    int64_t one = 1;
    struct st_writer *w = st_writer_new();
    CHECK_INT(st_writer_add(w, t1, ST_U8, 1, &one, &bytes[0]), 0);
    if (t2)
        CHECK_INT(st_writer_add(w, t2, ST_U8, 1, &one, &bytes[1]), 0);
    CHECK_INT(st_writer_write(w, test_tmp_path(name)), 0);
    st_writer_free(w);
}

static void expect_set_error(const char *index_json, const char *reason)
{
    const char *index = test_tmp_path("m.safetensors.index.json");
    test_write_file(index, index_json, strlen(index_json));
    err_clear();
    struct st_set *s = st_set_open(index);
    CHECK(s == NULL);
    st_set_close(s);
    CHECK_CONTAINS(err_get(), index);
    CHECK_CONTAINS(err_get(), reason);
}

TEST(st_set_errors)
{
    write_shard("a.safetensors", "x", "w");
    write_shard("b.safetensors", "x", "y");
    write_shard("c.safetensors", "z", NULL);

    /* Sanity: a consistent index opens. */
    const char *ok = "{\"metadata\": {\"total_size\": 3}, \"weight_map\": "
                     "{\"x\": \"a.safetensors\", \"w\": \"a.safetensors\", \"z\": \"c.safetensors\"}}";
    const char *index = test_tmp_path("m.safetensors.index.json");
    test_write_file(index, ok, strlen(ok));
    struct st_set *s = st_set_open(index);
    CHECK(s && s->n_files == 2 && s->n_tensors == 3);
    if (s)
        CHECK_STR(st_set_tensor(s, 0, NULL)->name, "w");
    st_set_close(s);

    expect_set_error("{\"weight_map\": {\"x\": \"a.safetensors\", \"w\": \"a.safetensors\", "
                     "\"q\": \"missing.safetensors\"}}",
                     "missing.safetensors: cannot open: No such file or directory");
    expect_set_error("{\"weight_map\": {\"x\": \"a.safetensors\", \"w\": \"a.safetensors\", "
                     "\"v\": \"a.safetensors\"}}",
                     "tensor 'v' is mapped to a.safetensors but that file does not contain it");
    expect_set_error("{\"weight_map\": {\"x\": \"a.safetensors\", \"w\": \"a.safetensors\", "
                     "\"y\": \"b.safetensors\"}}",
                     "tensor 'x' is in both ");
    expect_set_error("{\"weight_map\": {\"x\": \"a.safetensors\"}}",
                     "tensor 'w' in ");
    expect_set_error("{\"weight_map\": {\"x\": \"a.safetensors\"}}",
                     "a.safetensors is not listed in the weight_map");
    expect_set_error("{\"weight_map\": {\"x\": \"../a.safetensors\"}}",
                     "tensor 'x' maps to '../a.safetensors', which is outside the index's directory");
    expect_set_error("{\"weight_map\": {\"x\": \"/etc/a.safetensors\"}}", "outside the index's directory");
    expect_set_error("{\"weight_map\": {\"x\": 3}}", "weight_map entry for tensor 'x' is not a string");
    expect_set_error("{\"metadata\": {}}", "no \"weight_map\" object");
    expect_set_error("{\"weight_map\": {\"x\": \"a.safetensors\", \"x\": \"a.safetensors\"}}",
                     "duplicate object key");
    expect_set_error("[]", "index is not a JSON object");

    /* A bad shard is named with the index as context. */
    test_write_file(test_tmp_path("bad.safetensors"), "abc", 3);
    expect_set_error("{\"weight_map\": {\"x\": \"bad.safetensors\"}}",
                     "bad.safetensors: file is 3 bytes");

    CHECK(st_set_open(test_tmp_path("absent.safetensors")) == NULL);
    CHECK_CONTAINS(err_get(), "absent.safetensors: cannot open");
}
