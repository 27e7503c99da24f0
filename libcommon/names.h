/* Small helpers for names: suffix tests, sorting string arrays, and the
 * sorted listing of a directory that indexing, inspection and the shard
 * cache all walk. */
#ifndef DIT_NAMES_H
#define DIT_NAMES_H

#include <stddef.h>

int str_ends_with(const char *s, const char *suffix);
int str_ends_with_ci(const char *s, const char *suffix); /* ASCII case-insensitive */
/* qsort/bsearch comparator for arrays of char *. */
int str_ptr_cmp(const void *a, const void *b);

/* The visible entries of dir (names not starting with '.', which also
 * leaves out the temporary files of atomic writes), sorted by strcmp.
 * NULL with err_set() when dir cannot be read; *n is set either way. Free
 * with names_free. */
char **dir_list_sorted(const char *dir, size_t *n);
void names_free(char **names, size_t n);

#endif
