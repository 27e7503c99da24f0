/* sample_run: model -> conditions -> generate -> decode -> PNGs. */
#include "train/sample_run.h"
#include "data/stage.h"
#include "diffusion/diffusion.h"
#include "diffusion/generate.h"
#include "diffusion/sampler.h"
#include "image/png_write.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/progress.h"
#include "libcommon/safetensors.h"
#include "models/denoiser.h"
#include "models/encoder.h"
#include "libcommon/names.h"
#include "train/checkpoint.h"
#include "train/lora.h"
#include "train/prompts.h"
#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct run {
    const struct sample_config *c;
    struct denoiser_config mc;
    int have_mc;
    float *params;
    char *ckpt_objective, *ckpt_encoder, *ckpt_text_encoder;
    const char *objective, *sampler_name;
    struct encoder enc;
    int have_enc;
    struct sampler s;
    int have_sampler, steps, guided;
    double cfg_scale; /* resolved: the asked one, or the model's default */
    struct kctx ctx;
    int have_ctx;
    struct denoiser m;
    int have_model;
    struct nn_lora lora;         /* --lora: the files' adapters, combined */
    struct nn_lora_binding bind;
    int have_lora;
    int32_t *labels;
    int n;
    float *latents;
    uint8_t **images;
    struct prompts pr; /* text models: the prompts, image k of prompt k / per_class */
};

void sample_config_init(struct sample_config *c)
{
    memset(c, 0, sizeof *c);
    c->output_dir = "samples";
    c->batch = 16;
    c->per_class = 1;
    c->cfg_scale = 0.0; /* the model's: DiT's sample.py 4, F-Lite's pipeline 6 */
    c->cfg_channels = -1;
    c->apg_threshold = 0.03;
    c->dtype = KDT_F32;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A checkpoint (its ema/ unless no_ema, or transformer/), a model directory,
 * or a bare state dict. */
static int load_model(struct run *r)
{
    const struct sample_config *c = r->c;
    char path[4096];
    if (access(c->model_path, F_OK) != 0) {
        err_set("%s: %s", c->model_path, strerror(errno));
        return STAGE_ERROR;
    }
    snprintf(path, sizeof path, "%s/checkpoint.json", c->model_path);
    const int checkpoint = is_dir(c->model_path) && access(path, F_OK) == 0;
    if (checkpoint) {
        if (train_checkpoint_info(c->model_path, &r->ckpt_objective, &r->ckpt_encoder, &r->ckpt_text_encoder) != 0)
            return STAGE_ERROR;
        snprintf(path, sizeof path, "%s/ema", c->model_path);
        if (c->no_ema || !is_dir(path))
            snprintf(path, sizeof path, "%s/transformer", c->model_path);
        if (!is_dir(path)) {
            err_set("%s: a LoRA run's checkpoint holds the adapter only: sample the base model with --lora %s/%s",
                    c->model_path, c->model_path, lora_file_name(LORA_FORMAT_DIFFUSERS, 0));
            return STAGE_BAD_CONFIG;
        }
    } else {
        snprintf(path, sizeof path, "%s", c->model_path);
    }
    if (is_dir(path)) {
        if (denoiser_config_load_dir(&r->mc, path, &r->params) != 0)
            return STAGE_ERROR;
        if (checkpoint)
            log_info("model: %s (%s weights)", path, strstr(path, "/ema") ? "EMA" : "raw");
    } else {
        if (!c->model_name || !c->latent_size) {
            err_set("a safetensors file needs --model and --latent-size (e.g. DiT-XL/2 and 32)");
            return STAGE_BAD_CONFIG;
        }
        const struct denoiser_spec spec = {.height = c->latent_size, .width = c->latent_size,
                                           .num_classes = c->num_classes};
        int rc = denoiser_config_load_file(&r->mc, c->model_path, c->model_name, &spec, &r->params);
        if (rc != 0)
            return rc == -2 ? STAGE_BAD_CONFIG : STAGE_ERROR;
    }
    r->have_mc = 1;
    return 0;
}

/* The --lora files as one adapter on the model (ranks side by side). */
static int attach_loras(struct run *r)
{
    const struct sample_config *c = r->c;
    struct lora_file *files = calloc((size_t)c->n_loras, sizeof *files);
    float *strength = calloc((size_t)c->n_loras, sizeof *strength);
    int rc = !files || !strength ? (err_set("out of memory"), -1) : 0;
    for (int i = 0; rc == 0 && i < c->n_loras; i++) {
        char path[4096];
        lora_arg_parse(c->loras[i], path, sizeof path, &strength[i]);
        rc = lora_file_read(path, &files[i]);
        if (rc == 0)
            log_info("LoRA %s: %zu modules (%s naming), strength %g", path, files[i].n,
                     lora_format_name(files[i].format), strength[i]);
    }
    if (rc == 0 && (rc = lora_files_attach(&r->lora, &r->bind, &r->m, files, strength, (size_t)c->n_loras)) == 0)
        r->have_lora = 1;
    for (int i = 0; files && i < c->n_loras; i++)
        lora_file_free(&files[i]);
    free(files), free(strength);
    return rc ? STAGE_ERROR : 0;
}

/* The objective and sampler, and whether they fit each other. */
static int setup_sampler(struct run *r, int latent_h, int latent_w)
{
    const struct sample_config *c = r->c;
    r->objective = c->objective ? c->objective : r->ckpt_objective ? r->ckpt_objective : "ddpm";
    enum objective obj;
    if (objective_parse(r->objective, &obj) != 0) {
        err_set("--objective: '%s' is not ddpm or flow", r->objective);
        return STAGE_BAD_CONFIG;
    }
    r->sampler_name = c->sampler ? c->sampler : obj == OBJECTIVE_FLOW ? "euler" : "ddpm";
    static const struct { const char *name; enum sampler_kind kind; int steps; } samplers[] = {
        {"ddpm", SAMPLER_DDPM, 250}, {"ddim", SAMPLER_DDIM, 50}, {"euler", SAMPLER_EULER, 28}};
    int k = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(r->sampler_name, samplers[i].name) == 0)
            k = i;
    if (k < 0) {
        err_set("--sampler: '%s' is not ddpm, ddim or euler", r->sampler_name);
        return STAGE_BAD_CONFIG;
    }
    const enum sampler_kind kind = samplers[k].kind;
    if ((kind == SAMPLER_EULER) != (obj == OBJECTIVE_FLOW)) {
        err_set("--sampler %s does not fit a %s model", r->sampler_name, r->objective);
        return STAGE_BAD_CONFIG;
    }
    struct sampler_options so = {0};
    const char *ref = c->reference ? c->reference : "dit";
    if (strcmp(ref, "diffusers") == 0) {
        so.reference = SAMPLER_REF_DIFFUSERS;
    } else if (strcmp(ref, "dit") != 0) {
        err_set("--reference: '%s' is not dit or diffusers", ref);
        return STAGE_BAD_CONFIG;
    }
    so.eta = (float)c->eta;
    so.shift = kind == SAMPLER_EULER ? flow_resolution_shift(latent_h, latent_w) : 0;
    r->steps = c->steps ? c->steps : samplers[k].steps;
    if (sampler_init(&r->s, kind, r->steps, &so) != 0)
        return STAGE_ERROR;
    r->have_sampler = 1;
    const int C = r->enc.channels;
    /* F-Lite guides every channel; DiT's sample.py the first 3 */
    r->guided = c->cfg_channels >= 0                ? c->cfg_channels
                : r->pr.n || so.reference != SAMPLER_REF_DIT ? C
                                                    : (C < 3 ? C : 3);
    if (r->guided > C) {
        err_set("--cfg-channels %d: the model has %d latent channels", r->guided, C);
        return STAGE_BAD_CONFIG;
    }
    return 0;
}

/* A class by number, or by its line in names_file (dit-index --classes-out). */
static int class_id(const char *names_file, const char *token, int num_classes, int *id)
{
    char *end;
    long v = strtol(token, &end, 10);
    if (end != token && !*end) {
        if (v < 0 || v > num_classes) {
            err_set("class %ld is outside 0..%d (%d is the null class)", v, num_classes, num_classes);
            return -1;
        }
        *id = (int)v;
        return 0;
    }
    FILE *f = names_file ? fopen(names_file, "r") : NULL;
    if (!f) {
        err_set("class '%s' is not a number, and no --class-names file names it", token);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    *id = -1;
    for (int i = 0; *id < 0 && (n = getline(&line, &cap, f)) > 0; i++) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (strcmp(line, token) == 0)
            *id = i;
    }
    free(line);
    fclose(f);
    if (*id < 0) {
        err_set("%s does not name a class '%s'", names_file, token);
        return -1;
    }
    return 0;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        err_set("%s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t cap = 0;
    ssize_t len = getdelim(&text, &cap, '\0', f);
    fclose(f);
    if (len < 0) {
        free(text);
        err_set("%s: empty", path);
        return NULL;
    }
    return text;
}

/* The labels to sample, each repeated per_class times. */
static int parse_labels(struct run *r, int num_classes)
{
    const struct sample_config *c = r->c;
    char *text = c->classes_file ? read_text(c->classes_file) : strdup(c->labels ? c->labels : "0");
    if (!text)
        return -1;
    int cap = 0, rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(text, ",\n\r\t ", &save); tok && rc == 0; tok = strtok_r(NULL, ",\n\r\t ", &save)) {
        int id;
        if ((rc = class_id(c->class_names, tok, num_classes, &id)) != 0)
            break;
        for (int k = 0; k < c->per_class; k++) {
            if (r->n == cap) {
                int32_t *grown = realloc(r->labels, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *grown);
                if (!grown) {
                    err_set("out of memory");
                    rc = -1;
                    break;
                }
                r->labels = grown;
            }
            r->labels[r->n++] = id;
        }
    }
    free(text);
    if (rc == 0 && r->n == 0) {
        err_set("no class labels to sample");
        rc = -1;
    }
    return rc;
}

static void progress_step(void *bar)
{
    progress_add(bar, 1);
}

/* Image k's file: "%06d.png", or "%06d-class%d.png" for a class label. */
static void image_path(char *buf, size_t size, const char *dir, int k, int label)
{
    if (label < 0)
        snprintf(buf, size, "%s/%06d.png", dir, k);
    else
        snprintf(buf, size, "%s/%06d-class%d.png", dir, k, label);
}

/* Before anything is computed: no file this invocation writes may hold
 * another invocation's output, unless --overwrite (dit-sample(1)).
 * labels NULL: the images are named without classes. */
static int outputs_free(const struct sample_config *c, int n, const int32_t *labels)
{
    if (c->overwrite)
        return 0;
    char path[4200];
    const char *taken = NULL;
    for (int k = 0; k < n && !taken; k++) {
        image_path(path, sizeof path, c->output_dir, k, labels ? labels[k] : -1);
        if (access(path, F_OK) == 0)
            taken = path;
    }
    if (!taken && c->grid && access(c->grid, F_OK) == 0)
        taken = c->grid;
    if (!taken && c->latents_out && access(c->latents_out, F_OK) == 0)
        taken = c->latents_out;
    if (taken) {
        err_set("%s exists (another dit-sample's output?): give --overwrite to replace what this run writes, or "
                "another -o",
                taken);
        return -1;
    }
    return 0;
}

static int write_images(struct run *r, int W, int H, int64_t per_image)
{
    const struct sample_config *c = r->c;
    for (int k = 0; k < r->n; k++) {
        if (!(r->images[k] = malloc((size_t)W * H * 3))) {
            err_set("out of memory");
            return -1;
        }
        if (encoder_decode(&r->enc, r->latents + k * per_image, W, H, r->images[k]) != 0)
            return -1;
        char path[4096], params_text[4096];
        if (r->pr.n) {
            const int p = k / c->per_class;
            image_path(path, sizeof path, c->output_dir, k, -1);
            snprintf(params_text, sizeof params_text,
                     "%s\nNegative prompt: %s\nmodel %s, seed %llu, image %d, size %dx%d, sampler %s, steps %d, "
                     "%s %g, %s, %s",
                     r->pr.text[p], c->negative_prompt ? c->negative_prompt : "(none: zeros)", c->model_path,
                     (unsigned long long)c->seed, k, W, H, r->sampler_name, r->steps, c->apg ? "apg" : "cfg",
                     r->cfg_scale, r->pr.encoder, r->enc.identity);
        } else {
            image_path(path, sizeof path, c->output_dir, k, r->labels[k]);
            snprintf(params_text, sizeof params_text,
                     "model %s, class %d, seed %llu, image %d, sampler %s (%s), steps %d, cfg %g, eta %g, %s",
                     c->model_path, r->labels[k], (unsigned long long)c->seed, k, r->sampler_name,
                     c->reference ? c->reference : "dit", r->steps, r->cfg_scale, c->eta, r->enc.identity);
        }
        struct png_text text = {"parameters", params_text};
        if (png_write_rgb8(path, r->images[k], W, H, &text, 1) != 0)
            return -1;
    }
    if (c->grid) {
        uint8_t *grid;
        int gw, gh;
        /* a row per class or prompt when there are several images of each */
        int cols = c->per_class > 1 ? c->per_class : (r->n < 8 ? r->n : 8);
        const uint8_t bg[3] = {255, 255, 255};
        char params_text[512];
        snprintf(params_text, sizeof params_text, "model %s, seed %llu, %d images, sampler %s, steps %d, cfg %g",
                 c->model_path, (unsigned long long)c->seed, r->n, r->sampler_name, r->steps, r->cfg_scale);
        struct png_text text = {"parameters", params_text};
        if (image_grid_rgb8((const uint8_t *const *)r->images, r->n, W, H, cols, 2, bg, &grid, &gw, &gh) != 0)
            return -1;
        int rc = png_write_rgb8(c->grid, grid, gw, gh, &text, 1);
        free(grid);
        if (rc != 0)
            return -1;
        log_info("grid: %s", c->grid);
    }
    return 0;
}

static int write_latents(const struct run *r, int C, int LH, int LW)
{
    struct st_writer *w = st_writer_new();
    int64_t shape[4] = {r->n, C, LH, LW}, lshape[1] = {r->n};
    int rc = !w || st_writer_add(w, "latents", ST_F32, 4, shape, r->latents) ||
                     (r->labels && st_writer_add(w, "labels", ST_I32, 1, lshape, r->labels)) ||
                     st_writer_meta(w, "encoder", r->enc.identity) || st_writer_write(w, r->c->latents_out)
                 ? -1
                 : 0;
    if (!w)
        err_set("out of memory");
    st_writer_free(w);
    return rc;
}

/* Opens the decoder for latents of C channels. */
static int open_decoder(struct run *r, const char *spec, int C)
{
    if (encoder_open(&r->enc, spec) != 0)
        return STAGE_ERROR;
    r->have_enc = 1;
    if (!encoder_has_decoder(&r->enc)) {
        err_set("encoder '%s' has no decoder", r->enc.identity);
        return STAGE_ERROR;
    }
    if (r->enc.channels != C) {
        err_set("the decoder %s gives %d channels, the latents have %d", r->enc.identity, r->enc.channels, C);
        return STAGE_ERROR;
    }
    return 0;
}

/* --decode: a file's latents to PNGs. */
static int run_decode(struct run *r)
{
    const struct sample_config *c = r->c;
    struct st_file *f = st_open(c->decode);
    if (!f)
        return STAGE_ERROR;
    int rc = STAGE_ERROR;
    const struct st_tensor *t = st_find(f, "latents"), *lab = st_find(f, "labels");
    if (!t || t->ndim != 4 || t->shape[2] != t->shape[3] ||
        (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)) {
        err_set("%s: no \"latents\" tensor of [N, C, H, H] in F32, BF16 or F16", c->decode);
        goto done;
    }
    if (lab && (lab->dtype != ST_I32 || lab->ndim != 1 || lab->shape[0] != t->shape[0])) {
        err_set("%s: \"labels\" is not I32 [%lld]", c->decode, (long long)t->shape[0]);
        goto done;
    }
    const char *spec = c->decoder ? c->decoder : st_meta_get(f, "encoder");
    if (!spec) {
        err_set("%s names no encoder in its metadata: give --decoder", c->decode);
        goto done;
    }
    const int C = (int)t->shape[1], L = (int)t->shape[2];
    if ((rc = open_decoder(r, spec, C)) != 0)
        goto done;
    rc = STAGE_ERROR;
    r->n = (int)t->shape[0];
    const int64_t per_image = (int64_t)C * L * L, total = r->n * per_image;
    r->latents = malloc((size_t)total * sizeof(float));
    r->images = calloc((size_t)r->n, sizeof *r->images);
    r->labels = calloc((size_t)r->n, sizeof *r->labels);
    if (!r->latents || !r->images || !r->labels) {
        err_set("out of memory");
        goto done;
    }
    st_tensor_to_f32(t, r->latents);
    if (lab)
        memcpy(r->labels, lab->data, (size_t)r->n * sizeof *r->labels);
    if (outputs_free(c, r->n, lab ? r->labels : NULL) != 0)
        goto done;
    if (mkdir(c->output_dir, 0777) != 0 && errno != EEXIST) {
        err_set("%s: %s", c->output_dir, strerror(errno));
        goto done;
    }
    const int W = L * r->enc.factor;
    for (int k = 0; k < r->n; k++) {
        char path[4096], params_text[1024];
        if (!(r->images[k] = malloc((size_t)W * W * 3))) {
            err_set("out of memory");
            goto done;
        }
        if (encoder_decode(&r->enc, r->latents + k * per_image, W, W, r->images[k]) != 0)
            goto done;
        image_path(path, sizeof path, c->output_dir, k, lab ? r->labels[k] : -1);
        snprintf(params_text, sizeof params_text, "decoded from %s, image %d, %s", c->decode, k, r->enc.identity);
        struct png_text text = {"parameters", params_text};
        if (png_write_rgb8(path, r->images[k], W, W, &text, 1) != 0)
            goto done;
    }
    log_info("%d images decoded into %s", r->n, c->output_dir);
    rc = 0;
done:
    st_close(f);
    return rc;
}

/* --init-noise: n images' starting noise of C x H x W, as f32 (malloc'd);
 * NULL with err_set() naming the file and what it holds instead. */
static float *read_init_noise(const char *path, int n, int C, int H, int W)
{
    struct st_file *f = st_open(path);
    if (!f)
        return NULL;
    const struct st_tensor *t = st_find(f, "noise");
    if (!t)
        t = st_find(f, "latents");
    float *x = NULL;
    if (!t || t->ndim != 4 || t->shape[0] != n || t->shape[1] != C || t->shape[2] != H || t->shape[3] != W) {
        char got[64] = "nothing";
        if (t)
            st_shape_text(got, sizeof got, t->ndim, t->shape);
        err_set("%s: \"noise\" (or \"latents\") must be [%d, %d, %d, %d] for these images; it holds %s", path, n, C,
                H, W, got);
    } else if (!(x = malloc((size_t)t->nelem * sizeof *x))) {
        err_set("out of memory");
    } else if (st_tensor_to_f32(t, x) != 0) {
        err_set("%s: the noise is %s, not F32, BF16 or F16", path, st_dtype_name(t->dtype));
        free(x);
        x = NULL;
    }
    st_close(f);
    return x;
}

/* Class-conditional: the labels, the model's own size. */
static int prepare_labels(struct run *r, const struct denoiser_info *info, int *W, int *H)
{
    const struct sample_config *c = r->c;
    int rc;
    if (c->prompt || c->prompts_file || c->negative_prompt || c->text_encoder || c->apg) {
        err_set("%s is class-conditional: prompts, --text-encoder and --apg are for text-to-image models",
                c->model_path);
        return STAGE_BAD_CONFIG;
    }
    const char *spec = c->decoder ? c->decoder : r->ckpt_encoder ? r->ckpt_encoder : "pixel";
    const int C = info->in_channels, L = info->height;
    if ((rc = open_decoder(r, spec, C)) != 0)
        return rc;
    *W = *H = L * r->enc.factor;
    if ((c->width && c->width != *W) || (c->height && c->height != *W)) {
        err_set("this model samples %dx%d images (%dx%d latents of a factor-%d encoder)", *W, *W, L, L,
                r->enc.factor);
        return STAGE_ERROR;
    }
    if ((rc = setup_sampler(r, L, L)) != 0)
        return rc;
    if (r->cfg_scale != 1.0 && info->cond_dropout <= 0) {
        err_set("guidance needs the null class, and this model was made without one (--cfg-scale 1)");
        return STAGE_ERROR;
    }
    return parse_labels(r, info->num_classes) != 0 ? STAGE_ERROR : 0;
}

/* Text-to-image: the prompts encoded (the encoder freed after), the model
 * planned for the asked size (F-Lite's default 1024 x 1024). */
static int prepare_prompts(struct run *r, struct denoiser_info *info, int *W, int *H)
{
    const struct sample_config *c = r->c;
    int rc;
    if (c->labels || c->classes_file) {
        err_set("%s is a text-to-image model: it samples from --prompt or --prompts-file, not class labels",
                c->model_path);
        return STAGE_BAD_CONFIG;
    }
    /* The text encoder: --text-encoder, else the one the checkpoint's
     * training captions were encoded with (its identity reopens it). */
    const char *text_spec = c->text_encoder ? c->text_encoder : r->ckpt_text_encoder;
    if (!text_spec || !!c->prompt == !!c->prompts_file) {
        err_set("%s is a text-to-image model: give %sone of --prompt and --prompts-file", c->model_path,
                text_spec ? "" : "--text-encoder (the T5 it was trained with) and ");
        return STAGE_BAD_CONFIG;
    }
    if (c->apg_threshold <= 0) {
        err_set("--apg-threshold must be positive");
        return STAGE_BAD_CONFIG;
    }
    const char *spec = c->decoder ? c->decoder : r->ckpt_encoder ? r->ckpt_encoder : "pixel";
    const int C = info->in_channels;
    if ((rc = open_decoder(r, spec, C)) != 0)
        return rc;
    const int f = r->enc.factor, step = f * info->multiple;
    *W = c->width ? c->width : 1024;
    *H = c->height ? c->height : 1024;
    if (*W <= 0 || *H <= 0 || *W % step || *H % step) {
        err_set("--width %d --height %d: this model samples sizes in multiples of %d px (latents of a factor-%d "
                "decoder in patches of %d)", *W, *H, step, f, info->multiple);
        return STAGE_BAD_CONFIG;
    }
    if (prompts_read(&r->pr, c->prompt, c->prompts_file) != 0 ||
        prompts_encode(&r->pr, text_spec, c->negative_prompt) != 0)
        return STAGE_ERROR;
    log_info("%d prompt%s encoded by %s", r->pr.n, r->pr.n == 1 ? "" : "s", r->pr.encoder);
    const struct denoiser_spec fit = {.channels = C, .height = *H / f, .width = *W / f, .text_len = r->pr.len};
    if (denoiser_config_fit(&r->mc, &fit) != 0) {
        err_prefix("%s", c->model_path);
        return STAGE_ERROR;
    }
    denoiser_config_info(&r->mc, info);
    if (info->text_dim != r->pr.dim) {
        err_set("the text encoder gives %d-wide embeddings, %s takes %d", r->pr.dim, c->model_path, info->text_dim);
        return STAGE_ERROR;
    }
    if ((rc = setup_sampler(r, *H / f, *W / f)) != 0)
        return rc;
    r->n = r->pr.n * c->per_class;
    return 0;
}

static int run_sample(struct run *r)
{
    const struct sample_config *c = r->c;
    int rc;
    if (c->decode)
        return run_decode(r);
    if (!c->model_path) {
        err_set("no model path");
        return STAGE_BAD_CONFIG;
    }
    if (c->batch <= 0 || c->per_class <= 0 || c->steps < 0 || c->cfg_scale < 0 || c->threads < 0) {
        err_set("batch size, images per class, steps and the guidance scale must be positive");
        return STAGE_BAD_CONFIG;
    }
    if ((rc = load_model(r)) != 0)
        return rc;
    struct denoiser_info info;
    denoiser_config_info(&r->mc, &info);
    r->cfg_scale = c->cfg_scale > 0 ? c->cfg_scale : info.cond == COND_TEXT ? 6.0 : 4.0;
    int W, H;
    rc = info.cond == COND_TEXT ? prepare_prompts(r, &info, &W, &H) : prepare_labels(r, &info, &W, &H);
    if (rc != 0)
        return rc;
    if (outputs_free(c, r->n, info.cond == COND_TEXT ? NULL : r->labels) != 0)
        return STAGE_ERROR;
    const int C = info.in_channels, LH = info.height, LW = info.width;
    const int use_cfg = r->cfg_scale != 1.0;

    const int B = c->batch < r->n ? c->batch : r->n;
    if (kctx_init(&r->ctx, c->device, c->threads) != 0)
        return STAGE_ERROR;
    r->have_ctx = 1;
    const int mem = DENOISER_MEM_INFERENCE | DENOISER_MEM_BASE(c->base);
    if (denoiser_create(&r->m, &r->mc, &r->ctx, use_cfg ? 2 * B : B, (enum denoiser_memory)mem, c->dtype) != 0)
        return STAGE_ERROR;
    r->have_model = 1;
    denoiser_params_upload(&r->m, r->params);
    free(r->params);
    r->params = NULL;
    if (c->n_loras && (rc = attach_loras(r)) != 0)
        return rc;
    int64_t pbytes, abytes, mem_now, mem_peak;
    denoiser_sizes(&r->m, &pbytes, &abytes);
    k_mem_usage(&r->ctx, &mem_now, &mem_peak);
    log_info("model %.1f MB%s%s, activations %.1f MB (%s, batch %d); %.1f MB allocated on the %s, peak %.1f MB",
             pbytes / 1e6, nn_base_dtype(c->base, c->dtype) == c->dtype ? "" : ", linears stored in ",
             nn_base_dtype(c->base, c->dtype) == c->dtype ? "" : nn_base_name(c->base), abytes / 1e6,
             kdtype_name(c->dtype), r->m.B, mem_now / 1e6, device_name(c->device),
             mem_peak / 1e6);
    if (mkdir(c->output_dir, 0777) != 0 && errno != EEXIST) {
        err_set("%s: %s", c->output_dir, strerror(errno));
        return STAGE_ERROR;
    }

    const int64_t per_image = (int64_t)C * LH * LW;
    r->latents = malloc((size_t)r->n * per_image * sizeof(float));
    r->images = calloc((size_t)r->n, sizeof *r->images);
    struct cond cd = {.labels = r->labels};
    float *text = NULL;
    if (r->pr.n) {
        /* image k takes prompt k / per_class */
        const size_t td = (size_t)r->pr.len * r->pr.dim;
        text = malloc((size_t)r->n * td * sizeof *text);
        for (int k = 0; text && k < r->n; k++)
            memcpy(text + k * td, r->pr.emb + (size_t)(k / c->per_class) * td, td * sizeof *text);
        cd = (struct cond){.text = text, .text_len = r->pr.len, .text_dim = r->pr.dim};
    }
    if (!r->latents || !r->images || (r->pr.n && !text)) {
        free(text);
        err_set("out of memory");
        return STAGE_ERROR;
    }
    float *init = NULL;
    if (c->init_noise && (init = read_init_noise(c->init_noise, r->n, C, LH, LW)) == NULL) {
        free(text);
        return STAGE_ERROR;
    }
    struct progress *bar = progress_start("sample", "steps", (uint64_t)((r->n + B - 1) / B) * r->steps);
    struct generate_options go = {.cfg_scale = (float)r->cfg_scale, .guided = r->guided, .seed = c->seed,
                                  .on_step = progress_step, .ctx = bar};
    go.negative_text = r->pr.negative;
    go.init_noise = init;
    go.apg = c->apg, go.apg_batch = c->apg_batch, go.apg_threshold = (float)c->apg_threshold;
    rc = generate(&r->m, &r->s, &cd, r->n, &go, r->latents) == 0 && write_images(r, W, H, per_image) == 0 ? 0 : -1;
    progress_finish(bar);
    free(text);
    free(init);
    if (rc == 0 && c->latents_out)
        rc = write_latents(r, C, LH, LW);
    if (rc == 0)
        log_info("%d images in %s", r->n, c->output_dir);
    return rc;
}

int sample_run(const struct sample_config *c)
{
    struct run r = {.c = c};
    int rc = run_sample(&r);
    if (r.images)
        for (int k = 0; k < r.n; k++)
            free(r.images[k]);
    free(r.images), free(r.latents), free(r.labels), free(r.params);
    prompts_free(&r.pr);
    free(r.ckpt_objective), free(r.ckpt_encoder), free(r.ckpt_text_encoder);
    if (r.have_sampler)
        sampler_free(&r.s);
    if (r.have_lora) {
        nn_lora_unbind(&r.bind);
        nn_lora_free(&r.lora);
    }
    if (r.have_model)
        denoiser_free(&r.m);
    if (r.have_mc)
        denoiser_config_free(&r.mc);
    if (r.have_ctx)
        kctx_free(&r.ctx);
    if (r.have_enc)
        encoder_close(&r.enc);
    return rc;
}
