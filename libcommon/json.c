#include "libcommon/json.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"

#include <stdlib.h>
#include <string.h>

json_t *json_read_file(const char *path)
{
    json_error_t e;
    json_t *v = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (!v)
        err_set("%s:%d:%d: %s", path, e.line, e.column, e.text);
    return v;
}

json_t *json_read_buffer(const char *name, const char *data, size_t size)
{
    json_error_t e;
    json_t *v = json_loadb(data, size, JSON_REJECT_DUPLICATES, &e);
    if (!v)
        err_set("%s:%d:%d: %s", name, e.line, e.column, e.text);
    return v;
}

char *json_to_string(const json_t *value)
{
    return json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS);
}

int json_write_file(const char *path, const json_t *value)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text) {
        err_set("%s: cannot serialise JSON", path);
        return -1;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* replaces the terminator: write n + 1 bytes */
    int rc = atomic_write(path, text, n + 1);
    free(text);
    return rc;
}
