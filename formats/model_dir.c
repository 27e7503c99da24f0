/* The diffusers model directory: config.json, the weights (one file or
 * shards with an index) and a pipeline's model_index.json. The sharded
 * safetensors form itself (reading an index as one set, writing shards)
 * lives in libcommon/safetensors_set.c; this file knows the names a model
 * directory gives it and keeps one save from leaving another's files. */
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/names.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *path_join(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0) {
        err_set("%s: out of memory", dir);
        return NULL;
    }
    return p;
}

struct st_set *model_dir_open_weights(const char *dir)
{
    static const char *const names[] = {
        MODEL_DIR_DIFFUSERS_BASE ".safetensors.index.json",
        MODEL_DIR_DIFFUSERS_BASE ".safetensors",
        MODEL_DIR_TRANSFORMERS_BASE ".safetensors.index.json",
        MODEL_DIR_TRANSFORMERS_BASE ".safetensors",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = path_join(dir, names[i]);
        if (!path)
            return NULL;
        if (access(path, F_OK) == 0) {
            struct st_set *s = st_set_open(path);
            free(path);
            return s;
        }
        free(path);
    }
    struct stat st;
    if (stat(dir, &st) != 0)
        err_set("%s: %s", dir, strerror(errno));
    else
        err_set("%s: no weights: none of %s, %s, %s or %s", dir, names[0], names[1], names[2],
                names[3]);
    return NULL;
}

/* Whether name is BASE-NNNNN-of-NNNNN.safetensors; *count gets the second
 * number (save_pretrained's shard names, which it also cleans up by). */
static int shard_name(const char *name, const char *base, unsigned *count)
{
    size_t bl = strlen(base);
    if (strncmp(name, base, bl) != 0)
        return 0;
    const char *r = name + bl;
    static const char pattern[] = "-#####-of-#####.safetensors";
    if (strlen(r) != sizeof pattern - 1)
        return 0;
    unsigned n = 0;
    for (size_t i = 0; pattern[i]; i++) {
        if (pattern[i] == '#') {
            if (r[i] < '0' || r[i] > '9')
                return 0;
            if (i >= 10)
                n = n * 10 + (unsigned)(r[i] - '0');
        } else if (r[i] != pattern[i]) {
            return 0;
        }
    }
    *count = n;
    return 1;
}

static int remove_file(const char *dir, const char *name)
{
    char *path = path_join(dir, name);
    if (!path)
        return -1;
    int rc = unlink(path) == 0 || errno == ENOENT ? 0 : -1;
    if (rc != 0)
        err_set("%s: cannot remove what an earlier save left: %s", path, strerror(errno));
    free(path);
    return rc;
}

/* Removes what an earlier save wrote and this one, of n_shards files (1:
 * the single file), did not. The stale index goes first, so that a reader
 * that prefers an index never meets one naming removed shards. */
static int remove_stale(const char *dir, const char *base, size_t n_shards)
{
    char name[512];
    if (n_shards <= 1) {
        snprintf(name, sizeof name, "%s.safetensors.index.json", base);
        if (remove_file(dir, name) != 0)
            return -1;
    } else {
        snprintf(name, sizeof name, "%s.safetensors", base);
        if (remove_file(dir, name) != 0)
            return -1;
    }
    size_t n;
    char **names = dir_list_sorted(dir, &n);
    if (!names)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned count;
        if (shard_name(names[i], base, &count) && (n_shards <= 1 || count != n_shards))
            rc = remove_file(dir, names[i]);
    }
    names_free(names, n);
    return rc;
}

int model_dir_write_weights(const char *dir, const char *base, const struct model_tensor *t,
                            size_t n, uint64_t max_shard_bytes)
{
    if (!max_shard_bytes)
        max_shard_bytes = MODEL_DIR_MAX_SHARD_BYTES;
    struct st_writer *w = st_writer_new();
    if (!w) {
        err_set("%s: out of memory", dir);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = st_writer_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data);
    if (rc == 0)
        rc = st_writer_meta(w, "format", "pt");
    if (rc != 0) {
        err_prefix("%s", dir);
    } else {
        size_t n_shards = st_shard_count(w, max_shard_bytes);
        rc = st_write_sharded(w, dir, base, max_shard_bytes);
        if (rc == 0)
            rc = remove_stale(dir, base, n_shards);
    }
    st_writer_free(w);
    return rc;
}

json_t *model_dir_read_config(const char *dir, const char *class_name)
{
    char *path = path_join(dir, MODEL_DIR_CONFIG);
    if (!path)
        return NULL;
    json_t *j = json_read_file(path);
    if (j && !json_is_object(j)) {
        err_set("%s: not a JSON object", path);
        json_decref(j);
        j = NULL;
    }
    if (j && class_name) {
        const char *cls = json_string_value(json_object_get(j, "_class_name"));
        if (!cls || strcmp(cls, class_name) != 0) {
            err_set("%s: _class_name is '%s', not %s", path, cls ? cls : "(none)", class_name);
            json_decref(j);
            j = NULL;
        }
    }
    free(path);
    return j;
}

int model_dir_write_config(const char *dir, const char *class_name, const json_t *config)
{
    char *path = path_join(dir, MODEL_DIR_CONFIG);
    if (!path)
        return -1;
    json_t *j = json_is_object(config) ? json_copy((json_t *)config) : NULL;
    int rc = -1;
    if (!j) {
        err_set("%s: the configuration is not a JSON object", path);
    } else if (json_object_set_new(j, "_class_name", json_string(class_name)) != 0 ||
               (!json_object_get(j, "_diffusers_version") &&
                json_object_set_new(j, "_diffusers_version", json_string(MODEL_DIR_DIFFUSERS_VERSION)) != 0)) {
        err_set("%s: out of memory", path);
    } else {
        rc = json_write_file(path, j);
    }
    json_decref(j);
    free(path);
    return rc;
}

void model_component_free(struct model_component *c)
{
    free(c->folder);
    free(c->library);
    free(c->class_name);
    memset(c, 0, sizeof *c);
}

int model_index_component(const char *pipeline_dir, const char *name, struct model_component *out)
{
    memset(out, 0, sizeof *out);
    char *path = path_join(pipeline_dir, MODEL_DIR_INDEX);
    if (!path)
        return -1;
    json_t *j = json_read_file(path);
    int rc = -1;
    if (!j)
        goto done;
    if (!json_is_object(j)) {
        err_set("%s: not a JSON object", path);
        goto done;
    }
    /* Keys starting with '_' are the pipeline's own (_class_name,
     * _diffusers_version); components map to [library, class]. */
    json_t *v = name[0] != '_' ? json_object_get(j, name) : NULL;
    if (!v) {
        err_set("%s: no component '%s'", path, name);
        goto done;
    }
    if (json_is_array(v) && json_array_size(v) == 2 && json_is_null(json_array_get(v, 0)) &&
        json_is_null(json_array_get(v, 1))) {
        err_set("%s: component '%s' is [null, null]: the pipeline was saved without it", path, name);
        goto done;
    }
    const char *lib = json_string_value(json_array_get(v, 0));
    const char *cls = json_string_value(json_array_get(v, 1));
    if (!json_is_array(v) || json_array_size(v) != 2 || !lib || !cls) {
        err_set("%s: component '%s' is not [library, class]", path, name);
        goto done;
    }
    out->folder = path_join(pipeline_dir, name);
    out->library = strdup(lib);
    out->class_name = strdup(cls);
    if (!out->folder || !out->library || !out->class_name) {
        err_set("%s: out of memory", path);
        goto done;
    }
    struct stat st;
    if (stat(out->folder, &st) != 0 || !S_ISDIR(st.st_mode)) {
        err_set("%s: component '%s' (%s) has no folder %s", path, name, cls, out->folder);
        goto done;
    }
    rc = 0;
done:
    if (rc != 0)
        model_component_free(out);
    json_decref(j);
    free(path);
    return rc;
}
