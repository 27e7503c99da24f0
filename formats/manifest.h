/* The manifest: the text file every stage reads and writes (dit-manifest(5)).
 *
 * UTF-8, tab-separated, a header row naming the columns, one record per line,
 * with \t \n \r \\ escaped inside fields and a unique `key` column. Readers
 * stream: memory does not grow with the file except for the key check, which
 * keeps a 128-bit hash and a line number per record (24 bytes, in a table
 * at most 70% full). */
#ifndef DIT_MANIFEST_H
#define DIT_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct manifest_record {
    size_t nfields;
    char **fields; /* unescaped, NUL-terminated; owned by the reader, valid until the next read */
};

struct manifest_reader;

enum {
    MANIFEST_CHECK_KEYS = 1, /* report duplicate keys (the default for tools) */
};

/* Opens path ("-" is standard input) and reads and checks the header.
 * NULL with err_set("PATH:1: reason") on error. */
struct manifest_reader *manifest_open(const char *path, int flags);
void manifest_close(struct manifest_reader *r);

size_t manifest_ncols(const struct manifest_reader *r);
const char *manifest_column(const struct manifest_reader *r, size_t i);
const char *const *manifest_columns(const struct manifest_reader *r);
/* Index of the named column, or -1 when the manifest has none. */
int manifest_column_index(const struct manifest_reader *r, const char *name);
const char *manifest_path(const struct manifest_reader *r);

/* Reads the next record: 1 a record, 0 end of file, -1 a bad record (with
 * err_set("PATH:LINE: reason")). Reading may go on after a bad record, which
 * lets tools report every problem and keep the good records. */
int manifest_next(struct manifest_reader *r, struct manifest_record *rec);
/* Line number of the record last returned (the header is line 1). */
uint64_t manifest_line(const struct manifest_reader *r);

/* Checks a column name: [A-Za-z_][A-Za-z0-9_.-]*. */
int manifest_column_name_valid(const char *name);

/* Escapes src into a malloc'd string; NULL when out of memory. */
char *manifest_escape(const char *src);
/* Unescapes s[0..n) in place into a NUL-terminated string. -1 with a reason
 * in err_set() on a bad escape, invalid UTF-8 or a NUL byte. */
int manifest_unescape(char *s, size_t n);

struct manifest_writer;

/* Opens path for writing ("-" is standard output; any other path is written
 * to a temporary name and renamed into place on commit) and writes the
 * header. The columns must be valid and unique and include `key`. */
struct manifest_writer *manifest_writer_open(const char *path, size_t ncols,
                                             const char *const *columns);
/* Writes one record of ncols fields (NULL means empty). */
int manifest_write(struct manifest_writer *w, const char *const *fields);
/* Finishes the file; 0, or -1 with err_set(). Frees w either way. */
int manifest_writer_commit(struct manifest_writer *w);
/* Drops what was written (the previous file, if any, stays). Frees w. */
void manifest_writer_abort(struct manifest_writer *w);

/* Counts records and problems in a whole manifest; each problem is passed to
 * report (when non-NULL). Returns the number of problems, or -1 when the
 * file cannot be opened at all (then err_get() says why). */
long manifest_validate(const char *path, uint64_t *n_records,
                       void (*report)(void *ctx, const char *problem), void *ctx);

#endif
