#include "libcommon/atomic_file.h"
#include "libcommon/error.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fsync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy) {
        err_set("%s: out of memory", path);
        return -1;
    }
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0) {
        err_set("%s: cannot open its directory: %s", path, strerror(errno));
        return -1;
    }
    /* Some file systems refuse fsync on directories; the rename itself is done. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
        err_set("%s: fsync of its directory failed: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int atomic_file_open(struct atomic_file *af, const char *path)
{
    memset(af, 0, sizeof *af);
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    const char *base = path + dir_len;
    size_t n = strlen(path) + 32;
    af->path = strdup(path);
    af->tmp_path = malloc(n);
    if (!af->path || !af->tmp_path) {
        err_set("%s: out of memory", path);
        atomic_file_abort(af);
        return -1;
    }
    /* A hidden name in the same directory: never mistaken for output. */
    snprintf(af->tmp_path, n, "%.*s.%s.tmp.XXXXXX", (int)dir_len, path, base);
    int fd = mkstemp(af->tmp_path);
    if (fd < 0) {
        err_set("%s: cannot create a temporary file: %s", path, strerror(errno));
        free(af->tmp_path);
        af->tmp_path = NULL;
        atomic_file_abort(af);
        return -1;
    }
    /* mkstemp makes 0600; outputs should honour the umask like any file. */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        err_set("%s: %s", path, strerror(errno));
        close(fd);
        atomic_file_abort(af);
        return -1;
    }
    return 0;
}

static void atomic_file_release(struct atomic_file *af)
{
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    af->fp = NULL;
}

void atomic_file_abort(struct atomic_file *af)
{
    if (af->fp)
        fclose(af->fp);
    if (af->tmp_path)
        unlink(af->tmp_path);
    atomic_file_release(af);
}

int atomic_file_commit(struct atomic_file *af)
{
    int failed = 0;
    if (fflush(af->fp) != 0 || ferror(af->fp)) {
        err_set("%s: write failed: %s", af->path, strerror(errno));
        failed = 1;
    } else if (fsync(fileno(af->fp)) != 0) {
        err_set("%s: fsync failed: %s", af->path, strerror(errno));
        failed = 1;
    }
    if (fclose(af->fp) != 0 && !failed) {
        err_set("%s: close failed: %s", af->path, strerror(errno));
        failed = 1;
    }
    af->fp = NULL;
    if (!failed && rename(af->tmp_path, af->path) != 0) {
        err_set("%s: cannot rename %s into place: %s", af->path, af->tmp_path,
                strerror(errno));
        failed = 1;
    }
    if (failed) {
        unlink(af->tmp_path);
        atomic_file_release(af);
        return -1;
    }
    int rc = fsync_parent_dir(af->path);
    atomic_file_release(af);
    return rc;
}

int atomic_write(const char *path, const void *data, size_t size)
{
    struct atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        return -1;
    if (size && fwrite(data, 1, size, af.fp) != size) {
        err_set("%s: write failed: %s", path, strerror(errno));
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}
