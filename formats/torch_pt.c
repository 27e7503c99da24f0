/* torch.save files: the zip members (libarchive), a restricted unpickler
 * for data.pkl, and the flattening of the state dict into a safetensors
 * buffer. See formats/torch_pt.h for the format and what is allowed. */
#include "formats/torch_pt.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Limits: far above what torch writes for any real model (a state dict
 * takes some 20 objects and 10 memo slots per tensor, a stack of about
 * 2000 entries: pickle batches SETITEMS by 1000, and nests MARKs as deep as
 * the data), low enough that a hostile file cannot exhaust memory. */
#define PT_MAX_MEMBERS (1u << 20)
#define PT_MAX_PICKLE ((uint64_t)1 << 30)
#define PT_MAX_BYTES ((uint64_t)64 << 30)    /* members in all, and the output */
#define PT_DEFLATE_RATIO 1032                 /* deflate's largest expansion */
#define PK_MAX_STACK (1u << 17)
#define PK_MAX_MARKS 1024
#define PK_MAX_OBJECTS (1u << 25)
#define PK_MAX_MEMO (1u << 25)
#define PK_MAX_LINE 256                       /* a GLOBAL's module or name */
#define PT_MAX_DEPTH 64                       /* dict nesting of the state dict */
#define PT_MAX_NAME 65536                     /* a flattened key */
/* Output past this many times the storages' bytes (+16 MiB) is refused: a
 * state dict repeats a tensor now and then (tied weights), while a tiny
 * hostile file could name one storage, or an expanded (stride 0) view of
 * it, under enough keys to ask for any amount of memory. */
#define PT_MAX_AMPLIFY 8
#define PK_BLOCK 1024                         /* objects per arena block */

/* ------------------------------------------------------------ members */

struct pt_member {
    char *name;
    unsigned char *data;
    size_t size;
};

struct pt_archive {
    struct pt_member *m; /* sorted by name once read */
    size_t n, cap;
    uint64_t total, budget;
    char *top;           /* the folder holding data.pkl, "archive" */
};

static void pt_archive_free(struct pt_archive *ar)
{
    for (size_t i = 0; i < ar->n; i++) {
        free(ar->m[i].name);
        free(ar->m[i].data);
    }
    free(ar->m);
    free(ar->top);
}

/* The current member's bytes, at most limit of them; -1 + err_set. Grows
 * as data comes, so a size the header only claims costs nothing. */
static int pt_member_read(struct archive *a, const char *name, uint64_t limit, unsigned char **out,
                          size_t *size)
{
    size_t cap = limit < (1u << 16) ? (size_t)limit + 1 : (1u << 16), n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        err_set("member '%s': out of memory", name);
        return -1;
    }
    for (;;) {
        if (n == cap) {
            size_t grown = (uint64_t)cap * 2 > limit + 1 ? (size_t)limit + 1 : cap * 2;
            unsigned char *g = realloc(buf, grown);
            if (!g) {
                free(buf);
                err_set("member '%s': out of memory after %zu bytes", name, n);
                return -1;
            }
            buf = g;
            cap = grown;
        }
        la_ssize_t got = archive_read_data(a, buf + n, cap - n);
        if (got < 0) {
            const char *why = archive_error_string(a);
            err_set("member '%s': %s", name, why ? why : "read error");
            free(buf);
            return -1;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n > limit) {
            err_set("member '%s': more than the %" PRIu64 " bytes it declares or the file can hold", name,
                    limit);
            free(buf);
            return -1;
        }
    }
    *out = buf;
    *size = n;
    return 0;
}

/* Reads one member (the current header) into ar; directories are passed over. */
static int pt_archive_add(struct pt_archive *ar, struct archive *a, struct archive_entry *e)
{
    const char *name = archive_entry_pathname(e);
    if (!name) {
        err_set("a member has no readable name");
        return -1;
    }
    if (archive_entry_filetype(e) == AE_IFDIR)
        return 0;
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) || archive_entry_symlink(e)) {
        err_set("member '%s' is not a regular file", name);
        return -1;
    }
    if (ar->n >= PT_MAX_MEMBERS) {
        err_set("more than %u members", PT_MAX_MEMBERS);
        return -1;
    }
    uint64_t left = ar->budget - ar->total, limit = left;
    if (archive_entry_size_is_set(e)) {
        int64_t declared = archive_entry_size(e);
        if (declared < 0 || (uint64_t)declared > left) {
            err_set("member '%s' declares %" PRId64 " bytes, more than the file can hold (%" PRIu64 " left)",
                    name, declared, left);
            return -1;
        }
        limit = (uint64_t)declared;
    }
    if (ar->n == ar->cap) {
        size_t cap = ar->cap ? ar->cap * 2 : 16;
        struct pt_member *m = realloc(ar->m, cap * sizeof *m);
        if (!m) {
            err_set("out of memory");
            return -1;
        }
        ar->m = m;
        ar->cap = cap;
    }
    struct pt_member *m = &ar->m[ar->n];
    m->name = strdup(name);
    if (!m->name) {
        err_set("out of memory");
        return -1;
    }
    if (pt_member_read(a, name, limit, &m->data, &m->size) != 0) {
        free(m->name);
        return -1;
    }
    ar->n++;
    ar->total += m->size;
    return 0;
}

static int pt_member_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pt_member *)a)->name, ((const struct pt_member *)b)->name);
}

static const struct pt_member *pt_archive_find(const struct pt_archive *ar, const char *name)
{
    struct pt_member key = {.name = (char *)name};
    return ar->n ? bsearch(&key, ar->m, ar->n, sizeof *ar->m, pt_member_cmp) : NULL;
}

/* The top folder: the one member TOP/data.pkl with TOP a single path part. */
static int pt_archive_find_top(struct pt_archive *ar)
{
    const char *found = NULL;
    for (size_t i = 0; i < ar->n; i++) {
        const char *name = ar->m[i].name, *slash = strchr(name, '/');
        if (!slash || slash == name || strcmp(slash, "/data.pkl") != 0)
            continue;
        if (found) {
            err_set("two pickles, '%s' and '%s': which one is the file is unclear", found, name);
            return -1;
        }
        found = name;
    }
    if (!found) {
        err_set("no TOP/data.pkl member: not a torch.save file");
        return -1;
    }
    if (strlen(found) > 255) {
        err_set("member '%.64s...': a top folder name of more than 246 bytes", found);
        return -1;
    }
    ar->top = strndup(found, (size_t)(strchr(found, '/') - found));
    if (!ar->top) {
        err_set("out of memory");
        return -1;
    }
    return 0;
}

/* Every member of the opened archive, sorted, with no name twice. */
static int pt_archive_read(struct pt_archive *ar, struct archive *a)
{
    for (;;) {
        struct archive_entry *e;
        int rc = archive_read_next_header(a, &e);
        if (rc == ARCHIVE_EOF)
            break;
        if (rc < ARCHIVE_WARN) {
            const char *why = archive_error_string(a);
            err_set("%s", why ? why : "cannot read the zip directory");
            return -1;
        }
        if (pt_archive_add(ar, a, e) != 0)
            return -1;
    }
    if (ar->n > 1)
        qsort(ar->m, ar->n, sizeof *ar->m, pt_member_cmp);
    for (size_t i = 1; i < ar->n; i++)
        if (strcmp(ar->m[i - 1].name, ar->m[i].name) == 0) {
            err_set("member '%s' appears twice", ar->m[i].name);
            return -1;
        }
    return pt_archive_find_top(ar);
}

/* ----------------------------------------------------------- objects */

enum pk_kind { PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_TUPLE, PK_LIST, PK_DICT, PK_GLOBAL,
               PK_STORAGE, PK_TENSOR };

static const char *const pk_kind_names[] = {"None", "bool", "int", "float", "str", "tuple", "list",
                                            "dict", "global", "storage", "tensor"};

enum pk_global { PG_ORDERED_DICT, PG_REBUILD_V2, PG_REBUILD_V3, PG_REBUILD_PARAMETER, PG_STORAGE_TYPE,
                 PG_DTYPE };

struct pk_tensor {
    enum st_dtype dtype;
    const unsigned char *base; /* the storage's bytes */
    uint64_t offset;           /* in elements */
    int ndim;
    int64_t size[ST_MAX_DIMS], stride[ST_MAX_DIMS];
};

struct pk_obj {
    enum pk_kind kind;
    union {
        int64_t i; /* bool, int */
        double f;
        struct {
            char *s; /* NUL-terminated copy; len may be less than strlen when it holds a NUL */
            size_t len;
        } str;
        struct {
            struct pk_obj **v; /* dict: key, value, key, value, ... */
            size_t n, cap;
        } seq;
        struct {
            enum pk_global which;
            int typed; /* storage type: 0 for UntypedStorage */
            enum st_dtype dtype;
            const char *module, *name; /* static text, for messages */
        } g;
        struct {
            int typed;
            enum st_dtype dtype;
            const unsigned char *data;
            uint64_t nbytes;
        } storage;
        struct pk_tensor *tensor;
    } u;
};

struct pk_block {
    struct pk_block *next;
    size_t used;
    struct pk_obj obj[PK_BLOCK];
};

/* The memo: an open-addressing map from the pickle's 32-bit slot numbers
 * (which a hostile file may choose freely) to objects. */
struct pk_memo {
    uint32_t *keys;
    struct pk_obj **vals; /* NULL: empty slot */
    size_t cap, n;
};

struct pickle {
    const unsigned char *p;
    size_t n, pos, op_pos; /* op_pos: the current opcode, for messages */
    const char *member;
    const struct pt_archive *ar;
    struct pk_obj **stack;
    size_t sp, stack_cap, fence; /* fence: items below the last MARK are out of reach */
    size_t marks[PK_MAX_MARKS];
    size_t n_marks;
    struct pk_memo memo;
    struct pk_block *blocks;
    size_t n_objects;
};

static int pk_fail(struct pickle *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int pk_fail(struct pickle *k, const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    err_set("%s offset %zu: %s", k->member, k->op_pos, why);
    return -1;
}

/* s as printable text in buf[cap] (cut with "..."), for messages about hostile input. */
static void pk_printable(char *buf, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 4 < cap; i++)
        buf[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (len && o + 4 >= cap)
        memcpy(buf + o - (o >= 3 ? 3 : 0), "...", 3);
    buf[o] = '\0';
}

static struct pk_obj *pk_new(struct pickle *k, enum pk_kind kind)
{
    if (k->n_objects >= PK_MAX_OBJECTS) {
        pk_fail(k, "more than %u objects", PK_MAX_OBJECTS);
        return NULL;
    }
    if (!k->blocks || k->blocks->used == PK_BLOCK) {
        struct pk_block *b = malloc(sizeof *b);
        if (!b) {
            pk_fail(k, "out of memory");
            return NULL;
        }
        b->next = k->blocks;
        b->used = 0;
        k->blocks = b;
    }
    struct pk_obj *o = &k->blocks->obj[k->blocks->used++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    k->n_objects++;
    return o;
}

static void pk_obj_release(struct pk_obj *o)
{
    switch (o->kind) {
    case PK_STR: free(o->u.str.s); break;
    case PK_TUPLE:
    case PK_LIST:
    case PK_DICT: free(o->u.seq.v); break;
    case PK_TENSOR: free(o->u.tensor); break;
    default: break;
    }
}

/* Frees every object at once: the graph may share and cycle (a list that
 * holds itself), so nothing is freed by walking it. */
static void pickle_free(struct pickle *k)
{
    while (k->blocks) {
        struct pk_block *b = k->blocks;
        k->blocks = b->next;
        for (size_t i = 0; i < b->used; i++)
            pk_obj_release(&b->obj[i]);
        free(b);
    }
    free(k->stack);
    free(k->memo.keys);
    free(k->memo.vals);
}

/* ------------------------------------------------------ stack and memo */

static int pk_push(struct pickle *k, struct pk_obj *o)
{
    if (!o)
        return -1;
    if (k->sp == k->stack_cap) {
        if (k->stack_cap >= PK_MAX_STACK)
            return pk_fail(k, "stack deeper than %u entries", PK_MAX_STACK);
        size_t cap = k->stack_cap ? k->stack_cap * 2 : 64;
        struct pk_obj **s = realloc(k->stack, cap * sizeof *s);
        if (!s)
            return pk_fail(k, "out of memory");
        k->stack = s;
        k->stack_cap = cap;
    }
    k->stack[k->sp++] = o;
    return 0;
}

static struct pk_obj *pk_pop(struct pickle *k)
{
    if (k->sp <= k->fence) {
        pk_fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[--k->sp];
}

static struct pk_obj *pk_top(struct pickle *k)
{
    if (k->sp <= k->fence) {
        pk_fail(k, "stack underflow");
        return NULL;
    }
    return k->stack[k->sp - 1];
}

/* Ends the innermost MARK: *first is where its items start on the stack. */
static int pk_pop_mark(struct pickle *k, size_t *first)
{
    if (!k->n_marks)
        return pk_fail(k, "no MARK to end");
    *first = k->marks[--k->n_marks];
    k->fence = k->n_marks ? k->marks[k->n_marks - 1] : 0;
    return 0;
}

static size_t pk_memo_slot(const struct pk_memo *m, uint32_t key)
{
    size_t i = (size_t)(key * 2654435761u) & (m->cap - 1);
    while (m->vals[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int pk_memo_grow(struct pickle *k)
{
    struct pk_memo *m = &k->memo, g = {.cap = m->cap ? m->cap * 2 : 256, .n = m->n};
    g.keys = malloc(g.cap * sizeof *g.keys);
    g.vals = calloc(g.cap, sizeof *g.vals);
    if (!g.keys || !g.vals) {
        free(g.keys);
        free(g.vals);
        return pk_fail(k, "out of memory");
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->vals[i]) {
            size_t s = pk_memo_slot(&g, m->keys[i]);
            g.keys[s] = m->keys[i];
            g.vals[s] = m->vals[i];
        }
    free(m->keys);
    free(m->vals);
    *m = g;
    return 0;
}

static int pk_memo_put(struct pickle *k, uint64_t key)
{
    struct pk_obj *o = pk_top(k);
    if (!o)
        return -1;
    if (key > UINT32_MAX)
        return pk_fail(k, "memo slot %" PRIu64 " is out of range", key);
    if ((k->memo.n + 1) * 2 > k->memo.cap) {
        if (k->memo.n >= PK_MAX_MEMO)
            return pk_fail(k, "more than %u memo slots", PK_MAX_MEMO);
        if (pk_memo_grow(k) != 0)
            return -1;
    }
    size_t s = pk_memo_slot(&k->memo, (uint32_t)key);
    if (!k->memo.vals[s])
        k->memo.n++;
    k->memo.keys[s] = (uint32_t)key;
    k->memo.vals[s] = o;
    return 0;
}

static int pk_memo_get(struct pickle *k, uint32_t key)
{
    if (!k->memo.cap)
        return pk_fail(k, "memo slot %" PRIu32 " is not set", key);
    struct pk_obj *o = k->memo.vals[pk_memo_slot(&k->memo, key)];
    if (!o)
        return pk_fail(k, "memo slot %" PRIu32 " is not set", key);
    return pk_push(k, o);
}

/* ------------------------------------------------------ operand reads */

static int pk_bytes(struct pickle *k, size_t len, const unsigned char **out)
{
    if (len > k->n - k->pos)
        return pk_fail(k, "truncated: the opcode needs %zu bytes, %zu are left", len, k->n - k->pos);
    *out = k->p + k->pos;
    k->pos += len;
    return 0;
}

/* An unsigned little-endian operand of len bytes (1, 2, 4 or 8). */
static int pk_uint(struct pickle *k, size_t len, uint64_t *v)
{
    const unsigned char *b = NULL;
    if (pk_bytes(k, len, &b) != 0)
        return -1;
    *v = 0;
    for (size_t i = 0; i < len; i++)
        *v |= (uint64_t)b[i] << (8 * i);
    return 0;
}

/* A GLOBAL operand line, without its newline. */
static int pk_line(struct pickle *k, const char **s, size_t *len)
{
    const unsigned char *start = k->p + k->pos;
    size_t left = k->n - k->pos, max = left < PK_MAX_LINE ? left : PK_MAX_LINE;
    const unsigned char *nl = memchr(start, '\n', max);
    if (!nl)
        return pk_fail(k, "GLOBAL name without a newline in its first %d bytes", PK_MAX_LINE);
    *s = (const char *)start;
    *len = (size_t)(nl - start);
    k->pos += *len + 1;
    return 0;
}

/* ------------------------------------------------------------ values */

static int pk_push_int(struct pickle *k, enum pk_kind kind, int64_t v)
{
    struct pk_obj *o = pk_new(k, kind);
    if (o)
        o->u.i = v;
    return pk_push(k, o);
}

static int pk_push_str(struct pickle *k, size_t len_bytes)
{
    uint64_t len;
    const unsigned char *b = NULL;
    if (pk_uint(k, len_bytes, &len) != 0)
        return -1;
    if (len > k->n - k->pos)
        return pk_fail(k, "truncated: a string of %" PRIu64 " bytes, %zu are left", len, k->n - k->pos);
    if (pk_bytes(k, (size_t)len, &b) != 0)
        return -1;
    struct pk_obj *o = pk_new(k, PK_STR);
    if (!o)
        return -1;
    o->u.str.s = malloc((size_t)len + 1);
    if (!o->u.str.s)
        return pk_fail(k, "out of memory");
    memcpy(o->u.str.s, b, (size_t)len);
    o->u.str.s[len] = '\0';
    o->u.str.len = (size_t)len;
    return pk_push(k, o);
}

/* LONG1: n bytes, little-endian two's complement. */
static int pk_push_long1(struct pickle *k)
{
    uint64_t n, v = 0;
    const unsigned char *b = NULL;
    if (pk_uint(k, 1, &n) != 0 || pk_bytes(k, (size_t)n, &b) != 0)
        return -1;
    if (n > 8)
        return pk_fail(k, "an integer of %" PRIu64 " bytes does not fit 64 bits", n);
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)b[i] << (8 * i);
    if (n && n < 8 && (b[n - 1] & 0x80))
        v |= ~(uint64_t)0 << (8 * n);
    int64_t s;
    memcpy(&s, &v, sizeof s); /* two's complement, without implementation-defined conversion */
    return pk_push_int(k, PK_INT, s);
}

/* BINFLOAT: an IEEE double, big-endian. */
static int pk_push_float(struct pickle *k)
{
    const unsigned char *b = NULL;
    if (pk_bytes(k, 8, &b) != 0)
        return -1;
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits = bits << 8 | b[i];
    struct pk_obj *o = pk_new(k, PK_FLOAT);
    if (o)
        memcpy(&o->u.f, &bits, sizeof o->u.f);
    return pk_push(k, o);
}

static int pk_seq_append(struct pickle *k, struct pk_obj *seq, struct pk_obj *item)
{
    if (seq->u.seq.n == seq->u.seq.cap) {
        size_t cap = seq->u.seq.cap ? seq->u.seq.cap * 2 : 4;
        struct pk_obj **v = realloc(seq->u.seq.v, cap * sizeof *v);
        if (!v)
            return pk_fail(k, "out of memory");
        seq->u.seq.v = v;
        seq->u.seq.cap = cap;
    }
    seq->u.seq.v[seq->u.seq.n++] = item;
    return 0;
}

/* A tuple, list or dict of the stack items [first, sp), which are popped. */
static int pk_push_seq(struct pickle *k, enum pk_kind kind, size_t first)
{
    size_t n = k->sp - first;
    if (kind == PK_DICT && n % 2)
        return pk_fail(k, "DICT of an odd number of items (%zu)", n);
    struct pk_obj *o = pk_new(k, kind);
    if (!o)
        return -1;
    if (n) {
        o->u.seq.v = malloc(n * sizeof *o->u.seq.v);
        if (!o->u.seq.v)
            return pk_fail(k, "out of memory");
        memcpy(o->u.seq.v, k->stack + first, n * sizeof *o->u.seq.v);
        o->u.seq.n = o->u.seq.cap = n;
    }
    k->sp = first;
    return pk_push(k, o);
}

static int pk_op_mark(struct pickle *k)
{
    if (k->n_marks >= PK_MAX_MARKS)
        return pk_fail(k, "MARKs nested deeper than %d", PK_MAX_MARKS);
    k->marks[k->n_marks++] = k->sp;
    k->fence = k->sp;
    return 0;
}

/* TUPLE, LIST, DICT: the items since the last MARK. */
static int pk_op_from_mark(struct pickle *k, enum pk_kind kind)
{
    size_t first = 0;
    if (pk_pop_mark(k, &first) != 0)
        return -1;
    return pk_push_seq(k, kind, first);
}

/* TUPLE1..3 */
static int pk_op_tuple_n(struct pickle *k, size_t n)
{
    if (k->sp - k->fence < n)
        return pk_fail(k, "stack underflow");
    return pk_push_seq(k, PK_TUPLE, k->sp - n);
}

/* APPEND, APPENDS, SETITEM, SETITEMS: items [first, sp) into the object below them. */
static int pk_op_add_items(struct pickle *k, enum pk_kind kind, size_t first)
{
    if (first <= k->fence)
        return pk_fail(k, "stack underflow");
    struct pk_obj *target = k->stack[first - 1];
    size_t n = k->sp - first;
    if (target->kind != kind)
        return pk_fail(k, "%s on a %s, not a %s", kind == PK_LIST ? "APPEND" : "SETITEM",
                       pk_kind_names[target->kind], pk_kind_names[kind]);
    if (kind == PK_DICT && n % 2)
        return pk_fail(k, "SETITEMS of an odd number of items (%zu)", n);
    for (size_t i = first; i < k->sp; i++)
        if (pk_seq_append(k, target, k->stack[i]) != 0)
            return -1;
    k->sp = first;
    return 0;
}

static int pk_op_add_from_mark(struct pickle *k, enum pk_kind kind)
{
    size_t first = 0;
    if (pk_pop_mark(k, &first) != 0)
        return -1;
    return pk_op_add_items(k, kind, first);
}

static int pk_op_add_n(struct pickle *k, enum pk_kind kind, size_t n)
{
    if (k->sp - k->fence < n)
        return pk_fail(k, "stack underflow");
    return pk_op_add_items(k, kind, k->sp - n);
}

/* ----------------------------------------------------------- globals */

static const struct {
    const char *name;
    enum st_dtype dtype;
} pt_storage_types[] = {
    {"FloatStorage", ST_F32}, {"HalfStorage", ST_F16}, {"BFloat16Storage", ST_BF16},
    {"DoubleStorage", ST_F64}, {"LongStorage", ST_I64}, {"IntStorage", ST_I32},
    {"ShortStorage", ST_I16}, {"CharStorage", ST_I8}, {"ByteStorage", ST_U8},
    {"BoolStorage", ST_BOOL},
}, pt_dtypes[] = {
    {"float32", ST_F32}, {"float16", ST_F16}, {"bfloat16", ST_BF16}, {"float64", ST_F64},
    {"int64", ST_I64}, {"int32", ST_I32}, {"int16", ST_I16}, {"int8", ST_I8},
    {"uint8", ST_U8}, {"bool", ST_BOOL}, {"uint16", ST_U16}, {"uint32", ST_U32},
    {"uint64", ST_U64}, {"float8_e4m3fn", ST_F8_E4M3}, {"float8_e5m2", ST_F8_E5M2},
};

static int pk_text_is(const char *s, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(s, want, len) == 0;
}

static void pk_global_set(struct pk_obj *g, enum pk_global which, enum st_dtype dtype, const char *module,
                          const char *name)
{
    g->u.g.which = which;
    g->u.g.typed = 1;
    g->u.g.dtype = dtype;
    g->u.g.module = module;
    g->u.g.name = name;
}

/* The global module.name as an object, if it is one of the allowed few. */
static int pk_global_resolve(struct pickle *k, const char *mod, size_t mlen, const char *name, size_t nlen,
                             struct pk_obj *g)
{
    static const struct {
        const char *module, *name;
        enum pk_global which;
    } fixed[] = {
        {"collections", "OrderedDict", PG_ORDERED_DICT},
        {"torch._utils", "_rebuild_tensor_v2", PG_REBUILD_V2},
        {"torch._utils", "_rebuild_tensor_v3", PG_REBUILD_V3},
        {"torch._utils", "_rebuild_parameter", PG_REBUILD_PARAMETER},
        {"torch.storage", "UntypedStorage", PG_STORAGE_TYPE},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (pk_text_is(mod, mlen, fixed[i].module) && pk_text_is(name, nlen, fixed[i].name)) {
            pk_global_set(g, fixed[i].which, ST_U8, fixed[i].module, fixed[i].name);
            g->u.g.typed = 0; /* UntypedStorage; unused for the others */
            return 0;
        }
    if (pk_text_is(mod, mlen, "torch")) {
        for (size_t i = 0; i < sizeof pt_storage_types / sizeof *pt_storage_types; i++)
            if (pk_text_is(name, nlen, pt_storage_types[i].name)) {
                pk_global_set(g, PG_STORAGE_TYPE, pt_storage_types[i].dtype, "torch", pt_storage_types[i].name);
                return 0;
            }
        for (size_t i = 0; i < sizeof pt_dtypes / sizeof *pt_dtypes; i++)
            if (pk_text_is(name, nlen, pt_dtypes[i].name)) {
                pk_global_set(g, PG_DTYPE, pt_dtypes[i].dtype, "torch", pt_dtypes[i].name);
                return 0;
            }
    }
    char m[96], n[96];
    pk_printable(m, sizeof m, mod, mlen);
    pk_printable(n, sizeof n, name, nlen);
    /* Protocol 2 writes Python 3's builtins under their Python 2 names;
     * the message gives the name a reader knows too. */
    static const char *const py2[][2] = {{"__builtin__", "builtins"}, {"exceptions", "builtins"},
                                          {"copy_reg", "copyreg"}};
    for (size_t i = 0; i < sizeof py2 / sizeof *py2; i++)
        if (strcmp(m, py2[i][0]) == 0)
            return pk_fail(k, "pickle asks for global '%s.%s' (written '%s.%s'), which a state dict does not "
                              "need; refused", py2[i][1], n, m, n);
    return pk_fail(k, "pickle asks for global '%s.%s', which a state dict does not need; refused", m, n);
}

static int pk_push_global(struct pickle *k, const char *mod, size_t mlen, const char *name, size_t nlen)
{
    struct pk_obj *g = pk_new(k, PK_GLOBAL);
    if (!g || pk_global_resolve(k, mod, mlen, name, nlen, g) != 0)
        return -1;
    return pk_push(k, g);
}

static int pk_op_global(struct pickle *k)
{
    const char *mod, *name;
    size_t mlen, nlen;
    if (pk_line(k, &mod, &mlen) != 0 || pk_line(k, &name, &nlen) != 0)
        return -1;
    return pk_push_global(k, mod, mlen, name, nlen);
}

static int pk_op_stack_global(struct pickle *k)
{
    struct pk_obj *name = pk_pop(k), *mod = name ? pk_pop(k) : NULL;
    if (!mod)
        return -1;
    if (mod->kind != PK_STR || name->kind != PK_STR)
        return pk_fail(k, "STACK_GLOBAL of a %s and a %s, not two strings", pk_kind_names[mod->kind],
                       pk_kind_names[name->kind]);
    return pk_push_global(k, mod->u.str.s, mod->u.str.len, name->u.str.s, name->u.str.len);
}

/* ----------------------------------------------------------- tensors */

/* BINPERSID: ('storage', storage class, key, location, numel) -> the
 * storage's bytes, the member TOP/data/<key>. */
static int pk_op_persid(struct pickle *k)
{
    struct pk_obj *pid = pk_pop(k);
    if (!pid)
        return -1;
    struct pk_obj **v = pid->u.seq.v;
    if (pid->kind != PK_TUPLE || pid->u.seq.n != 5 || v[0]->kind != PK_STR ||
        strcmp(v[0]->u.str.s, "storage") != 0 || v[1]->kind != PK_GLOBAL ||
        v[1]->u.g.which != PG_STORAGE_TYPE || v[2]->kind != PK_STR || v[3]->kind != PK_STR ||
        v[4]->kind != PK_INT)
        return pk_fail(k, "a persistent id that is not ('storage', <storage class>, key, location, numel)");
    const char *key = v[2]->u.str.s;
    char shown[96];
    pk_printable(shown, sizeof shown, key, v[2]->u.str.len);
    if (strlen(key) != v[2]->u.str.len || v[2]->u.str.len > 4096)
        return pk_fail(k, "storage key '%s' is not a member name", shown);
    size_t elsize = v[1]->u.g.typed ? st_dtype_size(v[1]->u.g.dtype) : 1;
    int64_t numel = v[4]->u.i;
    if (numel < 0 || (uint64_t)numel > PT_MAX_BYTES / elsize)
        return pk_fail(k, "storage '%s' of %" PRId64 " elements", shown, numel);
    char member[4200];
    snprintf(member, sizeof member, "%s/data/%s", k->ar->top, key);
    const struct pt_member *m = pt_archive_find(k->ar, member);
    if (!m)
        return pk_fail(k, "storage '%s': no member '%s'", shown, member);
    if (m->size != (uint64_t)numel * elsize)
        return pk_fail(k, "storage '%s': member '%s' holds %zu bytes, the pickle says %" PRId64 " x %zu", shown,
                       member, m->size, numel, elsize);
    struct pk_obj *s = pk_new(k, PK_STORAGE);
    if (!s)
        return -1;
    s->u.storage.typed = v[1]->u.g.typed;
    s->u.storage.dtype = v[1]->u.g.dtype;
    s->u.storage.data = m->data;
    s->u.storage.nbytes = m->size;
    return pk_push(k, s);
}

/* A tuple of at most ST_MAX_DIMS non-negative ints into out[]. */
static int pk_int_tuple(struct pickle *k, const struct pk_obj *t, const char *what, int64_t *out, int *n)
{
    if (t->kind != PK_TUPLE)
        return pk_fail(k, "tensor %s is a %s, not a tuple", what, pk_kind_names[t->kind]);
    if (t->u.seq.n > ST_MAX_DIMS)
        return pk_fail(k, "tensor of rank %zu, more than %d", t->u.seq.n, ST_MAX_DIMS);
    for (size_t i = 0; i < t->u.seq.n; i++) {
        const struct pk_obj *e = t->u.seq.v[i];
        if (e->kind != PK_INT || e->u.i < 0)
            return pk_fail(k, "tensor %s[%zu] is not a non-negative int", what, i);
        out[i] = e->u.i;
    }
    *n = (int)t->u.seq.n;
    return 0;
}

static int pk_is_empty_dict(const struct pk_obj *o)
{
    return o->kind == PK_DICT && o->u.seq.n == 0;
}

/* The view must lie within the storage: the element furthest in, offset +
 * sum (size - 1) * stride, and everything on the way without overflow. */
static int pk_view_check(struct pickle *k, const struct pk_tensor *t, uint64_t storage_bytes)
{
    size_t elsize = st_dtype_size(t->dtype);
    uint64_t cap = storage_bytes / elsize, numel = 1, last = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t sz = (uint64_t)t->size[d];
        if (sz && numel > PT_MAX_BYTES / elsize / sz)
            return pk_fail(k, "tensor of more than %" PRIu64 " bytes", PT_MAX_BYTES);
        numel *= sz;
    }
    if (numel == 0)
        return t->offset <= cap ? 0 : pk_fail(k, "empty tensor at offset %" PRIu64 " of a storage of %" PRIu64
                                                 " elements", t->offset, cap);
    for (int d = 0; d < t->ndim && last < cap; d++) {
        uint64_t reach = (uint64_t)(t->size[d] - 1), st = (uint64_t)t->stride[d];
        if (st && reach > (cap - last) / st)
            last = cap;
        else
            last += reach * st;
    }
    if (last >= cap) {
        char shape[128];
        st_shape_text(shape, sizeof shape, t->ndim, t->size);
        return pk_fail(k, "tensor view %s at offset %" PRIu64 " reaches outside its storage of %" PRIu64
                          " elements", shape, t->offset, cap);
    }
    return 0;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
 * _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata]) */
static struct pk_obj *pk_rebuild_tensor(struct pickle *k, const struct pk_obj *args, int v3)
{
    size_t n = args->u.seq.n, fixed = v3 ? 7 : 6;
    struct pk_obj **a = args->u.seq.v;
    if (n != fixed && n != fixed + 1) {
        pk_fail(k, "_rebuild_tensor_v%d with %zu arguments", v3 ? 3 : 2, n);
        return NULL;
    }
    if (a[0]->kind != PK_STORAGE || a[1]->kind != PK_INT || a[1]->u.i < 0 || a[4]->kind != PK_BOOL ||
        (n == fixed + 1 && a[fixed]->kind != PK_DICT && a[fixed]->kind != PK_NONE) ||
        (v3 && (a[6]->kind != PK_GLOBAL || a[6]->u.g.which != PG_DTYPE)) || (!v3 && !a[0]->u.storage.typed)) {
        pk_fail(k, "_rebuild_tensor_v%d arguments are not (storage, offset, size, stride, bool, hooks%s)",
                v3 ? 3 : 2, v3 ? ", dtype" : "");
        return NULL;
    }
    if (!pk_is_empty_dict(a[5])) {
        pk_fail(k, "a tensor with backward hooks");
        return NULL;
    }
    struct pk_tensor t = {.dtype = v3 ? a[6]->u.g.dtype : a[0]->u.storage.dtype,
                          .base = a[0]->u.storage.data,
                          .offset = (uint64_t)a[1]->u.i};
    int nstride;
    if (pk_int_tuple(k, a[2], "size", t.size, &t.ndim) != 0 ||
        pk_int_tuple(k, a[3], "stride", t.stride, &nstride) != 0)
        return NULL;
    if (nstride != t.ndim) {
        pk_fail(k, "tensor of rank %d with %d strides", t.ndim, nstride);
        return NULL;
    }
    if (pk_view_check(k, &t, a[0]->u.storage.nbytes) != 0)
        return NULL;
    struct pk_obj *o = pk_new(k, PK_TENSOR);
    if (!o)
        return NULL;
    o->u.tensor = malloc(sizeof t);
    if (!o->u.tensor) {
        pk_fail(k, "out of memory");
        return NULL;
    }
    *o->u.tensor = t;
    return o;
}

/* _rebuild_parameter(tensor, requires_grad, hooks): the tensor itself. */
static struct pk_obj *pk_rebuild_parameter(struct pickle *k, const struct pk_obj *args)
{
    struct pk_obj **a = args->u.seq.v;
    if (args->u.seq.n != 3 || a[0]->kind != PK_TENSOR || a[1]->kind != PK_BOOL) {
        pk_fail(k, "_rebuild_parameter arguments are not (tensor, bool, hooks)");
        return NULL;
    }
    if (!pk_is_empty_dict(a[2])) {
        pk_fail(k, "a parameter with backward hooks");
        return NULL;
    }
    return a[0];
}

/* REDUCE (callable(*args)) and NEWOBJ (cls.__new__(cls, *args)): only the
 * allowed globals, evaluated here by what they are known to do. */
static int pk_op_call(struct pickle *k, int newobj)
{
    struct pk_obj *args = pk_pop(k), *fn = args ? pk_pop(k) : NULL, *out = NULL;
    if (!fn)
        return -1;
    const char *op = newobj ? "NEWOBJ" : "REDUCE";
    if (fn->kind != PK_GLOBAL)
        return pk_fail(k, "%s calls a %s", op, pk_kind_names[fn->kind]);
    if (args->kind != PK_TUPLE)
        return pk_fail(k, "%s with arguments in a %s, not a tuple", op, pk_kind_names[args->kind]);
    enum pk_global w = fn->u.g.which;
    if (w == PG_ORDERED_DICT && args->u.seq.n == 0)
        out = pk_new(k, PK_DICT);
    else if (w == PG_ORDERED_DICT)
        return pk_fail(k, "OrderedDict called with arguments");
    else if (newobj || w == PG_STORAGE_TYPE || w == PG_DTYPE)
        return pk_fail(k, "%s of %s.%s, which a state dict does not do", op, fn->u.g.module, fn->u.g.name);
    else if (w == PG_REBUILD_PARAMETER)
        out = pk_rebuild_parameter(k, args);
    else
        out = pk_rebuild_tensor(k, args, w == PG_REBUILD_V3);
    return out ? pk_push(k, out) : -1;
}

/* BUILD (set an object's state): an OrderedDict's _metadata, or a tensor's
 * attributes; the state is dropped, which is harmless for both. */
static int pk_op_build(struct pickle *k)
{
    struct pk_obj *state = pk_pop(k), *o = state ? pk_top(k) : NULL;
    if (!o)
        return -1;
    if (o->kind != PK_DICT && o->kind != PK_TENSOR)
        return pk_fail(k, "BUILD on a %s", pk_kind_names[o->kind]);
    return 0;
}

/* ------------------------------------------------------------ machine */

static int pk_op_memo(struct pickle *k, unsigned char op)
{
    uint64_t v;
    switch (op) {
    case 'q': return pk_uint(k, 1, &v) != 0 ? -1 : pk_memo_put(k, v);   /* BINPUT */
    case 'r': return pk_uint(k, 4, &v) != 0 ? -1 : pk_memo_put(k, v);   /* LONG_BINPUT */
    case 0x94: return pk_memo_put(k, k->memo.n);                        /* MEMOIZE */
    case 'h': return pk_uint(k, 1, &v) != 0 ? -1 : pk_memo_get(k, (uint32_t)v); /* BINGET */
    default: return pk_uint(k, 4, &v) != 0 ? -1 : pk_memo_get(k, (uint32_t)v);  /* LONG_BINGET */
    }
}

/* Opcodes that push a constant. 1 when op is not one of them. */
static int pk_op_constant(struct pickle *k, unsigned char op)
{
    uint64_t v;
    switch (op) {
    case 'N': return pk_push(k, pk_new(k, PK_NONE));
    case 0x88: return pk_push_int(k, PK_BOOL, 1);                       /* NEWTRUE */
    case 0x89: return pk_push_int(k, PK_BOOL, 0);                       /* NEWFALSE */
    case 'K': return pk_uint(k, 1, &v) != 0 ? -1 : pk_push_int(k, PK_INT, (int64_t)v); /* BININT1 */
    case 'M': return pk_uint(k, 2, &v) != 0 ? -1 : pk_push_int(k, PK_INT, (int64_t)v); /* BININT2 */
    case 'J': return pk_uint(k, 4, &v) != 0 ? -1 : pk_push_int(k, PK_INT, (int32_t)(uint32_t)v); /* BININT */
    case 0x8a: return pk_push_long1(k);
    case 'G': return pk_push_float(k);
    case 'X': return pk_push_str(k, 4);                                 /* BINUNICODE */
    case 0x8c: return pk_push_str(k, 1);                                /* SHORT_BINUNICODE */
    case 0x8d: return pk_push_str(k, 8);                                /* BINUNICODE8 */
    case '}': return pk_push(k, pk_new(k, PK_DICT));                    /* EMPTY_DICT */
    case ']': return pk_push(k, pk_new(k, PK_LIST));                    /* EMPTY_LIST */
    case ')': return pk_push(k, pk_new(k, PK_TUPLE));                   /* EMPTY_TUPLE */
    default: return 1;
    }
}

/* Opcodes that build containers. 1 when op is not one of them. */
static int pk_op_container(struct pickle *k, unsigned char op)
{
    switch (op) {
    case '(': return pk_op_mark(k);
    case 't': return pk_op_from_mark(k, PK_TUPLE);
    case 'l': return pk_op_from_mark(k, PK_LIST);
    case 'd': return pk_op_from_mark(k, PK_DICT);
    case 0x85: return pk_op_tuple_n(k, 1);
    case 0x86: return pk_op_tuple_n(k, 2);
    case 0x87: return pk_op_tuple_n(k, 3);
    case 'a': return pk_op_add_n(k, PK_LIST, 1);                        /* APPEND */
    case 'e': return pk_op_add_from_mark(k, PK_LIST);                   /* APPENDS */
    case 's': return pk_op_add_n(k, PK_DICT, 2);                        /* SETITEM */
    case 'u': return pk_op_add_from_mark(k, PK_DICT);                   /* SETITEMS */
    default: return 1;
    }
}

static int pk_op_other(struct pickle *k, unsigned char op)
{
    uint64_t v;
    switch (op) {
    case 0x80: /* PROTO */
        if (pk_uint(k, 1, &v) != 0)
            return -1;
        return v <= 5 ? 0 : pk_fail(k, "pickle protocol %" PRIu64 ", newer than 5", v);
    case 0x95: return pk_uint(k, 8, &v); /* FRAME: a length hint, the data follows inline */
    case 'q': case 'r': case 0x94: case 'h': case 'j': return pk_op_memo(k, op);
    case 'c': return pk_op_global(k);
    case 0x93: return pk_op_stack_global(k);
    case 'R': return pk_op_call(k, 0);
    case 0x81: return pk_op_call(k, 1);
    case 'b': return pk_op_build(k);
    case 'Q': return pk_op_persid(k);
    default: {
        char shown[8] = "";
        if (op >= 0x20 && op < 0x7f)
            snprintf(shown, sizeof shown, " '%c'", op);
        return pk_fail(k, "opcode 0x%02x%s is not one a state dict needs; refused", op, shown);
    }
    }
}

/* Runs the pickle up to STOP; *out is the object it built. */
static int pickle_run(struct pickle *k, struct pk_obj **out)
{
    while (k->pos < k->n) {
        k->op_pos = k->pos;
        unsigned char op = k->p[k->pos++];
        if (op == '.') { /* STOP */
            *out = pk_pop(k);
            return *out ? 0 : -1;
        }
        int rc = pk_op_constant(k, op);
        if (rc == 1)
            rc = pk_op_container(k, op);
        if (rc == 1)
            rc = pk_op_other(k, op);
        if (rc != 0)
            return -1;
    }
    k->op_pos = k->n;
    return pk_fail(k, "the pickle ends without STOP");
}

/* ------------------------------------------------------- flattening */

struct pt_flat {
    struct st_writer *w;
    uint64_t limit;          /* output bytes */
    size_t visits, max_visits;
    struct pt_name {
        char *s;
        size_t len, cap;
    } name;
    void **copies; /* the contiguous copies of strided views */
    size_t n_copies, cap_copies;
    int skipped;
};

static const char *pt_flat_shown(struct pt_flat *f)
{
    /* Long keys (a nesting bomb's) are cut for the message. */
    if (f->name.len > 200)
        memcpy(f->name.s + 196, "...", 4);
    return f->name.s ? f->name.s : "";
}

static int pt_name_append(struct pt_flat *f, const char *s, size_t len)
{
    if (len > PT_MAX_NAME || f->name.len + 1 + len > PT_MAX_NAME) {
        err_set("key '%s': a name of more than %d bytes", pt_flat_shown(f), PT_MAX_NAME);
        return -1;
    }
    size_t need = f->name.len + len + 2;
    if (need > f->name.cap) {
        size_t cap = f->name.cap ? f->name.cap : 256;
        while (cap < need)
            cap *= 2;
        char *g = realloc(f->name.s, cap);
        if (!g) {
            err_set("out of memory");
            return -1;
        }
        f->name.s = g;
        f->name.cap = cap;
    }
    if (f->name.len)
        f->name.s[f->name.len++] = '.';
    memcpy(f->name.s + f->name.len, s, len);
    f->name.len += len;
    f->name.s[f->name.len] = '\0';
    return 0;
}

/* Copies a strided view out contiguous, row by row. */
static void pt_copy_strided(unsigned char *dst, const struct pk_tensor *t, size_t elsize)
{
    int last = t->ndim - 1;
    int64_t idx[ST_MAX_DIMS] = {0}, rows = 1;
    for (int d = 0; d < last; d++)
        rows *= t->size[d];
    size_t row = (size_t)t->size[last];
    for (int64_t r = 0; r < rows; r++) {
        uint64_t off = t->offset;
        for (int d = 0; d < last; d++)
            off += (uint64_t)idx[d] * (uint64_t)t->stride[d];
        const unsigned char *src = t->base + off * elsize;
        if (t->stride[last] == 1)
            memcpy(dst, src, row * elsize);
        else
            for (size_t i = 0; i < row; i++)
                memcpy(dst + i * elsize, src + i * (size_t)t->stride[last] * elsize, elsize);
        dst += row * elsize;
        for (int d = last - 1; d >= 0 && ++idx[d] == t->size[d]; d--)
            idx[d] = 0;
    }
}

/* The tensor's data contiguous: in its storage when the view is, else a copy. */
static int pt_tensor_data(struct pt_flat *f, const struct pk_tensor *t, uint64_t nbytes, const void **data)
{
    size_t elsize = st_dtype_size(t->dtype);
    if (nbytes == 0) {
        *data = NULL;
        return 0;
    }
    /* Sizes are now at least 1 and their product bounded: no overflow. */
    int64_t want = 1;
    int contiguous = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && t->stride[d] != want)
            contiguous = 0;
        want *= t->size[d];
    }
    if (contiguous) {
        *data = t->base + t->offset * elsize;
        return 0;
    }
    if (f->n_copies == f->cap_copies) {
        size_t cap = f->cap_copies ? f->cap_copies * 2 : 8;
        void **c = realloc(f->copies, cap * sizeof *c);
        if (!c) {
            err_set("out of memory");
            return -1;
        }
        f->copies = c;
        f->cap_copies = cap;
    }
    unsigned char *copy = malloc((size_t)nbytes);
    if (!copy) {
        err_set("key '%s': out of memory for %" PRIu64 " bytes", pt_flat_shown(f), nbytes);
        return -1;
    }
    f->copies[f->n_copies++] = copy;
    pt_copy_strided(copy, t, elsize);
    *data = copy;
    return 0;
}

static int pt_flat_tensor(struct pt_flat *f, const struct pk_tensor *t)
{
    uint64_t nbytes = st_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        nbytes *= (uint64_t)t->size[d]; /* bounded by pk_view_check */
    if (nbytes > f->limit - st_writer_total_bytes(f->w)) {
        err_set("key '%s': the tensors come to more than %" PRIu64 " bytes, %d times the file's storages "
                "(or 64 GiB); refused", pt_flat_shown(f), f->limit, PT_MAX_AMPLIFY);
        return -1;
    }
    const void *data;
    if (pt_tensor_data(f, t, nbytes, &data) != 0)
        return -1;
    return st_writer_add(f->w, f->name.s ? f->name.s : "", t->dtype, t->ndim, t->size, data);
}

static int pt_flat_walk(struct pt_flat *f, const struct pk_obj *o, int depth);

/* A dict's entries, each under its key. */
static int pt_flat_dict(struct pt_flat *f, const struct pk_obj *o, int depth)
{
    size_t keep = f->name.len;
    for (size_t i = 0; i + 1 < o->u.seq.n; i += 2) {
        const struct pk_obj *key = o->u.seq.v[i];
        char num[32];
        const char *s = num;
        size_t len;
        if (key->kind == PK_STR && strlen(key->u.str.s) == key->u.str.len) {
            s = key->u.str.s;
            len = key->u.str.len;
        } else if (key->kind == PK_INT) {
            len = (size_t)snprintf(num, sizeof num, "%" PRId64, key->u.i);
        } else {
            err_set("key '%s': a %s key (%s) in the state dict", pt_flat_shown(f), pk_kind_names[key->kind],
                    key->kind == PK_STR ? "holding NUL" : "neither str nor int");
            return -1;
        }
        if (pt_name_append(f, s, len) != 0 || pt_flat_walk(f, o->u.seq.v[i + 1], depth + 1) != 0)
            return -1;
        f->name.len = keep;
        if (f->name.s)
            f->name.s[keep] = '\0';
    }
    return 0;
}

/* A list's or tuple's items, each under its index. */
static int pt_flat_seq(struct pt_flat *f, const struct pk_obj *o, int depth)
{
    size_t keep = f->name.len;
    for (size_t i = 0; i < o->u.seq.n; i++) {
        char num[32];
        int len = snprintf(num, sizeof num, "%zu", i);
        if (pt_name_append(f, num, (size_t)len) != 0 || pt_flat_walk(f, o->u.seq.v[i], depth + 1) != 0)
            return -1;
        f->name.len = keep;
        f->name.s[keep] = '\0';
    }
    return 0;
}

static int pt_flat_walk(struct pt_flat *f, const struct pk_obj *o, int depth)
{
    if (depth > PT_MAX_DEPTH) {
        err_set("key '%s': nested deeper than %d levels", pt_flat_shown(f), PT_MAX_DEPTH);
        return -1;
    }
    /* Every entry of every container cost the pickle a byte at least, so a
     * walk of a tree stays within its length; only a cycle or containers
     * shared over and over (a DAG of exponentially many paths) go past. */
    if (++f->visits > f->max_visits) {
        err_set("key '%s': dicts or lists that hold themselves, or are shared over and over: walking them "
                "would not end; refused", pt_flat_shown(f));
        return -1;
    }
    switch (o->kind) {
    case PK_TENSOR: return pt_flat_tensor(f, o->u.tensor);
    case PK_DICT: return pt_flat_dict(f, o, depth);
    case PK_LIST:
    case PK_TUPLE: {
        /* Flattened by index when it holds a tensor; else one skipped leaf. */
        size_t tensors = st_writer_count(f->w);
        int skipped = f->skipped;
        if (pt_flat_seq(f, o, depth) != 0)
            return -1;
        if (st_writer_count(f->w) > tensors)
            return 0;
        f->skipped = skipped;
        break;
    }
    default: break;
    }
    if (f->skipped < INT_MAX)
        f->skipped++;
    return 0;
}

static void pt_flat_free(struct pt_flat *f)
{
    st_writer_free(f->w);
    for (size_t i = 0; i < f->n_copies; i++)
        free(f->copies[i]);
    free(f->copies);
    free(f->name.s);
}

/* ------------------------------------------------------------ driver */

static int pt_check_byteorder(const struct pt_archive *ar)
{
    char name[512];
    snprintf(name, sizeof name, "%s/byteorder", ar->top);
    const struct pt_member *m = pt_archive_find(ar, name);
    if (!m || (m->size == 6 && memcmp(m->data, "little", 6) == 0))
        return 0;
    char shown[96];
    pk_printable(shown, sizeof shown, (const char *)m->data, m->size);
    err_set("%s is '%s': only little-endian files are read", name, shown);
    return -1;
}

/* data.pkl run into a state dict, flattened into out. */
static int pt_unpickle(const struct pt_archive *ar, struct pt_flat *out)
{
    char name[512];
    snprintf(name, sizeof name, "%s/data.pkl", ar->top);
    const struct pt_member *m = pt_archive_find(ar, name);
    if (!m) { /* pt_archive_find_top found it; kept for safety */
        err_set("no member '%s'", name);
        return -1;
    }
    if (m->size > PT_MAX_PICKLE) {
        err_set("%s: %zu bytes, more than the %" PRIu64 " a state dict's pickle needs", name, m->size,
                PT_MAX_PICKLE);
        return -1;
    }
    struct pickle k = {.p = m->data, .n = m->size, .member = name, .ar = ar};
    struct pk_obj *top = NULL;
    int rc = pickle_run(&k, &top);
    if (rc == 0 && top->kind != PK_DICT) {
        err_set("%s: the pickle holds a %s, not a state dict", name, pk_kind_names[top->kind]);
        rc = -1;
    }
    out->max_visits = m->size + 1;
    if (rc == 0)
        rc = pt_flat_walk(out, top, 0);
    pickle_free(&k);
    return rc;
}

/* The zip already opened on a, converted; err_set without the file's name. */
static int pt_convert(struct archive *a, uint64_t file_size, void **bytes, size_t *size, int *skipped)
{
    struct pt_archive ar = {.budget = PT_MAX_BYTES};
    if (file_size < (PT_MAX_BYTES - 65536) / PT_DEFLATE_RATIO)
        ar.budget = file_size * PT_DEFLATE_RATIO + 65536;
    struct pt_flat f = {.w = st_writer_new()};
    int rc = f.w ? 0 : -1;
    if (rc == 0)
        rc = pt_archive_read(&ar, a);
    if (rc == 0)
        rc = pt_check_byteorder(&ar);
    f.limit = ar.total < (PT_MAX_BYTES - (16u << 20)) / PT_MAX_AMPLIFY
                  ? ar.total * PT_MAX_AMPLIFY + (16u << 20) : PT_MAX_BYTES;
    if (rc == 0)
        rc = pt_unpickle(&ar, &f);
    if (rc == 0)
        rc = st_writer_to_buffer(f.w, bytes, size);
    if (rc == 0 && skipped)
        *skipped = f.skipped;
    pt_flat_free(&f);
    pt_archive_free(&ar);
    return rc;
}

/* A file that is a pickle itself is the format before torch 1.6. */
static int pt_check_magic(const unsigned char *head, size_t len)
{
    if (len >= 2 && head[0] == 0x80 && head[1] <= 5) {
        err_set("a bare pickle, the torch.save format before torch 1.6 (or _use_new_zipfile_serialization="
                "False), which is not read; save it again with a newer torch");
        return -1;
    }
    if (len < 4 || memcmp(head, "PK\003\004", 4) != 0) {
        err_set("not a zip archive, so not a torch.save file");
        return -1;
    }
    return 0;
}

static struct archive *pt_archive_new(void)
{
    struct archive *a = archive_read_new();
    if (!a) {
        err_set("out of memory");
        return NULL;
    }
    /* Seekable only: the central directory lists the members, and a file
     * cut short (no directory) is refused rather than read up to the cut. */
    archive_read_support_format_zip_seekable(a);
    return a;
}

static int pt_open_failed(struct archive *a)
{
    const char *why = archive_error_string(a);
    /* Only the seekable zip reader is registered: what fails here has no
     * central directory, as a file cut short has not. */
    err_set("cannot read the zip archive (no central directory: cut short or damaged?): %s",
            why ? why : "unknown error");
    return -1;
}

int torch_pt_read_buffer(const char *name, const void *data, size_t len, void **bytes, size_t *size,
                         int *skipped)
{
    if (!name || (!data && len) || !bytes || !size) {
        err_set("torch_pt_read_buffer: no name, data or output");
        return -1;
    }
    struct archive *a = NULL;
    int rc = pt_check_magic(data, len);
    if (rc == 0)
        rc = (a = pt_archive_new()) ? 0 : -1;
    if (rc == 0 && archive_read_open_memory(a, data, len) != ARCHIVE_OK)
        rc = pt_open_failed(a);
    if (rc == 0)
        rc = pt_convert(a, len, bytes, size, skipped);
    if (a)
        archive_read_free(a);
    if (rc != 0)
        err_prefix("%s", name);
    return rc;
}

/* The first bytes of the file, for pt_check_magic. */
static int pt_read_head(const char *path, unsigned char *head, size_t *len, uint64_t *file_size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        err_set("%s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set("not a regular file");
        fclose(fp);
        return -1;
    }
    *len = fread(head, 1, *len, fp);
    *file_size = (uint64_t)st.st_size;
    fclose(fp);
    return 0;
}

int torch_pt_read(const char *path, void **bytes, size_t *size, int *skipped)
{
    if (!path || !bytes || !size) {
        err_set("torch_pt_read: no path or output");
        return -1;
    }
    unsigned char head[4];
    size_t hlen = sizeof head;
    uint64_t file_size = 0;
    struct archive *a = NULL;
    int rc = pt_read_head(path, head, &hlen, &file_size);
    if (rc == 0)
        rc = pt_check_magic(head, hlen);
    if (rc == 0)
        rc = (a = pt_archive_new()) ? 0 : -1;
    if (rc == 0 && archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK)
        rc = pt_open_failed(a);
    if (rc == 0)
        rc = pt_convert(a, file_size, bytes, size, skipped);
    if (a)
        archive_read_free(a);
    if (rc != 0)
        err_prefix("%s", path);
    return rc;
}
