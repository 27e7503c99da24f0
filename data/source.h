/* Reading the bytes a manifest's `source` names: a file path, or a member of
 * a tar or zip archive written ARCHIVE!/MEMBER (dit-manifest(5)). */
#ifndef DIT_SOURCE_H
#define DIT_SOURCE_H

#include <stddef.h>

struct source_reader;

/* base_dir: relative paths are taken from it (NULL: the current directory). */
struct source_reader *source_reader_new(const char *base_dir);
void source_reader_free(struct source_reader *r);

/* Whether source names an archive member (reads of those are sequential:
 * call them from one thread, in manifest order for speed). */
int source_is_archive_member(const char *source);

/* Reads the whole file or member into a malloc'd buffer. Files may be read
 * from several threads at once; archive members from one thread at a time.
 * -1 with err_set("SOURCE: reason"). */
int source_read(struct source_reader *r, const char *source, void **data, size_t *size);

#endif
