#include "formats/inspect.h"
#include "formats/manifest.h"
#include "formats/shardset.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/names.h"
#include "libcommon/safetensors.h"
#include "libcommon/tensor_stats.h"
#include "libcommon/tfevents.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *kind_names[] = {"unknown", "safetensors", "safetensors-index",
                                   "manifest", "shard-set", "model-dir", "tfevents"};

const char *inspect_kind_name(enum inspect_kind kind)
{
    return kind_names[kind];
}

static const char *base_name(const char *path);

static int path_exists(const char *dir, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

enum inspect_kind inspect_detect(const char *path)
{
    if (strcmp(path, "-") == 0)
        return INSPECT_MANIFEST;
    struct stat st;
    if (stat(path, &st) != 0) {
        err_set("%s: %s", path, strerror(errno));
        return INSPECT_UNKNOWN;
    }
    if (S_ISDIR(st.st_mode))
        return path_exists(path, SHARDSET_MANIFEST) ? INSPECT_SHARD_SET : INSPECT_MODEL_DIR;
    if (str_ends_with(path, ".safetensors"))
        return INSPECT_SAFETENSORS;
    if (strstr(base_name(path), "tfevents"))
        return INSPECT_TFEVENTS;
    if (str_ends_with(path, ".json"))
        return INSPECT_SAFETENSORS_INDEX;
    /* Otherwise by content: a little-endian header length, then '{'. */
    unsigned char head[9];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        err_set("%s: %s", path, strerror(errno));
        return INSPECT_UNKNOWN;
    }
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    if (n == 9 && head[8] == '{' && head[7] == 0 && head[6] == 0)
        return INSPECT_SAFETENSORS;
    return INSPECT_MANIFEST;
}

/* ---- problems ---------------------------------------------------------- */

static void add_problem(void *ctx, const char *problem)
{
    json_array_append_new((json_t *)ctx, json_string(problem));
}

/* Records a failure to read: the summary carries "error", and under verify
 * it is also the one problem. */
static void set_error(json_t *out, json_t *problems, const char *msg)
{
    json_object_set_new(out, "error", json_string(msg));
    add_problem(problems, msg);
}

/* ---- safetensors --------------------------------------------------------- */

static json_t *shape_json(const struct st_tensor *t)
{
    json_t *a = json_array();
    for (int d = 0; d < t->ndim; d++)
        json_array_append_new(a, json_integer(t->shape[d]));
    return a;
}

static json_t *number_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *tensor_json(const struct st_tensor *t, const char *file, const struct inspect_options *opt)
{
    json_t *o = json_pack("{s:s, s:s, s:o, s:I}", "name", t->name, "dtype", st_dtype_name(t->dtype),
                          "shape", shape_json(t), "nbytes", (json_int_t)t->nbytes);
    if (file)
        json_object_set_new(o, "file", json_string(file));
    struct tensor_stats s;
    if (opt->stats && tensor_stats_compute(t, &s) == 0)
        json_object_set_new(o, "stats",
                            json_pack("{s:o, s:o, s:o, s:o, s:I, s:I}", "min", number_or_null(s.min),
                                      "max", number_or_null(s.max), "mean", number_or_null(s.mean),
                                      "std", number_or_null(s.std), "nan", (json_int_t)s.n_nan,
                                      "inf", (json_int_t)s.n_inf));
    return o;
}

static json_t *meta_json(const struct st_file *f)
{
    json_t *m = json_object();
    for (size_t i = 0; i < f->n_meta; i++)
        json_object_set_new(m, f->meta[i].key, json_string(f->meta[i].value));
    return m;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void inspect_safetensors(json_t *out, const char *path, const struct inspect_options *opt,
                                json_t *problems, int indexed)
{
    struct st_set *set = st_set_open(path);
    if (!set) {
        set_error(out, problems, err_get());
        return;
    }
    json_t *tensors = json_array();
    json_int_t params = 0, bytes = 0;
    for (size_t i = 0; i < set->n_tensors; i++) {
        const struct st_file *f;
        const struct st_tensor *t = st_set_tensor(set, i, &f);
        params += (json_int_t)t->nelem;
        bytes += (json_int_t)t->nbytes;
        json_array_append_new(tensors, tensor_json(t, indexed ? base_name(f->path) : NULL, opt));
    }
    json_object_set_new(out, "n_tensors", json_integer((json_int_t)set->n_tensors));
    json_object_set_new(out, "n_params", json_integer(params));
    json_object_set_new(out, "tensor_bytes", json_integer(bytes));
    if (indexed) {
        json_t *files = json_array();
        for (size_t i = 0; i < set->n_files; i++)
            json_array_append_new(files, json_string(base_name(set->files[i]->path)));
        json_object_set_new(out, "files", files);
    } else {
        json_object_set_new(out, "file_size", json_integer((json_int_t)set->files[0]->file_size));
    }
    json_object_set_new(out, "metadata", set->n_files ? meta_json(set->files[0]) : json_object());
    json_object_set_new(out, "tensors", tensors);
    st_set_close(set);
}

/* ---- manifests ----------------------------------------------------------- */

static void inspect_manifest(json_t *out, const char *path, const struct inspect_options *opt,
                             json_t *problems)
{
    struct manifest_reader *r = manifest_open(path, MANIFEST_CHECK_KEYS);
    if (!r) {
        set_error(out, problems, err_get());
        return;
    }
    size_t ncols = manifest_ncols(r);
    json_int_t *filled = calloc(ncols, sizeof *filled);
    int bucket_col = manifest_column_index(r, "bucket");
    json_t *buckets = json_object();
    json_int_t records = 0, bad = 0;
    struct manifest_record rec;
    int rc;
    while (filled && (rc = manifest_next(r, &rec)) != 0) {
        if (rc < 0) {
            bad++;
            add_problem(problems, err_get());
            /* Without --verify the first bad record ends the summary. */
            if (!opt->verify)
                break;
            continue;
        }
        records++;
        for (size_t i = 0; i < ncols; i++)
            filled[i] += rec.fields[i][0] != '\0';
        if (bucket_col >= 0) {
            const char *b = rec.fields[bucket_col];
            json_t *n = json_object_get(buckets, b);
            json_object_set_new(buckets, b, json_integer(n ? json_integer_value(n) + 1 : 1));
        }
    }
    json_t *cols = json_array();
    for (size_t i = 0; filled && i < ncols; i++)
        json_array_append_new(cols, json_pack("{s:s, s:I}", "name", manifest_column(r, i),
                                              "values", filled[i]));
    json_object_set_new(out, "records", json_integer(records));
    json_object_set_new(out, "columns", cols);
    if (bucket_col >= 0)
        json_object_set_new(out, "buckets", buckets);
    else
        json_decref(buckets);
    if (bad && !opt->verify)
        json_object_set_new(out, "error", json_string(json_string_value(json_array_get(problems, 0))));
    free(filled);
    manifest_close(r);
}

/* ---- shard sets ---------------------------------------------------------- */

static void inspect_shard_set(json_t *out, const char *path, const struct inspect_options *opt,
                              json_t *problems)
{
    struct shardset *s = shardset_open(path);
    if (!s) {
        set_error(out, problems, err_get());
        return;
    }
    json_t *buckets = json_object();
    json_t *fields = json_object(); /* "BUCKET FIELD" -> {dtype, shape} */
    json_t *metadata = NULL;
    for (size_t i = 0; i < s->n_records; i++) {
        const struct shardset_record *r = &s->records[i];
        json_t *b = json_object_get(buckets, r->bucket);
        if (!b) {
            b = json_pack("{s:I, s:[]}", "records", (json_int_t)0, "shards");
            json_object_set_new(buckets, r->bucket, b);
        }
        json_object_set_new(b, "records", json_integer(json_integer_value(json_object_get(b, "records")) + 1));
        json_t *shards = json_object_get(b, "shards");
        size_t k, n = json_array_size(shards);
        for (k = 0; k < n; k++)
            if (strcmp(json_string_value(json_array_get(shards, k)), r->shard) == 0)
                break;
        if (k == n)
            json_array_append_new(shards, json_string(r->shard));
        /* Field shapes come from the first record of each bucket. */
        for (size_t f = 0; f < r->nfields; f++) {
            char id[512];
            snprintf(id, sizeof id, "%s %s", r->bucket, r->fields[f]);
            if (json_object_get(fields, id))
                continue;
            const struct st_tensor *t = shardset_tensor(s, i, r->fields[f]);
            if (!t) {
                if (!opt->verify)
                    add_problem(problems, err_get());
                continue;
            }
            json_object_set_new(fields, id, json_pack("{s:s, s:s, s:s, s:o}", "bucket", r->bucket,
                                                      "field", r->fields[f], "dtype",
                                                      st_dtype_name(t->dtype), "shape", shape_json(t)));
            if (!metadata)
                metadata = meta_json(shardset_shard(s, i));
        }
    }
    json_t *field_list = json_array();
    const char *id;
    json_t *v;
    json_object_foreach(fields, id, v) json_array_append(field_list, v);
    json_decref(fields);
    json_object_set_new(out, "records", json_integer((json_int_t)s->n_records));
    json_object_set_new(out, "shards", json_integer((json_int_t)s->n_shards));
    json_object_set_new(out, "buckets", buckets);
    json_object_set_new(out, "fields", field_list);
    json_object_set_new(out, "metadata", metadata ? metadata : json_object());
    json_t *cols = json_array();
    for (size_t i = 0; i < s->ncols; i++)
        json_array_append_new(cols, json_string(s->columns[i]));
    json_object_set_new(out, "columns", cols);
    if (opt->verify)
        shardset_verify(s, add_problem, problems);
    shardset_close(s);
}

/* ---- model and checkpoint directories ----------------------------------- */

static void inspect_weights_in(json_t *weights, json_t *json_files, const char *dir,
                               const char *rel, const struct inspect_options *opt, json_t *problems)
{
    size_t n;
    char **names = dir_list_sorted(dir, &n);
    /* Shards named by an index are summarised through the index. */
    int has_index = 0;
    for (size_t i = 0; i < n; i++)
        has_index |= str_ends_with(names[i], ".safetensors.index.json");
    for (size_t i = 0; i < n; i++) {
        char path[4096], relpath[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(relpath, sizeof relpath, "%s%s", rel, names[i]);
        int index = str_ends_with(names[i], ".safetensors.index.json");
        int single = str_ends_with(names[i], ".safetensors") && !(has_index && strstr(names[i], "-of-"));
        if (index || single) {
            json_t *w = json_pack("{s:s, s:s}", "path", relpath, "kind",
                                  index ? "safetensors-index" : "safetensors");
            inspect_safetensors(w, path, opt, problems, index);
            json_array_append_new(weights, w);
        } else if (str_ends_with(names[i], ".json")) {
            json_array_append_new(json_files, json_string(relpath));
            if (opt->verify) {
                json_t *j = json_read_file(path);
                if (!j)
                    add_problem(problems, err_get());
                json_decref(j);
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void inspect_model_dir(json_t *out, const char *path, const struct inspect_options *opt,
                              json_t *problems)
{
    char config_path[4096];
    snprintf(config_path, sizeof config_path, "%s/config.json", path);
    if (access(config_path, F_OK) == 0) {
        json_t *config = json_read_file(config_path);
        if (config)
            json_object_set_new(out, "config", config);
        else
            add_problem(problems, err_get());
    }
    json_t *weights = json_array(), *json_files = json_array();
    inspect_weights_in(weights, json_files, path, "", opt, problems);
    size_t n;
    char **names = dir_list_sorted(path, &n);
    for (size_t i = 0; i < n; i++) {
        char sub[4096], rel[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, names[i]);
        snprintf(rel, sizeof rel, "%s/", names[i]);
        struct stat st;
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            inspect_weights_in(weights, json_files, sub, rel, opt, problems);
        free(names[i]);
    }
    free(names);
    if (json_array_size(weights) == 0 && !json_object_get(out, "config"))
        set_error(out, problems, "no config.json and no safetensors files: not a model or checkpoint directory");
    json_object_set_new(out, "weights", weights);
    json_object_set_new(out, "json_files", json_files);
}

/* ---- TensorBoard event files -------------------------------------------- */

/* Per tag: how many scalars, the first and last step, the last value. */
static void add_scalar(void *ctx, const char *tag, int64_t step, float value)
{
    json_t *tags = ctx, *t = json_object_get(tags, tag);
    if (!t) {
        t = json_pack("{s:I, s:I}", "count", (json_int_t)0, "first_step", (json_int_t)step);
        json_object_set_new(tags, tag, t);
    }
    json_object_set_new(t, "count", json_integer(json_integer_value(json_object_get(t, "count")) + 1));
    json_object_set_new(t, "last_step", json_integer(step));
    json_object_set_new(t, "last_value", json_real(value));
}

static void inspect_tfevents(json_t *out, const char *path, json_t *problems)
{
    json_t *tags = json_object();
    int rc = tfevents_read_scalars(path, add_scalar, tags);
    json_object_set_new(out, "scalars", tags);
    if (rc < 0)
        set_error(out, problems, err_get());
    else if (rc == 1) /* still being written, or cut by a crash: TensorBoard reads it */
        json_object_set_new(out, "truncated_last_record", json_true());
}

json_t *inspect_path(const char *path, const struct inspect_options *opt)
{
    enum inspect_kind kind = inspect_detect(path);
    json_t *out = json_pack("{s:s, s:s}", "path", path, "kind", inspect_kind_name(kind));
    json_t *problems = json_array();
    if (!out || !problems) {
        json_decref(out);
        json_decref(problems);
        return NULL;
    }
    switch (kind) {
    case INSPECT_UNKNOWN: set_error(out, problems, err_get()); break;
    case INSPECT_SAFETENSORS: inspect_safetensors(out, path, opt, problems, 0); break;
    case INSPECT_SAFETENSORS_INDEX: inspect_safetensors(out, path, opt, problems, 1); break;
    case INSPECT_MANIFEST: inspect_manifest(out, path, opt, problems); break;
    case INSPECT_SHARD_SET: inspect_shard_set(out, path, opt, problems); break;
    case INSPECT_MODEL_DIR: inspect_model_dir(out, path, opt, problems); break;
    case INSPECT_TFEVENTS: inspect_tfevents(out, path, problems); break;
    }
    if (opt->verify) {
        json_object_set_new(out, "ok", json_boolean(json_array_size(problems) == 0));
        json_object_set_new(out, "problems", problems);
    } else {
        /* Problems met while summarising (an unreadable shard) still count. */
        if (json_array_size(problems) && !json_object_get(out, "error"))
            json_object_set_new(out, "error", json_string(json_string_value(json_array_get(problems, 0))));
        json_decref(problems);
    }
    return out;
}
