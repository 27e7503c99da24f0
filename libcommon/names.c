#include "libcommon/names.h"
#include "libcommon/error.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int str_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int str_ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int str_ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

char **dir_list_sorted(const char *dir, size_t *n)
{
    DIR *d = opendir(dir);
    *n = 0;
    if (!d) {
        err_set("%s: %s", dir, strerror(errno));
        return NULL;
    }
    size_t cap = 64;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    int failed = !names;
    while (!failed && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (*n == cap) {
            char **g = realloc(names, (cap *= 2) * sizeof *names);
            if (!g) {
                failed = 1;
                break;
            }
            names = g;
        }
        if (!(names[*n] = strdup(e->d_name)))
            failed = 1;
        else
            (*n)++;
    }
    closedir(d);
    if (failed) {
        names_free(names, *n);
        *n = 0;
        err_set("%s: out of memory", dir);
        return NULL;
    }
    qsort(names, *n, sizeof *names, str_ptr_cmp);
    return names;
}
