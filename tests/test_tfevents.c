/* TensorBoard event files: byte equality with tensorboard's own writer
 * (tests/reference/make_tfevents_golden.py), read-back, CRC and truncation. */
#include "tests/harness.h"
#include "libcommon/error.h"
#include "libcommon/tfevents.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* The EVENTS of make_tfevents_golden.py; keep the two lists equal. */
#define FIRST_WALL_TIME 1700000000.5
#define PNG_W 3
#define PNG_H 2

static const struct golden_event {
    const char *tag; /* NULL: the image */
    int64_t step;
    double wall_time;
    float value;
} EVENTS[] = {
    {"loss", 0, 1700000001.0, 0.75f},
    {"loss", 1, 1700000002.25, 0.5f},
    {"lr", 1, 1700000002.25, 1e-4f},
    {"loss", 2, 1700000003.5, 0.0f},
    {"train/grad_norm", 100, 1700000010.125, -3.5f},
    {NULL, 100, 1700000010.5, 0},
    {"loss", (int64_t)1 << 40, 1700000100.0, 1e30f},
};
#define N_EVENTS (int)(sizeof EVENTS / sizeof EVENTS[0])
#define N_SCALARS (N_EVENTS - 1)
#define IMAGE_TAG "samples/grid"

static void write_events(struct tfevents *w, const void *png, size_t png_size)
{
    for (int i = 0; i < N_EVENTS; i++) {
        const struct golden_event *e = &EVENTS[i];
        if (e->tag)
            CHECK_INT(tfevents_scalar(w, e->tag, e->step, e->wall_time, e->value), 0);
        else
            CHECK_INT(tfevents_image(w, IMAGE_TAG, e->step, e->wall_time, PNG_W, PNG_H, 3, png, png_size), 0);
    }
}

struct seen {
    int n_scalars, n_images;
    char tags[16][32];
    int64_t steps[16];
    float values[16];
    struct tfevents_image image; /* tag and png copied below */
    char image_tag[32];
    unsigned char png[256];
};

static void on_scalar(void *ctx, const char *tag, int64_t step, float value)
{
    struct seen *s = ctx;
    if (s->n_scalars < 16) {
        snprintf(s->tags[s->n_scalars], sizeof s->tags[0], "%s", tag);
        s->steps[s->n_scalars] = step;
        s->values[s->n_scalars] = value;
    }
    s->n_scalars++;
}

static void on_image(void *ctx, const struct tfevents_image *img)
{
    struct seen *s = ctx;
    s->n_images++;
    s->image = *img;
    snprintf(s->image_tag, sizeof s->image_tag, "%s", img->tag);
    s->image.tag = s->image_tag;
    s->image.png = NULL;
    if (img->png_size <= sizeof s->png)
        memcpy(s->png, img->png, img->png_size);
}

/* The scalars of EVENTS in order, the first n of them. */
static void check_scalars(const struct seen *s, int n)
{
    CHECK_INT(s->n_scalars, n);
    for (int i = 0, k = 0; i < N_EVENTS && k < n && k < s->n_scalars; i++) {
        if (!EVENTS[i].tag)
            continue;
        CHECK_STR(s->tags[k], EVENTS[i].tag);
        CHECK_INT(s->steps[k], EVENTS[i].step);
        CHECK(s->values[k] == EVENTS[i].value);
        k++;
    }
}

static char *read_fixture(const char *rel, size_t *size)
{
    char *data = test_read_file(test_source_path(rel), size);
    if (!data)
        test_fail(__FILE__, __LINE__, "cannot read fixture %s", rel);
    return data;
}

TEST(tfevents_bytes_equal_tensorboard_writer)
{
    size_t png_size, golden_size, size;
    char *png = read_fixture("fixtures/tfevents/tiny.png", &png_size);
    char *golden = read_fixture("fixtures/tfevents/golden.tfevents", &golden_size);
    if (!png || !golden)
        return;
    const char *path = test_tmp_path("events.out.tfevents.golden");
    struct tfevents *w = tfevents_open_path(path, FIRST_WALL_TIME);
    CHECK(w != NULL);
    if (!w)
        return;
    CHECK_STR(tfevents_path(w), path);
    write_events(w, png, png_size);
    CHECK_INT(tfevents_close(w), 0);
    char *got = test_read_file(path, &size);
    CHECK(got != NULL);
    CHECK_INT(size, golden_size);
    if (got && size == golden_size && memcmp(got, golden, size) != 0) {
        size_t i = 0;
        while (got[i] == golden[i])
            i++;
        test_fail(__FILE__, __LINE__, "bytes differ from golden.tfevents at offset %zu", i);
    }
    free(got);
    free(golden);
    free(png);
}

TEST(tfevents_reads_back_scalars_and_image)
{
    size_t png_size;
    char *png = read_fixture("fixtures/tfevents/tiny.png", &png_size);
    if (!png)
        return;
    struct seen s = {0};
    CHECK_INT(tfevents_read(test_source_path("fixtures/tfevents/golden.tfevents"), on_scalar, on_image, &s), 0);
    check_scalars(&s, N_SCALARS);
    CHECK_INT(s.n_images, 1);
    CHECK_STR(s.image.tag, IMAGE_TAG);
    CHECK_INT(s.image.step, 100);
    CHECK(s.image.wall_time == 1700000010.5);
    CHECK_INT(s.image.width, PNG_W);
    CHECK_INT(s.image.height, PNG_H);
    CHECK_INT(s.image.channels, 3);
    CHECK_INT(s.image.png_size, png_size);
    CHECK(memcmp(s.png, png, png_size) == 0);

    struct seen t = {0};
    CHECK_INT(tfevents_read_scalars(test_source_path("fixtures/tfevents/golden.tfevents"), on_scalar, &t), 0);
    check_scalars(&t, N_SCALARS);
    free(png);
}

static const char *copy_golden(const char *name, size_t *size, char **data)
{
    *data = read_fixture("fixtures/tfevents/golden.tfevents", size);
    return test_tmp_path(name);
}

/* Offset of record n (from 1) in a well-formed file. */
static size_t record_offset(const char *data, int n)
{
    size_t off = 0;
    for (int i = 1; i < n; i++) {
        uint64_t len = 0;
        for (int b = 0; b < 8; b++)
            len |= (uint64_t)(unsigned char)data[off + b] << (8 * b);
        off += 12 + len + 4;
    }
    return off;
}

TEST(tfevents_crc_catches_a_flipped_byte)
{
    size_t size;
    char *data;
    const char *path = copy_golden("flipped.tfevents", &size, &data);
    if (!data)
        return;
    /* Record 3 is loss at step 1: one scalar (record 2) comes before it. */
    size_t off = record_offset(data, 3);
    data[off + 12 + 5] ^= 0x10;
    test_write_file(path, data, size);
    struct seen s = {0};
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), -1);
    CHECK_CONTAINS(err_get(), "flipped.tfevents: record 3: data CRC mismatch");
    check_scalars(&s, 1);
    data[off + 12 + 5] ^= 0x10;

    /* A flipped length byte: caught by the length CRC, before any allocation. */
    off = record_offset(data, 4);
    data[off + 6] ^= 0x01;
    test_write_file(path, data, size);
    memset(&s, 0, sizeof s);
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), -1);
    CHECK_CONTAINS(err_get(), "flipped.tfevents: record 4: length CRC mismatch");
    check_scalars(&s, 2);
    data[off + 6] ^= 0x01;

    /* A flipped bit in the stored data CRC itself. */
    off = record_offset(data, 5);
    size_t end = record_offset(data, 6);
    data[end - 1] ^= 0x80;
    test_write_file(path, data, size);
    memset(&s, 0, sizeof s);
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), -1);
    CHECK_CONTAINS(err_get(), "record 5: data CRC mismatch");
    check_scalars(&s, 3);
    free(data);
}

TEST(tfevents_truncated_last_record)
{
    size_t size;
    char *data;
    const char *path = copy_golden("cut.tfevents", &size, &data);
    if (!data)
        return;
    /* Cut inside the data of the last record (8: loss at 2^40). */
    test_write_file(path, data, size - 3);
    struct seen s = {0};
    CHECK_INT(tfevents_read(path, on_scalar, on_image, &s), 1);
    CHECK_CONTAINS(err_get(), "cut.tfevents: record 8: truncated last record");
    check_scalars(&s, N_SCALARS - 1);
    CHECK_INT(s.n_images, 1);

    /* Cut inside the header of the last record. */
    test_write_file(path, data, record_offset(data, 8) + 5);
    memset(&s, 0, sizeof s);
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), 1);
    CHECK_CONTAINS(err_get(), "record 8: truncated last record");
    check_scalars(&s, N_SCALARS - 1);

    /* Cut between header and data: the length is intact, the data is not there. */
    test_write_file(path, data, record_offset(data, 8) + 12);
    memset(&s, 0, sizeof s);
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), 1);
    CHECK_CONTAINS(err_get(), "record 8: truncated last record");

    /* A cut exactly at a record boundary is a whole file. */
    test_write_file(path, data, record_offset(data, 8));
    memset(&s, 0, sizeof s);
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), 0);
    check_scalars(&s, N_SCALARS - 1);
    free(data);
}

static void put_record(FILE *f, const void *data, size_t len)
{
    unsigned char head[12], foot[4];
    for (int b = 0; b < 8; b++)
        head[b] = (unsigned char)((uint64_t)len >> (8 * b));
    uint32_t crc = tfevents_masked_crc(head, 8);
    for (int b = 0; b < 4; b++)
        head[8 + b] = (unsigned char)(crc >> (8 * b));
    crc = tfevents_masked_crc(data, len);
    for (int b = 0; b < 4; b++)
        foot[b] = (unsigned char)(crc >> (8 * b));
    fwrite(head, 1, 12, f);
    fwrite(data, 1, len, f);
    fwrite(foot, 1, 4, f);
}

TEST(tfevents_rejects_malformed_protobuf)
{
    const char *path = test_tmp_path("bad.tfevents");
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    /* Event.summary (field 5) with a length past the end of the record. */
    static const unsigned char bad[] = {0x2a, 0x09, 0x0a, 0x02};
    put_record(f, bad, sizeof bad);
    fclose(f);
    struct seen s = {0};
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), -1);
    CHECK_CONTAINS(err_get(), "bad.tfevents: record 1: malformed event: field 5: bad length");

    /* A length that passes its CRC but is far beyond the file is a cut, not an
     * allocation of 2^50 bytes. */
    f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    unsigned char head[12] = {0, 0, 0, 0, 0, 0, 4, 0};
    uint32_t crc = tfevents_masked_crc(head, 8);
    for (int b = 0; b < 4; b++)
        head[8 + b] = (unsigned char)(crc >> (8 * b));
    fwrite(head, 1, 12, f);
    fwrite("xyz", 1, 3, f);
    fclose(f);
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), 1);
    CHECK_CONTAINS(err_get(), "record 1: truncated last record");

    CHECK_INT(tfevents_read_scalars(test_tmp_path("missing.tfevents"), on_scalar, &s), -1);
    CHECK_CONTAINS(err_get(), "missing.tfevents: cannot open");
}

TEST(tfevents_masked_crc_vector)
{
    /* CRC-32C("123456789") = 0xE3069283, the check value of the Castagnoli CRC. */
    uint32_t c = 0xE3069283u;
    CHECK_INT(tfevents_masked_crc("123456789", 9), (uint32_t)(((c >> 15) | (c << 17)) + 0xa282ead8u));
    c = 0; /* CRC-32C of nothing */
    CHECK_INT(tfevents_masked_crc("", 0), (uint32_t)(((c >> 15) | (c << 17)) + 0xa282ead8u));
}

TEST(tfevents_open_names_file_in_new_dir)
{
    const char *dir = test_tmp_path("run/logs");
    struct tfevents *a = tfevents_open(dir);
    struct tfevents *b = tfevents_open_suffix(dir, ".rank1");
    CHECK(a != NULL && b != NULL);
    if (!a || !b)
        return;
    char host[256] = "";
    gethostname(host, sizeof host);
    const char *name = strrchr(tfevents_path(a), '/') + 1;
    CHECK(strncmp(name, "events.out.tfevents.", 20) == 0);
    CHECK_CONTAINS(name, host);
    CHECK(strcmp(tfevents_path(a), tfevents_path(b)) != 0);
    size_t len = strlen(tfevents_path(b));
    CHECK(len > 6 && strcmp(tfevents_path(b) + len - 6, ".rank1") == 0);

    double now = tfevents_now();
    CHECK(now > 1.6e9);
    CHECK_INT(tfevents_scalar(a, "loss", 7, now, 1.5f), 0);
    CHECK_INT(tfevents_flush(a), 0);
    /* Readable while the writer is still open, as TensorBoard reads it. */
    char *path = strdup(tfevents_path(a));
    struct seen s = {0};
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), 0);
    CHECK_INT(s.n_scalars, 1);
    CHECK_INT(tfevents_close(a), 0);
    CHECK_INT(tfevents_close(b), 0);
    CHECK_INT(tfevents_close(NULL), 0);

    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, "tfevents") != NULL;
    if (d)
        closedir(d);
    CHECK_INT(n, 2);

    /* Never clobbers an existing log. */
    CHECK(tfevents_open_path(path, 1.0) == NULL);
    CHECK_CONTAINS(err_get(), path);
    CHECK_CONTAINS(err_get(), "cannot create");
    free(path);

    test_write_file(test_tmp_path("file"), "x", 1);
    CHECK(tfevents_open(test_tmp_path("file/sub")) == NULL);
    CHECK_CONTAINS(err_get(), "file/sub");
}

TEST(tfevents_round_trips_edge_values)
{
    const char *path = test_tmp_path("edge.tfevents");
    struct tfevents *w = tfevents_open_path(path, 0.0);
    CHECK(w != NULL);
    if (!w)
        return;
    CHECK_INT(tfevents_scalar(w, "neg", -5, -1.0, -0.0f), 0);
    CHECK_INT(tfevents_scalar(w, "nan", INT64_MAX, 1.0, NAN), 0);
    CHECK_INT(tfevents_scalar(w, "inf", INT64_MIN, 1.0, INFINITY), 0);
    static const unsigned char png[] = {0x89, 'P', 'N', 'G'};
    CHECK_INT(tfevents_image(w, "grey", 3, 2.0, 1, 1, 1, png, sizeof png), 0);

    /* Bad arguments fail without touching the file. */
    CHECK_INT(tfevents_scalar(w, "", 1, 1.0, 1.0f), -1);
    CHECK_CONTAINS(err_get(), "edge.tfevents: empty tag");
    CHECK_INT(tfevents_image(w, "x", 1, 1.0, 1, 1, 5, png, sizeof png), -1);
    CHECK_CONTAINS(err_get(), "5 channels");
    CHECK_INT(tfevents_image(w, "x", 1, 1.0, 0, 1, 3, png, sizeof png), -1);
    CHECK_CONTAINS(err_get(), "bad size");
    CHECK_INT(tfevents_image(w, "x", 1, 1.0, 1, 1, 3, NULL, 0), -1);
    CHECK_INT(tfevents_close(w), 0);

    struct seen s = {0};
    CHECK_INT(tfevents_read(path, on_scalar, on_image, &s), 0);
    CHECK_INT(s.n_scalars, 3);
    CHECK_STR(s.tags[0], "neg");
    CHECK_INT(s.steps[0], -5);
    CHECK(s.values[0] == 0.0f && signbit(s.values[0]));
    CHECK_INT(s.steps[1], INT64_MAX);
    CHECK(isnan(s.values[1]));
    CHECK_INT(s.steps[2], INT64_MIN);
    CHECK(isinf(s.values[2]) && s.values[2] > 0);
    CHECK_INT(s.n_images, 1);
    CHECK_STR(s.image.tag, "grey");
    CHECK_INT(s.image.channels, 1);
    CHECK_INT(s.image.png_size, sizeof png);
    CHECK(memcmp(s.png, png, sizeof png) == 0);
}

TEST(tfevents_write_failure_is_sticky)
{
    /* A file size limit makes the disk "full" after the first record; the test
     * runs in its own child, so the limit goes with it. */
    const char *path = test_tmp_path("full.tfevents");
    struct tfevents *w = tfevents_open_path(path, 1.0);
    CHECK(w != NULL);
    if (!w)
        return;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {.rlim_cur = 100, .rlim_max = RLIM_INFINITY};
    CHECK_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static unsigned char png[64 * 1024];
    CHECK_INT(tfevents_image(w, "big", 1, 1.0, 64, 64, 3, png, sizeof png), -1);
    CHECK_CONTAINS(err_get(), "full.tfevents: write failed");
    /* The file may now end in a partial record: nothing more goes after it. */
    CHECK_INT(tfevents_scalar(w, "loss", 2, 1.0, 1.0f), -1);
    CHECK_CONTAINS(err_get(), "an earlier write failed");
    CHECK_INT(tfevents_close(w), -1);

    /* What made it to disk reads as whole records and then a cut one. */
    struct seen s = {0};
    CHECK_INT(tfevents_read_scalars(path, on_scalar, &s), 1);
    CHECK_CONTAINS(err_get(), "record 2: truncated last record");
}
