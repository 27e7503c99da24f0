/* JSON through jansson, with the error conventions of libcommon. */
#ifndef DIT_JSON_H
#define DIT_JSON_H

#include <jansson.h>
#include <stddef.h>

/* Parses a whole file. NULL with err_set("PATH:LINE:COL: reason") on error. */
json_t *json_read_file(const char *path);
/* Parses a buffer; name is used in the error message. */
json_t *json_read_buffer(const char *name, const char *data, size_t size);
/* Writes pretty, key-sorted JSON atomically (temporary name, fsync, rename). */
int json_write_file(const char *path, const json_t *value);
/* Serialises compactly with sorted keys; caller frees. NULL on failure. */
char *json_to_string(const json_t *value);

#endif
