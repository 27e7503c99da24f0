/* Ranks from the launcher's environment: each launcher's variables, none
 * (one process), Slurm's batch-shell variables alone (not a world), bad
 * numbers, ranks outside the world, launchers that disagree. */
#include "harness.h"
#include "libcommon/error.h"
#include "train/launcher.h"

#include <string.h>

static const char *const *vars; /* NAME=VALUE, NULL-terminated */

static const char *fake_env(const char *name)
{
    size_t n = strlen(name);
    for (const char *const *v = vars; v && *v; v++)
        if (strncmp(*v, name, n) == 0 && (*v)[n] == '=')
            return *v + n + 1;
    return NULL;
}

static int detect(const char *const *set, struct launcher *l)
{
    vars = set;
    return launcher_detect(l, fake_env);
}

TEST(launcher_ranks_from_each_launcher)
{
    struct launcher l;
    CHECK_INT(detect((const char *const[]){NULL}, &l), 0);
    CHECK_STR(l.name, "none");
    CHECK(l.rank == 0 && l.world == 1 && l.local_rank == 0);
    CHECK_INT(detect((const char *const[]){"RANK=3", "WORLD_SIZE=4", "LOCAL_RANK=1", "MASTER_ADDR=h0", NULL}, &l), 0);
    CHECK_STR(l.name, "torchrun");
    CHECK(l.rank == 3 && l.world == 4 && l.local_rank == 1);
    CHECK_INT(detect((const char *const[]){"OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=2",
                                           "OMPI_COMM_WORLD_LOCAL_RANK=1", NULL},
                     &l),
              0);
    CHECK_STR(l.name, "mpirun");
    CHECK(l.rank == 1 && l.world == 2 && l.local_rank == 1);
    CHECK_INT(detect((const char *const[]){"SLURM_PROCID=5", "SLURM_NTASKS=8", "SLURM_LOCALID=1", NULL}, &l), 0);
    CHECK_STR(l.name, "srun");
    CHECK(l.rank == 5 && l.world == 8);
    /* a batch script's shell has SLURM_LOCALID alone: one process */
    CHECK_INT(detect((const char *const[]){"SLURM_LOCALID=0", "SLURM_JOB_ID=7", NULL}, &l), 0);
    CHECK_STR(l.name, "none");
    /* mpirun and the RANK the user exported from it agree */
    CHECK_INT(detect((const char *const[]){"RANK=1", "WORLD_SIZE=2", "OMPI_COMM_WORLD_RANK=1",
                                           "OMPI_COMM_WORLD_SIZE=2", NULL},
                     &l),
              0);
    CHECK(l.rank == 1 && l.world == 2);
}

TEST(launcher_bad_environments_are_named)
{
    struct launcher l;
    CHECK(detect((const char *const[]){"RANK=x", "WORLD_SIZE=2", NULL}, &l) != 0);
    CHECK_CONTAINS(err_get(), "RANK='x'");
    CHECK(detect((const char *const[]){"RANK=2", "WORLD_SIZE=2", NULL}, &l) != 0);
    CHECK_CONTAINS(err_get(), "RANK=2 is outside WORLD_SIZE=2");
    CHECK(detect((const char *const[]){"RANK=0", "WORLD_SIZE=2", "SLURM_PROCID=1", "SLURM_NTASKS=2", NULL}, &l) != 0);
    CHECK_CONTAINS(err_get(), "torchrun says rank 0 of 2, srun rank 1 of 2");
}
