/* Summaries and checks of every file kind the toolkit reads, as JSON values,
 * so that dit-inspect prints one data structure two ways (human text, or
 * --json) and other tools can reuse the checks. */
#ifndef DIT_INSPECT_H
#define DIT_INSPECT_H

#include <jansson.h>

enum inspect_kind {
    INSPECT_UNKNOWN,
    INSPECT_SAFETENSORS,
    INSPECT_SAFETENSORS_INDEX,
    INSPECT_MANIFEST,
    INSPECT_SHARD_SET,
    INSPECT_MODEL_DIR,
    INSPECT_TFEVENTS,
};

struct inspect_options {
    int stats;  /* per-tensor statistics */
    int verify; /* full checks, content hashes included */
};

/* Decides what path is from its name and first bytes ("-" is a manifest on
 * standard input). INSPECT_UNKNOWN with err_set() when it cannot be opened. */
enum inspect_kind inspect_detect(const char *path);
const char *inspect_kind_name(enum inspect_kind kind);

/* Summarises (and with verify, checks) path. Always returns an object with
 * "path" and "kind"; a file that cannot be read gets "error" instead of the
 * facts. With verify, "ok" and "problems" are set: every problem found, each
 * naming its file and record. NULL only when out of memory. */
json_t *inspect_path(const char *path, const struct inspect_options *opt);

#endif
