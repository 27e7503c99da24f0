/* dit-manifest(5): round trips of hostile fields and every kind of bad file */
#include "tests/harness.h"
#include "formats/manifest.h"
#include "libcommon/error.h"

#include <stdlib.h>

static const char *hostile[] = {
    "tab\there",       "new\nline",         "back\\slash", "\\t literally",
    "quotes \"'\"",    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
    "",                "cr\r\nlf",           "trailing backslash\\",
    "  spaces  ",      "#not a comment",     "\\\\\\n\\",
};
#define N_HOSTILE (sizeof hostile / sizeof hostile[0])

TEST(hostile_fields_round_trip)
{
    const char *path = test_tmp_path("m.tsv");
    const char *cols[] = {"key", "caption", "extra.col-1"};
    struct manifest_writer *w = manifest_writer_open(path, 3, cols);
    CHECK(w != NULL);
    for (size_t i = 0; i < N_HOSTILE; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%zu\t%s", i, i % 2 ? "odd" : "even");
        const char *fields[] = {key, hostile[i], hostile[N_HOSTILE - 1 - i]};
        CHECK_INT(manifest_write(w, fields), 0);
    }
    CHECK_INT(manifest_writer_commit(w), 0);

    struct manifest_reader *r = manifest_open(path, MANIFEST_CHECK_KEYS);
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_INT(manifest_ncols(r), 3);
    CHECK_STR(manifest_column(r, 2), "extra.col-1");
    CHECK_INT(manifest_column_index(r, "caption"), 1);
    CHECK_INT(manifest_column_index(r, "nope"), -1);
    struct manifest_record rec;
    for (size_t i = 0; i < N_HOSTILE; i++) {
        CHECK_INT(manifest_next(r, &rec), 1);
        CHECK_STR(rec.fields[1], hostile[i]);
        CHECK_STR(rec.fields[2], hostile[N_HOSTILE - 1 - i]);
        CHECK_INT(manifest_line(r), i + 2);
    }
    CHECK_INT(manifest_next(r, &rec), 0);
    manifest_close(r);

    /* One line per record: escapes keep TAB and LF out of the raw text. */
    char *text = test_read_file(path, NULL);
    int lines = 0;
    for (char *c = text; c && *c; c++)
        lines += *c == '\n';
    CHECK_INT(lines, N_HOSTILE + 1);
    free(text);
}

TEST(escape_is_inverse_of_unescape)
{
    for (size_t i = 0; i < N_HOSTILE; i++) {
        char *e = manifest_escape(hostile[i]);
        CHECK(strchr(e, '\t') == NULL && strchr(e, '\n') == NULL && strchr(e, '\r') == NULL);
        CHECK_INT(manifest_unescape(e, strlen(e)), 0);
        CHECK_STR(e, hostile[i]);
        free(e);
    }
}

struct bad_case {
    const char *name;
    const char *text;
    size_t len; /* 0: strlen */
    const char *expect;
    int at_open; /* the header is bad: manifest_open fails */
};

static const struct bad_case bad_cases[] = {
    {"empty", "", 0, "empty file", 1},
    {"no_key", "a\tb\n1\t2\n", 0, "no 'key' column", 1},
    {"dup_column", "key\tx\tx\n", 0, "column 'x' appears twice", 1},
    {"bad_column_name", "key\t9lives\n", 0, "'9lives' is not a valid column name", 1},
    {"crlf_header", "key\tcaption\r\nk\tc\r\n", 0, "CRLF", 1},
    {"crlf_record", "key\tcaption\nk\tc\r\n", 0, ":2: carriage return", 0},
    {"too_few", "key\tcaption\tlabel\nk\tc\n", 0, ":2: 2 fields, the header has 3 columns", 0},
    {"too_many", "key\tcaption\nk\tc\td\n", 0, ":2: 3 fields, the header has 2 columns", 0},
    {"bad_escape", "key\tcaption\nk\ta\\xb\n", 0, ":2: column caption: bad escape '\\x'", 0},
    {"trailing_backslash", "key\tcaption\nk\tab\\\n", 0, "backslash at the end of the field", 0},
    {"bad_utf8", "key\tcaption\nk\tbad \xff byte\n", 0, "column caption: invalid UTF-8", 0},
    {"overlong_utf8", "key\tcaption\nk\t\xc0\xaf\n", 0, "invalid UTF-8", 0},
    {"surrogate_utf8", "key\tcaption\nk\t\xed\xa0\x80\n", 0, "invalid UTF-8", 0},
    {"nul_byte", "key\tcaption\nk\ta\0b\n", 18, "NUL byte", 0},
    {"empty_line", "key\tcaption\n\nk\tc\n", 0, ":2: empty line", 0},
    {"empty_key", "key\tcaption\n\tc\n", 0, ":2: empty key", 0},
    {"dup_key", "caption\tkey\na\tk1\nb\tk2\nc\tk1\n", 0, ":4: duplicate key 'k1' (first on line 2)", 0},
};

TEST(bad_manifests_are_named_with_line_and_reason)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *c = &bad_cases[i];
        char name[64];
        snprintf(name, sizeof name, "%s.tsv", c->name);
        const char *path = test_tmp_path(name);
        test_write_file(path, c->text, c->len ? c->len : strlen(c->text));
        err_clear();
        struct manifest_reader *r = manifest_open(path, MANIFEST_CHECK_KEYS);
        if (c->at_open) {
            CHECK(r == NULL);
        } else {
            CHECK(r != NULL);
            struct manifest_record rec;
            int rc, saw_error = 0;
            while (r && (rc = manifest_next(r, &rec)) != 0)
                if (rc < 0 && !saw_error++)
                    CHECK_CONTAINS(err_get(), c->expect);
            CHECK_INT(saw_error, 1);
            manifest_close(r);
            continue;
        }
        CHECK_CONTAINS(err_get(), name);
        CHECK_CONTAINS(err_get(), c->expect);
    }
}

static void count_problem(void *ctx, const char *problem)
{
    (void)problem;
    ++*(int *)ctx;
}

TEST(validate_counts_records_and_problems_and_goes_on)
{
    const char *path = test_tmp_path("v.tsv");
    const char *text = "key\tx\na\t1\nb\t2\t3\na\t4\nc\t\\q\nd\t5"; /* last LF missing: accepted */
    test_write_file(path, text, strlen(text));
    uint64_t records = 0;
    int reported = 0;
    CHECK_INT(manifest_validate(path, &records, count_problem, &reported), 3);
    CHECK_INT(records, 2);
    CHECK_INT(reported, 3);
    CHECK_INT(manifest_validate(test_tmp_path("missing.tsv"), &records, NULL, NULL), -1);
    CHECK_CONTAINS(err_get(), "missing.tsv");
}

TEST(writer_refuses_bad_columns_and_abort_keeps_old_file)
{
    const char *path = test_tmp_path("w.tsv");
    const char *nokey[] = {"a", "b"};
    CHECK(manifest_writer_open(path, 2, nokey) == NULL);
    CHECK_CONTAINS(err_get(), "'key'");
    test_write_file(path, "key\nold\n", 8);
    const char *cols[] = {"key"};
    struct manifest_writer *w = manifest_writer_open(path, 1, cols);
    const char *f[] = {"new"};
    CHECK_INT(manifest_write(w, f), 0);
    manifest_writer_abort(w);
    char *text = test_read_file(path, NULL);
    CHECK_STR(text, "key\nold\n");
    free(text);
}

TEST(many_records_stream_with_unique_keys)
{
    const char *path = test_tmp_path("big.tsv");
    const char *cols[] = {"key", "n"};
    struct manifest_writer *w = manifest_writer_open(path, 2, cols);
    char key[32], n[32];
    for (int i = 0; i < 50000; i++) {
        snprintf(key, sizeof key, "img_%06d", i);
        snprintf(n, sizeof n, "%d", i * 7);
        const char *f[] = {key, n};
        manifest_write(w, f);
    }
    CHECK_INT(manifest_writer_commit(w), 0);
    uint64_t records;
    CHECK_INT(manifest_validate(path, &records, NULL, NULL), 0);
    CHECK_INT(records, 50000);
}
