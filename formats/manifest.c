#include "formats/manifest.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/keyset.h"
#include "libcommon/utf8.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct manifest_reader {
    char *path;
    FILE *fp;
    int owns_fp;
    int flags;
    uint64_t line;
    char *buf;
    size_t buf_cap;
    size_t ncols;
    char **columns;
    char **fields;
    int key_col;
    struct keyset *keys;
};

int manifest_column_name_valid(const char *name)
{
    if (!((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') || name[0] == '_'))
        return 0;
    for (const char *c = name + 1; *c; c++) {
        int ok = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
                 *c == '_' || *c == '.' || *c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

char *manifest_escape(const char *src)
{
    size_t n = 0;
    for (const char *c = src; *c; c++)
        n += (*c == '\\' || *c == '\t' || *c == '\n' || *c == '\r') ? 2 : 1;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *c = src; *c; c++) {
        switch (*c) {
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        default: *o++ = *c;
        }
    }
    *o = '\0';
    return out;
}

int manifest_unescape(char *s, size_t n)
{
    if (memchr(s, '\0', n)) {
        err_set("NUL byte");
        return -1;
    }
    long bad = utf8_invalid_at(s, n);
    if (bad >= 0) {
        err_set("invalid UTF-8 at byte %ld", bad + 1);
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            s[o++] = s[i];
            continue;
        }
        if (i + 1 == n) {
            err_set("backslash at the end of the field");
            return -1;
        }
        char e = s[++i];
        switch (e) {
        case '\\': s[o++] = '\\'; break;
        case 't': s[o++] = '\t'; break;
        case 'n': s[o++] = '\n'; break;
        case 'r': s[o++] = '\r'; break;
        default:
            if ((unsigned char)e >= 0x20 && (unsigned char)e < 0x7f)
                err_set("bad escape '\\%c'", e);
            else
                err_set("bad escape: backslash before byte 0x%02x", (unsigned char)e);
            return -1;
        }
    }
    s[o] = '\0';
    return 0;
}

/* Reads one line without its LF into r->buf. Returns its length, or -1 at
 * the end of the file. */
static long read_line(struct manifest_reader *r)
{
    ssize_t n = getline(&r->buf, &r->buf_cap, r->fp);
    if (n < 0)
        return -1;
    r->line++;
    if (n > 0 && r->buf[n - 1] == '\n')
        r->buf[--n] = '\0';
    return n;
}

/* Splits r->buf[0..n) at TABs into r->fields; returns the field count, which
 * may differ from ncols (fields past ncols are not stored). */
static size_t split_fields(struct manifest_reader *r, size_t n, size_t *lengths)
{
    size_t count = 0;
    char *start = r->buf, *end = r->buf + n;
    for (;;) {
        char *tab = memchr(start, '\t', end - start);
        char *stop = tab ? tab : end;
        if (count < r->ncols) {
            r->fields[count] = start;
            lengths[count] = stop - start;
        }
        count++;
        if (!tab)
            break;
        *tab = '\0';
        start = tab + 1;
    }
    return count;
}

void manifest_close(struct manifest_reader *r)
{
    if (!r)
        return;
    if (r->owns_fp && r->fp)
        fclose(r->fp);
    for (size_t i = 0; i < r->ncols; i++)
        free(r->columns[i]);
    free(r->columns);
    free(r->fields);
    free(r->buf);
    keyset_free(r->keys);
    free(r->path);
    free(r);
}

static int parse_header(struct manifest_reader *r, long n)
{
    if (n < 0) {
        err_set("%s: empty file: a manifest needs a header line", r->path);
        return -1;
    }
    if (memchr(r->buf, '\r', n)) {
        err_set("%s:1: carriage return in the header (CRLF line endings are not allowed)", r->path);
        return -1;
    }
    size_t count = 1;
    for (long i = 0; i < n; i++)
        count += r->buf[i] == '\t';
    r->ncols = count;
    r->columns = calloc(count, sizeof *r->columns);
    r->fields = calloc(count, sizeof *r->fields);
    size_t *lengths = calloc(count, sizeof *lengths);
    if (!r->columns || !r->fields || !lengths) {
        free(lengths);
        err_set("%s: out of memory", r->path);
        return -1;
    }
    split_fields(r, n, lengths);
    free(lengths);
    r->key_col = -1;
    for (size_t i = 0; i < count; i++) {
        if (!manifest_column_name_valid(r->fields[i])) {
            err_set("%s:1: column %zu: '%s' is not a valid column name ([A-Za-z_][A-Za-z0-9_.-]*)",
                    r->path, i + 1, r->fields[i]);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->columns[j], r->fields[i]) == 0) {
                err_set("%s:1: column '%s' appears twice", r->path, r->fields[i]);
                return -1;
            }
        r->columns[i] = strdup(r->fields[i]);
        if (!r->columns[i]) {
            err_set("%s: out of memory", r->path);
            return -1;
        }
        if (strcmp(r->columns[i], "key") == 0)
            r->key_col = (int)i;
    }
    if (r->key_col < 0) {
        err_set("%s:1: no 'key' column in the header", r->path);
        return -1;
    }
    return 0;
}

struct manifest_reader *manifest_open(const char *path, int flags)
{
    struct manifest_reader *r = calloc(1, sizeof *r);
    if (!r) {
        err_set("%s: out of memory", path);
        return NULL;
    }
    r->flags = flags;
    r->path = strdup(strcmp(path, "-") == 0 ? "(stdin)" : path);
    if (strcmp(path, "-") == 0) {
        r->fp = stdin;
    } else {
        r->fp = fopen(path, "rb");
        r->owns_fp = 1;
    }
    if (!r->path || !r->fp) {
        err_set("%s: %s", path, r->path ? strerror(errno) : "out of memory");
        manifest_close(r);
        return NULL;
    }
    if (parse_header(r, read_line(r)) != 0) {
        manifest_close(r);
        return NULL;
    }
    return r;
}

size_t manifest_ncols(const struct manifest_reader *r)
{
    return r->ncols;
}

const char *manifest_column(const struct manifest_reader *r, size_t i)
{
    return i < r->ncols ? r->columns[i] : NULL;
}

const char *const *manifest_columns(const struct manifest_reader *r)
{
    return (const char *const *)r->columns;
}

int manifest_column_index(const struct manifest_reader *r, const char *name)
{
    for (size_t i = 0; i < r->ncols; i++)
        if (strcmp(r->columns[i], name) == 0)
            return (int)i;
    return -1;
}

const char *manifest_path(const struct manifest_reader *r)
{
    return r->path;
}

uint64_t manifest_line(const struct manifest_reader *r)
{
    return r->line;
}

int manifest_next(struct manifest_reader *r, struct manifest_record *rec)
{
    long n = read_line(r);
    if (n < 0) {
        if (ferror(r->fp)) {
            err_set("%s:%llu: read error: %s", r->path, (unsigned long long)r->line + 1,
                    strerror(errno));
            return -1;
        }
        return 0;
    }
    unsigned long long line = r->line;
    if (n == 0) {
        err_set("%s:%llu: empty line", r->path, line);
        return -1;
    }
    if (memchr(r->buf, '\r', n)) {
        err_set("%s:%llu: carriage return in the record (CRLF line endings are not allowed; "
                "a CR inside a field is written \\r)", r->path, line);
        return -1;
    }
    size_t lengths_small[64];
    size_t *lengths = r->ncols <= 64 ? lengths_small : malloc(r->ncols * sizeof *lengths);
    if (!lengths) {
        err_set("%s:%llu: out of memory", r->path, line);
        return -1;
    }
    size_t count = split_fields(r, n, lengths);
    int rc = 1;
    if (count != r->ncols) {
        err_set("%s:%llu: %zu field%s, the header has %zu column%s", r->path, line, count,
                count == 1 ? "" : "s", r->ncols, r->ncols == 1 ? "" : "s");
        rc = -1;
    }
    for (size_t i = 0; rc == 1 && i < r->ncols; i++) {
        if (manifest_unescape(r->fields[i], lengths[i]) != 0) {
            err_prefix("%s:%llu: column %s", r->path, line, r->columns[i]);
            rc = -1;
        }
    }
    if (lengths != lengths_small)
        free(lengths);
    if (rc != 1)
        return rc;
    const char *key = r->fields[r->key_col];
    if (key[0] == '\0') {
        err_set("%s:%llu: empty key", r->path, line);
        return -1;
    }
    if (r->flags & MANIFEST_CHECK_KEYS) {
        if (!r->keys && !(r->keys = keyset_new())) {
            err_set("%s:%llu: out of memory", r->path, line);
            return -1;
        }
        uint64_t first = keyset_insert(r->keys, key, strlen(key), r->line);
        if (first == UINT64_MAX) {
            err_set("%s:%llu: out of memory", r->path, line);
            return -1;
        }
        if (first) {
            err_set("%s:%llu: duplicate key '%s' (first on line %llu)", r->path, line, key,
                    (unsigned long long)first);
            return -1;
        }
    }
    rec->nfields = r->ncols;
    rec->fields = r->fields;
    return 1;
}

long manifest_validate(const char *path, uint64_t *n_records,
                       void (*report)(void *ctx, const char *problem), void *ctx)
{
    struct manifest_reader *r = manifest_open(path, MANIFEST_CHECK_KEYS);
    if (!r)
        return -1;
    long problems = 0;
    uint64_t records = 0;
    struct manifest_record rec;
    int rc;
    while ((rc = manifest_next(r, &rec)) != 0) {
        if (rc < 0) {
            problems++;
            if (report)
                report(ctx, err_get());
        } else {
            records++;
        }
    }
    manifest_close(r);
    if (n_records)
        *n_records = records;
    return problems;
}

struct manifest_writer {
    struct atomic_file af;
    FILE *fp;
    int to_stdout;
    size_t ncols;
    char *path;
};

static int write_fields(struct manifest_writer *w, const char *const *fields)
{
    for (size_t i = 0; i < w->ncols; i++) {
        const char *f = fields[i] ? fields[i] : "";
        if (i)
            fputc('\t', w->fp);
        for (const char *c = f; *c; c++) {
            switch (*c) {
            case '\\': fputs("\\\\", w->fp); break;
            case '\t': fputs("\\t", w->fp); break;
            case '\n': fputs("\\n", w->fp); break;
            case '\r': fputs("\\r", w->fp); break;
            default: fputc(*c, w->fp);
            }
        }
    }
    fputc('\n', w->fp);
    if (ferror(w->fp)) {
        err_set("%s: write failed: %s", w->path, strerror(errno));
        return -1;
    }
    return 0;
}

struct manifest_writer *manifest_writer_open(const char *path, size_t ncols,
                                             const char *const *columns)
{
    int has_key = 0;
    for (size_t i = 0; i < ncols; i++) {
        if (!manifest_column_name_valid(columns[i])) {
            err_set("%s: '%s' is not a valid column name", path, columns[i]);
            return NULL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(columns[i], columns[j]) == 0) {
                err_set("%s: column '%s' appears twice", path, columns[i]);
                return NULL;
            }
        has_key |= strcmp(columns[i], "key") == 0;
    }
    if (!has_key) {
        err_set("%s: a manifest needs a 'key' column", path);
        return NULL;
    }
    struct manifest_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(strcmp(path, "-") == 0 ? "(stdout)" : path))) {
        free(w);
        err_set("%s: out of memory", path);
        return NULL;
    }
    w->ncols = ncols;
    if (strcmp(path, "-") == 0) {
        w->to_stdout = 1;
        w->fp = stdout;
    } else {
        if (atomic_file_open(&w->af, path) != 0) {
            free(w->path);
            free(w);
            return NULL;
        }
        w->fp = w->af.fp;
    }
    if (write_fields(w, columns) != 0) {
        manifest_writer_abort(w);
        return NULL;
    }
    return w;
}

int manifest_write(struct manifest_writer *w, const char *const *fields)
{
    return write_fields(w, fields);
}

int manifest_writer_commit(struct manifest_writer *w)
{
    int rc;
    if (w->to_stdout) {
        rc = fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
        if (rc)
            err_set("(stdout): write failed: %s", strerror(errno));
    } else {
        rc = atomic_file_commit(&w->af);
    }
    free(w->path);
    free(w);
    return rc;
}

void manifest_writer_abort(struct manifest_writer *w)
{
    if (!w)
        return;
    if (!w->to_stdout)
        atomic_file_abort(&w->af);
    free(w->path);
    free(w);
}
