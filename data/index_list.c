/* List input: one image path per line (e.g. from find(1)), read from stdin
 * when the operand is "-". Keys are the paths without their extension;
 * captions follow the folder rule (sidecar file, else the stem). */
#include "data/index.h"
#include "libcommon/error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct list_reader {
    struct index_reader base;
    const char *caption_ext;
    FILE *fp;
    char *name;
    char *line;
    size_t cap;
    uint64_t lineno;
};

static int list_next(struct index_reader *base, struct index_item *item)
{
    struct list_reader *r = (struct list_reader *)base;
    for (;;) {
        ssize_t n = getline(&r->line, &r->cap, r->fp);
        if (n < 0) {
            if (ferror(r->fp)) {
                err_set("%s:%llu: read error: %s", r->name, (unsigned long long)r->lineno + 1,
                        strerror(errno));
                return -1;
            }
            return 0;
        }
        r->lineno++;
        while (n && (r->line[n - 1] == '\n' || r->line[n - 1] == '\r'))
            r->line[--n] = '\0';
        if (n == 0)
            continue; /* blank lines separate nothing */
        memset(item, 0, sizeof *item);
        item->where = index_strdup_printf("%s:%llu", r->name, (unsigned long long)r->lineno);
        item->path = strdup(r->line);
        item->key = index_key_from_path(r->line);
        item->source = index_absolute(r->line);
        if (!item->source)
            item->source = strdup(r->line);
        item->caption = index_caption_for(r->line, r->caption_ext);
        if (!index_is_image_name(r->line) && index_is_other_image_name(r->line))
            index_item_reject(item, INDEX_UNSUPPORTED, "%s: unsupported format (only JPEG, PNG and WebP are read)",
                              r->line);
        return 1;
    }
}

static void list_close(struct index_reader *base)
{
    struct list_reader *r = (struct list_reader *)base;
    if (r->fp != stdin)
        fclose(r->fp);
    free(r->line);
    free(r->name);
    free(r);
}

struct index_reader *index_list_open(FILE *fp, const char *name, const struct index_options *opt)
{
    struct list_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->name = strdup(name))) {
        free(r);
        err_set("%s: out of memory", name);
        return NULL;
    }
    r->base.name = name;
    r->base.next = list_next;
    r->base.close = list_close;
    r->fp = fp;
    r->caption_ext = opt->caption_ext;
    return &r->base;
}
