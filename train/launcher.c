#include "train/launcher.h"
#include "libcommon/error.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

static const char *env(const char *name)
{
    return getenv(name);
}

/* *out = the variable's value; 0 when absent, 1 when read, -1 when it is
 * not a non-negative integer. */
static int number(const char *(*get)(const char *), const char *name, int *out)
{
    const char *v = get(name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 0 || x > INT_MAX) {
        err_set("%s='%s' is not a rank or a count", name, v);
        return -1;
    }
    *out = (int)x;
    return 1;
}

/* One launcher's three variables; found = how many are set. */
static int read_set(const char *(*get)(const char *), const char *const names[3], int v[3], int *found)
{
    *found = 0;
    for (int i = 0; i < 3; i++) {
        int rc = number(get, names[i], &v[i]);
        if (rc < 0)
            return -1;
        *found += rc;
    }
    return 0;
}

int launcher_detect(struct launcher *l, const char *(*get)(const char *))
{
    static const struct {
        const char *name, *vars[3]; /* rank, world, local rank */
    } sets[] = {
        {"torchrun", {"RANK", "WORLD_SIZE", "LOCAL_RANK"}},
        {"mpirun", {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"}},
        {"srun", {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"}},
    };
    if (!get)
        get = env;
    *l = (struct launcher){"none", 0, 1, 0};
    int have = 0;
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        int v[3] = {0, 1, 0}, found;
        if (read_set(get, sets[s].vars, v, &found) != 0)
            return -1;
        /* Slurm sets its variables for a batch script's own shell too: only
         * a world of its tasks counts (SLURM_NTASKS with SLURM_PROCID) */
        if (found == 0 || (found < 2 && s == 2))
            continue;
        if (v[1] < 1 || v[0] >= v[1]) {
            err_set("%s: %s=%d is outside %s=%d", sets[s].name, sets[s].vars[0], v[0], sets[s].vars[1], v[1]);
            return -1;
        }
        if (have && (v[0] != l->rank || v[1] != l->world)) {
            err_set("%s says rank %d of %d, %s rank %d of %d: launched twice over?", l->name, l->rank, l->world,
                    sets[s].name, v[0], v[1]);
            return -1;
        }
        if (!have)
            *l = (struct launcher){sets[s].name, v[0], v[1], v[2]};
        have = 1;
    }
    return 0;
}
