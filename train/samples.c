#include "train/samples.h"
#include "diffusion/diffusion.h"
#include "diffusion/generate.h"
#include "image/png_write.h"
#include "libcommon/error.h"
#include "libcommon/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SAMPLES_MAX 64

static int parse_labels(struct samples *sp, const char *list, int num_classes)
{
    if (!list) {
        for (; sp->n < 8 && sp->n < num_classes; sp->n++)
            sp->labels[sp->n] = sp->n;
        return 0;
    }
    char *copy = strdup(list);
    if (!copy)
        return -1;
    int rc = 0;
    for (char *tok = strtok(copy, ","); tok && sp->n < SAMPLES_MAX; tok = strtok(NULL, ",")) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (end == tok || *end || v < 0 || v >= num_classes) {
            err_set("--sample-class-labels: '%s' is not a class of 0..%d", tok, num_classes - 1);
            rc = -1;
            break;
        }
        sp->labels[sp->n++] = (int32_t)v;
    }
    free(copy);
    return rc;
}

int samples_setup(struct samples *sp, const struct samples_config *cfg, const struct denoiser_config *mc,
                  enum kdtype dt, struct kctx *ctx)
{
    memset(sp, 0, sizeof *sp);
    sp->cfg = *cfg;
    struct denoiser_info info;
    denoiser_config_info(mc, &info);
    if (!cfg->encoder || !cfg->encoder[0] || encoder_open(&sp->enc, cfg->encoder) != 0 ||
        !encoder_has_decoder(&sp->enc)) {
        err_set("--sample-every: cannot decode samples of latents made by encoder '%s'",
                cfg->encoder ? cfg->encoder : "");
        return -1;
    }
    if (info.cond == COND_TEXT) {
        if (!cfg->prompts_file) {
            err_set("--sample-every: a text-to-image model samples from --sample-prompts-file");
            return -1;
        }
        if (!cfg->text_encoder || !*cfg->text_encoder) {
            err_set("--sample-every: the shard set names no text encoder to encode the prompts with");
            return -1;
        }
        if (prompts_read(&sp->pr, NULL, cfg->prompts_file) != 0 || prompts_encode(&sp->pr, cfg->text_encoder, NULL))
            return -1;
        if (sp->pr.dim != info.text_dim) {
            err_set("--sample-prompts-file: the text encoder gives %d-wide embeddings, the model takes %d",
                    sp->pr.dim, info.text_dim);
            return -1;
        }
        if (sp->pr.n > SAMPLES_MAX) {
            err_set("--sample-prompts-file: %d prompts, at most %d", sp->pr.n, SAMPLES_MAX);
            return -1;
        }
        sp->n = sp->pr.n;
    } else if (!(sp->labels = malloc(SAMPLES_MAX * sizeof *sp->labels)) ||
               parse_labels(sp, cfg->labels, info.num_classes)) {
        return -1;
    }
    const int flow = cfg->objective == OBJECTIVE_FLOW;
    struct sampler_options so = {0};
    so.shift = flow ? flow_resolution_shift(info.height, info.width) : 0;
    int steps = cfg->steps ? cfg->steps : flow ? 28 : 50;
    if (sampler_init(&sp->s, flow ? SAMPLER_EULER : SAMPLER_DDIM, steps, &so) != 0)
        return -1;
    sp->cfg_scale = info.cond_dropout > 0 ? (float)cfg->cfg_scale : 1.0f;
    /* as DiT's sample.py (the first 3 channels); F-Lite guides them all */
    sp->guided = info.cond == COND_TEXT ? info.in_channels : info.in_channels < 3 ? info.in_channels : 3;
    int batch = sp->n < 16 ? sp->n : 16;
    const int mem = DENOISER_MEM_INFERENCE | DENOISER_MEM_BASE(cfg->base);
    return denoiser_create(&sp->m, mc, ctx, sp->cfg_scale != 1.0f ? 2 * batch : batch, (enum denoiser_memory)mem, dt);
}

static int write_grid(const struct samples *sp, const uint8_t *grid, int gw, int gh, struct metrics *mx,
                      int64_t step)
{
    char dir[4096], path[4200], text[256];
    snprintf(dir, sizeof dir, "%s/samples", sp->cfg.output);
    snprintf(path, sizeof path, "%s/step-%07lld.png", dir, (long long)step);
    snprintf(text, sizeof text, "dit-train step %lld, seed %lld, %s %d steps, cfg %g", (long long)step,
             (long long)sp->cfg.seed, sp->s.kind == SAMPLER_EULER ? "euler" : "ddim", sampler_num_steps(&sp->s),
             sp->cfg_scale);
    struct png_text pt = {"parameters", text};
    int rc = mkdir(dir, 0777) == 0 || errno == EEXIST ? png_write_rgb8(path, grid, gw, gh, &pt, 1) : -1;
    if (rc == 0 && mx->tb) {
        void *png;
        size_t size;
        rc = png_encode_rgb8(grid, gw, gh, &pt, 1, &png, &size);
        if (rc == 0) {
            rc = tfevents_image(mx->tb, "samples", step, metrics_now(), gw, gh, 3, png, size);
            free(png);
        }
    }
    if (rc == 0)
        log_info("samples: %s", path);
    return rc;
}

int samples_attach(struct samples *sp, const struct trainer *tr)
{
    if (!tr->base_trains) {
        float *host = malloc((size_t)tr->m->n_params * sizeof *host);
        if (!host) {
            err_set("out of memory for the samples' model");
            return -1;
        }
        denoiser_params_download(tr->m, host);
        denoiser_params_upload(&sp->m, host);
        free(host);
    }
    if (!tr->lora)
        return 0;
    if (nn_lora_create(&sp->lora, tr->lora->mod, tr->lora->n) != 0)
        return -1;
    if (nn_lora_alloc(&sp->lora, sp->m.ctx, sp->m.dt, 0) != 0 || denoiser_lora_bind(&sp->m, &sp->lora, &sp->bind) != 0) {
        nn_lora_free(&sp->lora);
        return -1;
    }
    sp->has_lora = 1;
    return 0;
}

int samples_make(struct samples *sp, const struct trainer *tr, struct metrics *mx, int64_t step)
{
    const struct denoiser_info *info = &sp->m.info;
    if (tr->base_trains)
        denoiser_weights_set(&sp->m, tr->ema.data ? tr->ema : tr->m->params);
    if (sp->has_lora)
        nn_weights_set(&sp->lora.w, tr->lora_ema.data ? tr->lora_ema : tr->lora->w.params);
    const int H = info->height * sp->enc.factor, W = info->width * sp->enc.factor;
    const int64_t per = (int64_t)info->in_channels * info->height * info->width;
    float *lat = malloc((size_t)(sp->n * per) * sizeof *lat);
    uint8_t **img = calloc((size_t)sp->n, sizeof *img);
    struct generate_options go = {.cfg_scale = sp->cfg_scale, .guided = sp->guided, .seed = sp->cfg.seed};
    struct cond c = {.labels = sp->labels};
    if (sp->pr.n)
        c = (struct cond){.text = sp->pr.emb, .text_len = sp->pr.len, .text_dim = sp->pr.dim};
    int rc = lat && img ? generate(&sp->m, &sp->s, &c, sp->n, &go, lat) : -1;
    for (int k = 0; rc == 0 && k < sp->n; k++)
        rc = !(img[k] = malloc((size_t)W * H * 3)) || encoder_decode(&sp->enc, lat + k * per, W, H, img[k]);
    uint8_t *grid = NULL;
    int gw, gh;
    const uint8_t bg[3] = {255, 255, 255};
    if (rc == 0)
        rc = image_grid_rgb8((const uint8_t *const *)img, sp->n, W, H, sp->n < 8 ? sp->n : 8, 2, bg, &grid, &gw,
                             &gh);
    if (rc == 0)
        rc = write_grid(sp, grid, gw, gh, mx, step);
    for (int k = 0; img && k < sp->n; k++)
        free(img[k]);
    free(img), free(lat), free(grid);
    return rc;
}

void samples_free(struct samples *sp)
{
    if (sp->has_lora) {
        nn_lora_unbind(&sp->bind);
        nn_lora_free(&sp->lora);
    }
    denoiser_free(&sp->m);
    sampler_free(&sp->s);
    encoder_close(&sp->enc);
    free(sp->labels);
    prompts_free(&sp->pr);
}
