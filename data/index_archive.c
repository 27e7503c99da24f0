/* Archive input through libarchive: tar (plain, gzip, zstd, xz, bzip2) and
 * zip, in the webdataset convention: consecutive members whose names agree
 * up to the first dot of the file name form one sample (an image with its
 * .txt caption, .cls label and .json metadata). Records name the archive and
 * the member, so later stages read the image without extracting. */
#include "data/index.h"
#include "libcommon/error.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct member {
    char *name;
    char *data;
    size_t size;
};

struct archive_reader {
    struct index_reader base;
    struct index_options opt;
    char *path, *path_abs;
    struct archive *a;
    int done;
    int open_failed;
    char *held;          /* name of a member whose header was read but not yet used */
    char *held_reason;   /* why that member is not read (not a regular file), or NULL */
    int have_held;
};

/* "dir/abc.seg.png" -> key "dir/abc", extension "seg.png" */
static char *sample_key(const char *name, const char **ext)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strchr(base, '.');
    *ext = dot ? dot + 1 : "";
    return strndup(name, dot ? (size_t)(dot - name) : strlen(name));
}

/* Reads the current member's data (at most limit bytes kept). */
static int read_member(struct archive_reader *r, struct member *m)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    for (;;) {
        if (n == cap) {
            char *g = realloc(buf, cap *= 2);
            if (!g) {
                free(buf);
                return -1;
            }
            buf = g;
        }
        la_ssize_t got = archive_read_data(r->a, buf + n, cap - n);
        if (got < 0) {
            free(buf);
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    m->data = buf;
    m->size = n;
    return 0;
}

static char *trimmed_text(const struct member *m)
{
    size_t n = m->size;
    while (n && (m->data[n - 1] == '\n' || m->data[n - 1] == '\r' || m->data[n - 1] == ' ' ||
                 m->data[n - 1] == '\t'))
        n--;
    return strndup(m->data, n);
}

/* Why a member that is not a regular file is not read, or NULL for a
 * regular file. Links are never followed: a "link.jpg -> /etc/passwd" member
 * would otherwise read outside the archive. */
static char *not_regular_reason(struct archive_entry *e)
{
    const char *hard = archive_entry_hardlink(e);
    if (hard)
        return index_strdup_printf("member is a hard link (to %s), not a regular file", hard);
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
        return NULL;
    case AE_IFLNK: {
        const char *to = archive_entry_symlink(e);
        return index_strdup_printf("member is a symbolic link (to %s), not a regular file", to ? to : "?");
    }
    case AE_IFDIR:
        return strdup("member is a directory, not a regular file");
    case AE_IFIFO:
        return strdup("member is a FIFO, not a regular file");
    case AE_IFCHR:
        return strdup("member is a character device, not a regular file");
    case AE_IFBLK:
        return strdup("member is a block device, not a regular file");
    case AE_IFSOCK:
        return strdup("member is a socket, not a regular file");
    default:
        return strdup("member is not a regular file");
    }
}

/* Next member header; 1 with its name in r->held (and r->held_reason set
 * when it is not a regular file), 0 at the end, -1 on a fatal archive
 * error (err_set). Directories are the archive's tree, not members, and are
 * passed over, unless named like an image file. */
static int next_header(struct archive_reader *r)
{
    if (r->have_held)
        return 1;
    for (;;) {
        struct archive_entry *e;
        int rc = archive_read_next_header(r->a, &e);
        if (rc == ARCHIVE_EOF)
            return 0;
        if (rc < ARCHIVE_WARN) {
            err_set("%s", archive_error_string(r->a) ? archive_error_string(r->a) : "read error");
            return -1;
        }
        const char *name = archive_entry_pathname(e);
        if (!name)
            continue;
        /* "./a/b.jpg" (tar run on ".") names the same member as "a/b.jpg". */
        while (name[0] == '.' && name[1] == '/')
            name += 2;
        size_t len = strlen(name);
        while (len && name[len - 1] == '/')
            len--;
        char *bare = strndup(name, len);
        if (!bare) {
            err_set("out of memory");
            return -1;
        }
        if (archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e) &&
            !index_is_image_name(bare) && !index_is_other_image_name(bare)) {
            free(bare);
            continue;
        }
        free(r->held);
        free(r->held_reason);
        r->held = bare;
        r->held_reason = not_regular_reason(e);
        r->have_held = 1;
        return 1;
    }
}

static int is_ext(const char *ext, const char *want)
{
    const char *last = strrchr(ext, '.');
    return strcasecmp(last ? last + 1 : ext, want) == 0;
}

static int archive_next(struct index_reader *base, struct index_item *item)
{
    struct archive_reader *r = (struct archive_reader *)base;
    if (r->done)
        return 0;
    memset(item, 0, sizeof *item);
    if (r->open_failed) {
        r->done = 1;
        item->where = strdup(r->path);
        index_item_reject(item, INDEX_ARCHIVE, "%s", err_get());
        return 1;
    }
    for (;;) {
        int rc = next_header(r);
        if (rc <= 0) {
            r->done = 1;
            if (rc == 0)
                return 0;
            item->where = strdup(r->path);
            index_item_reject(item, INDEX_ARCHIVE, "cannot be read further: %s", err_get());
            return 1;
        }
        if (r->held_reason) {
            /* Reported and counted like any rejected record, never read. */
            r->have_held = 0;
            const char *ext;
            item->key = sample_key(r->held, &ext);
            item->where = index_strdup_printf("%s!/%s", r->path, r->held);
            item->source = index_strdup_printf("%s!/%s", r->path_abs, r->held);
            index_item_reject(item, INDEX_UNREADABLE, "%s", r->held_reason);
            return 1;
        }
        /* Gather the sample: this member and the next ones with its key. */
        const char *ext;
        char *key = sample_key(r->held, &ext);
        struct member image = {0};
        char *image_ext = NULL;
        int unsupported = 0;
        char *first_name = strdup(r->held);
        while (rc == 1 && !r->held_reason) {
            const char *e2;
            char *k2 = sample_key(r->held, &e2);
            int same = strcmp(k2, key) == 0;
            free(k2);
            if (!same)
                break;
            r->have_held = 0;
            struct member m = {strdup(r->held), NULL, 0};
            int want = (index_is_image_name(r->held) && !image.name) || is_ext(e2, "txt") ||
                       is_ext(e2, "cls") || is_ext(e2, "json");
            if (want && read_member(r, &m) != 0) {
                free(m.name);
                free(key);
                free(first_name);
                free(image.name);
                free(image.data);
                free(image_ext);
                index_item_free(item, 0);
                r->done = 1;
                item->where = index_strdup_printf("%s!/%s", r->path, r->held);
                index_item_reject(item, INDEX_ARCHIVE, "member cannot be read: %s",
                                  archive_error_string(r->a) ? archive_error_string(r->a) : "out of memory");
                return 1;
            }
            if (index_is_image_name(r->held) && !image.name) {
                image = m;
                image_ext = strdup(e2);
                m.name = NULL;
                m.data = NULL;
            } else if (is_ext(e2, "txt")) {
                free(item->caption);
                item->caption = trimmed_text(&m);
            } else if (is_ext(e2, "cls")) {
                free(item->label);
                item->label = trimmed_text(&m);
            } else if (is_ext(e2, "json")) {
                free(item->json);
                item->json = trimmed_text(&m);
            } else if (index_is_other_image_name(r->held) && !image.name) {
                unsupported = 1;
                free(first_name);
                first_name = strdup(r->held);
            } else {
                base->n_other_files++;
            }
            free(m.name);
            free(m.data);
            rc = next_header(r);
        }
        if (rc < 0) {
            /* The sample so far is used; the error surfaces on the next call. */
            r->have_held = 0;
        }
        free(image_ext);
        if (!image.name && !unsupported) {
            /* Captions or metadata without an image: not a sample. */
            free(key);
            free(first_name);
            free(item->caption);
            free(item->label);
            free(item->json);
            item->caption = item->label = item->json = NULL;
            base->n_other_files++;
            if (rc < 0) {
                r->done = 1;
                item->where = strdup(r->path);
                index_item_reject(item, INDEX_ARCHIVE, "cannot be read further: %s", err_get());
                return 1;
            }
            if (rc == 0) {
                r->done = 1;
                return 0;
            }
            continue;
        }
        const char *member = image.name ? image.name : first_name;
        item->where = index_strdup_printf("%s!/%s", r->path, member);
        item->source = index_strdup_printf("%s!/%s", r->path_abs, member);
        item->key = key;
        if (!item->caption) /* as for folders: the stem names the image */
            item->caption = index_caption_from_stem(member);
        item->data = image.data;
        item->size = image.size;
        if (!r->opt.allow_outside && index_path_escapes(member))
            index_item_reject(item, INDEX_OUTSIDE, "member name escapes the archive root (--allow-outside accepts it)");
        else if (!image.name)
            index_item_reject(item, INDEX_UNSUPPORTED, "unsupported format (only JPEG, PNG and WebP are read)");
        else if (item->data && item->size == 0)
            index_item_reject(item, INDEX_EMPTY, "empty member");
        else if (item->label) {
            char *end;
            long v = strtol(item->label, &end, 10);
            if (end == item->label || *end || v < 0)
                index_item_reject(item, INDEX_BAD_LABEL, "class label '%s' is not a non-negative integer",
                                  item->label);
        }
        if (item->reject == INDEX_KEPT && item->data && item->size == 0) {
            free(item->data);
            item->data = NULL;
        }
        free(image.name);
        free(first_name);
        if (rc == 0)
            r->done = 1;
        return 1;
    }
}

static void archive_close(struct index_reader *base)
{
    struct archive_reader *r = (struct archive_reader *)base;
    if (r->a)
        archive_read_free(r->a);
    free(r->held);
    free(r->held_reason);
    free(r->path);
    free(r->path_abs);
    free(r);
}

struct index_reader *index_archive_open(const char *path, const struct index_options *opt)
{
    struct archive_reader *r = calloc(1, sizeof *r);
    if (!r) {
        err_set("%s: out of memory", path);
        return NULL;
    }
    r->base.name = path;
    r->base.next = archive_next;
    r->base.close = archive_close;
    r->base.is_archive = 1;
    r->opt = *opt;
    r->path = strdup(path);
    r->path_abs = index_absolute(path);
    if (!r->path || !r->path_abs) {
        archive_close(&r->base);
        return NULL;
    }
    r->a = archive_read_new();
    archive_read_support_filter_all(r->a);
    archive_read_support_format_tar(r->a);
    archive_read_support_format_zip(r->a);
    if (archive_read_open_filename(r->a, path, 1 << 20) != ARCHIVE_OK) {
        /* Reported as a rejected input, so the other inputs still go on. */
        err_set("cannot open the archive: %s",
                archive_error_string(r->a) ? archive_error_string(r->a) : strerror(errno));
        r->open_failed = 1;
    }
    return &r->base;
}
