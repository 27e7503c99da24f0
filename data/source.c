/* Archive members are found by reading the archive forward from where the
 * last member was found; manifests from dit-index list an archive's members
 * in archive order, so a whole archive is read once. A member behind the
 * current position costs one reopen. */
#include "data/source.h"
#include "libcommon/error.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct source_reader {
    char *base_dir;
    char *archive_path; /* the archive now open */
    struct archive *a;
};

struct source_reader *source_reader_new(const char *base_dir)
{
    struct source_reader *r = calloc(1, sizeof *r);
    if (r && base_dir && !(r->base_dir = strdup(base_dir))) {
        free(r);
        r = NULL;
    }
    if (!r)
        err_set("out of memory");
    return r;
}

static void close_archive(struct source_reader *r)
{
    if (r->a)
        archive_read_free(r->a);
    r->a = NULL;
    free(r->archive_path);
    r->archive_path = NULL;
}

void source_reader_free(struct source_reader *r)
{
    if (!r)
        return;
    close_archive(r);
    free(r->base_dir);
    free(r);
}

int source_is_archive_member(const char *source)
{
    return strstr(source, "!/") != NULL;
}

static char *resolve(const struct source_reader *r, const char *path)
{
    if (path[0] == '/' || !r->base_dir)
        return strdup(path);
    size_t n = strlen(r->base_dir) + strlen(path) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", r->base_dir, path);
    return p;
}

static int read_file(const char *source, const char *path, void **data, size_t *size)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        err_set("%s: %s", source, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        err_set("%s: out of memory for %zu bytes", source, n);
        return -1;
    }
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            err_set("%s: %s", source, k < 0 ? strerror(errno) : "file shrank while reading");
            free(buf);
            close(fd);
            return -1;
        }
        got += (size_t)k;
    }
    close(fd);
    *data = buf;
    *size = n;
    return 0;
}

static int open_archive(struct source_reader *r, const char *path)
{
    close_archive(r);
    r->a = archive_read_new();
    if (!r->a)
        return -1;
    archive_read_support_filter_all(r->a);
    archive_read_support_format_tar(r->a);
    archive_read_support_format_zip(r->a);
    if (archive_read_open_filename(r->a, path, 1 << 20) != ARCHIVE_OK) {
        err_set("%s: cannot open the archive: %s", path, archive_error_string(r->a));
        close_archive(r);
        return -1;
    }
    r->archive_path = strdup(path);
    return r->archive_path ? 0 : -1;
}

/* Reads forward to member; 1 found (positioned at its data), 0 not before
 * the end, -1 error. */
static int seek_member(struct source_reader *r, const char *member)
{
    struct archive_entry *e;
    int rc;
    while ((rc = archive_read_next_header(r->a, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
        const char *name = archive_entry_pathname(e);
        while (name && name[0] == '.' && name[1] == '/')
            name += 2; /* as dit-index records them */
        if (name && strcmp(name, member) == 0)
            return 1;
    }
    if (rc == ARCHIVE_EOF)
        return 0;
    err_set("%s: %s", r->archive_path, archive_error_string(r->a));
    return -1;
}

static int read_member(struct source_reader *r, const char *source, const char *archive,
                       const char *member, void **data, size_t *size)
{
    int found = 0;
    if (r->archive_path && strcmp(r->archive_path, archive) == 0 && r->a)
        found = seek_member(r, member);
    if (found == 0) {
        if (open_archive(r, archive) != 0) {
            err_prefix("%s", source);
            return -1;
        }
        found = seek_member(r, member);
    }
    if (found <= 0) {
        if (found == 0)
            err_set("%s: no member '%s' in the archive", source, member);
        close_archive(r);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            err_set("%s: out of memory", source);
            return -1;
        }
        if (n == cap) {
            char *g = realloc(buf, cap *= 2);
            if (!g) {
                free(buf);
                buf = NULL;
                continue;
            }
            buf = g;
        }
        la_ssize_t k = archive_read_data(r->a, buf + n, cap - n);
        if (k < 0) {
            err_set("%s: %s", source, archive_error_string(r->a));
            free(buf);
            close_archive(r);
            return -1;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    *data = buf;
    *size = n;
    return 0;
}

int source_read(struct source_reader *r, const char *source, void **data, size_t *size)
{
    const char *bang = strstr(source, "!/");
    if (!bang) {
        char *path = resolve(r, source);
        if (!path) {
            err_set("%s: out of memory", source);
            return -1;
        }
        int rc = read_file(source, path, data, size);
        free(path);
        return rc;
    }
    char *archive_rel = strndup(source, (size_t)(bang - source));
    char *archive = archive_rel ? resolve(r, archive_rel) : NULL;
    free(archive_rel);
    if (!archive) {
        err_set("%s: out of memory", source);
        return -1;
    }
    int rc = read_member(r, source, archive, bang + 2, data, size);
    free(archive);
    return rc;
}
