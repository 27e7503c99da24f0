/* safetensors reader and writer; the sharded form is in safetensors_set.c. */
#include "libcommon/safetensors.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},
    [ST_I8] = {"I8", 1},           [ST_U16] = {"U16", 2},
    [ST_I16] = {"I16", 2},         [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},       [ST_U32] = {"U32", 4},
    [ST_I32] = {"I32", 4},         [ST_F32] = {"F32", 4},
    [ST_U64] = {"U64", 8},         [ST_I64] = {"I64", 8},
    [ST_F64] = {"F64", 8},         [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(enum st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? st_dtypes[dt].name : "?";
}

int st_dtype_parse(const char *name, enum st_dtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (name && strcmp(name, st_dtypes[i].name) == 0) {
            *out = (enum st_dtype)i;
            return 0;
        }
    return -1;
}

size_t st_dtype_size(enum st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? st_dtypes[dt].size : 0;
}

static int utf8_valid(const char *s)
{
    return utf8_invalid_at(s, strlen(s)) < 0;
}

/* Element count and byte size; -1 on overflow. The product is checked left to
 * right as the reference crate does, so [2^32, 2^32, 0] overflows before the
 * zero is reached and is refused there too. */
static int shape_bytes(enum st_dtype dt, int ndim, const int64_t *shape, uint64_t *nelem,
                       uint64_t *nbytes)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d && n > UINT64_MAX / d)
            return -1;
        n *= d;
    }
    uint64_t size = st_dtype_size(dt);
    if (n > UINT64_MAX / size)
        return -1;
    *nelem = n;
    *nbytes = n * size;
    return 0;
}

/* ---------------------------------------------------------------- reader */

struct st_file_priv {
    struct st_file pub; /* first, so an st_file pointer is an st_file_priv pointer */
    void *map;          /* NULL for st_open_buffer */
    size_t map_size;
    json_t *root;       /* owns every name, key and value string */
};

static struct st_file_priv *st_file_alloc(const char *path)
{
    struct st_file_priv *p = calloc(1, sizeof *p);
    if (!p || !(p->pub.path = strdup(path))) {
        free(p);
        err_set("%s: out of memory", path);
        return NULL;
    }
    return p;
}

void st_close(struct st_file *f)
{
    if (!f)
        return;
    struct st_file_priv *p = (struct st_file_priv *)f;
    free(f->tensors);
    free(f->meta);
    json_decref(p->root);
    if (p->map)
        munmap(p->map, p->map_size);
    free(f->path);
    free(p);
}

static uint64_t le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static void put_le64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static void set_too_short(const char *path, uint64_t size)
{
    err_set("%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length", path, size);
}

/* "[2,3]" from a JSON shape array, whatever its elements are. */
static void format_json_shape(char *buf, size_t cap, const json_t *shape)
{
    size_t used = 0;
    buf[0] = '\0';
    used += snprintf(buf, cap, "[");
    for (size_t i = 0; i < json_array_size(shape) && used < cap; i++) {
        const json_t *d = json_array_get(shape, i);
        const char *sep = i ? "," : "";
        if (json_is_integer(d))
            used += snprintf(buf + used, cap - used, "%s%" JSON_INTEGER_FORMAT, sep,
                             json_integer_value(d));
        else
            used += snprintf(buf + used, cap - used, "%s?", sep);
    }
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

static int parse_meta(struct st_file *f, json_t *v)
{
    if (json_is_null(v))
        return 0; /* what an Option<HashMap> of the reference crate accepts */
    if (!json_is_object(v)) {
        err_set("%s: __metadata__ is not an object", f->path);
        return -1;
    }
    size_t n = json_object_size(v);
    f->meta = calloc(n ? n : 1, sizeof *f->meta);
    if (!f->meta) {
        err_set("%s: out of memory", f->path);
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach(v, key, value)
    {
        if (!json_is_string(value)) {
            err_set("%s: __metadata__ value for key '%s' is not a string", f->path, key);
            return -1;
        }
        f->meta[f->n_meta++] = (struct st_meta){key, json_string_value(value)};
    }
    return 0;
}

static int parse_tensor(const char *path, const char *name, json_t *v, uint64_t data_size,
                        struct st_tensor *t)
{
    if (!json_is_object(v)) {
        err_set("%s: tensor '%s': entry is not an object", path, name);
        return -1;
    }
    t->name = name;
    json_t *jd = json_object_get(v, "dtype");
    if (!json_is_string(jd)) {
        err_set("%s: tensor '%s': dtype is missing or not a string", path, name);
        return -1;
    }
    if (st_dtype_parse(json_string_value(jd), &t->dtype) != 0) {
        err_set("%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(jd));
        return -1;
    }

    json_t *js = json_object_get(v, "shape");
    if (!json_is_array(js)) {
        err_set("%s: tensor '%s': shape is missing or not an array", path, name);
        return -1;
    }
    char shape_text[ST_MAX_DIMS * 24 + 8];
    size_t rank = json_array_size(js);
    if (rank > ST_MAX_DIMS) {
        err_set("%s: tensor '%s': rank %zu exceeds the maximum of %d", path, name, rank,
                ST_MAX_DIMS);
        return -1;
    }
    format_json_shape(shape_text, sizeof shape_text, js);
    t->ndim = (int)rank;
    for (size_t i = 0; i < rank; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d)) {
            err_set("%s: tensor '%s': shape element %zu is not an integer", path, name, i);
            return -1;
        }
        if (json_integer_value(d) < 0) {
            err_set("%s: tensor '%s': shape %s has a negative dimension", path, name,
                    shape_text);
            return -1;
        }
        t->shape[i] = json_integer_value(d);
    }
    if (shape_bytes(t->dtype, t->ndim, t->shape, &t->nelem, &t->nbytes) != 0) {
        err_set("%s: tensor '%s': dtype %s x shape %s overflows 64 bits", path, name,
                st_dtype_name(t->dtype), shape_text);
        return -1;
    }

    json_t *jo = json_object_get(v, "data_offsets");
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(jb) ||
        !json_is_integer(je) || json_integer_value(jb) < 0 || json_integer_value(je) < 0) {
        err_set("%s: tensor '%s': data_offsets is not an array of two non-negative integers",
                path, name);
        return -1;
    }
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (begin > end) {
        err_set("%s: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64 "]: begin is after end",
                path, name, begin, end);
        return -1;
    }
    if (end - begin != t->nbytes) {
        err_set("%s: tensor '%s': dtype %s x shape %s needs %" PRIu64
                " bytes but data_offsets span %" PRIu64,
                path, name, st_dtype_name(t->dtype), shape_text, t->nbytes, end - begin);
        return -1;
    }
    if (end > data_size) {
        err_set("%s: tensor '%s': data_offsets [%" PRIu64 ",%" PRIu64
                "] run past the end of the data section (%" PRIu64 " bytes)",
                path, name, begin, end, data_size);
        return -1;
    }
    t->offset = begin;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_meta_key(const void *a, const void *b)
{
    return strcmp(((const struct st_meta *)a)->key, ((const struct st_meta *)b)->key);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The reference crate's rule: sorted by offset, the tensors tile the data
 * section from 0 to its last byte. Anything else hides bytes no tensor owns
 * or lets two tensors alias. */
static int check_tiling(const struct st_file *f, uint64_t data_size)
{
    size_t n = f->n_tensors;
    const struct st_tensor **order = malloc((n ? n : 1) * sizeof *order);
    if (!order) {
        err_set("%s: out of memory", f->path);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = &f->tensors[i];
    qsort(order, n, sizeof *order, cmp_tensor_offset);
    uint64_t pos = 0;
    const struct st_tensor *prev = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct st_tensor *t = order[i];
        if (t->offset > pos && prev) {
            err_set("%s: gap of %" PRIu64 " bytes between tensor '%s' (ends at %" PRIu64
                    ") and tensor '%s' (begins at %" PRIu64 ")",
                    f->path, t->offset - pos, prev->name, pos, t->name, t->offset);
            rc = -1;
        } else if (t->offset > pos) {
            err_set("%s: gap of %" PRIu64 " bytes before the first tensor '%s' (begins at %" PRIu64
                    ")",
                    f->path, t->offset - pos, t->name, t->offset);
            rc = -1;
        } else if (t->offset < pos) {
            err_set("%s: tensor '%s' at [%" PRIu64 ",%" PRIu64 "] overlaps tensor '%s' at [%" PRIu64
                    ",%" PRIu64 "]",
                    f->path, t->name, t->offset, t->offset + t->nbytes, prev->name, prev->offset,
                    pos);
            rc = -1;
        }
        pos = t->offset + t->nbytes;
        prev = t;
    }
    if (rc == 0 && pos != data_size) {
        err_set("%s: data section has %" PRIu64 " bytes but the tensors end at %" PRIu64
                " (%" PRIu64 " trailing bytes)",
                f->path, data_size, pos, data_size - pos);
        rc = -1;
    }
    free(order);
    return rc;
}

static int st_parse(struct st_file_priv *p, const unsigned char *buf, uint64_t size)
{
    struct st_file *f = &p->pub;
    const char *path = f->path;
    f->file_size = size;
    if (size < 8) {
        set_too_short(path, size);
        return -1;
    }
    uint64_t n = le64(buf);
    f->header_size = n;
    if (n > size - 8) {
        err_set("%s: header length %" PRIu64 " exceeds the file size %" PRIu64 "%s", path, n,
                size,
                n > ST_MAX_HEADER_SIZE ? " and the 100000000-byte limit"
                : n > size             ? ""
                                       : " less the 8-byte length field");
        return -1;
    }
    if (n > ST_MAX_HEADER_SIZE) {
        err_set("%s: header length %" PRIu64 " exceeds the 100000000-byte limit", path, n);
        return -1;
    }
    if (n == 0) {
        err_set("%s: header is empty", path);
        return -1;
    }
    const unsigned char *h = buf + 8;
    long bad = utf8_invalid_at((const char *)h, (size_t)n);
    if (bad >= 0) {
        err_set("%s: header is not valid UTF-8 (header byte %ld)", path, bad);
        return -1;
    }
    /* jansson's own words for this are confusing, and NUL padding is a
     * plausible writer bug worth naming. */
    const unsigned char *nul = memchr(h, 0, (size_t)n);
    if (nul) {
        err_set("%s: header contains a NUL byte (header byte %zu); padding must be spaces", path,
                (size_t)(nul - h));
        return -1;
    }
    if (h[0] != '{') {
        if (h[0] >= 0x20 && h[0] < 0x7f)
            err_set("%s: header is not a JSON object: it begins with '%c'", path, h[0]);
        else
            err_set("%s: header is not a JSON object: it begins with byte 0x%02x", path, h[0]);
        return -1;
    }
    json_error_t e;
    p->root = json_loadb((const char *)h, (size_t)n, JSON_REJECT_DUPLICATES, &e);
    if (!p->root) {
        if (json_error_code(&e) == json_error_duplicate_key)
            err_set("%s: duplicate name in the header (%s, header byte %d)", path, e.text,
                    e.position);
        else
            err_set("%s: header is not valid JSON: %s (header byte %d)", path, e.text,
                    e.position);
        return -1;
    }
    if (!json_is_object(p->root)) {
        err_set("%s: header is not a JSON object", path);
        return -1;
    }

    uint64_t data_size = size - 8 - n;
    size_t cap = json_object_size(p->root);
    f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
    if (!f->tensors) {
        err_set("%s: out of memory", path);
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach(p->root, key, value)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_meta(f, value) != 0)
                return -1;
            continue;
        }
        if (parse_tensor(path, key, value, data_size, &f->tensors[f->n_tensors]) != 0)
            return -1;
        f->n_tensors++;
    }
    if (check_tiling(f, data_size) != 0)
        return -1;
    const unsigned char *data = h + n;
    for (size_t i = 0; i < f->n_tensors; i++)
        f->tensors[i].data = data + f->tensors[i].offset;
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
    if (f->n_meta)
        qsort(f->meta, f->n_meta, sizeof *f->meta, cmp_meta_key);
    return 0;
}

struct st_file *st_open_buffer(const char *name, const void *data, size_t size)
{
    struct st_file_priv *p = st_file_alloc(name);
    if (!p)
        return NULL;
    if (st_parse(p, data, size) != 0) {
        st_close(&p->pub);
        return NULL;
    }
    return &p->pub;
}

struct st_file *st_open(const char *path)
{
    struct st_file_priv *p = st_file_alloc(path);
    if (!p)
        return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set("%s: cannot open: %s", path, strerror(errno));
        st_close(&p->pub);
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        err_set("%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        err_set("%s: not a regular file", path);
        goto fail;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        set_too_short(path, size);
        goto fail;
    }
    if (size > SIZE_MAX) {
        err_set("%s: file of %" PRIu64 " bytes cannot be mapped", path, size);
        goto fail;
    }
    p->map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p->map == MAP_FAILED) {
        p->map = NULL;
        err_set("%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    p->map_size = (size_t)size;
    close(fd);
    fd = -1;
    if (st_parse(p, p->map, size) != 0)
        goto fail;
    return &p->pub;
fail:
    if (fd >= 0)
        close(fd);
    st_close(&p->pub);
    return NULL;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    if (!f || !name || !f->n_tensors)
        return NULL;
    struct st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
}

const char *st_meta_get(const struct st_file *f, const char *key)
{
    if (!f || !key || !f->n_meta)
        return NULL;
    struct st_meta k = {.key = key};
    const struct st_meta *m = bsearch(&k, f->meta, f->n_meta, sizeof *f->meta, cmp_meta_key);
    return m ? m->value : NULL;
}

/* ---------------------------------------------------------------- writer */

struct st_writer {
    struct st_tensor *t; /* names are owned copies */
    size_t n, cap;
    uint64_t total;
    int sorted;          /* t[] in layout order with offsets assigned */
    const char **set;    /* open-addressing hash set of names, for duplicates */
    size_t set_cap;      /* a power of two, at least twice n */
    struct st_meta *meta; /* owned strings */
    size_t n_meta, cap_meta;
};

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Slot of name in the set, or of the empty slot where it would go. */
static size_t set_slot(const char **set, size_t cap, const char *name)
{
    size_t i = (size_t)name_hash(name) & (cap - 1);
    while (set[i] && strcmp(set[i], name) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

static int set_grow(struct st_writer *w)
{
    size_t cap = w->set_cap ? w->set_cap * 2 : 64;
    const char **set = calloc(cap, sizeof *set);
    if (!set)
        return -1;
    for (size_t i = 0; i < w->set_cap; i++)
        if (w->set[i])
            set[set_slot(set, cap, w->set[i])] = w->set[i];
    free(w->set);
    w->set = set;
    w->set_cap = cap;
    return 0;
}

struct st_writer *st_writer_new(void)
{
    struct st_writer *w = calloc(1, sizeof *w);
    if (!w)
        err_set("st_writer_new: out of memory");
    return w;
}

void st_writer_free(struct st_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n; i++)
        free((char *)w->t[i].name);
    for (size_t i = 0; i < w->n_meta; i++) {
        free((char *)w->meta[i].key);
        free((char *)w->meta[i].value);
    }
    free(w->t);
    free(w->set);
    free(w->meta);
    free(w);
}

int st_writer_add(struct st_writer *w, const char *name, enum st_dtype dt, int ndim,
                  const int64_t *shape, const void *data)
{
    if (!w || !name) {
        err_set("st_writer_add: no writer or no name");
        return -1;
    }
    if (strcmp(name, "__metadata__") == 0) {
        err_set("tensor '__metadata__': the name is reserved for the metadata");
        return -1;
    }
    if (!utf8_valid(name)) {
        err_set("tensor '%s': name is not valid UTF-8", name);
        return -1;
    }
    if ((unsigned)dt >= ST_DTYPE_COUNT) {
        err_set("tensor '%s': unknown dtype %d", name, (int)dt);
        return -1;
    }
    if (ndim < 0 || ndim > ST_MAX_DIMS) {
        err_set("tensor '%s': rank %d is outside 0..%d", name, ndim, ST_MAX_DIMS);
        return -1;
    }
    if (ndim > 0 && !shape) {
        err_set("tensor '%s': rank %d but no shape", name, ndim);
        return -1;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            err_set("tensor '%s': dimension %d is negative (%" PRId64 ")", name, i, shape[i]);
            return -1;
        }
    uint64_t nelem, nbytes;
    if (shape_bytes(dt, ndim, shape, &nelem, &nbytes) != 0 ||
        nbytes > (uint64_t)INT64_MAX - w->total) {
        err_set("tensor '%s': size overflows 63 bits", name);
        return -1;
    }
    if (nbytes && !data) {
        err_set("tensor '%s': no data for %" PRIu64 " bytes", name, nbytes);
        return -1;
    }
    if ((w->n + 1) * 2 > w->set_cap && set_grow(w) != 0) {
        err_set("tensor '%s': out of memory", name);
        return -1;
    }
    size_t slot = set_slot(w->set, w->set_cap, name);
    if (w->set[slot]) {
        err_set("tensor '%s': duplicate name, already added", name);
        return -1;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        struct st_tensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) {
            err_set("tensor '%s': out of memory", name);
            return -1;
        }
        w->t = t;
        w->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) {
        err_set("tensor '%s': out of memory", name);
        return -1;
    }
    struct st_tensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = copy;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->nelem = nelem;
    t->nbytes = nbytes;
    t->data = data;
    w->set[slot] = copy;
    w->total += nbytes;
    w->sorted = 0;
    return 0;
}

int st_writer_meta(struct st_writer *w, const char *key, const char *value)
{
    if (!w || !key || !value) {
        err_set("st_writer_meta: no writer, key or value");
        return -1;
    }
    if (!utf8_valid(key) || !utf8_valid(value)) {
        err_set("__metadata__ entry '%s': not valid UTF-8", key);
        return -1;
    }
    char *v = strdup(value);
    if (!v) {
        err_set("__metadata__ entry '%s': out of memory", key);
        return -1;
    }
    for (size_t i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[i].key, key) == 0) {
            free((char *)w->meta[i].value);
            w->meta[i].value = v;
            return 0;
        }
    if (w->n_meta == w->cap_meta) {
        size_t cap = w->cap_meta ? w->cap_meta * 2 : 8;
        struct st_meta *m = realloc(w->meta, cap * sizeof *m);
        if (!m) {
            free(v);
            err_set("__metadata__ entry '%s': out of memory", key);
            return -1;
        }
        w->meta = m;
        w->cap_meta = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        err_set("__metadata__ entry '%s': out of memory", key);
        return -1;
    }
    w->meta[w->n_meta++] = (struct st_meta){k, v};
    return 0;
}

/* Layout order: element size descending, then name, as the Python package
 * lays tensors out. Every tensor then starts at a multiple of its element
 * size, so readers may use the mapping in place. */
static int cmp_tensor_layout(const void *a, const void *b)
{
    const struct st_tensor *x = a, *y = b;
    size_t sx = st_dtype_size(x->dtype), sy = st_dtype_size(y->dtype);
    if (sx != sy)
        return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void writer_sort(struct st_writer *w)
{
    if (w->sorted)
        return;
    if (w->n > 1)
        qsort(w->t, w->n, sizeof *w->t, cmp_tensor_layout);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        w->t[i].offset = off;
        off += w->t[i].nbytes;
    }
    w->sorted = 1;
}

size_t st_writer_count(const struct st_writer *w)
{
    return w ? w->n : 0;
}

uint64_t st_writer_total_bytes(const struct st_writer *w)
{
    return w ? w->total : 0;
}

const struct st_tensor *st_writer_tensor(struct st_writer *w, size_t i)
{
    if (!w || i >= w->n)
        return NULL;
    writer_sort(w);
    return &w->t[i];
}

/* The compact JSON header of tensors [first, first + count), offsets
 * relative to the first of them; NULL with err_set on failure. */
static char *writer_header(struct st_writer *w, const char *path, size_t first, size_t count)
{
    json_t *root = json_object();
    int bad = !root;
    if (!bad && w->n_meta) {
        qsort(w->meta, w->n_meta, sizeof *w->meta, cmp_meta_key);
        json_t *m = json_object();
        bad = !m || json_object_set_new(root, "__metadata__", m) != 0;
        for (size_t i = 0; i < w->n_meta && !bad; i++)
            bad = json_object_set_new(m, w->meta[i].key, json_string(w->meta[i].value)) != 0;
    }
    uint64_t base = count ? w->t[first].offset : 0;
    for (size_t i = first; i < first + count && !bad; i++) {
        const struct st_tensor *t = &w->t[i];
        json_t *shape = json_array();
        bad = !shape;
        for (int d = 0; d < t->ndim && !bad; d++)
            bad = json_array_append_new(shape, json_integer(t->shape[d])) != 0;
        if (bad) {
            json_decref(shape);
            break;
        }
        /* Key order as the reference writer emits it. */
        json_t *entry = json_pack("{s:s, s:o, s:[I,I]}", "dtype", st_dtype_name(t->dtype), "shape",
                                  shape, "data_offsets", (json_int_t)(t->offset - base),
                                  (json_int_t)(t->offset - base + t->nbytes));
        bad = !entry || json_object_set_new(root, t->name, entry) != 0;
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text)
        err_set("%s: cannot build the header (out of memory)", path);
    return text;
}

/* The bytes before the data section: the 8-byte length and the JSON header
 * of tensors [first, first + count), padded with spaces up to a multiple of
 * 8 so the data section is 8-aligned in the file and in any mapping of it.
 * Shared by the file and the buffer writer, so both lay out alike; *len is
 * 8 + the padded header length. NULL with err_set on failure. */
static unsigned char *writer_prefix(struct st_writer *w, const char *path, size_t first, size_t count,
                                    size_t *len)
{
    writer_sort(w);
    char *header = writer_header(w, path, first, count);
    if (!header)
        return NULL;
    size_t hlen = strlen(header);
    size_t padded = (hlen + 7) & ~(size_t)7;
    if (padded > ST_MAX_HEADER_SIZE) {
        err_set("%s: header of %zu bytes exceeds the 100000000-byte limit", path, padded);
        free(header);
        return NULL;
    }
    unsigned char *buf = malloc(8 + padded);
    if (!buf) {
        err_set("%s: cannot build the header (out of memory)", path);
        free(header);
        return NULL;
    }
    put_le64(buf, padded);
    memcpy(buf + 8, header, hlen);
    memset(buf + 8 + hlen, ' ', padded - hlen);
    free(header);
    *len = 8 + padded;
    return buf;
}

int st_writer_write_range(struct st_writer *w, const char *path, size_t first, size_t count)
{
    if (!w || !path) {
        err_set("st_writer_write: no writer or no path");
        return -1;
    }
    if (first > w->n || count > w->n - first) {
        err_set("%s: tensors %zu..%zu requested of %zu", path, first, first + count, w->n);
        return -1;
    }
    size_t plen;
    unsigned char *prefix = writer_prefix(w, path, first, count, &plen);
    if (!prefix)
        return -1;
    struct atomic_file af;
    if (atomic_file_open(&af, path) != 0) {
        free(prefix);
        return -1;
    }
    int ok = fwrite(prefix, 1, plen, af.fp) == plen;
    free(prefix);
    for (size_t i = first; i < first + count && ok; i++) {
        const struct st_tensor *t = &w->t[i];
        const unsigned char *p = t->data;
        for (uint64_t done = 0; done < t->nbytes && ok;) {
            /* fwrite takes size_t; chunks keep 32-bit builds honest too. */
            size_t chunk = t->nbytes - done > (1u << 30) ? (1u << 30) : (size_t)(t->nbytes - done);
            ok = fwrite(p + done, 1, chunk, af.fp) == chunk;
            done += chunk;
        }
    }
    if (!ok) {
        err_set("%s: write failed: %s", path, strerror(errno));
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}

int st_writer_to_buffer(struct st_writer *w, void **bytes, size_t *size)
{
    if (!w || !bytes || !size) {
        err_set("st_writer_to_buffer: no writer or no output");
        return -1;
    }
    size_t plen;
    unsigned char *prefix = writer_prefix(w, "(buffer)", 0, w->n, &plen);
    if (!prefix)
        return -1;
    if (w->total > (uint64_t)SIZE_MAX - plen) {
        err_set("(buffer): %" PRIu64 " bytes of tensors do not fit in memory", w->total);
        free(prefix);
        return -1;
    }
    size_t total = plen + (size_t)w->total;
    unsigned char *buf = realloc(prefix, total);
    if (!buf) {
        err_set("(buffer): out of memory for %zu bytes", total);
        free(prefix);
        return -1;
    }
    /* writer_prefix sorted the tensors and gave each its data offset. */
    for (size_t i = 0; i < w->n; i++)
        if (w->t[i].nbytes)
            memcpy(buf + plen + w->t[i].offset, w->t[i].data, (size_t)w->t[i].nbytes);
    *bytes = buf;
    *size = total;
    return 0;
}

int st_writer_write(struct st_writer *w, const char *path)
{
    return st_writer_write_range(w, path, 0, w ? w->n : 0);
}

int st_tensor_to_f32(const struct st_tensor *t, float *out)
{
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, t->data, t->nbytes);
        return 0;
    case ST_BF16:
        bf16_to_f32_array(t->data, out, t->nelem);
        return 0;
    case ST_F16:
        f16_to_f32_array(t->data, out, t->nelem);
        return 0;
    case ST_F8_E4M3:
        e4m3_to_f32_array(t->data, out, t->nelem);
        return 0;
    default:
        return -1;
    }
}

void st_tensor_release(const struct st_tensor *t)
{
    const long page = sysconf(_SC_PAGESIZE);
    if (!t || !t->data || page <= 0)
        return;
    /* Only the pages that t covers whole: its neighbours' bytes stay. */
    uintptr_t lo = ((uintptr_t)t->data + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    uintptr_t hi = ((uintptr_t)t->data + t->nbytes) / (uintptr_t)page * (uintptr_t)page;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

void st_shape_text(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}
