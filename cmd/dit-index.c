/* dit-index: any image collection (CSV, folders, tar/zip shards, lists of
 * paths) becomes a clean manifest; bad input is named, counted and kept out.
 * The work is data/index_run.h's index_run(). */
#include "data/index_run.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/options.h"

int main(int argc, char **argv)
{
    struct index_config c;
    index_config_init(&c);
    int64_t max_pixels = (int64_t)c.max_pixels;
    const struct opt opts[] = {
        {"output", 'o', OPT_STRING, &c.output, "FILE", "write the manifest to FILE (default: standard output)"},
        {"image-column", 0, OPT_STRING, &c.read.image_column, "NAME", "CSV column of image paths (image_path)"},
        {"caption-column", 0, OPT_STRING, &c.read.caption_column, "NAME", "CSV column of captions (caption)"},
        {"base-image-dir", 0, OPT_STRING, &c.read.base_dir, "DIR", "CSV paths are relative to DIR (default: the CSV's folder)"},
        {"caption-ext", 0, OPT_STRING, &c.read.caption_ext, "EXT", "folders: sidecar caption extension (.txt)"},
        {"class-from-dir", 0, OPT_FLAG, &c.read.class_from_dir, NULL, "folders: label by top-level sub-folder"},
        {"classes-out", 0, OPT_STRING, &c.classes_out, "FILE", "write the class names, one per line by id"},
        {"allow-outside", 0, OPT_FLAG, &c.read.allow_outside, NULL, "accept absolute and '..' paths in CSVs and archives"},
        {"max-pixels", 0, OPT_INT64, &max_pixels, "N", "reject images of more than N pixels (178956970; 0: no limit)"},
        {"jobs", 'j', OPT_INT, &c.jobs, "N", "threads that read, hash and probe (default: all cores)"},
        {"strict", 0, OPT_FLAG, &c.strict, NULL, "any rejection makes the run fail"},
        {"rejects", 0, OPT_STRING, &c.rejects, "FILE", "write the rejected records and reasons as a manifest"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-index", "[options] INPUT...",
                                  "Index images from CSV files, folders, tar/zip archives or a list on stdin (-)."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first == argc)
        opt_usage_error("no INPUT given (a CSV file, a folder, an archive, or - for a list of paths)");
    if (c.jobs < 0 || max_pixels < 0)
        opt_usage_error("--jobs and --max-pixels must not be negative");
    if (opt_device_given())
        device_select(opt_device()); /* indexing reads headers on the CPU */
    c.max_pixels = (uint64_t)max_pixels;
    c.inputs = (const char *const *)argv + first;
    c.n_inputs = (size_t)(argc - first);

    int rc = index_run(&c, NULL);
    if (rc == STAGE_BAD_CONFIG)
        opt_usage_error("%s", err_get());
    if (rc == STAGE_ERROR)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    return rc == STAGE_DONE ? DIT_EXIT_OK : DIT_EXIT_FAILURE;
}
