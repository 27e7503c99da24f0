/* Which process of a launched job this is: rank, world size and local rank
 * from the environment the launcher sets (dit-train(1)), the first step of
 * data-parallel training (issue 19).
 *
 *   OpenMPI mpirun     OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK
 *   Slurm srun         SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
 *   torchrun,          RANK, WORLD_SIZE, LOCAL_RANK (MASTER_ADDR and
 *   deepspeed          MASTER_PORT name the rendezvous)
 *
 * Nothing set: one process, rank 0 of 1. */
#ifndef DIT_TRAIN_LAUNCHER_H
#define DIT_TRAIN_LAUNCHER_H

struct launcher {
    const char *name; /* "mpirun", "srun", "torchrun" (also deepspeed's), or "none" */
    int rank, world, local_rank;
};

/* Reads the environment through getenv (get: NULL for the process's own,
 * or a lookup for tests). -1 with err_set() naming the variable when one
 * is not a number, a rank is outside its world, or two launchers' sets
 * disagree. */
int launcher_detect(struct launcher *l, const char *(*get)(const char *name));

#endif
