/* dit-shard(5): writing, reading, and verification catching every kind of damage */
#include "tests/harness.h"
#include "formats/manifest.h"
#include "formats/shardset.h"
#include "libcommon/error.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Writes 10 records: even ones in bucket 4x4 (one field), odd ones in 8x4
 * (two fields), with shards of about 3 records. */
static void write_set(const char *dir)
{
    const char *cols[] = {"caption", "key", "bucket", "user_col"};
    struct shardset_meta meta = {"test 1", "pixel", "{\"flip\":false}"};
    struct shardset_writer *w = shardset_writer_open(dir, 4, cols, &meta, 3 * 3 * 4 * 4 * 4);
    CHECK(w != NULL);
    for (int i = 0; i < 10; i++) {
        char key[16], caption[32];
        snprintf(key, sizeof key, "img%02d", i);
        snprintf(caption, sizeof caption, "caption\twith tab %d", i);
        const char *in[] = {caption, key, "stale", "mine"};
        int wide = i % 2;
        float a[3 * 4 * 8], b[3 * 4 * 8];
        for (int k = 0; k < 3 * 4 * 8; k++) {
            a[k] = i + k * 0.01f;
            b[k] = -a[k];
        }
        struct shard_tensor t[2] = {
            {"latent", ST_F32, 3, {3, 4, wide ? 8 : 4}, a},
            {"latent_flip", ST_F32, 3, {3, 4, 8}, b},
        };
        struct hash128 ck = {(uint64_t)i, 42};
        CHECK_INT(shardset_writer_add(w, in, wide ? "8x4" : "4x4", ck, wide ? 2 : 1, t), 0);
    }
    CHECK_INT(shardset_writer_commit(w), 0);
}

static void count_problem(void *ctx, const char *problem)
{
    fprintf(stderr, "    (problem) %s\n", problem);
    ++*(int *)ctx;
}

TEST(write_then_read_back)
{
    const char *dir = test_tmp_path("set");
    write_set(dir);
    struct shardset *s = shardset_open(dir);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_INT(s->n_records, 10);
    CHECK(s->n_shards >= 4); /* two buckets, shards of about three records */
    /* The input's bucket column is replaced in place, other columns carried. */
    CHECK_STR(s->columns[2], "bucket");
    CHECK_STR(s->columns[3], "user_col");
    for (size_t i = 0; i < s->n_records; i++) {
        const struct shardset_record *r = &s->records[i];
        char key[16];
        snprintf(key, sizeof key, "img%02zu", i);
        CHECK_STR(r->key, key);
        CHECK_STR(r->values[3], "mine");
        CHECK_CONTAINS(r->values[0], "\twith tab");
        CHECK_STR(r->bucket, i % 2 ? "8x4" : "4x4");
        CHECK_INT(r->width, i % 2 ? 8 : 4);
        CHECK_INT(r->nfields, i % 2 ? 2 : 1);
        CHECK_INT(r->cache_key.hi, i);
        const struct st_tensor *t = shardset_tensor(s, i, "latent");
        CHECK(t != NULL);
        if (t) {
            float v;
            memcpy(&v, (const char *)t->data + 4 * 5, 4);
            CHECK_NEAR(v, i + 0.05, 1e-6);
            CHECK_INT(t->shape[2], i % 2 ? 8 : 4);
        }
        const struct st_file *f = shardset_shard(s, i);
        CHECK_STR(st_meta_get(f, "format"), "dit-shard");
        CHECK_STR(st_meta_get(f, "bucket"), r->bucket);
        CHECK_STR(st_meta_get(f, "encoder"), "pixel");
    }
    CHECK(shardset_tensor(s, 0, "latent_flip") == NULL);
    CHECK_CONTAINS(err_get(), "img00/latent_flip");
    int problems = 0;
    CHECK_INT(shardset_verify(s, count_problem, &problems), 0);
    shardset_close(s);
}

TEST(same_input_gives_same_shard_names)
{
    write_set(test_tmp_path("a"));
    write_set(test_tmp_path("b"));
    char *ma = test_read_file(test_tmp_path("a/manifest.tsv"), NULL);
    char *mb = test_read_file(test_tmp_path("b/manifest.tsv"), NULL);
    CHECK_STR(ma, mb);
    free(ma);
    free(mb);
}

/* Flips one byte of the data section at the end of a shard: the structure
 * stays valid, the content hash does not. */
static void corrupt_last_byte(const char *path)
{
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    off_t end = lseek(fd, 0, SEEK_END);
    unsigned char c;
    CHECK(pread(fd, &c, 1, end - 1) == 1);
    c ^= 0x40;
    CHECK(pwrite(fd, &c, 1, end - 1) == 1);
    close(fd);
}

TEST(verify_finds_corrupt_data_missing_shard_and_bucket_mismatch)
{
    const char *dir = test_tmp_path("set");
    write_set(dir);
    struct shardset *s = shardset_open(dir);
    char shard0[512], shard1[512];
    snprintf(shard0, sizeof shard0, "%s/%s", dir, s->records[0].shard);
    snprintf(shard1, sizeof shard1, "%s/%s", dir, s->records[1].shard);
    shardset_close(s);

    corrupt_last_byte(shard0);
    s = shardset_open(dir);
    int problems = 0;
    CHECK(shardset_verify(s, count_problem, &problems) >= 1);
    CHECK_INT(problems >= 1, 1);
    shardset_close(s);

    unlink(shard1);
    s = shardset_open(dir);
    problems = 0;
    CHECK(shardset_verify(s, count_problem, &problems) >= 2);
    CHECK(shardset_tensor(s, 1, "latent") == NULL);
    CHECK_CONTAINS(err_get(), s->records[1].shard);
    shardset_close(s);
}

TEST(open_rejects_non_shard_manifests)
{
    const char *dir = test_tmp_path("x");
    write_set(dir);
    const char *bad = "key\tshard\tbucket\tfields\tdata_xxh3\tcache_key\n"
                      "k\t../escape.safetensors\t4x4\tlatent\t00000000000000000000000000000000\t"
                      "00000000000000000000000000000000\n";
    test_write_file(test_tmp_path("x/manifest.tsv"), bad, strlen(bad));
    CHECK(shardset_open(dir) == NULL);
    CHECK_CONTAINS(err_get(), "manifest.tsv:2");
    CHECK_CONTAINS(err_get(), "not a file name inside the shard set");

    test_write_file(test_tmp_path("x/manifest.tsv"), "key\tcaption\nk\tc\n", 16);
    CHECK(shardset_open(dir) == NULL);
    CHECK_CONTAINS(err_get(), "no 'shard' column");

    const char *badbucket = "key\tshard\tbucket\tfields\tdata_xxh3\tcache_key\n"
                            "k\ts.safetensors\t4by4\tlatent\t00000000000000000000000000000000\t"
                            "00000000000000000000000000000000\n";
    test_write_file(test_tmp_path("x/manifest.tsv"), badbucket, strlen(badbucket));
    CHECK(shardset_open(dir) == NULL);
    CHECK_CONTAINS(err_get(), "bucket '4by4' is not WxH");
}

/* dit-inspect on a shard set: summary, --verify, and a corrupted shard. */
static int run_inspect(const char *args, const char *out_path)
{
    const char *bin = getenv("DIT_BIN");
    if (!bin)
        bin = "bin";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/dit-inspect' %s >'%s' 2>&1", bin, args, out_path);
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(dit_inspect_summarises_and_verifies_shard_sets)
{
    const char *dir = test_tmp_path("set");
    write_set(dir);
    const char *out = test_tmp_path("out.txt");
    char args[1024];
    snprintf(args, sizeof args, "'%s'", dir);
    CHECK_INT(run_inspect(args, out), 0);
    char *text = test_read_file(out, NULL);
    CHECK_CONTAINS(text, "shard set, 10 records in ");
    CHECK_CONTAINS(text, "4x4          5 records");
    CHECK_CONTAINS(text, "latent_flip");
    CHECK_CONTAINS(text, "encoder: pixel");
    free(text);

    snprintf(args, sizeof args, "--verify '%s'", dir);
    CHECK_INT(run_inspect(args, out), 0);
    text = test_read_file(out, NULL);
    CHECK_CONTAINS(text, ": OK");
    free(text);

    struct shardset *s = shardset_open(dir);
    char shard[512];
    snprintf(shard, sizeof shard, "%s/%s", dir, s->records[0].shard);
    shardset_close(s);
    corrupt_last_byte(shard);
    CHECK_INT(run_inspect(args, out), 1);
    text = test_read_file(out, NULL);
    CHECK_CONTAINS(text, "data_xxh3 is ");
    CHECK_CONTAINS(text, "FAILED");
    free(text);
}

#include "formats/shardset_cache.h"

TEST(cache_finds_records_of_shards_no_manifest_names)
{
    const char *dir = test_tmp_path("set");
    write_set(dir);
    /* As a killed run leaves it: shards renamed into place, no manifest, and
     * a temporary file of a shard being written. */
    unlink(test_tmp_path("set/manifest.tsv"));
    test_write_file(test_tmp_path("set/.shard-4x4-0123.safetensors.tmp.abcdef"), "partial", 7);
    test_write_file(test_tmp_path("set/junk.safetensors"), "not a shard", 11);
    struct shard_cache c;
    CHECK_INT(shard_cache_scan(&c, dir), 0);
    CHECK_INT(c.n, 10);
    CHECK_INT(c.n_skipped, 1);
    CHECK(access(test_tmp_path("set/.shard-4x4-0123.safetensors.tmp.abcdef"), F_OK) != 0);
    struct hash128 ck = {3, 42};
    const struct shard_cache_entry *e = shard_cache_find(&c, "img03", ck);
    CHECK(e != NULL);
    if (e) {
        CHECK_STR(e->bucket, "8x4");
        CHECK_STR(e->fields, "latent,latent_flip");
    }
    struct hash128 other = {3, 43};
    CHECK(shard_cache_find(&c, "img03", other) == NULL);
    CHECK(shard_cache_find(&c, "nope", ck) == NULL);

    /* A manifest of cache hits only: rows point at the existing shards. */
    const char *cols[] = {"key", "bucket"};
    struct shardset_meta meta = {"test 1", "pixel", "{}"};
    struct shardset_writer *w = shardset_writer_open(dir, 2, cols, &meta, 1 << 20);
    const char *in[] = {"img03", "8x4"};
    CHECK_INT(shardset_writer_add_existing(w, in, e->bucket, e->shard, e->fields, e->data_xxh3, e->cache_key), 0);
    CHECK_INT(shardset_writer_commit(w), 0);
    struct shardset *s = shardset_open(dir);
    CHECK(s != NULL);
    int problems = 0;
    CHECK_INT(shardset_verify(s, count_problem, &problems), 0);
    shardset_close(s);
    shard_cache_free(&c);

    struct shard_cache empty;
    CHECK_INT(shard_cache_scan(&empty, test_tmp_path("no-such-dir")), 0);
    CHECK_INT(empty.n, 0);
}
