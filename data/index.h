/* Input readers for dit-index: CSV files, folders, tar/zip archives in the
 * webdataset convention, and lists of paths. Each yields items in a fixed
 * order (so the manifest is deterministic); an item is an image to hash and
 * probe, or a rejection the reader found itself. */
#ifndef DIT_INDEX_H
#define DIT_INDEX_H

#include "image/probe.h"
#include "libcommon/hash.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Why a record was kept out. Values index index_reject_names. */
enum index_reject {
    INDEX_KEPT = 0,
    INDEX_MISSING,     /* missing file */
    INDEX_UNREADABLE,  /* unreadable */
    INDEX_EMPTY,       /* empty */
    INDEX_CORRUPT,     /* truncated or corrupt header */
    INDEX_UNSUPPORTED, /* unsupported format */
    INDEX_TOO_LARGE,   /* width x height above --max-pixels */
    INDEX_NO_IMAGE,    /* CSV row without the image column */
    INDEX_DUPLICATE,   /* duplicate key */
    INDEX_OUTSIDE,     /* path or member escapes the base directory */
    INDEX_ARCHIVE,     /* archive cannot be read */
    INDEX_NO_CLASS,    /* --class-from-dir: image outside a class folder */
    INDEX_BAD_LABEL,   /* a .cls member that is not a class id */
    INDEX_BAD_ROW,     /* a CSV row with more fields than the header, or text that is not UTF-8 */
    INDEX_REJECT_COUNT,
};

const char *index_reject_name(enum index_reject r);

struct index_options {
    const char *image_column;   /* CSV: "image_path" */
    const char *caption_column; /* CSV: "caption" */
    const char *base_dir;       /* CSV: paths are relative to it; NULL = the CSV's directory */
    const char *caption_ext;    /* folders: sidecar caption extension, ".txt" */
    int class_from_dir;         /* folders: label by top-level sub-folder */
    int allow_outside;          /* accept absolute CSV paths and ".." */
};

struct index_item {
    char *where;   /* for messages: "data.csv:12", "imgs/a.jpg", "a.tar!/x.jpg" */
    char *key;
    char *source;  /* absolute path, or absolute archive path "!/" member */
    char *path;    /* the file to read, when data is NULL (may be relative) */
    char *caption; /* NULL when the input has none */
    char *label;
    char *json;    /* webdataset .json member */
    char **extra;  /* values of the reader's extra columns (CSV), NULL entries allowed */
    void *data;    /* the image bytes, when the reader already has them */
    size_t size;
    enum index_reject reject; /* set when the reader rejects the item itself */
    char *reason;             /* the message for a rejection */
    /* filled by index_item_process */
    struct image_info info;
    struct hash128 hash;
};

struct index_reader {
    const char *name;      /* the operand */
    size_t n_extra;        /* extra columns this reader carries */
    char **extra_names;
    /* 1 an item, 0 the end, -1 a failure that ends this input (err_get()). */
    int (*next)(struct index_reader *r, struct index_item *item);
    void (*close)(struct index_reader *r);
    /* Set on folders read with --class-from-dir: the class names by id. */
    size_t n_classes;
    char **classes;
    int is_archive; /* its records may carry a webdataset .json member */
    /* Files passed over as not images (sidecar captions, metadata...). */
    uint64_t n_other_files;
};

/* Opens an operand: "-" (a list of paths on stdin), a directory, an archive
 * (.tar .tar.gz .tgz .tar.zst .tar.xz .tar.bz2 .zip), or a CSV file (any
 * other name). NULL with err_set(). */
struct index_reader *index_open(const char *operand, const struct index_options *opt);
struct index_reader *index_csv_open(const char *path, const struct index_options *opt);
struct index_reader *index_dir_open(const char *path, const struct index_options *opt);
struct index_reader *index_archive_open(const char *path, const struct index_options *opt);
struct index_reader *index_list_open(FILE *fp, const char *name, const struct index_options *opt);
void index_close(struct index_reader *r);

/* Reads (when needed), hashes and probes an item: sets reject and reason on
 * failure. max_pixels 0 means no limit. Safe to run on many items at once. */
void index_item_process(struct index_item *item, uint64_t max_pixels);
void index_item_free(struct index_item *item, size_t n_extra);
/* Marks an item rejected with a formatted reason "WHERE: what". */
void index_item_reject(struct index_item *item, enum index_reject r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Helpers shared by the readers. */
int index_is_image_name(const char *name);       /* .jpg .jpeg .png .webp */
int index_is_other_image_name(const char *name); /* .gif .bmp .tif ...: unsupported images */
char *index_key_from_path(const char *rel);      /* "a/b.jpg" -> "a/b" */
char *index_caption_from_stem(const char *rel);  /* "a/red_big-dog.jpg" -> "red big dog" */
int index_path_escapes(const char *rel);
/* The caption of an image file: the text of its sidecar (same stem +
 * caption_ext, trailing white space removed), else its stem with '_' and
 * '-' as spaces. Folders and lists share this rule. */
char *index_caption_for(const char *image_path, const char *caption_ext);         /* absolute, or a ".." component */
char *index_absolute(const char *path);          /* realpath, or NULL with err_set() */
char *index_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
