/* Decode + resize + crop throughput alone (no encoding, no writing), over the
 * records of a bucketed manifest: the work Pillow's side of
 * bench/precompute_bench.sh does. Usage: decode_resize MANIFEST THREADS [exact]
 * Prints images per second. */
#include "image/decode.h"
#include "image/resize.h"
#include "formats/manifest.h"
#include "formats/shardset.h"
#include "data/source.h"
#include "libcommon/error.h"

#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct rec {
    char *source;
    int rw, rh, left, top, bw, bh;
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s MANIFEST THREADS [exact]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]), exact = argc > 3;
    struct manifest_reader *r = manifest_open(argv[1], 0);
    if (!r) {
        fprintf(stderr, "%s\n", err_get());
        return 1;
    }
    int cs = manifest_column_index(r, "source"), crw = manifest_column_index(r, "resize_width");
    int crh = manifest_column_index(r, "resize_height"), cl = manifest_column_index(r, "crop_left");
    int ct = manifest_column_index(r, "crop_top"), cb = manifest_column_index(r, "bucket");
    size_t n = 0, cap = 1024;
    struct rec *recs = malloc(cap * sizeof *recs);
    struct manifest_record m;
    while (manifest_next(r, &m) == 1) {
        if (n == cap)
            recs = realloc(recs, (cap *= 2) * sizeof *recs);
        struct rec *x = &recs[n++];
        x->source = strdup(m.fields[cs]);
        x->rw = atoi(m.fields[crw]), x->rh = atoi(m.fields[crh]);
        x->left = atoi(m.fields[cl]), x->top = atoi(m.fields[ct]);
        shardset_parse_bucket(m.fields[cb], &x->bw, &x->bh);
    }
    manifest_close(r);
    image_resize_set_parallel_threshold(LONG_MAX);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int failures = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic) reduction(+ : failures)
    for (size_t i = 0; i < n; i++) {
        struct source_reader *src = source_reader_new(NULL);
        void *data;
        size_t size;
        struct image_rgb img;
        int scale;
        uint8_t *out = malloc((size_t)recs[i].bw * recs[i].bh * 3);
        if (source_read(src, recs[i].source, &data, &size) != 0 ||
            image_decode(data, size, recs[i].source, NULL, exact ? 0 : recs[i].rw, exact ? 0 : recs[i].rh, &img,
                         &scale) != 0) {
            failures++;
        } else {
            if (image_resize_crop(img.pixels, img.width, img.height, RESIZE_BICUBIC, recs[i].rw, recs[i].rh,
                                  recs[i].left, recs[i].top, recs[i].bw, recs[i].bh, out) != 0)
                failures++;
            image_rgb_free(&img);
            free(data);
        }
        free(out);
        source_reader_free(src);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("%.1f\n", n / s);
    return failures ? 1 : 0;
}
