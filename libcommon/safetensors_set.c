/* The sharded safetensors form: BASE.safetensors.index.json naming, for each
 * tensor, the shard file that holds it (as transformers and diffusers write
 * large checkpoints). A set is opened whole and checked as one. */
#include "libcommon/safetensors.h"
#include "libcommon/error.h"
#include "libcommon/names.h"
#include "libcommon/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct st_set_entry {
    const struct st_tensor *t;
    const struct st_file *f;
    size_t file_index;
};

struct st_set_priv {
    struct st_set pub; /* first, so an st_set pointer is an st_set_priv pointer */
    struct st_set_entry *entries; /* n_tensors, in name order */
};

void st_set_close(struct st_set *s)
{
    if (!s)
        return;
    struct st_set_priv *p = (struct st_set_priv *)s;
    for (size_t i = 0; i < s->n_files; i++)
        st_close(s->files[i]);
    free(s->files);
    free(p->entries);
    free(s->path);
    free(p);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct st_set_entry *x = a, *y = b;
    int c = strcmp(x->t->name, y->t->name);
    if (c)
        return c;
    return x->file_index < y->file_index ? -1 : x->file_index > y->file_index;
}

static int cmp_entry_name(const void *key, const void *elem)
{
    return strcmp(key, ((const struct st_set_entry *)elem)->t->name);
}


/* Every tensor of every file, merged in name order. */
static int set_build_entries(struct st_set_priv *p)
{
    struct st_set *s = &p->pub;
    size_t n = 0;
    for (size_t i = 0; i < s->n_files; i++)
        n += s->files[i]->n_tensors;
    p->entries = calloc(n ? n : 1, sizeof *p->entries);
    if (!p->entries) {
        err_set("%s: out of memory", s->path);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t j = 0; j < s->files[i]->n_tensors; j++)
            p->entries[k++] = (struct st_set_entry){&s->files[i]->tensors[j], s->files[i], i};
    qsort(p->entries, n, sizeof *p->entries, cmp_entry);
    s->n_tensors = n;
    return 0;
}

/* A weight_map file name must stay inside the index's directory. */
static int safe_relative(const char *name)
{
    if (!*name || name[0] == '/')
        return 0;
    for (const char *c = name; *c;) {
        size_t len = strcspn(c, "/");
        if (len == 2 && c[0] == '.' && c[1] == '.')
            return 0;
        c += len;
        if (*c == '/')
            c++;
    }
    return 1;
}

/* dir + "/" + name; no slash added after an empty dir or one ending in '/'. */
static char *join_dir(const char *dir, size_t dir_len, const char *name)
{
    size_t n = dir_len + strlen(name) + 2;
    const char *sep = dir_len && dir[dir_len - 1] != '/' ? "/" : "";
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%.*s%s%s", (int)dir_len, dir, sep, name);
    return out;
}

static int set_open_index(struct st_set_priv *p)
{
    struct st_set *s = &p->pub;
    const char *path = s->path;
    const char **names = NULL;
    int rc = -1;
    json_t *root = json_read_file(path);
    if (!root)
        return -1;
    json_t *wm = json_object_get(root, "weight_map");
    json_t *md = json_object_get(root, "metadata");
    if (!json_is_object(root)) {
        err_set("%s: index is not a JSON object", path);
        goto out;
    }
    if (!json_is_object(wm)) {
        err_set("%s: no \"weight_map\" object", path);
        goto out;
    }
    if (md && !json_is_object(md) && !json_is_null(md)) {
        err_set("%s: \"metadata\" is not an object", path);
        goto out;
    }

    size_t n_map = json_object_size(wm), n_names = 0;
    names = malloc((n_map ? n_map : 1) * sizeof *names);
    if (!names) {
        err_set("%s: out of memory", path);
        goto out;
    }
    const char *tensor;
    json_t *file;
    json_object_foreach(wm, tensor, file)
    {
        if (!json_is_string(file)) {
            err_set("%s: weight_map entry for tensor '%s' is not a string", path, tensor);
            goto out;
        }
        if (!safe_relative(json_string_value(file))) {
            err_set("%s: tensor '%s' maps to '%s', which is outside the index's directory", path,
                    tensor, json_string_value(file));
            goto out;
        }
        names[n_names++] = json_string_value(file);
    }
    qsort(names, n_names, sizeof *names, str_ptr_cmp);
    size_t n_files = 0;
    for (size_t i = 0; i < n_names; i++)
        if (n_files == 0 || strcmp(names[n_files - 1], names[i]) != 0)
            names[n_files++] = names[i];

    s->files = calloc(n_files ? n_files : 1, sizeof *s->files);
    if (!s->files) {
        err_set("%s: out of memory", path);
        goto out;
    }
    /* Shard names are relative to the index's directory, "" or ending in '/'. */
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    for (size_t i = 0; i < n_files; i++) {
        char *shard = join_dir(path, dir_len, names[i]);
        if (!shard) {
            err_set("%s: out of memory", path);
            goto out;
        }
        s->files[i] = st_open(shard);
        free(shard);
        if (!s->files[i]) {
            err_prefix("%s", path);
            goto out;
        }
        s->n_files++;
    }

    json_object_foreach(wm, tensor, file)
    {
        const char *fname = json_string_value(file);
        const char **hit = bsearch(&fname, names, n_files, sizeof *names, str_ptr_cmp);
        if (!hit || !st_find(s->files[hit - names], tensor)) {
            err_set("%s: tensor '%s' is mapped to %s but that file does not contain it", path,
                    tensor, fname);
            goto out;
        }
    }
    if (set_build_entries(p) != 0)
        goto out;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const struct st_set_entry *e = &p->entries[i];
        if (i > 0 && strcmp(e[-1].t->name, e->t->name) == 0) {
            err_set("%s: tensor '%s' is in both %s and %s", path, e->t->name, e[-1].f->path,
                    e->f->path);
            goto out;
        }
        if (!json_object_get(wm, e->t->name)) {
            err_set("%s: tensor '%s' in %s is not listed in the weight_map", path, e->t->name,
                    e->f->path);
            goto out;
        }
    }
    rc = 0;
out:
    free(names);
    json_decref(root);
    return rc;
}


struct st_set *st_set_open(const char *path)
{
    if (!path) {
        err_set("st_set_open: no path");
        return NULL;
    }
    struct st_set_priv *p = calloc(1, sizeof *p);
    if (!p || !(p->pub.path = strdup(path))) {
        free(p);
        err_set("%s: out of memory", path);
        return NULL;
    }
    struct st_set *s = &p->pub;
    int rc;
    if (str_ends_with(path, ".json")) {
        rc = set_open_index(p);
    } else {
        s->files = calloc(1, sizeof *s->files);
        if (!s->files) {
            err_set("%s: out of memory", path);
            rc = -1;
        } else if (!(s->files[0] = st_open(path))) {
            rc = -1;
        } else {
            s->n_files = 1;
            rc = set_build_entries(p);
        }
    }
    if (rc != 0) {
        st_set_close(s);
        return NULL;
    }
    return s;
}

const struct st_tensor *st_set_tensor(const struct st_set *s, size_t i,
                                      const struct st_file **file_out)
{
    if (!s || i >= s->n_tensors)
        return NULL;
    const struct st_set_entry *e = &((const struct st_set_priv *)s)->entries[i];
    if (file_out)
        *file_out = e->f;
    return e->t;
}

const struct st_tensor *st_set_find(const struct st_set *s, const char *name,
                                    const struct st_file **file_out)
{
    if (!s || !name || !s->n_tensors)
        return NULL;
    const struct st_set_priv *p = (const struct st_set_priv *)s;
    const struct st_set_entry *e =
        bsearch(name, p->entries, s->n_tensors, sizeof *p->entries, cmp_entry_name);
    if (!e)
        return NULL;
    if (file_out)
        *file_out = e->f;
    return e->t;
}

/* Consecutive runs of the layout order: shard k spans [starts[k],
 * starts[k+1]) (starts may be NULL to count only); the number of shards. */
static size_t plan_shards(struct st_writer *w, uint64_t max_shard_bytes, size_t *starts)
{
    size_t n = st_writer_count(w), n_shards = 0;
    for (size_t i = 0; i < n;) {
        if (starts)
            starts[n_shards] = i;
        n_shards++;
        uint64_t size = st_writer_tensor(w, i++)->nbytes;
        /* A tensor larger than the limit ends up alone, as in huggingface_hub. */
        while (i < n && (max_shard_bytes == 0 ||
                         (size <= max_shard_bytes &&
                          st_writer_tensor(w, i)->nbytes <= max_shard_bytes - size)))
            size += st_writer_tensor(w, i++)->nbytes;
    }
    if (starts)
        starts[n_shards] = n;
    return n_shards;
}

size_t st_shard_count(struct st_writer *w, uint64_t max_shard_bytes)
{
    return w ? plan_shards(w, max_shard_bytes, NULL) : 0;
}

int st_write_sharded(struct st_writer *w, const char *dir, const char *base,
                     uint64_t max_shard_bytes)
{
    if (!w || !dir || !base || !*base || strchr(base, '/') || strlen(base) > 255) {
        err_set("st_write_sharded: no writer or directory, or base '%s' is not a plain name",
                base ? base : "(null)");
        return -1;
    }
    size_t n = st_writer_count(w);
    size_t *starts = malloc((n + 1) * sizeof *starts);
    if (!starts) {
        err_set("%s: out of memory", dir);
        return -1;
    }
    size_t n_shards = plan_shards(w, max_shard_bytes, starts);

    size_t dir_len = strlen(dir);
    int rc = -1;
    char *path = NULL;
    json_t *index = NULL;
    if (n_shards <= 1) {
        char name[4096];
        snprintf(name, sizeof name, "%s.safetensors", base);
        path = join_dir(dir, dir_len, name);
        rc = path ? st_writer_write(w, path) : -1;
        if (!path)
            err_set("%s: out of memory", dir);
        goto out;
    }
    json_t *map = json_object();
    index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size",
                      (json_int_t)st_writer_total_bytes(w), "weight_map", map);
    if (!index) {
        err_set("%s: out of memory", dir);
        goto out;
    }
    for (size_t k = 0; k < n_shards; k++) {
        char name[4096];
        snprintf(name, sizeof name, "%s-%05zu-of-%05zu.safetensors", base, k + 1, n_shards);
        free(path);
        path = join_dir(dir, dir_len, name);
        if (!path) {
            err_set("%s: out of memory", dir);
            goto out;
        }
        if (st_writer_write_range(w, path, starts[k], starts[k + 1] - starts[k]) != 0)
            goto out;
        for (size_t i = starts[k]; i < starts[k + 1]; i++)
            if (json_object_set_new(map, st_writer_tensor(w, i)->name, json_string(name)) != 0) {
                err_set("%s: out of memory", path);
                goto out;
            }
    }
    /* Last, so a reader never finds an index naming shards not yet in place. */
    char name[4096];
    snprintf(name, sizeof name, "%s.safetensors.index.json", base);
    free(path);
    path = join_dir(dir, dir_len, name);
    if (!path) {
        err_set("%s: out of memory", dir);
        goto out;
    }
    rc = json_write_file(path, index);
out:
    free(path);
    free(starts);
    json_decref(index);
    return rc;
}
