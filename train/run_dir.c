#include "train/run_dir.h"
#include "formats/checkpoint.h"
#include "libcommon/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Opens and flocks dir/dit-train.lock; -1 with err_set() (naming the
 * holder when it is held). */
static int lock_file(const char *dir, int *fd_out)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/" RUN_DIR_LOCK, dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        err_set("%s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int e = errno;
        char pid[64] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (e == EWOULDBLOCK)
            err_set("%s is in use by another dit-train (PID %s, holding %s): wait for it to finish, or give "
                    "another --output-dir",
                    dir, *pid ? pid : "unknown", RUN_DIR_LOCK);
        else
            err_set("%s: %s", path, strerror(e));
        close(fd);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        err_set("%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    *fd_out = fd;
    return 0;
}

int run_dir_lock(struct run_dir *d, const char *dir)
{
    d->fd = -1;
    d->path = strdup(dir);
    if (!d->path) {
        err_set("out of memory");
        return -1;
    }
    d->created = mkdir(dir, 0777) == 0;
    if (!d->created && errno != EEXIST) {
        err_set("%s: %s", dir, strerror(errno));
        return -1;
    }
    return lock_file(dir, &d->fd);
}

void run_dir_unlock(struct run_dir *d)
{
    if (d->fd >= 0)
        close(d->fd); /* closing the last descriptor drops the flock */
    free(d->path);
    d->fd = -1, d->path = NULL;
}

void run_dir_abandon(struct run_dir *d)
{
    if (!d->path || !d->created || d->fd < 0)
        return;
    DIR *dir = opendir(d->path);
    int others = 0;
    for (struct dirent *e; dir && (e = readdir(dir));)
        others += strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, RUN_DIR_LOCK);
    if (dir)
        closedir(dir);
    if (!dir || others)
        return;
    char path[4200];
    snprintf(path, sizeof path, "%s/" RUN_DIR_LOCK, d->path);
    unlink(path);
    rmdir(d->path);
}

int run_dir_used(const char *dir, char *what, size_t size)
{
    what[0] = 0;
    char *latest = NULL;
    int64_t step = -1;
    int rc = checkpoint_latest(dir, &latest, &step);
    free(latest);
    if (rc < 0)
        return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    long lines = -1;
    FILE *f = fopen(path, "r");
    if (f) {
        lines = 0;
        for (int c; (c = getc(f)) != EOF;)
            lines += c == '\n';
        fclose(f);
    }
    if (rc == 1 && lines < 0)
        return 0;
    if (rc == 0)
        snprintf(what, size, "checkpoints up to step %lld", (long long)step);
    if (lines >= 0)
        snprintf(what + strlen(what), size - strlen(what), "%smetrics.jsonl of %ld line%s", rc == 0 ? " and " : "",
                 lines, lines == 1 ? "" : "s");
    return 1;
}

int run_dir_replace(struct run_dir *d)
{
    char fresh[4200];
    snprintf(fresh, sizeof fresh, "%s.new-%ld", d->path, (long)getpid());
    int fd = -1;
    if (mkdir(fresh, 0777) != 0) {
        err_set("%s: %s", fresh, strerror(errno));
        return -1;
    }
    if (lock_file(fresh, &fd) != 0) {
        rmdir(fresh);
        return -1;
    }
    if (renameat2(AT_FDCWD, fresh, AT_FDCWD, d->path, RENAME_EXCHANGE) != 0) {
        err_set("%s: cannot exchange it with a fresh directory (%s); the old run is untouched", d->path,
                strerror(errno));
        close(fd);
        char lock[4300];
        snprintf(lock, sizeof lock, "%s/" RUN_DIR_LOCK, fresh);
        unlink(lock);
        rmdir(fresh);
        return -1;
    }
    /* fresh now names the old run: the lock on it can go, and the run too */
    close(d->fd);
    d->fd = fd;
    if (remove_tree(fresh) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", err_get());
        err_set("the old run, moved aside to %s, could not be removed: %s", fresh, why);
        return -1;
    }
    return 0;
}
