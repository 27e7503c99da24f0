/* Files that appear whole or not at all.
 *
 * Output goes to a temporary name beside the destination (same directory,
 * so rename(2) is atomic), is fsynced, and is renamed into place on commit.
 * An interrupted run, kill -9 included, leaves the previous file intact and
 * at worst a stray ".PATH.tmp.*" file, which the next run may remove. */
#ifndef DIT_ATOMIC_FILE_H
#define DIT_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

struct atomic_file {
    char *path;     /* destination */
    char *tmp_path; /* where the bytes go until commit */
    FILE *fp;       /* buffered stream on tmp_path */
};

/* Creates the temporary file. Returns 0, or -1 with err_set(). */
int atomic_file_open(struct atomic_file *af, const char *path);
/* Flushes, fsyncs, renames into place and fsyncs the directory.
 * On failure the temporary file is removed. Frees af's strings either way. */
int atomic_file_commit(struct atomic_file *af);
/* Removes the temporary file and frees af's strings. */
void atomic_file_abort(struct atomic_file *af);

/* Whole-buffer convenience: writes data to path atomically. */
int atomic_write(const char *path, const void *data, size_t size);

/* fsync of the directory holding path, so a rename survives a crash. */
int fsync_parent_dir(const char *path);

#endif
