/* Checkpoint directories: OUT/checkpoint-NNNNNNN/, each complete or absent.
 *
 * A checkpoint is written into a hidden temporary directory beside it and
 * renamed into place when every file is written and synced, so an
 * interrupted write (a kill, a full disk) leaves the previous checkpoints
 * intact and no partial one visible. What goes inside is the caller's
 * (dit-train(1) documents the layout). */
#ifndef DIT_CHECKPOINT_H
#define DIT_CHECKPOINT_H

#include <stdint.h>

/* Creates OUT (if needed) and an empty temporary directory for the
 * checkpoint of `step`; *tmp is malloc'd. -1 with err_set(). */
int checkpoint_begin(const char *out, int64_t step, char **tmp);
/* Renames tmp to OUT/checkpoint-NNNNNNN (replacing one of the same step)
 * and syncs OUT. *final (when non-NULL) gets the path, malloc'd. Frees tmp. */
int checkpoint_commit(const char *out, char *tmp, int64_t step, char **final);
/* Removes tmp and everything in it; frees tmp. */
void checkpoint_abort(char *tmp);

/* The newest complete checkpoint of OUT: *path malloc'd and *step set; 0 when
 * found, 1 when OUT has none, -1 on an error. Stale temporary directories of
 * interrupted writes are removed. */
int checkpoint_latest(const char *out, char **path, int64_t *step);
/* The step of a checkpoint directory from its name; -1 if it is not one. */
int64_t checkpoint_step(const char *path);
/* Deletes the oldest checkpoints of OUT so that at most `keep` remain. */
int checkpoint_prune(const char *out, int keep);
/* rm -r */
int remove_tree(const char *path);

#endif
