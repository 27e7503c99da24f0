/* Resolution buckets: which training size each image gets, the size it is
 * resized to and the box cropped from it (dit-bucket(1)).
 *
 * Pure logic, no I/O: a bucket set is built once from the options, then each
 * record's size goes through bucket_assign(). Everything is a function of
 * the record's own width, height and key, so a record's bucket and crop never
 * depend on the order of the manifest or on the other records (merging small
 * buckets, which needs the counts, is a separate step: bucket_merge_plan). */
#ifndef DIT_BUCKET_H
#define DIT_BUCKET_H

#include <stddef.h>
#include <stdint.h>

/* Image sides and bucket sides above this are refused, so that every
 * product of two sizes, and every resize size, fits in an int64_t. */
#define BUCKET_MAX_SIDE (1 << 24)

struct bucket_size {
    int width, height;
};

enum bucket_method {
    BUCKET_FIT, /* resize to cover the bucket keeping the aspect, then crop */
    BUCKET_ADM, /* the ADM recipe: halve (box) while short side >= 2N, resize short side to N, crop */
};

struct bucket_config {
    int step;          /* both bucket sides are multiples of it; > 0 */
    int resolution;    /* buckets have area <= resolution^2 */
    double min_aspect; /* bounds on width / height of generated buckets */
    double max_aspect;
    int no_upscale;                 /* only buckets with area <= the image's */
    const struct bucket_size *list; /* explicit candidates (--buckets), or NULL */
    size_t n_list;
    int center_crop_size; /* > 0: every record gets NxN by the ADM recipe */
    int random_crop;      /* crop offsets from Philox (RNG_CROP) instead of centered */
    uint64_t seed;
};

struct bucket_set {
    struct bucket_config config; /* a copy; its list is not kept (see sizes) */
    struct bucket_size *sizes;   /* the candidates, sorted by aspect, then area */
    size_t n;
};

struct bucket_assignment {
    struct bucket_size bucket;           /* the training size = the crop size */
    int64_t resize_width, resize_height; /* >= the bucket's sides */
    int64_t crop_left, crop_top;         /* top-left of the crop in the resized image */
    enum bucket_method method;
};

/* Checks the configuration and builds the candidates. 0, or -1 with
 * err_set("reason") naming the option at fault; on -1, s needs no free. */
int bucket_set_init(struct bucket_set *s, const struct bucket_config *c);
void bucket_set_free(struct bucket_set *s);

/* The bucket for an image of width x height (positive, at most
 * BUCKET_MAX_SIDE), its resize size and crop box. key addresses the random
 * crop. 0, or -1 with err_set("reason") when the image gets no bucket (only
 * under no_upscale: "smaller than one step", or no bucket of the allowed
 * aspect fits inside it). */
int bucket_assign(const struct bucket_set *s, int width, int height, const char *key,
                  struct bucket_assignment *out);

/* The resize size and crop box that put an image of width x height into
 * bucket b by the fit method (center or random crop as s says). */
void bucket_place(const struct bucket_set *s, int width, int height, struct bucket_size b,
                  const char *key, struct bucket_assignment *out);

/* The ADM center-crop recipe for target size n: the pre-crop size after
 * Pillow's integer halvings and the final rounding, and the center crop. */
void bucket_adm(int width, int height, int n, struct bucket_assignment *out);

/* |log(bw/bh) - log(width/height)|: the distance that picks buckets. */
double bucket_aspect_distance(struct bucket_size b, double width, double height);

/* Index of the size in sizes[0..n) nearest in log aspect to width/height,
 * among those with eligible[i] nonzero (all when eligible is NULL); ties go
 * to the larger area, then to the smaller width. -1 when none is eligible. */
long bucket_nearest(const struct bucket_size *sizes, size_t n, const unsigned char *eligible,
                    double width, double height);

/* The sample index of the random-crop stream for a key: the upper 32 bits of
 * the key's xxh3-128 (its first 8 hex digits as xxh128sum prints them). */
uint64_t bucket_key_index(const char *key);

/* Parses "WxH" (decimal, positive, at most BUCKET_MAX_SIDE). 0, or -1 with
 * err_set("reason"). */
int bucket_parse_size(const char *text, struct bucket_size *out);
/* Parses "WxH,WxH,..." into a malloc'd array (*out, *n); each size must be
 * a multiple of step and appear once. 0, or -1 with err_set("reason"). */
int bucket_parse_list(const char *text, int step, struct bucket_size **out, size_t *n);

/* Records per bucket, in the order buckets were first added. */
struct bucket_count {
    struct bucket_size size;
    uint64_t count;
};

struct bucket_hist {
    struct bucket_count *entries;
    size_t n, cap;
};

/* Adds count records to bucket b. 0, or -1 with err_set() when out of memory. */
int bucket_hist_add(struct bucket_hist *h, struct bucket_size b, uint64_t count);
/* Index of bucket b, or -1. */
long bucket_hist_find(const struct bucket_hist *h, struct bucket_size b);
uint64_t bucket_hist_total(const struct bucket_hist *h);
/* Sorts by aspect (width / height), then by area; drops empty buckets. */
void bucket_hist_sort(struct bucket_hist *h);
void bucket_hist_free(struct bucket_hist *h);

/* Where the records of each bucket with fewer than batch records go:
 * target[i] is the index of the bucket nearest in aspect to bucket i among
 * those with at least batch records (ties as in bucket_nearest), or -1 for
 * buckets that are large enough or when no bucket is. Returns the number
 * of buckets with at least batch records; -1 when out of memory. */
long bucket_merge_plan(const struct bucket_hist *h, uint64_t batch, long *target);

#endif
