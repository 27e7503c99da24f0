/* Folder input: a recursive walk in sorted name order (so the manifest does
 * not depend on the file system's order). Captions come from a sidecar file
 * with the image's stem, else from the stem itself; with --class-from-dir the
 * top-level sub-folder is the class, ids in sorted name order as torchvision's
 * ImageFolder gives them. */
#include "data/index.h"
#include "libcommon/error.h"
#include "libcommon/names.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct dir_frame {
    char *rel;    /* relative to the root, "" for the root; ends with '/' otherwise */
    char **names; /* sorted entries, hidden ones left out */
    size_t n, next;
};

struct dir_reader {
    struct index_reader base;
    struct index_options opt;
    char *root;     /* as given */
    char *root_abs; /* realpath */
    struct dir_frame *stack;
    size_t depth, cap;
};

static void frame_free(struct dir_frame *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->names[i]);
    free(f->names);
    free(f->rel);
}

static int push_frame(struct dir_reader *r, const char *rel)
{
    if (r->depth == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct dir_frame *s = realloc(r->stack, cap * sizeof *s);
        if (!s) {
            err_set("%s: out of memory", r->root);
            return -1;
        }
        r->stack = s;
        r->cap = cap;
    }
    char *full = index_strdup_printf("%s/%s", r->root, rel);
    struct dir_frame f = {strdup(rel), NULL, 0, 0};
    f.names = full ? dir_list_sorted(full, &f.n) : NULL;
    free(full);
    if (!f.names) {
        free(f.rel);
        return -1;
    }
    r->stack[r->depth++] = f;
    return 0;
}

static long class_id(const struct dir_reader *r, const char *rel)
{
    const char *slash = strchr(rel, '/');
    if (!slash)
        return -1;
    size_t n = (size_t)(slash - rel);
    for (size_t i = 0; i < r->base.n_classes; i++)
        if (strlen(r->base.classes[i]) == n && strncmp(r->base.classes[i], rel, n) == 0)
            return (long)i;
    return -1;
}

static int dir_next(struct index_reader *base, struct index_item *item)
{
    struct dir_reader *r = (struct dir_reader *)base;
    while (r->depth) {
        struct dir_frame *f = &r->stack[r->depth - 1];
        if (f->next == f->n) {
            frame_free(f);
            r->depth--;
            continue;
        }
        const char *name = f->names[f->next++];
        char *rel = index_strdup_printf("%s%s", f->rel, name);
        char *path = index_strdup_printf("%s/%s", r->root, rel);
        if (!rel || !path) {
            free(rel);
            free(path);
            err_set("%s: out of memory", r->root);
            return -1;
        }
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            char *sub = index_strdup_printf("%s/", rel);
            free(rel);
            free(path);
            /* An unreadable sub-folder is an error for that folder, not the run. */
            int rc = sub ? push_frame(r, sub) : -1;
            free(sub);
            if (rc != 0) {
                memset(item, 0, sizeof *item);
                item->where = strdup(err_get());
                index_item_reject(item, INDEX_UNREADABLE, "folder cannot be listed");
                return 1;
            }
            continue;
        }
        int image = index_is_image_name(name);
        if (!image && !index_is_other_image_name(name)) {
            base->n_other_files++;
            free(rel);
            free(path);
            continue;
        }
        memset(item, 0, sizeof *item);
        item->where = path;
        item->path = strdup(path);
        item->key = index_key_from_path(rel);
        item->source = index_strdup_printf("%s/%s", r->root_abs, rel);
        if (!image) {
            index_item_reject(item, INDEX_UNSUPPORTED, "unsupported format (only JPEG, PNG and WebP are read)");
        } else {
            item->caption = index_caption_for(path, r->opt.caption_ext);
            if (r->opt.class_from_dir) {
                long id = class_id(r, rel);
                if (id < 0)
                    index_item_reject(item, INDEX_NO_CLASS, "not inside a class folder of %s", r->root);
                else
                    item->label = index_strdup_printf("%ld", id);
            }
        }
        free(rel);
        return 1;
    }
    return 0;
}

static void dir_close(struct index_reader *base)
{
    struct dir_reader *r = (struct dir_reader *)base;
    while (r->depth)
        frame_free(&r->stack[--r->depth]);
    free(r->stack);
    for (size_t i = 0; i < base->n_classes; i++)
        free(base->classes[i]);
    free(base->classes);
    free(r->root);
    free(r->root_abs);
    free(r);
}

static int load_classes(struct dir_reader *r)
{
    size_t n;
    char **names = dir_list_sorted(r->root, &n);
    if (!names)
        return -1;
    r->base.classes = calloc(n ? n : 1, sizeof *r->base.classes);
    for (size_t i = 0; i < n; i++) {
        char *p = index_strdup_printf("%s/%s", r->root, names[i]);
        struct stat st;
        if (r->base.classes && p && stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            r->base.classes[r->base.n_classes++] = names[i];
        else
            free(names[i]);
        free(p);
    }
    free(names);
    if (!r->base.classes) {
        err_set("%s: out of memory", r->root);
        return -1;
    }
    if (r->base.n_classes == 0) {
        err_set("%s: --class-from-dir needs one sub-folder per class, and there are none", r->root);
        return -1;
    }
    return 0;
}

struct index_reader *index_dir_open(const char *path, const struct index_options *opt)
{
    struct dir_reader *r = calloc(1, sizeof *r);
    if (!r) {
        err_set("%s: out of memory", path);
        return NULL;
    }
    r->base.name = path;
    r->base.next = dir_next;
    r->base.close = dir_close;
    r->opt = *opt;
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    r->root = strndup(path, len);
    r->root_abs = index_absolute(path);
    if (!r->root || !r->root_abs || (opt->class_from_dir && load_classes(r) != 0) ||
        push_frame(r, "") != 0) {
        dir_close(&r->base);
        return NULL;
    }
    return &r->base;
}
