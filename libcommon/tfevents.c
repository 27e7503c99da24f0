/* TensorBoard event files: TFRecord framing around hand-encoded protobufs.
 *
 * The protobuf messages written (tensorboard/compat/proto/event.proto and
 * summary.proto), with the field numbers that matter here:
 *   Event          { double wall_time = 1; int64 step = 2;
 *                    oneof what { string file_version = 3; Summary summary = 5; }
 *                    SourceMetadata source_metadata = 10; }
 *   SourceMetadata { string writer = 1; }
 *   Summary        { repeated Value value = 1; }
 *   Summary.Value  { string tag = 1;
 *                    oneof value { float simple_value = 2; Image image = 4; } }
 *   Summary.Image  { int32 height = 1; int32 width = 2; int32 colorspace = 3;
 *                    bytes encoded_image_string = 4; }
 * They are proto3: a plain field at its default (0, "") is left out, a oneof
 * member is always written, and fields go in field-number order. That is
 * what tensorboard's (upb) serializer does, so the bytes match its writer. */
#include "libcommon/tfevents.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"

#include <errno.h>
#include <fcntl.h>
#include <isa-l/crc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* What SourceMetadata.writer names: tensorboard uses it to tell writers apart. */
#define TFEVENTS_WRITER "dit"
#define TFEVENTS_FILE_VERSION "brain.Event:2"

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_BYTES = 2, WIRE_FIXED32 = 5 };

/* ---- CRC ---------------------------------------------------------------- */

static uint32_t crc32c(const void *data, size_t size)
{
    /* ISA-L's crc32_iscsi neither inverts on entry nor on exit and takes an
     * int length: the standard CRC-32C is ~crc32_iscsi(~0), fed in pieces. */
    const unsigned char *p = data;
    unsigned int crc = 0xFFFFFFFFu;
    while (size > 0) {
        int n = size > (size_t)1 << 30 ? 1 << 30 : (int)size;
        crc = crc32_iscsi((unsigned char *)p, n, crc);
        p += n;
        size -= (size_t)n;
    }
    return ~crc;
}

uint32_t tfevents_masked_crc(const void *data, size_t size)
{
    /* TFRecord masks the CRC so that a CRC over data holding CRCs stays strong. */
    uint32_t crc = crc32c(data, size);
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static void put_le(uint8_t *dst, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *src, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)src[i] << (8 * i);
    return v;
}

/* ---- protobuf encoding -------------------------------------------------- */

struct pb {
    uint8_t *data;
    size_t len, cap;
    int oom; /* sticky: checked once when the message is complete */
};

static void pb_put(struct pb *b, const void *src, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
}

static void pb_varint(struct pb *b, uint64_t v)
{
    uint8_t tmp[10];
    int n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    pb_put(b, tmp, (size_t)n);
}

static void pb_key(struct pb *b, unsigned field, unsigned wire)
{
    pb_varint(b, (uint64_t)field << 3 | wire);
}

/* Negative values are sign-extended to ten bytes, as for int32 and int64. */
static void pb_int(struct pb *b, unsigned field, int64_t v)
{
    pb_key(b, field, WIRE_VARINT);
    pb_varint(b, (uint64_t)v);
}

static void pb_bytes(struct pb *b, unsigned field, const void *data, size_t n)
{
    pb_key(b, field, WIRE_BYTES);
    pb_varint(b, n);
    pb_put(b, data, n);
}

static void pb_double(struct pb *b, unsigned field, double v)
{
    uint64_t bits;
    uint8_t tmp[8];
    memcpy(&bits, &v, sizeof bits);
    put_le(tmp, bits, 8);
    pb_key(b, field, WIRE_FIXED64);
    pb_put(b, tmp, 8);
}

static void pb_float(struct pb *b, unsigned field, float v)
{
    uint32_t bits;
    uint8_t tmp[4];
    memcpy(&bits, &v, sizeof bits);
    put_le(tmp, bits, 4);
    pb_key(b, field, WIRE_FIXED32);
    pb_put(b, tmp, 4);
}

/* Event fields 1 and 2, left out at their defaults; -0.0 is not a default. */
static void pb_event_head(struct pb *b, double wall_time, int64_t step)
{
    uint64_t bits;
    memcpy(&bits, &wall_time, sizeof bits);
    if (bits != 0)
        pb_double(b, 1, wall_time);
    if (step != 0)
        pb_int(b, 2, step);
}

/* ---- writer ------------------------------------------------------------- */

struct tfevents {
    char *path;
    FILE *fp;
    int failed; /* a write failed: the file may end in a partial record */
    struct pb event, summary, value, image; /* reused between events */
};

const char *tfevents_path(const struct tfevents *w)
{
    return w->path;
}

double tfevents_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int writer_check(struct tfevents *w)
{
    if (w->failed) {
        err_set("%s: an earlier write failed; the file may end in a partial record", w->path);
        return -1;
    }
    return 0;
}

static int write_record(struct tfevents *w, const struct pb *data)
{
    if (data->oom) {
        err_set("%s: out of memory encoding an event", w->path);
        return -1;
    }
    uint8_t head[12], foot[4];
    put_le(head, data->len, 8);
    put_le(head + 8, tfevents_masked_crc(head, 8), 4);
    put_le(foot, tfevents_masked_crc(data->data, data->len), 4);
    if (fwrite(head, 1, sizeof head, w->fp) != sizeof head ||
        fwrite(data->data, 1, data->len, w->fp) != data->len ||
        fwrite(foot, 1, sizeof foot, w->fp) != sizeof foot) {
        w->failed = 1;
        err_set("%s: write failed: %s", w->path, strerror(errno));
        return -1;
    }
    return 0;
}

static void pb_reset(struct pb *b)
{
    b->len = 0;
    b->oom = 0;
}

/* Wraps w->value into Summary and Event and writes the record. */
static int write_value_event(struct tfevents *w, int64_t step, double wall_time)
{
    pb_reset(&w->summary);
    pb_reset(&w->event);
    if (w->value.oom)
        w->summary.oom = 1;
    pb_bytes(&w->summary, 1, w->value.data, w->value.len);
    pb_event_head(&w->event, wall_time, step);
    if (w->summary.oom)
        w->event.oom = 1;
    pb_bytes(&w->event, 5, w->summary.data, w->summary.len);
    return write_record(w, &w->event);
}

static int check_tag(struct tfevents *w, const char *tag)
{
    if (!tag || !*tag) {
        err_set("%s: empty tag", w->path);
        return -1;
    }
    return 0;
}

int tfevents_scalar(struct tfevents *w, const char *tag, int64_t step, double wall_time, float value)
{
    if (writer_check(w) < 0 || check_tag(w, tag) < 0)
        return -1;
    pb_reset(&w->value);
    pb_bytes(&w->value, 1, tag, strlen(tag));
    pb_float(&w->value, 2, value);
    return write_value_event(w, step, wall_time);
}

int tfevents_image(struct tfevents *w, const char *tag, int64_t step, double wall_time, int width, int height,
                   int channels, const void *png, size_t png_size)
{
    if (writer_check(w) < 0 || check_tag(w, tag) < 0)
        return -1;
    if (width <= 0 || height <= 0) {
        err_set("%s: image %s: bad size %dx%d", w->path, tag, width, height);
        return -1;
    }
    if (channels < 1 || channels > 4) {
        err_set("%s: image %s: %d channels (want 1 to 4)", w->path, tag, channels);
        return -1;
    }
    if (!png || png_size == 0) {
        err_set("%s: image %s: no PNG data", w->path, tag);
        return -1;
    }
    pb_reset(&w->image);
    pb_int(&w->image, 1, height);
    pb_int(&w->image, 2, width);
    pb_int(&w->image, 3, channels); /* TF's colorspace: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA */
    pb_bytes(&w->image, 4, png, png_size);
    pb_reset(&w->value);
    pb_bytes(&w->value, 1, tag, strlen(tag));
    if (w->image.oom)
        w->value.oom = 1;
    pb_bytes(&w->value, 4, w->image.data, w->image.len);
    return write_value_event(w, step, wall_time);
}

int tfevents_flush(struct tfevents *w)
{
    if (writer_check(w) < 0)
        return -1;
    if (fflush(w->fp) != 0) {
        w->failed = 1;
        err_set("%s: write failed: %s", w->path, strerror(errno));
        return -1;
    }
    if (fsync(fileno(w->fp)) != 0 && errno != EINVAL) {
        err_set("%s: fsync failed: %s", w->path, strerror(errno));
        return -1;
    }
    return 0;
}

static void writer_free(struct tfevents *w)
{
    free(w->event.data);
    free(w->summary.data);
    free(w->value.data);
    free(w->image.data);
    free(w->path);
    free(w);
}

int tfevents_close(struct tfevents *w)
{
    if (!w)
        return 0;
    int rc = tfevents_flush(w);
    if (fclose(w->fp) != 0 && rc == 0) {
        err_set("%s: close failed: %s", w->path, strerror(errno));
        rc = -1;
    }
    writer_free(w);
    return rc;
}

static int write_file_version(struct tfevents *w, double wall_time)
{
    struct pb meta = {0};
    pb_bytes(&meta, 1, TFEVENTS_WRITER, strlen(TFEVENTS_WRITER));
    pb_reset(&w->event);
    pb_event_head(&w->event, wall_time, 0);
    pb_bytes(&w->event, 3, TFEVENTS_FILE_VERSION, strlen(TFEVENTS_FILE_VERSION));
    if (meta.oom)
        w->event.oom = 1;
    pb_bytes(&w->event, 10, meta.data, meta.len);
    free(meta.data);
    return write_record(w, &w->event);
}

struct tfevents *tfevents_open_path(const char *path, double wall_time)
{
    struct tfevents *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        err_set("%s: out of memory", path);
        return NULL;
    }
    /* Exclusive: never append to or clobber another run's log. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        err_set("%s: cannot create: %s", path, strerror(errno));
        writer_free(w);
        return NULL;
    }
    w->fp = fdopen(fd, "wb");
    if (!w->fp) {
        err_set("%s: cannot open: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        writer_free(w);
        return NULL;
    }
    /* Flushed at once, like tensorboard's writer, so the run shows up early. */
    if (write_file_version(w, wall_time) < 0 || tfevents_flush(w) < 0 || fsync_parent_dir(path) < 0) {
        fclose(w->fp);
        unlink(path);
        writer_free(w);
        return NULL;
    }
    return w;
}

static int mkdir_parents(const char *dir)
{
    char *p = strdup(dir);
    if (!p) {
        err_set("%s: out of memory", dir);
        return -1;
    }
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            err_set("%s: cannot create directory %s: %s", dir, p, strerror(errno));
            rc = -1;
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    free(p);
    return rc;
}

struct tfevents *tfevents_open_suffix(const char *dir, const char *suffix)
{
    static atomic_int opened;
    if (!dir || !*dir) {
        err_set("tfevents: empty directory name");
        return NULL;
    }
    if (mkdir_parents(dir) < 0)
        return NULL;
    char host[256];
    if (gethostname(host, sizeof host) != 0 || !host[0])
        strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    double now = tfevents_now();
    int n = atomic_fetch_add(&opened, 1);
    size_t len = strlen(dir) + strlen(host) + (suffix ? strlen(suffix) : 0) + 96;
    char *path = malloc(len);
    if (!path) {
        err_set("%s: out of memory", dir);
        return NULL;
    }
    snprintf(path, len, "%s/events.out.tfevents.%010lld.%s.%ld.%d%s", dir, (long long)now, host, (long)getpid(), n,
             suffix ? suffix : "");
    struct tfevents *w = tfevents_open_path(path, now);
    free(path);
    return w;
}

struct tfevents *tfevents_open(const char *dir)
{
    return tfevents_open_suffix(dir, NULL);
}

/* ---- protobuf decoding -------------------------------------------------- */

struct pbr {
    const uint8_t *p, *end;
};

struct pb_field {
    unsigned number, wire;
    uint64_t num;                 /* varint, fixed64 or fixed32 value */
    const uint8_t *data;          /* length-delimited value */
    size_t len;
};

static int pbr_varint(struct pbr *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end)
            return -1;
        uint8_t byte = *r->p++;
        x |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* 1: a field was read, 0: end of message, -1: malformed (err_set). */
static int pbr_next(struct pbr *r, struct pb_field *f)
{
    if (r->p == r->end)
        return 0;
    uint64_t key;
    if (pbr_varint(r, &key) < 0 || (key >> 3) == 0 || (key >> 3) > 0x1fffffff) {
        err_set("bad field key");
        return -1;
    }
    f->number = (unsigned)(key >> 3);
    f->wire = (unsigned)(key & 7);
    switch (f->wire) {
    case WIRE_VARINT:
        if (pbr_varint(r, &f->num) < 0) {
            err_set("field %u: bad varint", f->number);
            return -1;
        }
        return 1;
    case WIRE_FIXED64:
    case WIRE_FIXED32: {
        int n = f->wire == WIRE_FIXED64 ? 8 : 4;
        if (r->end - r->p < n) {
            err_set("field %u: runs past the end", f->number);
            return -1;
        }
        f->num = get_le(r->p, n);
        r->p += n;
        return 1;
    }
    case WIRE_BYTES: {
        uint64_t n;
        if (pbr_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p)) {
            err_set("field %u: bad length", f->number);
            return -1;
        }
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 1;
    }
    default:
        err_set("field %u: unsupported wire type %u", f->number, f->wire);
        return -1;
    }
}

struct reader {
    void (*scalar)(void *ctx, const char *tag, int64_t step, float value);
    void (*image)(void *ctx, const struct tfevents_image *img);
    void *ctx;
};

static int parse_image(const uint8_t *data, size_t len, struct tfevents_image *img)
{
    struct pbr r = {data, data + len};
    struct pb_field f;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0) {
        if (f.wire == WIRE_VARINT && f.number >= 1 && f.number <= 3) {
            int v = (int)(int32_t)(uint32_t)f.num;
            if (f.number == 1)
                img->height = v;
            else if (f.number == 2)
                img->width = v;
            else
                img->channels = v;
        } else if (f.wire == WIRE_BYTES && f.number == 4) {
            img->png = f.data;
            img->png_size = f.len;
        }
    }
    if (rc < 0)
        err_prefix("image");
    return rc;
}

static int parse_value(const struct reader *rd, const uint8_t *data, size_t len, int64_t step, double wall_time)
{
    struct pbr r = {data, data + len};
    struct pb_field f;
    const uint8_t *tag = NULL;
    size_t tag_len = 0;
    unsigned kind = 0; /* the oneof member seen last wins, as in protobuf */
    float simple = 0;
    const uint8_t *image = NULL;
    size_t image_len = 0;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0) {
        if (f.number == 1 && f.wire == WIRE_BYTES) {
            tag = f.data;
            tag_len = f.len;
        } else if (f.number == 2 && f.wire == WIRE_FIXED32) {
            uint32_t bits = (uint32_t)f.num;
            memcpy(&simple, &bits, sizeof simple);
            kind = 2;
        } else if (f.number == 4 && f.wire == WIRE_BYTES) {
            image = f.data;
            image_len = f.len;
            kind = 4;
        } else if (f.number >= 3 && f.number <= 8 && f.number != 7) {
            kind = f.number;
        }
    }
    if (rc < 0) {
        err_prefix("summary value");
        return -1;
    }
    if ((kind == 2 && !rd->scalar) || (kind == 4 && !rd->image) || (kind != 2 && kind != 4))
        return 0;
    char *tag_str = malloc(tag_len + 1);
    if (!tag_str) {
        err_set("out of memory");
        return -1;
    }
    if (tag_len)
        memcpy(tag_str, tag, tag_len);
    tag_str[tag_len] = '\0';
    rc = 0;
    if (kind == 2) {
        rd->scalar(rd->ctx, tag_str, step, simple);
    } else {
        struct tfevents_image img = {.tag = tag_str, .step = step, .wall_time = wall_time};
        rc = parse_image(image, image_len, &img);
        if (rc == 0)
            rd->image(rd->ctx, &img);
    }
    free(tag_str);
    return rc;
}

static int parse_event(const struct reader *rd, const uint8_t *data, size_t len)
{
    /* The step may follow the summary, so the first pass finds it. */
    struct pbr r = {data, data + len};
    struct pb_field f;
    int64_t step = 0;
    double wall_time = 0;
    int rc;
    while ((rc = pbr_next(&r, &f)) > 0) {
        if (f.number == 1 && f.wire == WIRE_FIXED64)
            memcpy(&wall_time, &f.num, sizeof wall_time);
        else if (f.number == 2 && f.wire == WIRE_VARINT)
            step = (int64_t)f.num;
    }
    if (rc < 0)
        return -1;
    /* Repeated occurrences of summary merge, so their values concatenate. */
    r = (struct pbr){data, data + len};
    while (pbr_next(&r, &f) > 0) {
        if (f.number != 5 || f.wire != WIRE_BYTES)
            continue;
        struct pbr s = {f.data, f.data + f.len};
        struct pb_field v;
        while ((rc = pbr_next(&s, &v)) > 0)
            if (v.number == 1 && v.wire == WIRE_BYTES && parse_value(rd, v.data, v.len, step, wall_time) < 0)
                return -1;
        if (rc < 0) {
            err_prefix("summary");
            return -1;
        }
    }
    return 0;
}

/* ---- reader ------------------------------------------------------------- */

/* Bytes from the current position to the end of the file as it is now. */
static long long bytes_left(FILE *fp)
{
    struct stat st;
    long long pos = (long long)ftello(fp);
    if (pos < 0 || fstat(fileno(fp), &st) != 0)
        return -1;
    return (long long)st.st_size - pos;
}

int tfevents_read(const char *path, void (*scalar)(void *ctx, const char *tag, int64_t step, float value),
                  void (*image)(void *ctx, const struct tfevents_image *img), void *ctx)
{
    const struct reader rd = {scalar, image, ctx};
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        err_set("%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (unsigned long long record = 1;; record++) {
        uint8_t head[12];
        size_t got = fread(head, 1, sizeof head, fp);
        if (got < sizeof head && ferror(fp)) {
            err_set("%s: record %llu: read failed: %s", path, record, strerror(errno));
            rc = -1;
            break;
        }
        if (got == 0)
            break;
        if (got < sizeof head) {
            err_set("%s: record %llu: truncated last record (%zu of 12 header bytes)", path, record, got);
            rc = 1;
            break;
        }
        uint64_t len = get_le(head, 8);
        uint32_t want = (uint32_t)get_le(head + 8, 4);
        if (tfevents_masked_crc(head, 8) != want) {
            err_set("%s: record %llu: length CRC mismatch (bad length)", path, record);
            rc = -1;
            break;
        }
        /* Checked against the file before allocating: a valid CRC does not
         * make a length of 2^60 worth trying to allocate. */
        long long left = bytes_left(fp);
        if (left < 0) {
            err_set("%s: record %llu: cannot stat: %s", path, record, strerror(errno));
            rc = -1;
            break;
        }
        if (len > (uint64_t)left || (uint64_t)left - len < 4) {
            err_set("%s: record %llu: truncated last record (%lld of %llu bytes)", path, record, left + 12,
                    (unsigned long long)len + 16);
            rc = 1;
            break;
        }
        size_t need = (size_t)len + 4;
        if (need > cap) {
            uint8_t *p = realloc(buf, need);
            if (!p) {
                err_set("%s: record %llu: out of memory for %llu bytes", path, record, (unsigned long long)len);
                rc = -1;
                break;
            }
            buf = p;
            cap = need;
        }
        got = fread(buf, 1, need, fp);
        if (got < need) {
            if (ferror(fp)) {
                err_set("%s: record %llu: read failed: %s", path, record, strerror(errno));
                rc = -1;
            } else {
                err_set("%s: record %llu: truncated last record (%zu of %zu bytes)", path, record, got + 12,
                        need + 12);
                rc = 1;
            }
            break;
        }
        if (tfevents_masked_crc(buf, (size_t)len) != (uint32_t)get_le(buf + len, 4)) {
            err_set("%s: record %llu: data CRC mismatch", path, record);
            rc = -1;
            break;
        }
        if (parse_event(&rd, buf, (size_t)len) < 0) {
            err_prefix("%s: record %llu: malformed event", path, record);
            rc = -1;
            break;
        }
    }
    free(buf);
    fclose(fp);
    return rc;
}

int tfevents_read_scalars(const char *path, void (*fn)(void *ctx, const char *tag, int64_t step, float value),
                          void *ctx)
{
    return tfevents_read(path, fn, NULL, ctx);
}
