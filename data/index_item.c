/* What every dit-index reader shares: names, keys, captions, path checks,
 * and the per-item work (read, hash, probe) that runs on worker threads. */
#include "data/index.h"
#include "libcommon/error.h"
#include "libcommon/names.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *reject_names[INDEX_REJECT_COUNT] = {
    [INDEX_KEPT] = "kept",
    [INDEX_MISSING] = "missing file",
    [INDEX_UNREADABLE] = "unreadable",
    [INDEX_EMPTY] = "empty",
    [INDEX_CORRUPT] = "truncated or corrupt header",
    [INDEX_UNSUPPORTED] = "unsupported format",
    [INDEX_TOO_LARGE] = "too many pixels",
    [INDEX_NO_IMAGE] = "no image path",
    [INDEX_DUPLICATE] = "duplicate key",
    [INDEX_OUTSIDE] = "outside the base directory",
    [INDEX_ARCHIVE] = "unreadable archive",
    [INDEX_NO_CLASS] = "not in a class folder",
    [INDEX_BAD_LABEL] = "bad class label",
    [INDEX_BAD_ROW] = "malformed row",
};

const char *index_reject_name(enum index_reject r)
{
    return (unsigned)r < INDEX_REJECT_COUNT ? reject_names[r] : "?";
}

char *index_strdup_printf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

void index_item_reject(struct index_item *item, enum index_reject r, const char *fmt, ...)
{
    char detail[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    item->reject = r;
    free(item->reason);
    item->reason = index_strdup_printf("%s: %s", item->where ? item->where : "?", detail);
}

void index_item_free(struct index_item *item, size_t n_extra)
{
    free(item->where);
    free(item->key);
    free(item->source);
    free(item->path);
    free(item->caption);
    free(item->label);
    free(item->json);
    if (item->extra)
        for (size_t i = 0; i < n_extra; i++)
            free(item->extra[i]);
    free(item->extra);
    free(item->data);
    free(item->reason);
    memset(item, 0, sizeof *item);
}

static const char *extension(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash + 1 : name, '.');
    return dot && dot != (slash ? slash + 1 : name) ? dot + 1 : NULL;
}

static int extension_in(const char *name, const char *const *list)
{
    const char *ext = extension(name);
    if (!ext)
        return 0;
    for (; *list; list++)
        if (strcasecmp(ext, *list) == 0)
            return 1;
    return 0;
}

int index_is_image_name(const char *name)
{
    static const char *const exts[] = {"jpg", "jpeg", "png", "webp", NULL};
    return extension_in(name, exts);
}

int index_is_other_image_name(const char *name)
{
    static const char *const exts[] = {"gif", "bmp", "tif", "tiff", "avif", "heic", "heif",
                                       "jxl", "jp2", "ico", "ppm", "pgm", "tga", NULL};
    return extension_in(name, exts);
}

char *index_key_from_path(const char *rel)
{
    while (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    const char *ext = extension(rel);
    size_t n = ext ? (size_t)(ext - 1 - rel) : strlen(rel);
    return strndup(rel, n);
}

char *index_caption_from_stem(const char *rel)
{
    const char *slash = strrchr(rel, '/');
    const char *base = slash ? slash + 1 : rel;
    const char *ext = extension(base);
    size_t n = ext ? (size_t)(ext - 1 - base) : strlen(base);
    char *c = strndup(base, n);
    for (char *p = c; p && *p; p++)
        if (*p == '_' || *p == '-')
            *p = ' ';
    return c;
}

int index_path_escapes(const char *rel)
{
    if (rel[0] == '/')
        return 1;
    for (const char *p = rel; *p;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return 1;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

/* The sidecar caption: text of STEM + caption_ext beside the image, with
 * trailing white space removed; NULL when there is none. */
static char *sidecar_caption(const char *image_path, const char *ext)
{
    const char *slash = strrchr(image_path, '/');
    const char *dot = strrchr(slash ? slash + 1 : image_path, '.');
    size_t stem = dot ? (size_t)(dot - image_path) : strlen(image_path);
    char *path = index_strdup_printf("%.*s%s", (int)stem, image_path, ext);
    FILE *f = path ? fopen(path, "rb") : NULL;
    free(path);
    if (!f)
        return NULL;
    size_t cap = 256, n = 0;
    char *text = malloc(cap);
    size_t got;
    while (text && (got = fread(text + n, 1, cap - 1 - n, f)) > 0) {
        n += got;
        if (n == cap - 1) {
            char *g = realloc(text, cap *= 2);
            if (!g) {
                free(text);
                text = NULL;
            }
            text = g;
        }
    }
    fclose(f);
    if (!text)
        return NULL;
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    text[n] = '\0';
    return text;
}

char *index_caption_for(const char *image_path, const char *caption_ext)
{
    char *c = sidecar_caption(image_path, caption_ext);
    return c ? c : index_caption_from_stem(image_path);
}

char *index_absolute(const char *path)
{
    char *abs = realpath(path, NULL);
    if (!abs)
        err_set("%s: %s", path, strerror(errno));
    return abs;
}

/* Reads a whole file; sets the rejection on failure. */
static int read_whole(struct index_item *item)
{
    int fd = open(item->path, O_RDONLY);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            index_item_reject(item, INDEX_MISSING, "missing file %s", item->path);
        else
            index_item_reject(item, INDEX_UNREADABLE, "cannot open %s: %s", item->path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        index_item_reject(item, INDEX_UNREADABLE, "%s is not a regular file", item->path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    item->data = malloc(size ? size : 1);
    if (!item->data) {
        index_item_reject(item, INDEX_UNREADABLE, "%s: out of memory for %zu bytes", item->path, size);
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, (char *)item->data + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            index_item_reject(item, INDEX_UNREADABLE, "read error on %s: %s", item->path,
                              n < 0 ? strerror(errno) : "file shrank while reading");
            close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    item->size = size;
    return 0;
}

void index_item_process(struct index_item *item, uint64_t max_pixels)
{
    if (item->reject != INDEX_KEPT)
        return;
    if (!item->data && read_whole(item) != 0)
        return;
    item->hash = hash_buffer(item->data, item->size);
    enum image_probe_error e = image_probe(item->data, item->size, item->source, &item->info);
    switch (e) {
    case IMAGE_OK:
        break;
    case IMAGE_ERR_EMPTY:
        index_item_reject(item, INDEX_EMPTY, "empty file %s", item->source);
        break;
    case IMAGE_ERR_UNSUPPORTED:
        index_item_reject(item, INDEX_UNSUPPORTED, "%s", err_get());
        break;
    default:
        index_item_reject(item, INDEX_CORRUPT, "%s", err_get());
        break;
    }
    if (e == IMAGE_OK && max_pixels &&
        (uint64_t)item->info.width * (uint64_t)item->info.height > max_pixels)
        index_item_reject(item, INDEX_TOO_LARGE, "%s: %d x %d pixels is above --max-pixels %llu",
                          item->source, item->info.width, item->info.height,
                          (unsigned long long)max_pixels);
    /* The bytes are no longer needed; the batch may be large. */
    free(item->data);
    item->data = NULL;
}

void index_close(struct index_reader *r)
{
    if (r)
        r->close(r);
}

struct index_reader *index_open(const char *operand, const struct index_options *opt)
{
    if (strcmp(operand, "-") == 0)
        return index_list_open(stdin, "(stdin)", opt);
    struct stat st;
    if (stat(operand, &st) != 0) {
        err_set("%s: %s", operand, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode))
        return index_dir_open(operand, opt);
    static const char *const archives[] = {".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst",
                                           ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".zip", NULL};
    for (const char *const *a = archives; *a; a++)
        if (str_ends_with_ci(operand, *a))
            return index_archive_open(operand, opt);
    return index_csv_open(operand, opt);
}
