#include "formats/checkpoint.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PREFIX "checkpoint-"

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int remove_tree(const char *path)
{
    return nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

int64_t checkpoint_step(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, PREFIX, strlen(PREFIX)) != 0)
        return -1;
    const char *digits = base + strlen(PREFIX);
    char *end;
    errno = 0;
    long long v = strtoll(digits, &end, 10);
    if (end == digits || *end || errno || v < 0)
        return -1;
    return v;
}

int checkpoint_begin(const char *out, int64_t step, char **tmp)
{
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        err_set("%s: cannot create the output directory: %s", out, strerror(errno));
        return -1;
    }
    if (asprintf(tmp, "%s/." PREFIX "%07lld.tmp.XXXXXX", out, (long long)step) < 0) {
        err_set("%s: out of memory", out);
        return -1;
    }
    if (!mkdtemp(*tmp)) {
        err_set("%s: cannot create a checkpoint directory: %s", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
        return -1;
    }
    return 0;
}

int checkpoint_commit(const char *out, char *tmp, int64_t step, char **final)
{
    char *dst = NULL, *old = NULL;
    int rc = -1;
    if (asprintf(&dst, "%s/" PREFIX "%07lld", out, (long long)step) < 0 ||
        asprintf(&old, "%s/." PREFIX "%07lld.old", out, (long long)step) < 0) {
        err_set("%s: out of memory", out);
        goto done;
    }
    /* The same step again (an end-of-run checkpoint right after a periodic
     * one): move the old one aside first, remove it once the new is in. */
    struct stat st;
    int replacing = stat(dst, &st) == 0;
    if (replacing && rename(dst, old) != 0) {
        err_set("%s: %s", dst, strerror(errno));
        goto done;
    }
    if (rename(tmp, dst) != 0) {
        err_set("%s: cannot rename %s into place: %s", dst, tmp, strerror(errno));
        if (replacing)
            rename(old, dst);
        goto done;
    }
    if (replacing)
        remove_tree(old);
    rc = fsync_parent_dir(dst);
    if (rc == 0 && final) {
        *final = dst;
        dst = NULL;
    }
done:
    if (rc != 0)
        checkpoint_abort(tmp);
    else
        free(tmp);
    free(dst);
    free(old);
    return rc;
}

void checkpoint_abort(char *tmp)
{
    if (tmp)
        remove_tree(tmp);
    free(tmp);
}

/* Steps of the complete checkpoints of OUT, ascending; removes stale
 * temporary directories. */
static int64_t *list_steps(const char *out, size_t *n)
{
    *n = 0;
    DIR *d = opendir(out);
    if (!d)
        return NULL;
    size_t cap = 16;
    int64_t *steps = malloc(cap * sizeof *steps);
    struct dirent *e;
    while (steps && (e = readdir(d))) {
        if (e->d_name[0] == '.' && strncmp(e->d_name, "." PREFIX, strlen(PREFIX) + 1) == 0 &&
            (strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".old"))) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", out, e->d_name);
            remove_tree(path);
            continue;
        }
        int64_t s = checkpoint_step(e->d_name);
        if (s < 0)
            continue;
        if (*n == cap) {
            int64_t *g = realloc(steps, (cap *= 2) * sizeof *g);
            if (!g) {
                free(steps);
                steps = NULL;
                break;
            }
            steps = g;
        }
        steps[(*n)++] = s;
    }
    closedir(d);
    for (size_t i = 1; steps && i < *n; i++)
        for (size_t j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            int64_t t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return steps;
}

int checkpoint_latest(const char *out, char **path, int64_t *step)
{
    size_t n;
    int64_t *steps = list_steps(out, &n);
    if (!steps || n == 0) {
        free(steps);
        return 1;
    }
    *step = steps[n - 1];
    free(steps);
    if (asprintf(path, "%s/" PREFIX "%07lld", out, (long long)*step) < 0) {
        err_set("%s: out of memory", out);
        return -1;
    }
    return 0;
}

int checkpoint_prune(const char *out, int keep)
{
    size_t n;
    int64_t *steps = list_steps(out, &n);
    int rc = 0;
    for (size_t i = 0; steps && keep >= 0 && i + (size_t)keep < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/" PREFIX "%07lld", out, (long long)steps[i]);
        if (remove_tree(path) != 0) {
            err_set("%s: cannot remove: %s", path, strerror(errno));
            rc = -1;
        }
    }
    free(steps);
    return rc;
}
