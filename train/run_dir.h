/* A training run's output directory belongs to that run alone
 * (dit-train(1) FILES): a lock for the whole run, so that a second process
 * is refused at start, and the question whether the directory already
 * holds another run, so that a fresh run never mixes with or writes over
 * it. */
#ifndef DIT_TRAIN_RUN_DIR_H
#define DIT_TRAIN_RUN_DIR_H

#include <stddef.h>

#define RUN_DIR_LOCK "dit-train.lock"

struct run_dir {
    char *path;
    int fd;      /* the lock file, flock'ed; -1: none */
    int created; /* the directory did not exist before */
};

/* Creates dir when needed and takes its lock: an exclusive flock on
 * dir/dit-train.lock, which the kernel drops when the process ends however
 * it ends (kill -9 leaves no stale lock), with this process's PID written
 * into it. -1 with err_set() naming the directory and the PID that holds
 * it. */
int run_dir_lock(struct run_dir *d, const char *dir);
/* Drops the lock (the file stays: removing it would race with a process
 * waiting on it). */
void run_dir_unlock(struct run_dir *d);
/* A run that failed before writing anything: a directory it created is
 * removed with its lock, so a failed start leaves nothing behind. */
void run_dir_abandon(struct run_dir *d);

/* 1 when the directory holds a run's checkpoints or metrics, with what
 * (the newest checkpoint's step, metrics.jsonl's lines) said in what; 0
 * when it holds none; -1 with err_set(). */
int run_dir_used(const char *dir, char *what, size_t size);

/* --overwrite-output-dir: the locked directory replaced by an empty one in
 * one step (the fresh directory, locked, is exchanged with the old by
 * renameat2's RENAME_EXCHANGE), then the old run removed; the lock is the
 * fresh directory's. The old run is whole in place or gone, never half.
 * -1 with err_set(), the old run untouched. */
int run_dir_replace(struct run_dir *d);

#endif
