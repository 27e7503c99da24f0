/* dit-bucket: gives every record of a manifest a resolution bucket, a resize
 * size and a crop box; prints the bucket histogram and warns about buckets
 * smaller than a batch. The work is data/bucket_run.h's bucket_run(). */
#include "data/bucket_run.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/options.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    struct bucket_run_config c;
    bucket_run_config_init(&c);
    const char *buckets = NULL;
    /* INT_MIN and NaN mean "not given": some options exclude others. */
    int resolution = INT_MIN, center = INT_MIN, batch = 0;
    double min_aspect = NAN, max_aspect = NAN;
    int64_t seed = 0;
    struct bucket_config *b = &c.buckets;
    const struct opt opts[] = {
        {"output", 'o', OPT_STRING, &c.output, "FILE", "write the manifest to FILE (default: standard output)"},
        {"resolution", 0, OPT_INT, &resolution, "N", "bucket area at most N*N pixels (default 256)"},
        {"step", 0, OPT_INT, &b->step, "N", "bucket sides are multiples of N (default 16)"},
        {"min-aspect", 0, OPT_DOUBLE, &min_aspect, "X", "smallest bucket width/height (default 0.5)"},
        {"max-aspect", 0, OPT_DOUBLE, &max_aspect, "X", "largest bucket width/height (default 2.0)"},
        {"buckets", 0, OPT_STRING, &buckets, "WxH,...", "use exactly these buckets"},
        {"no-upscale", 0, OPT_FLAG, &b->no_upscale, NULL, "no bucket larger in area than its image"},
        {"center-crop-size", 0, OPT_INT, &center, "N",
         "every record NxN by the ADM center crop (class-conditional DiT)"},
        {"random-crop", 0, OPT_FLAG, &b->random_crop, NULL, "random crop offsets instead of centered"},
        {"seed", 0, OPT_INT64, &seed, "N", "seed of the random crops (default 0)"},
        {"batch-size", 0, OPT_INT, &batch, "B", "warn about buckets with fewer than B records"},
        {"merge-small", 0, OPT_FLAG, &c.merge_small, NULL,
         "move records of buckets smaller than a batch to the nearest full bucket"},
        {"stats", 0, OPT_STRING, &c.stats, "FILE", "write the bucket histogram as TSV to FILE"},
        {"rejects", 0, OPT_STRING, &c.rejects, "FILE", "write rejected records, with reject_reason, to FILE"},
        {"strict", 0, OPT_FLAG, &c.strict, NULL, "fail (exit 1) if any record is rejected"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-bucket", "[options] [FILE]",
                                  "Give each record of a manifest a resolution bucket, a resize size and a crop box."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (argc - first > 1)
        opt_usage_error("one input FILE at most, %d given", argc - first);
    /* Bucketing is integer arithmetic on the CPU; the device matters only
     * when asked for, as in dit-inspect. */
    if (opt_device_given())
        device_select(opt_device());
    if (center != INT_MIN) {
        const char *clash = buckets ? "--buckets" : resolution != INT_MIN ? "--resolution"
                            : b->no_upscale ? "--no-upscale"
                            : b->random_crop ? "--random-crop" : !isnan(min_aspect) ? "--min-aspect"
                            : !isnan(max_aspect) ? "--max-aspect" : NULL;
        if (clash)
            opt_usage_error("%s does not apply with --center-crop-size", clash);
    }
    if (center != INT_MIN && center < 1)
        opt_usage_error("--center-crop-size %d: must be positive", center);
    if (buckets && resolution != INT_MIN)
        opt_usage_error("--resolution does not apply with --buckets");
    if (batch < 0)
        opt_usage_error("--batch-size %d: must be positive", batch);
    if (seed < 0)
        opt_usage_error("--seed %" PRId64 ": must be 0 or more", seed);
    struct bucket_size *list = NULL;
    if (buckets && bucket_parse_list(buckets, b->step, &list, &b->n_list) != 0)
        opt_usage_error("--buckets: %s", err_get());
    b->list = list;
    if (resolution != INT_MIN)
        b->resolution = resolution;
    if (!isnan(min_aspect))
        b->min_aspect = min_aspect;
    if (!isnan(max_aspect))
        b->max_aspect = max_aspect;
    b->center_crop_size = center != INT_MIN ? center : 0;
    b->seed = (uint64_t)seed;
    c.batch_size = (uint64_t)batch;
    if (first < argc)
        c.input = argv[first];

    int rc = bucket_run(&c, NULL);
    free(list);
    if (rc == STAGE_BAD_CONFIG)
        opt_usage_error("%s", err_get());
    if (rc == STAGE_ERROR)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    return rc == STAGE_DONE ? DIT_EXIT_OK : DIT_EXIT_FAILURE;
}
