/* data/loader: the resume guarantee, the order, buckets, flips, several
 * fields per record, and the errors that name the record */
#include "tests/harness.h"
#include "data/loader.h"
#include "formats/shardset.h"
#include "libcommon/error.h"
#include "libcommon/philox.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- fixtures ----------------------------------------------------------- */

/* Element k of record i's latent (or of its mirror): exact in fp32 and
 * different for every record, element and flip. */
static float latent_value(int i, int k, int flip)
{
    return flip ? -(float)(i * 1000 + k) - 0.5f : (float)(i * 1000 + k);
}

/* Element k of record i's text: integers below 256 are exact in bf16. */
static float text_value(int i, int k)
{
    return (float)(i * 8 + k % 8);
}

static uint16_t bf16_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16); /* x is exact in bf16 */
}

#define LAT_N 23
#define LAT_C 2
#define LAT_H 4

static int lat_wide(int i) { return i % 7 >= 4; }  /* 14 records in 4x4, 9 in 8x4 */
static int lat_has_flip(int i) { return i % 3 != 0; }

/* 23 records of latents only: bucket 4x4 ([2, 4, 4]) or 8x4 ([2, 4, 8]),
 * latent_flip for two records in three, label i % 5; shards of about two
 * records, so every bucket spans several. */
static void write_latent_set(const char *dir)
{
    const char *cols[] = {"key", "label"};
    struct shardset_meta meta = {"test 1", "pixel", "{}"};
    struct shardset_writer *w = shardset_writer_open(dir, 2, cols, &meta, 2 * LAT_C * LAT_H * 8 * 4);
    CHECK(w != NULL);
    if (!w)
        return;
    for (int i = 0; i < LAT_N; i++) {
        char key[16], label[16];
        snprintf(key, sizeof key, "r%02d", i);
        snprintf(label, sizeof label, "%d", i % 5);
        const char *in[] = {key, label};
        const int W = lat_wide(i) ? 8 : 4, n = LAT_C * LAT_H * W;
        float a[LAT_C * LAT_H * 8], b[LAT_C * LAT_H * 8];
        for (int k = 0; k < n; k++)
            a[k] = latent_value(i, k, 0), b[k] = latent_value(i, k, 1);
        struct shard_tensor t[2] = {
            {"latent", ST_F32, 3, {LAT_C, LAT_H, W}, a},
            {"latent_flip", ST_F32, 3, {LAT_C, LAT_H, W}, b},
        };
        struct hash128 ck = {(uint64_t)i, 7};
        CHECK_INT(shardset_writer_add(w, in, W == 8 ? "8x4" : "4x4", ck, lat_has_flip(i) ? 2 : 1, t), 0);
    }
    CHECK_INT(shardset_writer_commit(w), 0);
}

#define TXT_N 12
#define TXT_D 5

static int txt_wide(int i) { return i % 2; }
static int txt_len(int i) { return txt_wide(i) ? 6 : 3; } /* the text's length differs between buckets */
static int txt_has_flip(int i) { return i % 4 != 1; }
static int txt_mask(int i, int k) { return k <= i % 3; }

/* How write_text_set damages one record. */
enum damage { INTACT, NO_TEXT, LONG_TEXT, WIDE_LATENT, SHORT_FLIP };

/* 12 text-to-image records: latent (F32, [2, 4, W]), text (BF16, [L, 5])
 * and text_mask (BOOL, [L]), L = 3 in bucket 4x4 and 6 in 8x4, and a second
 * mirrored field edge ([2], i or -i); most have latent_flip and edge_flip.
 * Record 4 (bucket 4x4, which has the flips) takes the damage. */
static void write_text_set(const char *dir, enum damage damage)
{
    const char *cols[] = {"key", "caption"};
    struct shardset_meta meta = {"test 1", "pixel+t5", "{}"};
    struct shardset_writer *w = shardset_writer_open(dir, 2, cols, &meta, 1024);
    CHECK(w != NULL);
    if (!w)
        return;
    for (int i = 0; i < TXT_N; i++) {
        char key[16], caption[32];
        snprintf(key, sizeof key, "t%02d", i);
        snprintf(caption, sizeof caption, "caption %d", i);
        const char *in[] = {key, caption};
        const int W = txt_wide(i) ? 8 : 4, L = txt_len(i);
        float a[LAT_C * LAT_H * 9], b[LAT_C * LAT_H * 9];
        uint16_t text[7 * TXT_D];
        uint8_t mask[7];
        for (int k = 0; k < LAT_C * LAT_H * 9; k++)
            a[k] = latent_value(i, k, 0), b[k] = latent_value(i, k, 1);
        for (int k = 0; k < 7 * TXT_D; k++)
            text[k] = bf16_of(text_value(i, k));
        for (int k = 0; k < 7; k++)
            mask[k] = (uint8_t)txt_mask(i, k);
        const float edge[2] = {(float)i, (float)i}, edge_flip[2] = {-(float)i, -(float)i};
        const int hit = i == 4;
        struct shard_tensor t[6] = {
            {"latent", ST_F32, 3, {LAT_C, LAT_H, hit && damage == WIDE_LATENT ? W + 1 : W}, a},
            {"text", ST_BF16, 2, {hit && damage == LONG_TEXT ? L + 1 : L, TXT_D}, text},
            {"text_mask", ST_BOOL, 1, {L}, mask},
            {"edge", ST_F32, 1, {2}, edge},
            {"latent_flip", ST_F32, 3, {LAT_C, LAT_H, hit && damage == SHORT_FLIP ? W - 1 : W}, b},
            {"edge_flip", ST_F32, 1, {2}, edge_flip},
        };
        size_t nt = txt_has_flip(i) ? 6 : 4;
        if (hit && damage == NO_TEXT) {
            t[1] = t[5]; /* latent, edge_flip, text_mask, edge, latent_flip */
            nt--;
        }
        struct hash128 ck = {(uint64_t)i, 5};
        CHECK_INT(shardset_writer_add(w, in, W == 8 ? "8x4" : "4x4", ck, nt, t), 0);
    }
    CHECK_INT(shardset_writer_commit(w), 0);
}

/* ---- what came out ------------------------------------------------------ */

#define MAX_B 16

/* A copy of one batch, to compare batches after the loader moved on. */
struct snap {
    int n;
    int64_t epoch, index;
    uint64_t records[MAX_B];
    uint8_t flipped[MAX_B];
    int32_t labels[MAX_B];
    int ndim;
    int64_t shape[LOADER_MAX_DIMS];
    float *data;
    size_t nvals;
};

static void snap_take(struct snap *s, const struct loader_batch *b)
{
    const struct loader_field *f = &b->fields[0];
    memset(s, 0, sizeof *s); /* snap_same compares whole arrays */
    s->n = b->n, s->epoch = b->epoch, s->index = b->index;
    memcpy(s->records, b->records, (size_t)b->n * sizeof *b->records);
    memcpy(s->flipped, b->flipped, (size_t)b->n);
    if (b->labels)
        memcpy(s->labels, b->labels, (size_t)b->n * sizeof *b->labels);
    s->ndim = f->ndim;
    memcpy(s->shape, f->shape, sizeof s->shape);
    s->nvals = (size_t)b->n * (size_t)f->per_sample;
    s->data = malloc(s->nvals * sizeof(float));
    memcpy(s->data, f->data, s->nvals * sizeof(float));
}

static int snap_same(const struct snap *a, const struct snap *b)
{
    return a->n == b->n && a->epoch == b->epoch && a->index == b->index &&
           !memcmp(a->records, b->records, (size_t)a->n * sizeof *a->records) &&
           !memcmp(a->flipped, b->flipped, (size_t)a->n) && !memcmp(a->labels, b->labels, sizeof a->labels) &&
           a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof a->shape) && a->nvals == b->nvals &&
           !memcmp(a->data, b->data, a->nvals * sizeof(float));
}

/* n batches from the loader's position into out[]. */
static int take(struct loader *l, struct snap *out, int n)
{
    for (int i = 0; i < n; i++) {
        const struct loader_batch *b;
        if (loader_next(l, &b) != 0) {
            test_fail(__FILE__, __LINE__, "loader_next: %s", err_get());
            return -1;
        }
        snap_take(&out[i], b);
    }
    return 0;
}

static void snaps_free(struct snap *s, int n)
{
    for (int i = 0; i < n; i++)
        free(s[i].data);
}

static struct loader *open_loader(struct shardset *s, int batch, uint64_t seed, const char *label,
                                  const char *const *fields)
{
    struct loader_config c = {batch, seed, label, fields};
    struct loader *l = loader_open(s, &c);
    if (!l)
        test_fail(__FILE__, __LINE__, "loader_open: %s", err_get());
    return l;
}

static struct shardset *latent_set(void)
{
    const char *dir = test_tmp_path("latents");
    write_latent_set(dir);
    struct shardset *s = shardset_open(dir);
    if (!s)
        test_fail(__FILE__, __LINE__, "shardset_open: %s", err_get());
    return s;
}

/* The flip draw dit-train has always made: one u32 of the record's stream. */
static int expected_flip(uint64_t seed, int64_t epoch, uint64_t record)
{
    struct rng_stream rs = rng_stream(seed, RNG_FLIP, (uint64_t)epoch, record);
    uint32_t u;
    rng_u32(&rs, 0, 1, &u);
    return (int)(u & 1);
}

/* ---- tests -------------------------------------------------------------- */

/* 14 records in 4x4 and 9 in 8x4 at batch 4: 4 + 3 batches an epoch. */
TEST(resume_gives_the_batches_running_gives)
{
    struct shardset *s = latent_set();
    if (!s)
        return;
    struct loader *l = open_loader(s, 4, 7, "label", NULL);
    if (!l) {
        shardset_close(s);
        return;
    }
    CHECK_INT(loader_batches_per_epoch(l), 7);
    enum { TOTAL = 21 }; /* three epochs */
    struct snap run[TOTAL];
    if (take(l, run, TOTAL) != 0)
        goto out;
    for (int i = 0; i < TOTAL; i++) {
        CHECK_INT(run[i].epoch, i / 7);
        CHECK_INT(run[i].index, i % 7);
    }
    /* Every start, including the last batch of an epoch and the first of
     * the next, from a fresh loader and from one that has prefetched
     * elsewhere: the batches from there on are the running ones. */
    for (int start = 0; start < TOTAL - 3; start++) {
        struct loader *fresh = open_loader(s, 4, 7, "label", NULL);
        if (!fresh)
            break;
        struct snap got[4];
        CHECK_INT(loader_seek(fresh, start / 7, start % 7), 0);
        if (take(fresh, got, 4) == 0) {
            for (int i = 0; i < 4; i++)
                if (!snap_same(&got[i], &run[start + i]))
                    test_fail(__FILE__, __LINE__, "seek to batch %d: batch %d differs", start, start + i);
            snaps_free(got, 4);
        }
        loader_close(fresh);
        CHECK_INT(loader_seek(l, start / 7, start % 7), 0);
        if (take(l, got, 3) == 0) {
            for (int i = 0; i < 3; i++)
                if (!snap_same(&got[i], &run[start + i]))
                    test_fail(__FILE__, __LINE__, "re-seek to batch %d: batch %d differs", start, start + i);
            snaps_free(got, 3);
        }
    }
    CHECK_INT(loader_seek(l, 0, 7), -1);
    CHECK_CONTAINS(err_get(), "outside the 7 batches");
    CHECK_INT(loader_seek(l, -1, 0), -1);
    snaps_free(run, TOTAL);
out:
    loader_close(l);
    shardset_close(s);
}

/* Records as batches of (record << 1 | flipped), -1 ending a batch: the
 * first two epochs of the latent set at batch 4, seed 7, as the loader made
 * them before it took a list of fields (so the demo trains on the same). */
static const int golden_seed7[] = {
#include "tests/fixtures/loader/golden_seed7.inc"
};

TEST(single_field_batches_are_unchanged)
{
    struct shardset *s = latent_set();
    if (!s)
        return;
    struct loader *l = open_loader(s, 4, 7, "label", NULL);
    if (!l) {
        shardset_close(s);
        return;
    }
    struct snap run[14];
    if (take(l, run, 14) == 0) {
        size_t g = 0, ng = sizeof golden_seed7 / sizeof *golden_seed7;
        for (int b = 0; b < 14 && g < ng; b++) {
            int i = 0;
            for (; g < ng && golden_seed7[g] >= 0; g++, i++)
                if (i >= run[b].n || (int)(run[b].records[i] << 1 | run[b].flipped[i]) != golden_seed7[g])
                    test_fail(__FILE__, __LINE__, "batch %d, sample %d: not as before", b, i);
            CHECK_INT(i, run[b].n);
            g++;
        }
        CHECK_INT(g, ng);
        snaps_free(run, 14);
    }
    loader_close(l);
    shardset_close(s);
}

TEST(order_is_a_function_of_seed_and_epoch)
{
    struct shardset *s = latent_set();
    if (!s)
        return;
    struct loader *a = open_loader(s, 4, 7, "label", NULL), *b = open_loader(s, 4, 7, "label", NULL);
    struct loader *c = open_loader(s, 4, 8, "label", NULL);
    if (!a || !b || !c)
        goto out;
    struct snap ea[14], eb[7], ec[7];
    /* b starts at epoch 1 without having seen epoch 0. */
    CHECK_INT(loader_seek(b, 1, 0), 0);
    if (take(a, ea, 14) || take(b, eb, 7) || take(c, ec, 7))
        goto out;
    int same_epochs = 1, same_seeds = 1;
    for (int i = 0; i < 7; i++) {
        if (!snap_same(&ea[7 + i], &eb[i]))
            test_fail(__FILE__, __LINE__, "epoch 1 batch %d depends on what came before", i);
        same_epochs &= !memcmp(ea[i].records, ea[7 + i].records, sizeof ea[i].records);
        same_seeds &= !memcmp(ea[i].records, ec[i].records, sizeof ea[i].records);
    }
    CHECK(!same_epochs); /* each epoch has its own order */
    CHECK(!same_seeds);
    /* Back to epoch 0 after epoch 1: the same batches again. */
    CHECK_INT(loader_seek(a, 0, 0), 0);
    struct snap again[7];
    if (take(a, again, 7) == 0) {
        for (int i = 0; i < 7; i++)
            CHECK(snap_same(&again[i], &ea[i]));
        snaps_free(again, 7);
    }
    snaps_free(ea, 14);
    snaps_free(eb, 7);
    snaps_free(ec, 7);
out:
    loader_close(a);
    loader_close(b);
    loader_close(c);
    shardset_close(s);
}

TEST(buckets_never_mix_and_the_last_batch_is_short)
{
    struct shardset *s = latent_set();
    if (!s)
        return;
    struct loader *l = open_loader(s, 4, 3, "label", NULL);
    if (!l) {
        shardset_close(s);
        return;
    }
    int c, h, w;
    loader_shape(l, &c, &h, &w); /* the largest bucket */
    CHECK_INT(c, 2);
    CHECK_INT(h, 4);
    CHECK_INT(w, 4);
    char why[128] = "";
    CHECK_INT(loader_count_mismatched(l, 2, 4, 4, why, sizeof why), 1);
    CHECK_STR(why, "bucket 8x4 (9 records) has 2x4x8 latents");
    CHECK_INT(loader_max_label(l), 4);
    CHECK_INT(loader_records(l), LAT_N);
    for (int64_t e = 0; e < 2; e++) {
        int seen[LAT_N] = {0}, sizes[2][5] = {{0}};
        for (int64_t k = 0; k < 7; k++) {
            const struct loader_batch *b;
            if (loader_next(l, &b) != 0) {
                test_fail(__FILE__, __LINE__, "loader_next: %s", err_get());
                break;
            }
            CHECK_INT(b->epoch, e);
            CHECK_INT(b->nfields, 1);
            const struct loader_field *f = &b->fields[0];
            CHECK_STR(f->name, "latent");
            CHECK(loader_batch_field(b, "latent") == f);
            CHECK(loader_batch_field(b, "latent_flip") == NULL);
            const int wide = lat_wide((int)b->records[0]);
            CHECK_INT(f->ndim, 3);
            CHECK_INT(f->shape[0], 2);
            CHECK_INT(f->shape[1], 4);
            CHECK_INT(f->shape[2], wide ? 8 : 4);
            CHECK_INT(f->per_sample, wide ? 64 : 32);
            CHECK(b->n >= 1 && b->n <= 4);
            sizes[wide][b->n]++;
            for (int i = 0; i < b->n; i++) {
                const int r = (int)b->records[i];
                CHECK_INT(lat_wide(r), wide); /* never mixed */
                seen[r]++;
                CHECK_INT(b->labels[i], r % 5);
                for (int64_t k2 = 0; k2 < f->per_sample; k2++)
                    if (f->data[i * f->per_sample + k2] != latent_value(r, (int)k2, b->flipped[i])) {
                        test_fail(__FILE__, __LINE__, "record %d element %lld", r, (long long)k2);
                        break;
                    }
            }
        }
        for (int r = 0; r < LAT_N; r++)
            CHECK_INT(seen[r], 1); /* every record once an epoch */
        /* 14 = 4 + 4 + 4 + 2 and 9 = 4 + 4 + 1. */
        CHECK_INT(sizes[0][4], 3);
        CHECK_INT(sizes[0][2], 1);
        CHECK_INT(sizes[1][4], 2);
        CHECK_INT(sizes[1][1], 1);
    }
    loader_close(l);
    shardset_close(s);
}

TEST(flip_draws_follow_the_record_whatever_the_batch_size)
{
    struct shardset *s = latent_set();
    if (!s)
        return;
    const int sizes[] = {1, 3, 4, 16};
    int flips[3][LAT_N];
    for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
        struct loader *l = open_loader(s, sizes[z], 11, "label", NULL);
        if (!l)
            break;
        memset(flips, 0xff, sizeof flips);
        for (int64_t k = 0; k < 3 * loader_batches_per_epoch(l); k++) {
            const struct loader_batch *b;
            if (loader_next(l, &b) != 0) {
                test_fail(__FILE__, __LINE__, "loader_next: %s", err_get());
                break;
            }
            for (int i = 0; i < b->n; i++)
                flips[b->epoch][b->records[i]] = b->flipped[i];
        }
        loader_close(l);
        int flipped = 0, kept = 0;
        for (int e = 0; e < 3; e++)
            for (int r = 0; r < LAT_N; r++) {
                const int want = lat_has_flip(r) ? expected_flip(11, e, (uint64_t)r) : 0;
                if (flips[e][r] != want)
                    test_fail(__FILE__, __LINE__, "batch %d: epoch %d record %d flipped %d, drawn %d", sizes[z], e,
                              r, flips[e][r], want);
                flipped += lat_has_flip(r) && want;
                kept += lat_has_flip(r) && !want;
            }
        CHECK(flipped > 0 && kept > 0); /* the draw is not constant */
    }
    shardset_close(s);
}

static const char *const t2i_fields[] = {"latent", "text", "text_mask", "edge", NULL};

TEST(several_fields_come_back_aligned_per_record)
{
    const char *dir = test_tmp_path("t2i");
    write_text_set(dir, INTACT);
    struct shardset *s = shardset_open(dir);
    CHECK(s != NULL);
    if (!s)
        return;
    struct loader *l = open_loader(s, 4, 5, NULL, t2i_fields);
    struct loader *latent_only = open_loader(s, 4, 5, NULL, NULL);
    if (!l || !latent_only)
        goto out;
    for (int64_t k = 0; k < 2 * loader_batches_per_epoch(l); k++) {
        const struct loader_batch *b, *b1;
        if (loader_next(l, &b) != 0 || loader_next(latent_only, &b1) != 0) {
            test_fail(__FILE__, __LINE__, "loader_next: %s", err_get());
            break;
        }
        /* The fields asked for change neither the order nor the flips. */
        CHECK_INT(b->n, b1->n);
        CHECK(!memcmp(b->records, b1->records, (size_t)b->n * sizeof *b->records));
        CHECK(!memcmp(b->flipped, b1->flipped, (size_t)b->n));
        CHECK(!memcmp(b->fields[0].data, b1->fields[0].data, (size_t)(b->n * b->fields[0].per_sample) * 4));
        CHECK_INT(b->nfields, 4);
        const struct loader_field *lat = loader_batch_field(b, "latent"), *txt = loader_batch_field(b, "text"),
                                  *msk = loader_batch_field(b, "text_mask"), *edge = loader_batch_field(b, "edge");
        CHECK(lat == &b->fields[0] && txt == &b->fields[1] && msk == &b->fields[2] && edge == &b->fields[3]);
        CHECK(loader_batch_field(b, "text_flip") == NULL);
        if (!lat || !txt || !msk || !edge)
            break;
        const int wide = txt_wide((int)b->records[0]), L = txt_len((int)b->records[0]);
        CHECK_INT(lat->shape[2], wide ? 8 : 4);
        CHECK_INT(txt->ndim, 2);
        CHECK_INT(txt->shape[0], L);
        CHECK_INT(txt->shape[1], TXT_D);
        CHECK_INT(txt->per_sample, L * TXT_D);
        CHECK_INT(msk->ndim, 1);
        CHECK_INT(msk->shape[0], L);
        CHECK_INT(msk->per_sample, L);
        for (int i = 0; i < b->n; i++) {
            const int r = (int)b->records[i];
            CHECK_INT(txt_wide(r), wide);
            CHECK_INT(b->flipped[i], txt_has_flip(r) ? expected_flip(5, b->epoch, (uint64_t)r) : 0);
            int bad = 0;
            for (int64_t e = 0; e < lat->per_sample; e++)
                bad |= lat->data[i * lat->per_sample + e] != latent_value(r, (int)e, b->flipped[i]);
            /* A caption has no mirror: the text of a flipped record is its own. */
            for (int64_t e = 0; e < txt->per_sample; e++)
                bad |= txt->data[i * txt->per_sample + e] != text_value(r, (int)e);
            for (int64_t e = 0; e < msk->per_sample; e++)
                bad |= msk->data[i * msk->per_sample + e] != (float)txt_mask(r, (int)e);
            /* One draw decides every mirrored field of the record. */
            for (int e = 0; e < 2; e++)
                bad |= edge->data[i * 2 + e] != (b->flipped[i] ? -(float)r : (float)r);
            if (bad)
                test_fail(__FILE__, __LINE__, "record %d: its fields are not its own", r);
        }
    }
out:
    loader_close(l);
    loader_close(latent_only);
    shardset_close(s);
}

/* Opens the damaged text set with fields; the loader must refuse it. */
static void expect_refused(enum damage damage, const char *const *fields, const char *what)
{
    const char *dir = test_tmp_path("bad");
    write_text_set(dir, damage);
    struct shardset *s = shardset_open(dir);
    CHECK(s != NULL);
    if (!s)
        return;
    struct loader_config c = {4, 1, NULL, fields};
    struct loader *l = loader_open(s, &c);
    CHECK(l == NULL);
    loader_close(l);
    CHECK_CONTAINS(err_get(), dir);
    CHECK_CONTAINS(err_get(), "t04");
    CHECK_CONTAINS(err_get(), what);
    /* The fields the damage does not touch still load. */
    struct loader_config only = {4, 1, NULL, NULL};
    if (damage != WIDE_LATENT && damage != SHORT_FLIP) {
        l = loader_open(s, &only);
        CHECK(l != NULL);
        loader_close(l);
    }
    shardset_close(s);
}

TEST(a_missing_field_is_an_error_naming_the_record)
{
    expect_refused(NO_TEXT, t2i_fields, "no text field");
}

TEST(a_mismatched_shape_is_an_error_naming_the_record)
{
    expect_refused(LONG_TEXT, t2i_fields, "text is [4, 5], but bucket 4x4 holds [3, 5]");
    expect_refused(WIDE_LATENT, NULL, "latent is [2, 4, 5], but bucket 4x4 holds [2, 4, 4]");
    /* The mirror must fit where the latent goes. */
    expect_refused(SHORT_FLIP, NULL, "latent_flip is [2, 4, 3], but bucket 4x4 holds [2, 4, 4]");
}

TEST(bad_field_lists_are_errors)
{
    const char *dir = test_tmp_path("t2i");
    write_text_set(dir, INTACT);
    struct shardset *s = shardset_open(dir);
    CHECK(s != NULL);
    if (!s)
        return;
    const char *const twice[] = {"latent", "text", "latent", NULL};
    const char *const text_first[] = {"text", "latent", NULL};
    const char *const none[] = {NULL};
    struct loader_config c = {4, 1, NULL, twice};
    CHECK(loader_open(s, &c) == NULL);
    CHECK_CONTAINS(err_get(), "field latent asked of the loader twice");
    c.fields = text_first; /* the first field is what loader_shape describes */
    CHECK(loader_open(s, &c) == NULL);
    CHECK_CONTAINS(err_get(), "t00/text is not a C x H x W latent");
    c.fields = none;
    CHECK(loader_open(s, &c) == NULL);
    CHECK_CONTAINS(err_get(), "no fields");
    shardset_close(s);
}

/* One record whose latent is BF16 with every kind of value, and 1-D fields
 * in F16, BOOL and the integer dtypes; F64 is refused. */
TEST(bf16_and_the_other_dtypes_convert_exactly)
{
    static const uint16_t bf[8] = {0x0000, 0x8000, 0x3f80, 0xc049, 0x0001, 0x7f7f, 0xff80, 0x7fc1};
    static const uint16_t hf[6] = {0x3c00, 0xc000, 0x0001, 0x0400, 0x7bff, 0xfc00};
    static const float hf_want[6] = {1.0f, -2.0f, 0x1p-24f, 0x1p-14f, 65504.0f, -INFINITY};
    static const uint8_t bools[3] = {1, 0, 1};
    static const int8_t i8[3] = {-128, 0, 127};
    static const uint16_t u16[3] = {0, 1, 65535};
    static const int32_t i32[3] = {-7, 1 << 24, 42};
    static const int64_t i64[3] = {-3, 0, (int64_t)1 << 40};
    static const double f64[3] = {1, 2, 3};
    const char *dir = test_tmp_path("dtypes");
    const char *cols[] = {"key"};
    struct shardset_meta meta = {"test 1", "pixel", "{}"};
    struct shardset_writer *w = shardset_writer_open(dir, 1, cols, &meta, 1 << 20);
    CHECK(w != NULL);
    if (!w)
        return;
    const char *in[] = {"only"};
    struct shard_tensor t[8] = {
        {"latent", ST_BF16, 3, {2, 2, 2}, bf},   {"half", ST_F16, 1, {6}, hf},
        {"mask", ST_BOOL, 1, {3}, bools},        {"i8", ST_I8, 1, {3}, i8},
        {"u16", ST_U16, 1, {3}, u16},            {"i32", ST_I32, 1, {3}, i32},
        {"i64", ST_I64, 1, {3}, i64},            {"f64", ST_F64, 1, {3}, f64},
    };
    struct hash128 ck = {1, 1};
    CHECK_INT(shardset_writer_add(w, in, "2x2", ck, 8, t), 0);
    CHECK_INT(shardset_writer_commit(w), 0);
    struct shardset *s = shardset_open(dir);
    CHECK(s != NULL);
    if (!s)
        return;
    const char *const fields[] = {"latent", "half", "mask", "i8", "u16", "i32", "i64", NULL};
    struct loader *l = open_loader(s, 2, 0, NULL, fields);
    struct loader_config c = {2, 0, NULL, (const char *const[]){"latent", "f64", NULL}};
    CHECK(loader_open(s, &c) == NULL);
    CHECK_CONTAINS(err_get(), "record 'only': f64 is F64");
    const struct loader_batch *b;
    if (!l || loader_next(l, &b) != 0)
        goto out;
    CHECK_INT(b->n, 1);
    for (int k = 0; k < 8; k++) {
        uint32_t got;
        memcpy(&got, &b->fields[0].data[k], 4);
        if (got != (uint32_t)bf[k] << 16)
            test_fail(__FILE__, __LINE__, "bf16 %#06x became %#010x", bf[k], got);
    }
    const struct loader_field *f = loader_batch_field(b, "half");
    for (int k = 0; f && k < 6; k++)
        CHECK(f->data[k] == hf_want[k]);
    f = loader_batch_field(b, "mask");
    for (int k = 0; f && k < 3; k++)
        CHECK(f->data[k] == bools[k]);
    f = loader_batch_field(b, "i8");
    for (int k = 0; f && k < 3; k++)
        CHECK(f->data[k] == i8[k]);
    f = loader_batch_field(b, "u16");
    for (int k = 0; f && k < 3; k++)
        CHECK(f->data[k] == u16[k]);
    f = loader_batch_field(b, "i32");
    for (int k = 0; f && k < 3; k++)
        CHECK(f->data[k] == (float)i32[k]);
    f = loader_batch_field(b, "i64");
    for (int k = 0; f && k < 3; k++)
        CHECK(f->data[k] == (float)i64[k]);
out:
    loader_close(l);
    shardset_close(s);
}
