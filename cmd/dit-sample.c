/* dit-sample: class-conditional images from a checkpoint, a model directory
 * or a safetensors file, with DDPM, DDIM or Euler and classifier-free
 * guidance; PNGs with their parameters, a grid, the latents. */
#include "formats/checkpoint.h"
#include "image/png_write.h"
#include "kernels/device.h"
#include "kernels/kernels.h"
#include "nn/precision.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "libcommon/progress.h"
#include "libcommon/safetensors.h"
#include "diffusion/diffusion.h"
#include "models/dit/dit.h"
#include "models/dit/weights.h"
#include "models/encoder.h"
#include "diffusion/generate.h"
#include "models/denoiser.h"
#include "models/dit/denoiser.h"
#include "diffusion/sampler.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct options {
    const char *model_path, *model_name, *sampler, *reference, *labels, *classes_file, *class_names, *precision;
    const char *output, *grid, *latents_out, *decoder, *objective;
    int steps, batch, per_class, width, height, latent_size, num_classes, no_ema, threads, cfg_channels;
    double cfg, eta;
    int64_t seed;
};

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Reads the model: a checkpoint (its ema/ unless --no-ema, and what
 * checkpoint.json says), a model directory, or a safetensors file with
 * --model and --latent-size. */
/* The checkpoint's objective, when --objective does not say. */
static char checkpoint_objective[16];

static void load_model(struct options *o, struct denoiser_config *mc, float **params, char *encoder_id,
                       size_t encoder_size)
{
    char path[4096];
    if (access(o->model_path, F_OK) != 0)
        die(DIT_EXIT_FAILURE, "%s: %s", o->model_path, strerror(errno));
    snprintf(path, sizeof path, "%s/checkpoint.json", o->model_path);
    if (is_dir(o->model_path) && access(path, F_OK) == 0) {
        json_t *j = json_read_file(path);
        if (!j)
            die(DIT_EXIT_FAILURE, "%s", err_get());
        const char *enc = json_string_value(json_object_get(j, "encoder"));
        const char *obj = json_string_value(json_object_get(j, "objective"));
        if (enc && *enc)
            snprintf(encoder_id, encoder_size, "%s", enc);
        if (obj && !o->objective) {
            snprintf(checkpoint_objective, sizeof checkpoint_objective, "%s", obj);
            o->objective = checkpoint_objective;
        }
        json_decref(j);
        snprintf(path, sizeof path, "%s/ema", o->model_path);
        if (o->no_ema || !is_dir(path))
            snprintf(path, sizeof path, "%s/transformer", o->model_path);
        if (denoiser_config_load_dir(mc, path, params) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
        log_info("model: %s (%s weights)", path, strstr(path, "/ema") ? "EMA" : "raw");
        return;
    }
    if (is_dir(o->model_path)) {
        if (denoiser_config_load_dir(mc, o->model_path, params) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
        return;
    }
    /* A bare state dict of the original DiT or diffusers names. */
    struct dit_config dcfg, *cfg = &dcfg;
    if (!o->model_name || !o->latent_size)
        opt_usage_error("a safetensors file needs --model and --latent-size (e.g. DiT-XL/2 and 32)");
    if (dit_config_by_name(cfg, o->model_name, o->latent_size) != 0)
        opt_usage_error("%s", err_get());
    if (o->num_classes)
        cfg->num_classes = o->num_classes;
    struct st_set *set = st_set_open(o->model_path);
    if (!set)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    int layout = dit_weights_layout(set);
    if (layout < 0)
        die(DIT_EXIT_FAILURE, "%s: neither the diffusers nor the original DiT tensor names", o->model_path);
    if (layout == DIT_LAYOUT_DIFFUSERS) { /* diffusers' numerics */
        cfg->freq_shift = 1.0f;
        cfg->mlp_norm_eps = 1e-5f;
    }
    *params = malloc((size_t)dit_param_count(cfg) * sizeof(float));
    if (!*params || dit_weights_load(cfg, *params, set, (enum dit_layout)layout) != 0)
        die(DIT_EXIT_FAILURE, "%s", *params ? err_get() : "out of memory");
    st_set_close(set);
    mc->kind = &dit_denoiser_kind;
    if (!(mc->impl = malloc(sizeof dcfg)))
        die(DIT_EXIT_FAILURE, "out of memory");
    memcpy(mc->impl, &dcfg, sizeof dcfg);
}

static void progress_step(void *bar)
{
    progress_add(bar, 1);
}

/* Class names by line (dit-index --classes-out), for --classes-file names. */
static int class_id(const char *names_file, const char *token, int num_classes)
{
    char *end;
    long v = strtol(token, &end, 10);
    if (end != token && !*end) {
        if (v < 0 || v > num_classes)
            die(DIT_EXIT_FAILURE, "class %ld is outside 0..%d (%d is the null class)", v, num_classes, num_classes);
        return (int)v;
    }
    FILE *f = names_file ? fopen(names_file, "r") : NULL;
    if (!f)
        die(DIT_EXIT_FAILURE, "class '%s' is not a number, and no --class-names file names it", token);
    char *line = NULL;
    size_t cap = 0;
    int id = 0, found = -1;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (strcmp(line, token) == 0) {
            found = id;
            break;
        }
        id++;
    }
    free(line);
    fclose(f);
    if (found < 0)
        die(DIT_EXIT_FAILURE, "%s does not name a class '%s'", names_file, token);
    return found;
}

/* The labels to sample, each repeated per_class times. */
static int *parse_labels(const struct options *o, int num_classes, int *n)
{
    char *text = NULL;
    if (o->classes_file) {
        FILE *f = fopen(o->classes_file, "r");
        if (!f)
            die(DIT_EXIT_FAILURE, "%s: %s", o->classes_file, strerror(errno));
        size_t cap = 0;
        ssize_t len = getdelim(&text, &cap, '\0', f);
        fclose(f);
        if (len < 0)
            die(DIT_EXIT_FAILURE, "%s: empty", o->classes_file);
    } else {
        text = strdup(o->labels ? o->labels : "0");
    }
    int cap = 16, count = 0;
    int *ids = malloc((size_t)cap * sizeof *ids);
    for (char *tok = strtok(text, ",\n\r\t "); tok; tok = strtok(NULL, ",\n\r\t ")) {
        int id = class_id(o->class_names, tok, num_classes);
        for (int r = 0; r < o->per_class; r++) {
            if (count == cap)
                ids = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            ids[count++] = id;
        }
    }
    free(text);
    if (count == 0)
        die(DIT_EXIT_FAILURE, "no class labels to sample");
    *n = count;
    return ids;
}

int main(int argc, char **argv)
{
    struct options o = {.reference = "dit", .output = "samples", .batch = 16, .per_class = 1, .cfg = 4.0,
                        .cfg_channels = -1};
    const struct opt opts[] = {
        {"model-path", 'm', OPT_STRING, &o.model_path, "PATH", "a checkpoint, a model directory or a safetensors file"},
        {"ckpt", 0, OPT_STRING, &o.model_path, "PATH", "the same as --model-path"},
        {"model", 0, OPT_STRING, &o.model_name, "NAME", "for a bare safetensors file: DiT-XL/2 ..."},
        {"latent-size", 0, OPT_INT, &o.latent_size, "N", "for a bare safetensors file: latent side (32 for 256 px)"},
        {"num-classes", 0, OPT_INT, &o.num_classes, "N", "for a bare safetensors file (1000)"},
        {"no-ema", 0, OPT_FLAG, &o.no_ema, NULL, "from a checkpoint, use the raw weights, not the EMA"},
        {"objective", 0, OPT_STRING, &o.objective, "NAME", "ddpm or flow (default: the checkpoint's, else ddpm)"},
        {"sampler", 0, OPT_STRING, &o.sampler, "NAME", "ddpm, ddim or euler (default: ddpm, euler for flow)"},
        {"reference", 0, OPT_STRING, &o.reference, "WHOSE", "dit (sample.py, default) or diffusers (DiTPipeline)"},
        {"num-sampling-steps", 0, OPT_INT, &o.steps, "N", "250 for ddpm, 50 for ddim, 28 for euler"},
        {"eta", 0, OPT_DOUBLE, &o.eta, "ETA", "DDIM's eta (0)"},
        {"cfg-scale", 0, OPT_DOUBLE, &o.cfg, "S", "classifier-free guidance scale (4.0; 1: none)"},
        {"cfg-channels", 0, OPT_INT, &o.cfg_channels, "N", "guide the first N latent channels (dit: 3, diffusers: all)"},
        {"class-labels", 0, OPT_STRING, &o.labels, "LIST", "comma-separated class ids (or names with --class-names)"},
        {"classes-file", 0, OPT_STRING, &o.classes_file, "FILE", "class ids or names, one per line"},
        {"class-names", 0, OPT_STRING, &o.class_names, "FILE", "dit-index --classes-out's list, to name classes"},
        {"num-per-class", 0, OPT_INT, &o.per_class, "N", "images per label (1)"},
        {"seed", 0, OPT_INT64, &o.seed, "N", "image i of seed s is the same whatever the batch (0)"},
        {"batch-size", 0, OPT_INT, &o.batch, "N", "images per model call (16)"},
        {"width", 0, OPT_INT, &o.width, "PX", "must be the model's size"},
        {"height", 0, OPT_INT, &o.height, "PX", "must be the model's size"},
        {"decoder", 0, OPT_STRING, &o.decoder, "SPEC", "pixel or pixel:F (default: the checkpoint's encoder)"},
        {"output-dir", 'o', OPT_STRING, &o.output, "DIR", "where the PNGs go (samples)"},
        {"grid", 0, OPT_STRING, &o.grid, "FILE", "also write all images as one grid PNG"},
        {"latents-out", 0, OPT_STRING, &o.latents_out, "FILE", "also write the final latents (safetensors)"},
        {"threads", 0, OPT_INT, &o.threads, "N", "compute threads (default: all cores)"},
        {"precision", 0, OPT_STRING, &o.precision, "P", "fp32, bf16 or fp16 on a GPU (bf16); the CPU computes in fp32"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-sample", "[options] --model-path PATH",
                                  "Sample class-conditional images from a DiT."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first < argc)
        opt_usage_error("unexpected operand '%s'", argv[first]);
    if (!o.model_path)
        opt_usage_error("--model-path is required");
    if (o.batch <= 0 || o.per_class <= 0 || o.steps < 0 || o.cfg <= 0 || o.threads < 0)
        opt_usage_error("batch size, images per class, steps and the guidance scale must be positive");
    enum device_kind dev = device_select(opt_device());
    /* The compute dtype: bf16 on a GPU unless asked otherwise; f32 on the CPU. */
    enum kdtype cdt;
    int cpu_note = kdtype_for_compute(o.precision, dev, &cdt);
    if (cpu_note < 0)
        opt_usage_error("--precision: %s", err_get());
    if (cpu_note)
        log_info("--precision %s: the CPU backend computes in fp32", o.precision);

    struct denoiser_config mc;
    float *params = NULL;
    char encoder_id[128] = "pixel";
    load_model(&o, &mc, &params, encoder_id, sizeof encoder_id);
    struct denoiser_info info;
    denoiser_config_info(&mc, &info);
    if (info.cond != COND_LABELS)
        die(DIT_EXIT_FAILURE, "%s: a text-conditioned model samples from prompts, which this build cannot encode yet",
            o.model_path);
    struct encoder enc;
    if (encoder_open(&enc, o.decoder ? o.decoder : encoder_id) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    if (!enc.decode)
        die(DIT_EXIT_FAILURE, "encoder '%s' has no decoder", enc.identity);
    const int C = info.in_channels, L = info.height;
    const int W = L * enc.factor;
    if (enc.channels != C)
        die(DIT_EXIT_FAILURE, "the decoder %s gives %d channels, the model %d", enc.identity, enc.channels, C);
    if ((o.width && o.width != W) || (o.height && o.height != W))
        die(DIT_EXIT_FAILURE, "this model samples %dx%d images (%dx%d latents of a factor-%d encoder)", W, W, L, L,
            enc.factor);

    const char *objective = o.objective ? o.objective : "ddpm";
    if (strcmp(objective, "ddpm") && strcmp(objective, "flow"))
        opt_usage_error("--objective: '%s' is not ddpm or flow", objective);
    const char *sname = o.sampler ? o.sampler : strcmp(objective, "flow") == 0 ? "euler" : "ddpm";
    enum sampler_kind kind;
    if (strcmp(sname, "ddpm") == 0)
        kind = SAMPLER_DDPM;
    else if (strcmp(sname, "ddim") == 0)
        kind = SAMPLER_DDIM;
    else if (strcmp(sname, "euler") == 0)
        kind = SAMPLER_EULER;
    else
        opt_usage_error("--sampler: '%s' is not ddpm, ddim or euler", sname);
    if ((kind == SAMPLER_EULER) != (strcmp(objective, "flow") == 0))
        opt_usage_error("--sampler %s does not fit a %s model", sname, objective);
    struct sampler_options so = {0};
    if (strcmp(o.reference, "diffusers") == 0)
        so.reference = SAMPLER_REF_DIFFUSERS;
    else if (strcmp(o.reference, "dit"))
        opt_usage_error("--reference: '%s' is not dit or diffusers", o.reference);
    so.eta = (float)o.eta;
    so.shift = kind == SAMPLER_EULER ? flow_resolution_shift(L, L) : 0;
    int steps = o.steps ? o.steps : kind == SAMPLER_DDPM ? 250 : kind == SAMPLER_DDIM ? 50 : 28;
    struct sampler s;
    if (sampler_init(&s, kind, steps, &so) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    int guided = o.cfg_channels >= 0 ? o.cfg_channels : so.reference == SAMPLER_REF_DIT ? (C < 3 ? C : 3) : C;
    if (guided > C)
        opt_usage_error("--cfg-channels %d: the model has %d latent channels", guided, C);
    const int use_cfg = o.cfg != 1.0;
    if (use_cfg && info.cond_dropout <= 0)
        die(DIT_EXIT_FAILURE, "guidance needs the null class, and this model was made without one (--cfg-scale 1)");

    int n_images;
    int *labels = parse_labels(&o, info.num_classes, &n_images);
    struct kctx ctx;
    struct denoiser m;
    const int B = o.batch < n_images ? o.batch : n_images;
    if (kctx_init(&ctx, dev, o.threads) != 0 ||
        denoiser_create(&m, &mc, &ctx, use_cfg ? 2 * B : B, DENOISER_MEM_INFERENCE, cdt) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    denoiser_params_upload(&m, params);
    free(params);
    int64_t pbytes, abytes, mem_now, mem_peak;
    denoiser_sizes(&m, &pbytes, &abytes);
    k_mem_usage(&ctx, &mem_now, &mem_peak);
    log_info("model %.1f MB, activations %.1f MB (%s, batch %d); %.1f MB allocated on the %s, peak %.1f MB",
             pbytes / 1e6, abytes / 1e6, kdtype_name(cdt), m.B, mem_now / 1e6, device_name(dev), mem_peak / 1e6);
    if (mkdir(o.output, 0777) != 0 && errno != EEXIST)
        die(DIT_EXIT_FAILURE, "%s: %s", o.output, strerror(errno));

    const int64_t hw = (int64_t)L * L, n = C * hw;
    float *latents = malloc((size_t)n_images * n * sizeof(float));
    uint8_t **images = calloc((size_t)n_images, sizeof *images);
    if (!latents || !images)
        die(DIT_EXIT_FAILURE, "out of memory");
    struct progress *bar = progress_start("sample", "steps", (uint64_t)((n_images + B - 1) / B) * steps);
    struct generate_options go = {(float)o.cfg, guided, (uint64_t)o.seed, progress_step, bar};
    int32_t *labels32 = malloc((size_t)n_images * sizeof *labels32);
    if (!labels32)
        die(DIT_EXIT_FAILURE, "out of memory");
    for (int k = 0; k < n_images; k++)
        labels32[k] = labels[k];
    struct cond cd = {.labels = labels32};
    if (generate(&m, &s, &cd, n_images, &go, latents) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    for (int k = 0; k < n_images; k++) {
        images[k] = malloc((size_t)W * W * 3);
        if (!images[k] || enc.decode(&enc, latents + (int64_t)k * n, W, W, images[k]) != 0)
            die(DIT_EXIT_FAILURE, "%s", *err_get() ? err_get() : "out of memory");
        char path[4096], params_text[1024];
        snprintf(path, sizeof path, "%s/%06d-class%d.png", o.output, k, labels[k]);
        snprintf(params_text, sizeof params_text,
                 "model %s, class %d, seed %lld, image %d, sampler %s (%s), steps %d, cfg %g, eta %g, %s",
                 o.model_path, labels[k], (long long)o.seed, k, sname, o.reference, steps, o.cfg, o.eta,
                 enc.identity);
        struct png_text text = {"parameters", params_text};
        if (png_write_rgb8(path, images[k], W, W, &text, 1) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
    }
    progress_finish(bar);
    if (o.grid) {
        uint8_t *grid;
        int gw, gh;
        int cols = o.per_class > 1 ? o.per_class : (n_images < 8 ? n_images : 8);
        const uint8_t bg[3] = {255, 255, 255};
        char params_text[512];
        snprintf(params_text, sizeof params_text, "model %s, seed %lld, %d images, sampler %s, steps %d, cfg %g",
                 o.model_path, (long long)o.seed, n_images, sname, steps, o.cfg);
        struct png_text text = {"parameters", params_text};
        if (image_grid_rgb8((const uint8_t *const *)images, n_images, W, W, cols, 2, bg, &grid, &gw, &gh) != 0 ||
            png_write_rgb8(o.grid, grid, gw, gh, &text, 1) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
        free(grid);
        log_info("grid: %s", o.grid);
    }
    if (o.latents_out) {
        struct st_writer *w = st_writer_new();
        int64_t shape[4] = {n_images, C, L, L}, lshape[1] = {n_images};
        int32_t *lab32 = malloc((size_t)n_images * sizeof *lab32);
        for (int k = 0; k < n_images; k++)
            lab32[k] = labels[k];
        if (!w || !lab32 || st_writer_add(w, "latents", ST_F32, 4, shape, latents) ||
            st_writer_add(w, "labels", ST_I32, 1, lshape, lab32) || st_writer_meta(w, "encoder", enc.identity) ||
            st_writer_write(w, o.latents_out))
            die(DIT_EXIT_FAILURE, "%s", err_get());
        st_writer_free(w);
        free(lab32);
    }
    log_info("%d images in %s", n_images, o.output);
    for (int k = 0; k < n_images; k++)
        free(images[k]);
    free(images), free(latents), free(labels);
    sampler_free(&s);
    denoiser_free(&m);
    denoiser_config_free(&mc);
    free(labels32);
    kctx_free(&ctx);
    encoder_close(&enc);
    return 0;
}
