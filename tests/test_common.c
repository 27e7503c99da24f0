/* errors, options, atomic files, JSON, device selection */
#include "tests/harness.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "kernels/device.h"

#include <dirent.h>
#include <stdlib.h>

TEST(err_prefix_adds_context)
{
    err_set("offset %d out of bounds", 7);
    err_prefix("%s", "a.safetensors");
    CHECK_STR(err_get(), "a.safetensors: offset 7 out of bounds");
    err_clear();
    CHECK_STR(err_get(), "");
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}

TEST(atomic_file_commit_and_abort)
{
    const char *path = test_tmp_path("out.txt");
    CHECK_INT(atomic_write(path, "old", 3), 0);
    struct atomic_file af;
    CHECK_INT(atomic_file_open(&af, path), 0);
    fputs("new contents", af.fp);
    /* Before commit the old file is what readers see. */
    char *before = test_read_file(path, NULL);
    CHECK_STR(before, "old");
    free(before);
    atomic_file_abort(&af);
    char *after_abort = test_read_file(path, NULL);
    CHECK_STR(after_abort, "old");
    free(after_abort);
    CHECK_INT(count_entries(test_tmpdir()), 1);

    CHECK_INT(atomic_file_open(&af, path), 0);
    fputs("new", af.fp);
    CHECK_INT(atomic_file_commit(&af), 0);
    char *after = test_read_file(path, NULL);
    CHECK_STR(after, "new");
    free(after);
    CHECK_INT(count_entries(test_tmpdir()), 1);
}

TEST(atomic_file_reports_missing_directory)
{
    CHECK_INT(atomic_write(test_tmp_path("no/such/dir/x"), "x", 1), -1);
    CHECK_CONTAINS(err_get(), "no/such/dir/x");
}

TEST(json_round_trip_and_errors)
{
    const char *path = test_tmp_path("a.json");
    json_t *v = json_pack("{s:i, s:s}", "b", 2, "a", "x\ty");
    CHECK_INT(json_write_file(path, v), 0);
    json_decref(v);
    json_t *r = json_read_file(path);
    CHECK(r != NULL);
    CHECK_INT(json_integer_value(json_object_get(r, "b")), 2);
    CHECK_STR(json_string_value(json_object_get(r, "a")), "x\ty");
    json_decref(r);

    test_write_file(path, "{\"a\": 1, \"a\": 2}", 16);
    CHECK(json_read_file(path) == NULL);
    CHECK_CONTAINS(err_get(), "a.json:1:");
}

TEST(device_resolution)
{
    enum device_kind k;
    CHECK_INT(device_resolve("cpu", &k), 0);
    CHECK_INT(k, DEVICE_CPU);
    CHECK_INT(device_resolve("auto", &k), 0);
    CHECK_INT(k, device_cuda_count() > 0 ? DEVICE_CUDA : DEVICE_CPU);
    if (device_cuda_count() == 0) {
        CHECK_INT(device_resolve("cuda", &k), -1);
        CHECK_CONTAINS(err_get(), "--device cuda");
    }
    CHECK_INT(device_resolve("tpu", &k), -1);
}

#include "libcommon/options.h"

TEST(options_dash_and_underscore_spellings_are_one_option)
{
    int batch = 0, flip = 0, verbose_seen;
    double lr = 0;
    const char *out = NULL;
    int64_t steps = 0;
    const struct opt opts[] = {
        {"train-batch-size", 'b', OPT_INT, &batch, "N", "batch"},
        {"learning-rate", 0, OPT_DOUBLE, &lr, "LR", "lr"},
        {"random-flip", 0, OPT_FLAG, &flip, NULL, "flip"},
        {"output-dir", 'o', OPT_STRING, &out, "DIR", "out"},
        {"max-steps", 0, OPT_INT64, &steps, "N", "steps"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-test", "[options] FILE...", NULL};
    char *argv[] = {"dit-test", "a", "--train_batch_size", "4", "--learning-rate=1e-4",
                    "--random_flip", "-", "-oout", "--max_steps=12345678901", "--device", "cpu",
                    "--", "--not-an-option", NULL};
    int argc = 13;
    int first = opt_parse(&tool, opts, argc, argv);
    CHECK_INT(batch, 4);
    CHECK_NEAR(lr, 1e-4, 1e-12);
    CHECK_INT(flip, 1);
    CHECK_STR(out, "out");
    CHECK_INT(steps, 12345678901LL);
    CHECK_STR(opt_device(), "cpu");
    CHECK_INT(argc - first, 3);
    CHECK_STR(argv[first], "a");
    CHECK_STR(argv[first + 1], "-");
    CHECK_STR(argv[first + 2], "--not-an-option");
    (void)verbose_seen;
}
