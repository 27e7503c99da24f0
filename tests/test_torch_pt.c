/* formats/torch_pt: torch.save files read against the safetensors torch's
 * own tensors were saved to, the hostile corpus, pickles built here for the
 * rules a corpus file would not show, and brute force on truncations and
 * corruptions. Fixtures: tests/reference/make_torch_pt.py. */
#include "tests/harness.h"
#include "formats/torch_pt.h"
#include "libcommon/error.h"
#include "libcommon/safetensors.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------- helpers */

/* A converted file: the st_file reads the buffer, which must outlive it. */
struct pt_read {
    void *bytes;
    size_t size;
    struct st_file *f;
    int skipped;
};

static void pt_read_free(struct pt_read *r)
{
    st_close(r->f);
    free(r->bytes);
}

/* Reads the fixture rel with torch_pt_read; fails the test (f NULL) when it cannot. */
static struct pt_read read_fixture(const char *rel)
{
    struct pt_read r = {.skipped = -1};
    const char *path = test_source_path(rel);
    if (torch_pt_read(path, &r.bytes, &r.size, &r.skipped) != 0) {
        test_fail(__FILE__, __LINE__, "%s: %s", rel, err_get());
        return r;
    }
    r.f = st_open_buffer(rel, r.bytes, r.size);
    if (!r.f)
        test_fail(__FILE__, __LINE__, "%s: the output does not open: %s", rel, err_get());
    return r;
}

/* Every tensor of the expected file, bit for bit, and no other. */
static void check_same_tensors(const struct st_file *got, const char *expected_rel)
{
    struct st_file *want = test_goldens_open(expected_rel);
    if (!got || !want) {
        st_close(want);
        return;
    }
    CHECK_INT(got->n_tensors, want->n_tensors);
    for (size_t i = 0; i < want->n_tensors; i++) {
        const struct st_tensor *w = &want->tensors[i], *g = st_find(got, w->name);
        if (!g) {
            test_fail(__FILE__, __LINE__, "%s: tensor '%s' missing", expected_rel, w->name);
            continue;
        }
        char gs[64], ws[64];
        st_shape_text(gs, sizeof gs, g->ndim, g->shape);
        st_shape_text(ws, sizeof ws, w->ndim, w->shape);
        if (g->dtype != w->dtype || strcmp(gs, ws) != 0 || g->nbytes != w->nbytes ||
            (w->nbytes && memcmp(g->data, w->data, w->nbytes) != 0))
            test_fail(__FILE__, __LINE__, "%s: tensor '%s' differs: %s %s against %s %s", expected_rel, w->name,
                      st_dtype_name(g->dtype), gs, st_dtype_name(w->dtype), ws);
    }
    st_close(want);
}

static float f32_at(const struct st_tensor *t, size_t i)
{
    float v = 0;
    if (t && t->dtype == ST_F32 && i < t->nelem)
        memcpy(&v, (const char *)t->data + 4 * i, 4);
    return v;
}

/* A zip member, for rewriting archives. */
struct zmember {
    char *name;
    unsigned char *data;
    size_t size;
};

/* The members of a zip file (via libarchive), in archive order. */
static size_t zip_read_members(const char *path, struct zmember *out, size_t cap)
{
    struct archive *a = archive_read_new();
    archive_read_support_format_zip(a);
    size_t n = 0;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        test_fail(__FILE__, __LINE__, "%s: %s", path, archive_error_string(a));
        archive_read_free(a);
        return 0;
    }
    struct archive_entry *e;
    while (n < cap && archive_read_next_header(a, &e) == ARCHIVE_OK) {
        size_t size = (size_t)archive_entry_size(e);
        out[n].name = strdup(archive_entry_pathname(e));
        out[n].data = malloc(size + 1);
        out[n].size = size;
        CHECK(archive_read_data(a, out[n].data, size) == (la_ssize_t)size);
        n++;
    }
    archive_read_free(a);
    return n;
}

static void zip_members_free(struct zmember *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].name);
        free(m[i].data);
    }
}

/* The members as a zip in memory (stored or deflated); malloc'd. */
static unsigned char *zip_write(const struct zmember *m, size_t n, int deflate, size_t *len)
{
    size_t cap = 1 << 16;
    for (size_t i = 0; i < n; i++)
        cap += m[i].size + 256;
    unsigned char *buf = malloc(cap);
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    if (deflate)
        archive_write_zip_set_compression_deflate(a);
    else
        archive_write_zip_set_compression_store(a);
    size_t used = 0;
    CHECK(archive_write_open_memory(a, buf, cap, &used) == ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_size(e, (la_int64_t)m[i].size);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        CHECK(archive_write_header(a, e) == ARCHIVE_OK);
        CHECK(archive_write_data(a, m[i].data, m[i].size) == (la_ssize_t)m[i].size);
        archive_entry_free(e);
    }
    CHECK(archive_write_close(a) == ARCHIVE_OK);
    archive_write_free(a);
    *len = used;
    return buf;
}

/* One conversion of bytes that may be anything: it must fail with a message
 * naming the input, or give a safetensors buffer that opens. 1 on success. */
static int convert_any(const char *name, const void *data, size_t len)
{
    void *bytes = NULL;
    size_t size = 0;
    err_clear();
    if (torch_pt_read_buffer(name, data, len, &bytes, &size, NULL) != 0) {
        if (strncmp(err_get(), name, strlen(name)) != 0)
            test_fail(__FILE__, __LINE__, "%s: message does not name it: %s", name, err_get());
        return 0;
    }
    struct st_file *f = st_open_buffer(name, bytes, size);
    if (!f)
        test_fail(__FILE__, __LINE__, "%s: the output does not open: %s", name, err_get());
    st_close(f);
    free(bytes);
    return 1;
}

/* ------------------------------------------------------- pickles by hand */

struct pk_buf {
    unsigned char b[4096];
    size_t n;
};

static void pb_raw(struct pk_buf *p, const void *s, size_t n)
{
    if (p->n + n <= sizeof p->b) {
        memcpy(p->b + p->n, s, n);
        p->n += n;
    }
}

/* Literal bytes, NULs included. (Hex escapes are split "\x00" "a" where
 * a hex digit follows: C reads \x greedily.) */
#define PB(p, lit) pb_raw(p, lit, sizeof(lit) - 1)

static void pb_op(struct pk_buf *p, const char *s)
{
    pb_raw(p, s, strlen(s));
}

static void pb_str(struct pk_buf *p, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    unsigned char len[4] = {n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >> 24};
    pb_op(p, "X");
    pb_raw(p, len, 4);
    pb_raw(p, s, n);
}

/* BININT1, or BININT past 255. */
static void pb_int(struct pk_buf *p, uint32_t v)
{
    unsigned char k[5] = {'K', v & 0xff};
    if (v < 256) {
        pb_raw(p, k, 2);
        return;
    }
    unsigned char j[5] = {'J', v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24};
    pb_raw(p, j, 5);
}

/* _rebuild_tensor_v2 of a FloatStorage "0" of numel elements, as torch
 * writes it, with a 1-D view (size, stride) at offset; hooks is the
 * pickle of the hooks argument (NULL: empty). */
static void pb_view(struct pk_buf *p, unsigned numel, unsigned offset, uint32_t size, uint32_t stride,
                    const char *hooks)
{
    pb_op(p, "ctorch._utils\n_rebuild_tensor_v2\n((");
    pb_str(p, "storage");
    pb_op(p, "ctorch\nFloatStorage\n");
    pb_str(p, "0");
    pb_str(p, "cpu");
    pb_int(p, numel);
    pb_op(p, "tQ");
    pb_int(p, offset);
    pb_int(p, size);
    pb_op(p, "\x85");
    pb_int(p, stride);
    pb_op(p, "\x85\x89");
    pb_op(p, hooks ? hooks : "ccollections\nOrderedDict\n)R");
    pb_op(p, "tR");
}

static void pb_tensor(struct pk_buf *p, unsigned numel, unsigned offset, unsigned size, const char *hooks)
{
    pb_view(p, numel, offset, size, 1, hooks);
}

static const char *const hooks_empty = "ccollections\nOrderedDict\n)R";

/* The pickle zipped as torch lays it out, with storage "0" of 4 floats
 * 1, 2, 3, 4, and converted. */
static int convert_pickle(const struct pk_buf *p, struct pt_read *out)
{
    float four[4] = {1, 2, 3, 4};
    struct zmember m[] = {
        {"archive/data.pkl", (unsigned char *)p->b, p->n},
        {"archive/byteorder", (unsigned char *)"little", 6},
        {"archive/data/0", (unsigned char *)four, sizeof four},
        {"archive/version", (unsigned char *)"3\n", 2},
    };
    size_t len;
    unsigned char *zip = zip_write(m, 4, 0, &len);
    memset(out, 0, sizeof *out);
    int rc = torch_pt_read_buffer("hand.pt", zip, len, &out->bytes, &out->size, &out->skipped);
    free(zip);
    if (rc == 0) {
        out->f = st_open_buffer("hand.pt", out->bytes, out->size);
        CHECK(out->f != NULL);
    }
    return rc;
}

/* --------------------------------------------------------------- tests */

TEST(torch_pt_lora_weights)
{
    struct pt_read r = read_fixture("fixtures/torch_pt/lora_weights.pt");
    check_same_tensors(r.f, "fixtures/torch_pt/expected_lora_weights.safetensors");
    CHECK_INT(r.skipped, 0);
    if (r.f) {
        CHECK(st_find(r.f, "blocks.0.self_attn.qkv.lora_A.weight") != NULL);
        CHECK(st_find(r.f, "blocks.1.self_attn.proj.lora_B.weight") != NULL);
    }
    pt_read_free(&r);
    /* Protocol 4: FRAME, MEMOIZE and STACK_GLOBAL instead of BINPUT and GLOBAL. */
    r = read_fixture("fixtures/torch_pt/lora_weights_p4.pt");
    check_same_tensors(r.f, "fixtures/torch_pt/expected_lora_weights.safetensors");
    pt_read_free(&r);
}

TEST(torch_pt_model_state_dict)
{
    struct pt_read r = read_fixture("fixtures/torch_pt/model.pt");
    check_same_tensors(r.f, "fixtures/torch_pt/expected_model.safetensors");
    CHECK_INT(r.skipped, 0);
    if (!r.f) {
        pt_read_free(&r);
        return;
    }
    const struct st_tensor *t = st_find(r.f, "transposed");
    /* arange(12).reshape(3, 4).t(): row i is i, i + 4, i + 8. */
    CHECK(t && t->ndim == 2 && t->shape[0] == 4 && t->shape[1] == 3);
    for (size_t i = 0; t && i < 12; i++)
        CHECK_NEAR(f32_at(t, i), (double)(i / 3 + 4 * (i % 3)), 0);
    const struct st_tensor *b = st_find(r.f, "shared_b"), *e = st_find(r.f, "expanded");
    for (size_t i = 0; b && i < 6; i++)
        CHECK_NEAR(f32_at(b, i), 10.0 + (double)i, 0);
    for (size_t i = 0; e && i < 12; i++)
        CHECK_NEAR(f32_at(e, i), (double)(1 + i / 4), 0);
    const struct {
        const char *name;
        enum st_dtype dt;
        int ndim;
    } kinds[] = {
        {"norm.weight", ST_BF16, 1}, {"proj.weight", ST_F16, 2}, {"step_count", ST_I64, 1},
        {"scale", ST_F32, 0}, {"keep", ST_BOOL, 1}, {"counts_u16", ST_U16, 1}, {"param", ST_F32, 1},
        {"blocks.0.self_attn.qkv.base_layer.weight", ST_F32, 2},
        {"blocks.0.self_attn.qkv.lora_A.default.weight", ST_F32, 2},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        const struct st_tensor *k = st_find(r.f, kinds[i].name);
        if (!k || k->dtype != kinds[i].dt || k->ndim != kinds[i].ndim)
            test_fail(__FILE__, __LINE__, "%s: %s", kinds[i].name, k ? st_dtype_name(k->dtype) : "missing");
    }
    pt_read_free(&r);
}

TEST(torch_pt_nested_dict)
{
    struct pt_read r = read_fixture("fixtures/torch_pt/nested.pt");
    check_same_tensors(r.f, "fixtures/torch_pt/expected_nested.safetensors");
    CHECK_INT(r.skipped, 2); /* "step" and "name" */
    if (r.f) {
        CHECK(st_find(r.f, "state_dict.a.weight") != NULL);
        CHECK(st_find(r.f, "state_dict.b.bias") != NULL);
    }
    pt_read_free(&r);
    void *bytes;
    size_t size;
    CHECK(torch_pt_read(test_source_path("fixtures/torch_pt/nested.pt"), &bytes, &size, NULL) == 0);
    free(bytes);
}

/* The buffer entry gives the path entry's bytes; a deflated copy the same. */
TEST(torch_pt_buffer_and_deflate)
{
    const char *path = test_source_path("fixtures/torch_pt/model.pt");
    size_t flen;
    char *file = test_read_file(path, &flen);
    void *a, *b;
    size_t asz, bsz;
    CHECK(torch_pt_read(path, &a, &asz, NULL) == 0);
    CHECK(torch_pt_read_buffer("model.pt", file, flen, &b, &bsz, NULL) == 0);
    CHECK(asz == bsz && memcmp(a, b, asz) == 0);
    free(b);
    struct zmember m[32];
    size_t n = zip_read_members(path, m, 32), zlen;
    unsigned char *zip = zip_write(m, n, 1, &zlen);
    CHECK(torch_pt_read_buffer("deflated.pt", zip, zlen, &b, &bsz, NULL) == 0);
    CHECK(asz == bsz && memcmp(a, b, asz) == 0);
    free(b);
    free(zip);
    zip_members_free(m, n);
    free(a);
    free(file);
}

/* Each hostile file fails, naming itself and why. */
TEST(torch_pt_hostile)
{
    static const struct {
        const char *file, *why;
    } cases[] = {
        {"os_system.pt", "global 'posix.system', which a state dict does not need; refused"},
        {"os_system_p4.pt", "global 'posix.system'"},
        {"builtins_eval.pt", "global 'builtins.eval' (written '__builtin__.eval')"},
        {"qtensor.pt", "global 'torch._utils._rebuild_qtensor'"},
        {"legacy.pt", "before torch 1.6"},
        {"truncated_zip.pt", "cannot read the zip archive"},
        {"truncated_pickle.pt", "data.pkl offset"},
        {"storage_size.pt", "member 'lora_weights/data/0' holds 60 bytes, the pickle says 16 x 4"},
        {"duplicate_member.pt", "member 'lora_weights/data/1' appears twice"},
        {"no_storage.pt", "no member 'lora_weights/data/1'"},
        {"big_endian.pt", "only little-endian"},
        {"view_size.pt", "tensor view [5] at offset 0 reaches outside its storage of 4 elements"},
        {"view_offset.pt", "tensor view [2] at offset 3 reaches outside"},
        {"view_stride.pt", "tensor view [2, 2] at offset 0 reaches outside"},
        {"unknown_opcode.pt", "opcode 0x69 'i' is not one a state dict needs"},
        {"memo_unset.pt", "memo slot 7 is not set"},
        {"nest_lists.pt", "nested deeper than 64 levels"},
        {"nest_marks.pt", "MARKs nested deeper than 1024"},
        {"nest_stack.pt", "stack deeper than"},
        {"nest_dicts.pt", "key 'a.a.a.a"},
        {"cycle.pt", "dicts or lists that hold themselves"},
    };
    size_t n = sizeof cases / sizeof *cases;
    for (size_t i = 0; i < n; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "fixtures/torch_pt/hostile/%s", cases[i].file);
        const char *path = test_source_path(rel);
        void *bytes = NULL;
        size_t size;
        err_clear();
        if (torch_pt_read(path, &bytes, &size, NULL) == 0) {
            test_fail(__FILE__, __LINE__, "%s was read", cases[i].file);
            free(bytes);
            continue;
        }
        CHECK_CONTAINS(err_get(), path);
        CHECK_CONTAINS(err_get(), cases[i].why);
    }
    /* Every file of the corpus is listed above. */
    DIR *d = opendir(test_source_path("fixtures/torch_pt/hostile"));
    size_t files = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        files += e->d_name[0] != '.';
    if (d)
        closedir(d);
    CHECK_INT(files, n);
}

/* The rules the corpus does not show, on pickles built here. */
TEST(torch_pt_hand_pickles)
{
    struct pk_buf p = {.n = 0};
    struct pt_read r;
    /* A view of a storage, an int key, a list of tensors, a float leaf. */
    pb_op(&p, "\x80\x02}(");
    pb_str(&p, "w");
    pb_tensor(&p, 4, 1, 3, NULL);
    pb_op(&p, "K\x07");
    pb_tensor(&p, 4, 0, 2, NULL);
    pb_str(&p, "l");
    PB(&p, "]q\x01(");
    pb_tensor(&p, 4, 3, 1, NULL);
    PB(&p, "K\x05" "e");
    pb_str(&p, "f");
    PB(&p, "G\x3f\xf0\x00\x00\x00\x00\x00\x00u.");
    CHECK(convert_pickle(&p, &r) == 0);
    if (r.f) {
        const struct st_tensor *w = st_find(r.f, "w"), *seven = st_find(r.f, "7"), *l0 = st_find(r.f, "l.0");
        CHECK(w && w->nelem == 3 && f32_at(w, 0) == 2 && f32_at(w, 2) == 4);
        CHECK(seven && seven->nelem == 2 && f32_at(seven, 1) == 2);
        CHECK(l0 && l0->nelem == 1 && f32_at(l0, 0) == 4);
        CHECK(r.f->n_tensors == 3);
        CHECK_INT(r.skipped, 2); /* l.1 (the int 5) and f */
    } else {
        test_fail(__FILE__, __LINE__, "%s", err_get());
    }
    pt_read_free(&r);

#define BODY(lit) lit, sizeof(lit) - 1
    static const struct {
        const char *body;
        size_t len;
        const char *why;
    } bad[] = {
        {BODY("\x80\x02]q\x00."), "holds a list, not a state dict"},
        {BODY("\x80\x02}X\x01\x00\x00\x00" "actorch\nFloatStorage\n)Rs."), "REDUCE of torch.FloatStorage"},
        {BODY("\x80\x02}X\x01\x00\x00\x00" "a(X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
              "X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x05tQs."),
         "holds 16 bytes, the pickle says 5 x 4"},
        {BODY("\x80\x02}X\x01\x00\x00\x00" "accollections\nOrderedDict\n(K\x01tRs."),
         "OrderedDict called with arguments"},
        {BODY("\x80\x02}X\x01\x00\x00\x00" "aK\x01K\x02" "bs."), "BUILD on a int"},
        {BODY("\x80\x02}X\x01\x00\x00\x00" "as."), "stack underflow"},
        {BODY("\x80\x02}X\x01\x00\x00\x00" "a"), "ends without STOP"},
        {BODY("\x80\x02}X\xff\x00\x00\x00" "a"), "truncated: a string of 255 bytes"},
        {BODY("\x80\x02}cos\nsystem"), "GLOBAL name without a newline"},
        {BODY("\x80\x06}."), "pickle protocol 6"},
        {BODY("\x80\x02}(K\x01K\x02K\x03u."), "SETITEMS of an odd number"},
        {BODY("\x80\x02}K\x01K\x02K\x03u."), "no MARK to end"},
        {BODY("\x80\x02K\x01" "a."), "stack underflow"},
        {BODY("\x80\x02}K\x02" "a."), "APPEND on a dict, not a list"},
        {BODY("\x80\x02}(K\x01K\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01u."), "does not fit 64 bits"},
    };
#undef BODY
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p.n = 0;
        pb_raw(&p, bad[i].body, bad[i].len);
        if (convert_pickle(&p, &r) == 0)
            test_fail(__FILE__, __LINE__, "case %zu was read", i);
        else
            CHECK_CONTAINS(err_get(), bad[i].why);
        pt_read_free(&r);
    }
    /* A tensor with a backward hook; a key set twice; an empty dict is fine. */
    p.n = 0;
    pb_op(&p, "\x80\x02}(");
    pb_str(&p, "w");
    pb_tensor(&p, 4, 0, 4, "}K\x01K\x02s");
    pb_op(&p, "u.");
    CHECK(convert_pickle(&p, &r) != 0);
    CHECK_CONTAINS(err_get(), "backward hooks");
    pt_read_free(&r);
    p.n = 0;
    pb_op(&p, "\x80\x02}(");
    pb_str(&p, "a.b");
    pb_tensor(&p, 4, 0, 4, hooks_empty);
    pb_str(&p, "a");
    pb_op(&p, "}");
    pb_str(&p, "b");
    pb_tensor(&p, 4, 0, 4, hooks_empty);
    pb_op(&p, "su.");
    CHECK(convert_pickle(&p, &r) != 0);
    CHECK_CONTAINS(err_get(), "hand.pt: tensor 'a.b': duplicate name");
    pt_read_free(&r);
    p.n = 0;
    pb_op(&p, "\x80\x02}.");
    CHECK(convert_pickle(&p, &r) == 0);
    CHECK(r.f && r.f->n_tensors == 0);
    pt_read_free(&r);
}

/* Small pickles that would cost without end: memory, through one storage
 * expanded (stride 0) to 800 MB; time, through lists shared 2^40 ways. */
TEST(torch_pt_amplification)
{
    struct pk_buf p = {.n = 0};
    struct pt_read r;
    pb_op(&p, "\x80\x02}(");
    pb_str(&p, "w");
    pb_view(&p, 4, 0, 200000000, 0, NULL);
    pb_op(&p, "u.");
    CHECK(convert_pickle(&p, &r) != 0);
    CHECK_CONTAINS(err_get(), "key 'w': the tensors come to more than");
    pt_read_free(&r);
    /* An expanded view of what a state dict holds is read: [3] as [2, 3] with stride (0, 1). */
    p.n = 0;
    PB(&p, "\x80\x02}(");
    pb_str(&p, "e");
    pb_op(&p, "ctorch._utils\n_rebuild_tensor_v2\n((");
    pb_str(&p, "storage");
    pb_op(&p, "ctorch\nFloatStorage\n");
    pb_str(&p, "0");
    pb_str(&p, "cpu");
    PB(&p, "K\x04tQK\x01K\x02K\x03\x86K\x00K\x01\x86\x89");
    pb_op(&p, hooks_empty);
    pb_op(&p, "tRu.");
    CHECK(convert_pickle(&p, &r) == 0);
    const struct st_tensor *e = r.f ? st_find(r.f, "e") : NULL;
    CHECK(e && e->nelem == 6 && f32_at(e, 0) == 2 && f32_at(e, 2) == 4 && f32_at(e, 3) == 2 && f32_at(e, 5) == 4);
    pt_read_free(&r);

    p.n = 0;
    PB(&p, "\x80\x02]q\x00");
    for (unsigned i = 1; i <= 40; i++) {
        unsigned char level[] = {'(', 'h', (unsigned char)(i - 1), 'h', (unsigned char)(i - 1), 'l', 'q',
                                 (unsigned char)i};
        pb_raw(&p, level, sizeof level);
    }
    pb_op(&p, "}");
    pb_str(&p, "a");
    PB(&p, "h\x28s.");
    CHECK(convert_pickle(&p, &r) != 0);
    CHECK_CONTAINS(err_get(), "or are shared over and over: walking them would not end");
    pt_read_free(&r);
}

/* Every 37th length of a file: clean failures (each cut loses the zip's
 * central directory) and the whole file read. */
TEST(torch_pt_truncations)
{
    size_t len;
    char *file = test_read_file(test_source_path("fixtures/torch_pt/lora_weights.pt"), &len);
    int ok = 0;
    for (size_t n = 0; n < len; n += (n < 64 ? 1 : 37)) {
        unsigned char *copy = malloc(n ? n : 1); /* exactly n bytes: ASan sees any read past */
        memcpy(copy, file, n);
        ok += convert_any("cut.pt", copy, n);
        free(copy);
    }
    CHECK_INT(ok, 0);
    CHECK_INT(convert_any("whole.pt", file, len), 1);
    free(file);
}

/* Single-byte corruptions of data.pkl, zipped again with a valid CRC so
 * that the unpickler sees them; then the same bytes corrupted in place in
 * the file, which the zip's CRC must catch. Nothing crashes or leaks; what
 * still reads gives a buffer that opens. */
TEST(torch_pt_pickle_corruptions)
{
    const char *path = test_source_path("fixtures/torch_pt/lora_weights.pt");
    struct zmember m[32];
    size_t n = zip_read_members(path, m, 32), pkl = n;
    for (size_t i = 0; i < n; i++)
        if (strstr(m[i].name, "/data.pkl"))
            pkl = i;
    CHECK(pkl < n);
    if (pkl == n) {
        zip_members_free(m, n);
        return;
    }
    static const unsigned char values[] = {0x00, 0xff, '(', ')', ']', '}', 'h', 'q', 'R', 'b', '.', 0x80};
    int ok = 0, total = 0;
    for (size_t at = 0; at < m[pkl].size; at++) {
        unsigned char orig = m[pkl].data[at];
        for (size_t v = 0; v <= sizeof values; v++) {
            unsigned char c = v < sizeof values ? values[v] : orig ^ 0x01;
            if (c == orig)
                continue;
            m[pkl].data[at] = c;
            size_t zlen;
            unsigned char *zip = zip_write(m, n, 0, &zlen);
            ok += convert_any("corrupt.pt", zip, zlen);
            total++;
            free(zip);
        }
        m[pkl].data[at] = orig;
    }
    CHECK(total > 1000);
    CHECK(ok < total); /* most corruptions are refused */

    /* In place: data.pkl is the first member, after a 30-byte local header, its name and extra field. */
    size_t flen;
    unsigned char *file = (unsigned char *)test_read_file(path, &flen);
    size_t start = 30 + (size_t)(file[26] | file[27] << 8) + (size_t)(file[28] | file[29] << 8);
    CHECK(start + m[pkl].size <= flen && memcmp(file + start, m[pkl].data, m[pkl].size) == 0);
    for (size_t at = start; at < start + m[pkl].size && at < flen; at += 3) {
        file[at] ^= 0x5a;
        CHECK_INT(convert_any("crc.pt", file, flen), 0);
        file[at] ^= 0x5a;
    }
    free(file);
    zip_members_free(m, n);
}
