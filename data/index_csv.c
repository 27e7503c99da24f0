/* CSV input through libcsv, all of RFC 4180: quoted fields with commas,
 * quotes and newlines, CRLF, a UTF-8 byte order mark. The file is fed to
 * libcsv a physical line at a time so every record knows the line it starts
 * on, for messages. */
#include "data/index.h"
#include "formats/manifest.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/utf8.h"

#include <csv.h>
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

struct csv_row {
    size_t n, cap;
    char **fields;
    uint64_t line;
};

struct csv_reader {
    struct index_reader base;
    struct index_options opt;
    char *path;
    char *base_dir;
    FILE *fp;
    struct csv_parser parser;
    uint64_t line;       /* physical line being fed */
    uint64_t row_start;  /* line the current row began on; 0 = none yet */
    struct csv_row cur;  /* being filled by the callbacks */
    struct csv_row *ready; /* completed rows, FIFO */
    size_t n_ready, head, cap_ready;
    int failed, eof, header_done;
    size_t ncols;
    int col_image, col_caption, col_key, col_label;
    int *col_extra;      /* CSV column of each extra column */
    char *linebuf;
    size_t linecap;
};

/* RFC 4180 keeps spaces around unquoted fields; libcsv trims them unless told. */
static int no_space(unsigned char c)
{
    (void)c;
    return 0;
}

static void row_free(struct csv_row *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->fields[i]);
    free(r->fields);
    memset(r, 0, sizeof *r);
}

static void on_field(void *s, size_t len, void *data)
{
    struct csv_reader *c = data;
    if (c->cur.n == c->cur.cap) {
        size_t cap = c->cur.cap ? c->cur.cap * 2 : 16;
        char **f = realloc(c->cur.fields, cap * sizeof *f);
        if (!f) {
            c->failed = 1;
            return;
        }
        c->cur.fields = f;
        c->cur.cap = cap;
    }
    char *v = malloc(len + 1);
    if (!v) {
        c->failed = 1;
        return;
    }
    if (len)
        memcpy(v, s, len);
    v[len] = '\0';
    c->cur.fields[c->cur.n++] = v;
}

static void on_row(int term, void *data)
{
    (void)term;
    struct csv_reader *c = data;
    if (c->n_ready == c->cap_ready) {
        size_t cap = c->cap_ready ? c->cap_ready * 2 : 64;
        struct csv_row *r = realloc(c->ready, cap * sizeof *r);
        if (!r) {
            c->failed = 1;
            return;
        }
        c->ready = r;
        c->cap_ready = cap;
    }
    c->cur.line = c->row_start ? c->row_start : c->line;
    c->ready[c->n_ready++] = c->cur;
    memset(&c->cur, 0, sizeof c->cur);
    c->row_start = 0;
}

/* Feeds lines until a row is complete or the file ends. 1 a row, 0 the end,
 * -1 an error. */
static int csv_fill(struct csv_reader *c)
{
    while (c->head == c->n_ready) {
        c->head = c->n_ready = 0;
        if (c->eof)
            return 0;
        ssize_t n = getline(&c->linebuf, &c->linecap, c->fp);
        if (n < 0) {
            if (ferror(c->fp)) {
                err_set("%s:%llu: read error: %s", c->path, (unsigned long long)c->line + 1,
                        strerror(errno));
                return -1;
            }
            c->eof = 1;
            if (csv_fini(&c->parser, on_field, on_row, c) != 0) {
                err_set("%s:%llu: malformed CSV at the end of the file (%s)", c->path,
                        (unsigned long long)c->line, csv_strerror(csv_error(&c->parser)));
                return -1;
            }
            continue;
        }
        c->line++;
        char *p = c->linebuf;
        if (c->line == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
            p += 3;
            n -= 3;
        }
        int blank = n == 0 || (n == 1 && p[0] == '\n') || (n == 2 && p[0] == '\r' && p[1] == '\n');
        if (!c->row_start && !blank)
            c->row_start = c->line;
        if (csv_parse(&c->parser, p, (size_t)n, on_field, on_row, c) != (size_t)n) {
            err_set("%s:%llu: malformed CSV (%s)", c->path, (unsigned long long)c->line,
                    csv_strerror(csv_error(&c->parser)));
            return -1;
        }
        if (c->failed) {
            err_set("%s:%llu: out of memory", c->path, (unsigned long long)c->line);
            return -1;
        }
    }
    return 1;
}

static void csv_close(struct index_reader *r)
{
    struct csv_reader *c = (struct csv_reader *)r;
    if (c->fp)
        fclose(c->fp);
    csv_free(&c->parser);
    row_free(&c->cur);
    for (size_t i = c->head; i < c->n_ready; i++)
        row_free(&c->ready[i]);
    free(c->ready);
    for (size_t i = 0; i < r->n_extra; i++)
        free(r->extra_names[i]);
    free(r->extra_names);
    free(c->col_extra);
    free(c->linebuf);
    free(c->path);
    free(c->base_dir);
    free(c);
}

static const char *field(const struct csv_row *row, int col)
{
    return col >= 0 && (size_t)col < row->n ? row->fields[col] : NULL;
}

static int csv_next(struct index_reader *r, struct index_item *item)
{
    struct csv_reader *c = (struct csv_reader *)r;
    int rc = csv_fill(c);
    if (rc <= 0)
        return rc;
    struct csv_row row = c->ready[c->head++];
    memset(item, 0, sizeof *item);
    item->where = index_strdup_printf("%s:%llu", c->path, (unsigned long long)row.line);
    item->extra = calloc(r->n_extra ? r->n_extra : 1, sizeof *item->extra);
    for (size_t i = 0; i < r->n_extra; i++) {
        const char *v = field(&row, c->col_extra[i]);
        item->extra[i] = v ? strdup(v) : NULL;
    }
    const char *image = field(&row, c->col_image);
    const char *caption = field(&row, c->col_caption);
    if (caption)
        item->caption = strdup(caption);
    const char *label = field(&row, c->col_label);
    if (label)
        item->label = strdup(label);
    const char *key = field(&row, c->col_key);
    for (size_t i = 0; i < row.n; i++)
        if (utf8_invalid_at(row.fields[i], strlen(row.fields[i])) >= 0) {
            index_item_reject(item, INDEX_BAD_ROW, "field %zu is not valid UTF-8", i + 1);
            goto done;
        }
    if (row.n > c->ncols) {
        index_item_reject(item, INDEX_BAD_ROW, "%zu fields, the header has %zu", row.n, c->ncols);
        goto done;
    }
    if (!image || !*image) {
        index_item_reject(item, INDEX_NO_IMAGE, "no value in column '%s'", c->opt.image_column);
        goto done;
    }
    if (!c->opt.allow_outside && index_path_escapes(image)) {
        index_item_reject(item, INDEX_OUTSIDE, "%s is outside the base directory %s (--allow-outside accepts it)",
                          image, c->base_dir);
        goto done;
    }
    item->key = key && *key ? strdup(key) : index_key_from_path(image);
    item->path = image[0] == '/' ? strdup(image) : index_strdup_printf("%s/%s", c->base_dir, image);
    item->source = index_absolute(item->path);
    if (!item->source) /* missing files are reported when read; keep the path */
        item->source = strdup(item->path);
done:
    row_free(&row);
    return 1;
}

/* Makes a CSV column name a valid manifest column name. */
static char *column_name(const char *csv_name)
{
    char *n = malloc(strlen(csv_name) + 2);
    char *o = n;
    if (!n)
        return NULL;
    if (!((csv_name[0] >= 'A' && csv_name[0] <= 'Z') || (csv_name[0] >= 'a' && csv_name[0] <= 'z') ||
          csv_name[0] == '_'))
        *o++ = '_';
    for (const char *p = csv_name; *p; p++) {
        int ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                 *p == '_' || *p == '.' || *p == '-';
        *o++ = ok ? *p : '_';
    }
    *o = '\0';
    return n;
}

/* Columns dit-index measures itself; CSV columns of these names are dropped. */
static int measured_column(const char *name)
{
    static const char *const cols[] = {"source", "width", "height", "format", "hash", NULL};
    for (const char *const *c = cols; *c; c++)
        if (strcmp(name, *c) == 0)
            return 1;
    return 0;
}

static int csv_header(struct csv_reader *c)
{
    int rc = csv_fill(c);
    if (rc == 0) {
        err_set("%s: empty file: a CSV needs a header row", c->path);
        return -1;
    }
    if (rc < 0)
        return -1;
    struct csv_row h = c->ready[c->head++];
    c->ncols = h.n;
    c->col_image = c->col_caption = c->col_key = c->col_label = -1;
    c->col_extra = calloc(h.n, sizeof *c->col_extra);
    c->base.extra_names = calloc(h.n, sizeof *c->base.extra_names);
    if (!c->col_extra || !c->base.extra_names) {
        row_free(&h);
        err_set("%s: out of memory", c->path);
        return -1;
    }
    for (size_t i = 0; i < h.n; i++) {
        const char *name = h.fields[i];
        if (strcmp(name, c->opt.image_column) == 0)
            c->col_image = (int)i;
        else if (strcmp(name, c->opt.caption_column) == 0)
            c->col_caption = (int)i;
        else if (strcmp(name, "key") == 0)
            c->col_key = (int)i;
        else if (strcmp(name, "label") == 0)
            c->col_label = (int)i;
        else {
            char *mname = column_name(name);
            if (!mname) {
                row_free(&h);
                err_set("%s: out of memory", c->path);
                return -1;
            }
            int clash = measured_column(mname) || strcmp(mname, "caption") == 0;
            for (size_t k = 0; k < c->base.n_extra && !clash; k++)
                clash = strcmp(c->base.extra_names[k], mname) == 0;
            if (clash) {
                log_warn("%s:1: column '%s' is left out: dit-index writes a column of that name itself",
                         c->path, name);
                free(mname);
                continue;
            }
            if (strcmp(mname, name) != 0)
                log_warn("%s:1: column '%s' is written as '%s' (manifest column names are [A-Za-z_][A-Za-z0-9_.-]*)",
                         c->path, name, mname);
            c->col_extra[c->base.n_extra] = (int)i;
            c->base.extra_names[c->base.n_extra++] = mname;
        }
    }
    if (c->col_image < 0) {
        char cols[1024] = "";
        for (size_t i = 0; i < h.n; i++)
            snprintf(cols + strlen(cols), sizeof cols - strlen(cols), "%s%s", i ? ", " : "", h.fields[i]);
        err_set("%s:1: no column '%s' (the columns are: %s); name the image column with --image-column",
                c->path, c->opt.image_column, cols);
        row_free(&h);
        return -1;
    }
    if (c->col_caption < 0)
        log_warn("%s:1: no column '%s': records get no caption", c->path, c->opt.caption_column);
    row_free(&h);
    return 0;
}

struct index_reader *index_csv_open(const char *path, const struct index_options *opt)
{
    struct csv_reader *c = calloc(1, sizeof *c);
    if (!c) {
        err_set("%s: out of memory", path);
        return NULL;
    }
    c->base.name = path;
    c->base.next = csv_next;
    c->base.close = csv_close;
    c->opt = *opt;
    c->path = strdup(path);
    if (csv_init(&c->parser, CSV_STRICT | CSV_STRICT_FINI) != 0) {
        err_set("%s: out of memory", path);
        csv_close(&c->base);
        return NULL;
    }
    csv_set_space_func(&c->parser, no_space);
    if (opt->base_dir) {
        c->base_dir = strdup(opt->base_dir);
    } else {
        char *copy = strdup(path);
        c->base_dir = copy ? strdup(dirname(copy)) : NULL;
        free(copy);
    }
    c->fp = fopen(path, "rb");
    if (!c->fp) {
        err_set("%s: %s", path, strerror(errno));
        csv_close(&c->base);
        return NULL;
    }
    if (csv_header(c) != 0) {
        csv_close(&c->base);
        return NULL;
    }
    return &c->base;
}
