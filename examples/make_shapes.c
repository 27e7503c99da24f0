/* make_shapes: the demo's data set, drawn by the project itself so the demo
 * needs no download. K classes of coloured shapes, N images each, with one
 * folder per class (the layout dit-index --class-from-dir reads) and a
 * caption beside each image (its size, colour, shape, place in thirds of
 * the frame and background). The class shows in shape and colour; position,
 * size, colour and background vary, so a model has something to learn
 * beyond a lookup. Every image is a pure function of (seed, class, index).
 * See examples/README.md. */
#include "image/png_write.h"
#include "libcommon/atomic_file.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "libcommon/philox.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The random stream's purpose: the examples' own, far from the values
 * libcommon/philox.h gives the toolkit's uses. */
enum { SHAPES_RNG_PURPOSE = 0x5348 };

enum shape { DISC, SQUARE, TRIANGLE, HBAR, CROSS, DIAMOND, RING, VBAR };

struct shape_class {
    const char *name;   /* folder and file stem */
    const char *colour; /* caption words */
    const char *noun;
    enum shape shape;
    uint8_t rgb[3];
    float ex, ey;       /* half extents in units of the size r, for placement */
    int bright;         /* too pale to show on a light background */
};

/* In class-id order for -k; dit-index numbers the folders in name order. */
static const struct shape_class classes[] = {
    {"red_disc", "red", "disc", DISC, {220, 40, 40}, 1.0f, 1.0f, 0},
    {"blue_square", "blue", "square", SQUARE, {40, 80, 230}, 0.85f, 0.85f, 0},
    {"green_triangle", "green", "triangle", TRIANGLE, {40, 180, 60}, 1.0f, 1.0f, 0},
    {"yellow_bar", "yellow", "horizontal bar", HBAR, {240, 215, 40}, 1.3f, 0.4f, 1},
    {"white_cross", "white", "cross", CROSS, {245, 245, 245}, 1.0f, 1.0f, 1},
    {"magenta_diamond", "magenta", "diamond", DIAMOND, {210, 50, 200}, 1.0f, 1.0f, 0},
    {"cyan_ring", "cyan", "ring", RING, {40, 215, 225}, 1.0f, 1.0f, 1},
    {"orange_column", "orange", "vertical bar", VBAR, {245, 140, 30}, 0.4f, 1.3f, 0},
};
enum { MAX_CLASSES = sizeof classes / sizeof classes[0], MIN_CLASSES = 4 };

/* Background tones: caption word and the range of its gray level. */
static const struct {
    const char *word;
    float lo, hi;
} tones[] = {{"dark", 15, 60}, {"gray", 100, 140}, {"light", 185, 230}};

/* Whether (u, v), relative to the shape's centre, lies inside a shape of
 * size r. */
static int inside(enum shape s, float u, float v, float r)
{
    float au = fabsf(u), av = fabsf(v);
    switch (s) {
    case DISC:
        return u * u + v * v <= r * r;
    case SQUARE:
        return au <= 0.85f * r && av <= 0.85f * r;
    case TRIANGLE: /* apex up at -r, base at +0.75 r, r wide each side */
        return v >= -r && v <= 0.75f * r && au <= (v + r) / 1.75f;
    case HBAR:
        return au <= 1.3f * r && av <= 0.4f * r;
    case CROSS:
        return (au <= r && av <= 0.3f * r) || (av <= r && au <= 0.3f * r);
    case DIAMOND:
        return au + av <= r;
    case RING:
        return u * u + v * v <= r * r && u * u + v * v >= 0.3f * r * r;
    case VBAR:
        return au <= 0.4f * r && av <= 1.3f * r;
    }
    return 0;
}

static uint8_t clamp_u8(float x)
{
    return x <= 0 ? 0 : x >= 255 ? 255 : (uint8_t)lrintf(x);
}

/* Draws image `index` of class c at size x size into rgb and its caption
 * into caption. 4 x 4 samples a pixel give the edges some anti-aliasing. */
static void draw(uint64_t seed, int c, int index, int size, uint8_t *rgb, char *caption, size_t cap)
{
    const struct shape_class *k = &classes[c];
    struct rng_stream s = rng_stream(seed, SHAPES_RNG_PURPOSE, (uint64_t)c, (uint64_t)index);
    float u[10];
    rng_uniform_f32(&s, 0, 10, u);

    float r = (float)size * (0.16f + 0.14f * u[0]);
    /* Centre anywhere that keeps the whole shape a pixel inside the frame. */
    float mx = k->ex * r + 1, my = k->ey * r + 1;
    float cx = mx + u[1] * ((float)size - 2 * mx), cy = my + u[2] * ((float)size - 2 * my);
    float fg[3];
    for (int ch = 0; ch < 3; ch++)
        fg[ch] = (float)k->rgb[ch] + (u[3 + ch] - 0.5f) * 50;
    int n_tones = k->bright ? 2 : 3;
    int tone = (int)(u[6] * (float)n_tones);
    if (tone >= n_tones)
        tone = n_tones - 1;
    float level = tones[tone].lo + u[7] * (tones[tone].hi - tones[tone].lo);
    /* A slight tint, so backgrounds are not all neutral gray. */
    float bg[3] = {level + (u[8] - 0.5f) * 24, level, level + (u[9] - 0.5f) * 24};

    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            int hits = 0;
            for (int sy = 0; sy < 4; sy++)
                for (int sx = 0; sx < 4; sx++)
                    hits += inside(k->shape, (float)x + (sx + 0.5f) / 4 - cx, (float)y + (sy + 0.5f) / 4 - cy, r);
            float a = (float)hits / 16;
            uint8_t *p = rgb + 3 * ((size_t)y * (size_t)size + (size_t)x);
            for (int ch = 0; ch < 3; ch++)
                p[ch] = clamp_u8(bg[ch] + a * (fg[ch] - bg[ch]));
        }

    const char *adj = u[0] < 1.0f / 3 ? "small " : u[0] > 2.0f / 3 ? "large " : "";
    const char *first = *adj ? adj : k->colour;
    const char *article = strchr("aeiou", first[0]) ? "an" : "a";
    /* Where it stands, in thirds of the frame: what a text-to-image model
     * must learn to place. */
    const float third = (float)size / 3;
    const char *row = cy < third ? "top" : cy > 2 * third ? "bottom" : NULL;
    const char *col = cx < third ? "left" : cx > 2 * third ? "right" : NULL;
    char where[32];
    if (row && col)
        snprintf(where, sizeof where, "at the %s %s", row, col);
    else if (row || col)
        snprintf(where, sizeof where, "%s the %s", row ? "at" : "on", row ? row : col);
    else
        snprintf(where, sizeof where, "in the middle");
    snprintf(caption, cap, "%s %s%s %s %s on a %s background\n", article, adj, k->colour, k->noun, where,
             tones[tone].word);
}

/* mkdir that accepts an existing directory. */
static int make_dir(const char *path)
{
    if (mkdir(path, 0777) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        err_set("%s: exists and is not a directory", path);
        return -1;
    }
    err_set("%s: cannot create directory: %s", path, strerror(errno));
    return -1;
}

int main(int argc, char **argv)
{
    int n_classes = MIN_CLASSES, per_class = 100, size = 32;
    int64_t seed = 0;
    const struct opt opts[] = {
        {"classes", 'k', OPT_INT, &n_classes, "K", "number of classes, 4 to 8 (default 4)"},
        {"per-class", 'n', OPT_INT, &per_class, "N", "images per class (default 100)"},
        {"seed", 's', OPT_INT64, &seed, "SEED", "random seed; the same seed gives the same files (default 0)"},
        {"size", 0, OPT_INT, &size, "PX", "image width and height, 16 to 1024 (default 32)"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"make_shapes", "[options] OUT_DIR",
                                  "Draw the demo data set: one folder of PNG images and captions per class."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (argc - first != 1)
        opt_usage_error("expected one OUT_DIR, got %d operands", argc - first);
    if (n_classes < MIN_CLASSES || n_classes > MAX_CLASSES)
        opt_usage_error("-k %d: the number of classes must be %d to %d", n_classes, MIN_CLASSES, MAX_CLASSES);
    if (per_class < 1 || per_class > 1000000)
        opt_usage_error("-n %d: images per class must be 1 to 1000000", per_class);
    if (size < 16 || size > 1024)
        opt_usage_error("--size %d: must be 16 to 1024", size);
    const char *out = argv[first];

    /* Zero-padded to the same width, so names sort in index order. */
    int digits = 4;
    for (int m = per_class - 1; m >= 10000; m /= 10)
        digits++;
    uint8_t *rgb = malloc((size_t)size * (size_t)size * 3);
    if (!rgb)
        die(DIT_EXIT_FAILURE, "out of memory");
    if (make_dir(out) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    char path[4096], caption[256];
    for (int c = 0; c < n_classes; c++) {
        snprintf(path, sizeof path, "%s/%s", out, classes[c].name);
        if (make_dir(path) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
        for (int i = 0; i < per_class; i++) {
            draw((uint64_t)seed, c, i, size, rgb, caption, sizeof caption);
            int n = snprintf(path, sizeof path, "%s/%s/%s_%0*d.png", out, classes[c].name, classes[c].name, digits, i);
            if (n < 0 || (size_t)n >= sizeof path)
                die(DIT_EXIT_FAILURE, "%s: path too long", out);
            if (png_write_rgb8(path, rgb, size, size, NULL, 0) != 0)
                die(DIT_EXIT_FAILURE, "%s", err_get());
            memcpy(path + n - 4, ".txt", 4);
            if (atomic_write(path, caption, strlen(caption)) != 0)
                die(DIT_EXIT_FAILURE, "%s", err_get());
        }
        log_debug("%s: %d images", classes[c].name, per_class);
    }
    free(rgb);
    log_info("%d classes x %d images of %dx%d (seed %lld) in %s", n_classes, per_class, size, size, (long long)seed,
             out);
    return DIT_EXIT_OK;
}
