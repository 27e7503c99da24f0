/* dit-inspect: a human view of any manifest, shard set, safetensors file
 * (sharded too) or checkpoint directory; --stats, --verify, --json. */
#include "formats/inspect.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_shape(const json_t *shape, char *buf, size_t size)
{
    size_t n = 0, i;
    json_t *d;
    n += snprintf(buf + n, size - n, "[");
    json_array_foreach(shape, i, d)
        n += snprintf(buf + n, n < size ? size - n : 0, "%s%lld", i ? ", " : "",
                      (long long)json_integer_value(d));
    snprintf(buf + n, n < size ? size - n : 0, "]");
}

static void print_size(json_int_t bytes, char *buf, size_t size)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static json_int_t num(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static void print_stat(const json_t *v)
{
    if (json_is_null(v))
        printf(" %12s", "-");
    else
        printf(" %12.6g", json_real_value(v));
}

static void print_tensors(const json_t *tensors, const char *indent)
{
    size_t width = 4, i;
    json_t *t;
    json_array_foreach(tensors, i, t) {
        size_t n = strlen(str(t, "name"));
        width = n > width ? n : width;
    }
    int stats = json_array_size(tensors) && json_object_get(json_array_get(tensors, 0), "stats");
    int files = json_array_size(tensors) && json_object_get(json_array_get(tensors, 0), "file");
    printf("%s%-*s  %-7s %-22s", indent, (int)width, "name", "dtype", "shape");
    if (stats)
        printf(" %12s %12s %12s %12s %6s %6s", "min", "max", "mean", "std", "nan", "inf");
    if (files)
        printf("  file");
    printf("\n");
    json_array_foreach(tensors, i, t) {
        char shape[256];
        print_shape(json_object_get(t, "shape"), shape, sizeof shape);
        printf("%s%-*s  %-7s %-22s", indent, (int)width, str(t, "name"), str(t, "dtype"), shape);
        json_t *s = json_object_get(t, "stats");
        if (s) {
            print_stat(json_object_get(s, "min"));
            print_stat(json_object_get(s, "max"));
            print_stat(json_object_get(s, "mean"));
            print_stat(json_object_get(s, "std"));
            printf(" %6lld %6lld", (long long)num(s, "nan"), (long long)num(s, "inf"));
        } else if (stats) {
            printf(" %12s %12s %12s %12s %6s %6s", "-", "-", "-", "-", "-", "-");
        }
        if (files)
            printf("  %s", str(t, "file"));
        printf("\n");
    }
}

static void print_metadata(const json_t *meta, const char *indent)
{
    if (!meta || json_object_size(meta) == 0)
        return;
    printf("%smetadata:\n", indent);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)meta, k, v) printf("%s  %s: %s\n", indent, k, json_string_value(v));
}

static void print_safetensors(const json_t *o, const char *indent)
{
    char size[32];
    print_size(json_object_get(o, "file_size") ? num(o, "file_size") : num(o, "tensor_bytes"), size,
               sizeof size);
    printf("%s%s: %s, %lld tensors, %lld parameters, %s", indent, str(o, "path"), str(o, "kind"),
           (long long)num(o, "n_tensors"), (long long)num(o, "n_params"), size);
    if (json_object_get(o, "files"))
        printf(" in %zu files", json_array_size(json_object_get(o, "files")));
    printf("\n");
    char sub[64];
    snprintf(sub, sizeof sub, "%s  ", indent);
    print_metadata(json_object_get(o, "metadata"), sub);
    print_tensors(json_object_get(o, "tensors"), sub);
}

static void print_manifest(const json_t *o)
{
    const json_t *cols = json_object_get(o, "columns");
    printf("%s: manifest, %lld records, %zu columns\n", str(o, "path"), (long long)num(o, "records"),
           json_array_size(cols));
    size_t i;
    json_t *c;
    printf("  %-24s %s\n", "column", "values");
    json_array_foreach(cols, i, c) printf("  %-24s %lld\n", str(c, "name"), (long long)num(c, "values"));
    const json_t *b = json_object_get(o, "buckets");
    if (b && json_object_size(b)) {
        printf("  buckets:\n");
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)b, k, v) printf("    %-12s %lld records\n", k, (long long)json_integer_value(v));
    }
}

static void print_shard_set(const json_t *o)
{
    printf("%s: shard set, %lld records in %lld shards\n", str(o, "path"), (long long)num(o, "records"),
           (long long)num(o, "shards"));
    print_metadata(json_object_get(o, "metadata"), "  ");
    printf("  buckets:\n");
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "buckets"), k, v)
        printf("    %-12s %lld records, %zu shards\n", k, (long long)num(v, "records"),
               json_array_size(json_object_get(v, "shards")));
    printf("  fields:\n");
    size_t i;
    json_array_foreach(json_object_get(o, "fields"), i, v) {
        char shape[256];
        print_shape(json_object_get(v, "shape"), shape, sizeof shape);
        printf("    %-12s %-14s %-6s %s\n", str(v, "bucket"), str(v, "field"), str(v, "dtype"), shape);
    }
}

static void print_model_dir(const json_t *o)
{
    printf("%s: model directory\n", str(o, "path"));
    const json_t *config = json_object_get(o, "config");
    if (config) {
        printf("  config.json:\n");
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)config, k, v) {
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf("    %s: %s\n", k, text ? text : "?");
            free(text);
        }
    }
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "json_files"), i, v) printf("  %s\n", json_string_value(v));
    json_array_foreach(json_object_get(o, "weights"), i, v) {
        if (json_object_get(v, "error"))
            printf("  %s: unreadable\n", str(v, "path"));
        else
            print_safetensors(v, "  ");
    }
}

static void print_tfevents(const json_t *o)
{
    const json_t *tags = json_object_get(o, "scalars");
    printf("%s: TensorBoard events, %zu scalar tags%s\n", str(o, "path"), json_object_size(tags),
           json_is_true(json_object_get(o, "truncated_last_record")) ? " (last record truncated)" : "");
    printf("  %-28s %8s %12s %12s %14s\n", "tag", "count", "first step", "last step", "last value");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)tags, k, v)
        printf("  %-28s %8lld %12lld %12lld %14.6g\n", k, (long long)num(v, "count"), (long long)num(v, "first_step"),
               (long long)num(v, "last_step"), json_real_value(json_object_get(v, "last_value")));
}

static void print_human(const json_t *o)
{
    const char *kind = str(o, "kind");
    if (strcmp(kind, "tfevents") == 0)
        print_tfevents(o);
    else if (strcmp(kind, "manifest") == 0)
        print_manifest(o);
    else if (strcmp(kind, "shard-set") == 0)
        print_shard_set(o);
    else if (strcmp(kind, "model-dir") == 0)
        print_model_dir(o);
    else
        print_safetensors(o, "");
}

int main(int argc, char **argv)
{
    struct inspect_options opt = {0};
    int as_json = 0;
    const struct opt opts[] = {
        {"stats", 0, OPT_FLAG, &opt.stats, NULL, "add min, max, mean, std and NaN/Inf counts per tensor"},
        {"verify", 0, OPT_FLAG, &opt.verify, NULL, "check structure and content hashes; exit 1 on any problem"},
        {"json", 0, OPT_FLAG, &as_json, NULL, "one JSON object per FILE on standard output"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-inspect", "[options] FILE...",
                                  "Summarise manifests, shard sets, safetensors files and checkpoints."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first == argc)
        opt_usage_error("no FILE given");
    /* Inspection is file I/O and CPU reductions, so the device matters only
     * when asked for: --device cuda then fails where no GPU is visible, and
     * --device auto says what it found, as in every tool. */
    if (opt_device_given())
        device_select(opt_device());

    int status = DIT_EXIT_OK;
    for (int i = first; i < argc; i++) {
        json_t *o = inspect_path(argv[i], &opt);
        if (!o)
            die(DIT_EXIT_FAILURE, "out of memory");
        const json_t *problems = json_object_get(o, "problems");
        const char *error = json_string_value(json_object_get(o, "error"));
        int failed = opt.verify ? json_array_size(problems) > 0 : error != NULL;
        if (failed)
            status = DIT_EXIT_FAILURE;
        if (opt.verify) {
            size_t k;
            json_t *p;
            json_array_foreach(problems, k, p) log_error("%s", json_string_value(p));
        } else if (error) {
            log_error("%s", error);
        }
        if (as_json) {
            char *text = json_to_string(o);
            printf("%s\n", text);
            free(text);
        } else if (opt.verify) {
            if (failed)
                printf("%s: FAILED (%zu problem%s)\n", argv[i], json_array_size(problems),
                       json_array_size(problems) == 1 ? "" : "s");
            else
                printf("%s: OK\n", argv[i]);
        } else if (!error) {
            print_human(o);
        }
        json_decref(o);
    }
    if (fflush(stdout) != 0)
        die(DIT_EXIT_FAILURE, "standard output: write failed");
    return status;
}
