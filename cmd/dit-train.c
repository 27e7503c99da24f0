/* dit-train: train a class-conditional DiT from a shard set, with
 * checkpoints that resume bit for bit, logs, validation and signals. */
#include "formats/checkpoint.h"
#include "data/loader.h"
#include "formats/shardset.h"
#include "kernels/device.h"
#include "kernels/kernels.h"
#include "nn/precision.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "libcommon/safetensors.h"
#include "libcommon/tfevents.h"
#include "models/dit/dit.h"
#include "image/png_write.h"
#include "models/dit/weights.h"
#include "models/encoder.h"
#include "diffusion/generate.h"
#include "diffusion/sampler.h"
#include "train/trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct options {
    const char *data, *val_data, *output, *model, *pretrained, *objective, *scheduler, *mixed, *resume;
    const char *report_to, *sample_labels;
    int batch, accum, epochs, num_classes, image_size, threads, checkpointing, limit, local_rank;
    int depth, hidden, heads, sample_steps;
    double sample_cfg;
    int64_t max_steps, warmup, log_every, ckpt_every, eval_every, sample_every, seed;
    double lr, beta1, beta2, eps, wd, clip, ema;
};

static volatile sig_atomic_t stop_requested;
/* The encoder that made the training latents, recorded in checkpoints. */
static char encoder_identity[128] = "";

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Which encoder factor a shard set was made with (pixel:F), for --image-size. */
static int encoder_factor(struct shardset *s)
{
    const struct st_file *f = shardset_shard(s, 0);
    const char *enc = f ? st_meta_get(f, "encoder") : NULL;
    if (enc)
        snprintf(encoder_identity, sizeof encoder_identity, "%s", enc);
    int factor = 0;
    if (enc && sscanf(enc, "pixel/1 s2d=%d", &factor) == 1)
        return factor;
    return 0;
}

struct state {
    int64_t step, epoch, index;
    double loss_sum; /* the losses since the last log line, so that a */
    int64_t loss_n;  /* resumed run logs the same averages */
};

static int save_checkpoint(const struct options *o, struct trainer *tr, const struct state *st)
{
    char *tmp;
    if (checkpoint_begin(o->output, st->step, &tmp) != 0)
        return -1;
    char path[4096];
    struct kctx *k = tr->m->ctx;
    const int64_t np = tr->m->n_params;
    /* The model's state comes off the device one tensor at a time. */
    float *host = malloc((size_t)np * sizeof *host), *host2 = NULL;
    int rc = !host;
    snprintf(path, sizeof path, "%s/transformer", tmp);
    if (rc == 0) {
        k_download(k, host, tr->m->params, np);
        rc = mkdir(path, 0777) || dit_save_dir(&tr->m->cfg, host, path);
    }
    if (rc == 0 && tr->ema.data) {
        snprintf(path, sizeof path, "%s/ema", tmp);
        k_download(k, host, tr->ema, np);
        rc = mkdir(path, 0777) || dit_save_dir(&tr->m->cfg, host, path);
    }
    if (rc == 0) {
        /* How to use the model: which objective it learnt and which encoder
         * made its latents (dit-sample decodes with that encoder). */
        json_t *info = json_pack("{s:s, s:s, s:s, s:I}", "objective", o->objective, "encoder", encoder_identity,
                                 "model", o->model, "step", (json_int_t)st->step);
        snprintf(path, sizeof path, "%s/checkpoint.json", tmp);
        rc = !info || json_write_file(path, info) != 0;
        json_decref(info);
    }
    if (rc == 0) {
        struct st_writer *w = st_writer_new();
        int64_t shape[1] = {tr->m->n_params};
        json_t *state = json_pack("{s:I, s:I, s:I, s:I, s:s, s:s, s:i, s:f, s:I, s:f, s:I, s:I}", "step", (json_int_t)st->step,
                                  "epoch", (json_int_t)st->epoch, "batch_index", (json_int_t)st->index, "seed",
                                  (json_int_t)o->seed, "objective", o->objective, "model", o->model,
                                  "gradient_accumulation_steps", o->accum, "log_loss_sum", st->loss_sum,
                                  "log_loss_n", (json_int_t)st->loss_n, "loss_scale", tr->loss_scale,
                                  "loss_scale_good_steps", (json_int_t)tr->scale_good_steps, "skipped_steps",
                                  (json_int_t)tr->skipped_steps);
        char *text = state ? json_to_string(state) : NULL;
        snprintf(path, sizeof path, "%s/training_state.safetensors", tmp);
        host2 = malloc((size_t)np * sizeof *host2);
        if (host2) {
            k_download(k, host, tr->adam_m, np);
            k_download(k, host2, tr->adam_v, np);
        }
        rc = !w || !text || !host2 || st_writer_add(w, "adam_m", ST_F32, 1, shape, host) ||
             st_writer_add(w, "adam_v", ST_F32, 1, shape, host2) || st_writer_meta(w, "state", text) ||
             st_writer_meta(w, "format", "dit-training-state/1") || st_writer_write(w, path);
        st_writer_free(w);
        free(text);
        json_decref(state);
    }
    free(host);
    free(host2);
    if (rc != 0) {
        if (!*err_get())
            err_set("%s: %s", path, strerror(errno));
        checkpoint_abort(tmp);
        return -1;
    }
    char *final = NULL;
    if (checkpoint_commit(o->output, tmp, st->step, &final) != 0)
        return -1;
    log_info("checkpoint %s", final);
    free(final);
    if (o->limit > 0 && checkpoint_prune(o->output, o->limit) != 0)
        log_warn("%s", err_get());
    return 0;
}

/* Loads a checkpoint's weights, EMA and optimizer state; fills *st. */
static int load_checkpoint(const char *dir, struct trainer *tr, struct state *st)
{
    char path[4096];
    struct dit_config cfg;
    float *p = NULL;
    snprintf(path, sizeof path, "%s/transformer", dir);
    if (dit_load_dir(path, &cfg, &p) != 0)
        return -1;
    if (memcmp(&cfg, &tr->m->cfg, sizeof cfg) != 0) {
        free(p);
        err_set("%s: the checkpoint's model configuration differs from this run's", path);
        return -1;
    }
    dit_params_upload(tr->m, p);
    free(p);
    if (tr->ema.data) {
        snprintf(path, sizeof path, "%s/ema", dir);
        if (dit_load_dir(path, &cfg, &p) != 0)
            return -1;
        k_upload(tr->m->ctx, tr->ema, p, tr->m->n_params);
        k_sync(tr->m->ctx);
        free(p);
    }
    snprintf(path, sizeof path, "%s/training_state.safetensors", dir);
    struct st_file *f = st_open(path);
    if (!f)
        return -1;
    const struct st_tensor *m = st_find(f, "adam_m"), *v = st_find(f, "adam_v");
    const char *state = st_meta_get(f, "state");
    json_t *j = state ? json_read_buffer(path, state, strlen(state)) : NULL;
    json_int_t step, epoch, index, loss_n;
    double loss_sum;
    int rc = -1;
    if (!m || !v || m->nelem != (uint64_t)tr->m->n_params || v->nelem != (uint64_t)tr->m->n_params ||
        m->dtype != ST_F32 || v->dtype != ST_F32 || !j ||
        json_unpack(j, "{s:I, s:I, s:I, s:F, s:I}", "step", &step, "epoch", &epoch, "batch_index", &index,
                    "log_loss_sum", &loss_sum, "log_loss_n", &loss_n) != 0) {
        err_set("%s: not a training state of this model (adam_m, adam_v, state)", path);
    } else {
        k_upload(tr->m->ctx, tr->adam_m, m->data, tr->m->n_params);
        k_upload(tr->m->ctx, tr->adam_v, v->data, tr->m->n_params);
        k_sync(tr->m->ctx); /* the mapped file closes below */
        st->step = step, st->epoch = epoch, st->index = index;
        st->loss_sum = loss_sum, st->loss_n = loss_n;
        tr->step = step;
        /* Loss scaling's state (absent from runs without it). */
        json_t *ls = json_object_get(j, "loss_scale");
        if (tr->cfg.loss_scaling && json_is_number(ls)) {
            tr->loss_scale = json_number_value(ls);
            tr->scale_good_steps = json_integer_value(json_object_get(j, "loss_scale_good_steps"));
            tr->skipped_steps = json_integer_value(json_object_get(j, "skipped_steps"));
        }
        rc = 0;
    }
    json_decref(j);
    st_close(f);
    return rc;
}

/* metrics.jsonl keeps the lines of steps up to `step` (a resumed run
 * rewrites what came after its checkpoint). */
static FILE *open_metrics(const char *out, int64_t step)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    snprintf(tmp, sizeof tmp, "%s.rewrite", path);
    FILE *in = fopen(path, "r");
    if (in) {
        FILE *o = fopen(tmp, "w");
        char *line = NULL;
        size_t cap = 0;
        while (o && getline(&line, &cap, in) > 0) {
            json_t *j = json_loads(line, 0, NULL);
            json_int_t s = j ? json_integer_value(json_object_get(j, "step")) : 0;
            if (j && s <= step)
                fputs(line, o);
            json_decref(j);
        }
        free(line);
        fclose(in);
        if (o) {
            fclose(o);
            rename(tmp, path);
        }
    }
    return fopen(path, "a");
}

static double validate(struct trainer *tr, struct loader *val, int64_t n_batches)
{
    double sum = 0;
    int64_t n = 0;
    if (loader_seek(val, 0, 0) != 0)
        return NAN;
    for (int64_t i = 0; i < n_batches; i++) {
        const struct loader_batch *b;
        if (loader_next(val, &b) != 0)
            return NAN;
        sum += trainer_validation_loss(tr, b->x, b->labels, b->records, b->n) * b->n;
        n += b->n;
    }
    return n ? sum / n : NAN;
}

static void log_step(FILE *metrics, struct tfevents *tb, const struct state *st, double loss, double lr,
                     double gnorm, double steps_per_s, double images_per_s, int64_t mem)
{
    log_info("step %lld epoch %lld loss %.5f lr %.3g grad-norm %.4f %.2f steps/s %.1f img/s mem %.1f MB",
             (long long)st->step, (long long)st->epoch, loss, lr, gnorm, steps_per_s, images_per_s, mem / 1e6);
    json_t *j = json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "step", (json_int_t)st->step, "epoch",
                          (json_int_t)st->epoch, "loss", loss, "lr", lr, "grad_norm", gnorm, "steps_per_s",
                          steps_per_s, "images_per_s", images_per_s, "time", now());
    char *text = j ? json_to_string(j) : NULL;
    if (metrics && text) {
        fprintf(metrics, "%s\n", text);
        fflush(metrics);
    }
    free(text);
    json_decref(j);
    if (tb) {
        double t = now();
        tfevents_scalar(tb, "train/loss", st->step, t, (float)loss);
        tfevents_scalar(tb, "train/lr", st->step, t, (float)lr);
        tfevents_scalar(tb, "train/grad_norm", st->step, t, (float)gnorm);
        tfevents_scalar(tb, "train/images_per_s", st->step, t, (float)images_per_s);
        tfevents_flush(tb);
    }
}

/* Samples during training: one image per label from the EMA weights (or the
 * raw ones without EMA), at a fixed seed so grids compare across steps. */
struct samples {
    struct encoder enc;
    struct sampler s;
    struct dit_model m;
    int *labels, n, guided, made;
    float cfg;
};

static int samples_setup(struct samples *sp, const struct options *o, const struct dit_config *cfg, enum kdtype dt,
                         struct kctx *ctx, int flow)
{
    memset(sp, 0, sizeof *sp);
    if (!encoder_identity[0] || encoder_open(&sp->enc, encoder_identity) != 0 || !sp->enc.decode) {
        err_set("--sample-every: cannot decode samples of latents made by encoder '%s'", encoder_identity);
        return -1;
    }
    sp->labels = malloc(64 * sizeof *sp->labels);
    if (!sp->labels)
        return -1;
    if (o->sample_labels) {
        char *copy = strdup(o->sample_labels);
        for (char *tok = strtok(copy, ","); tok && sp->n < 64; tok = strtok(NULL, ",")) {
            char *end;
            long v = strtol(tok, &end, 10);
            if (end == tok || *end || v < 0 || v >= cfg->num_classes) {
                err_set("--sample-class-labels: '%s' is not a class of 0..%d", tok, cfg->num_classes - 1);
                free(copy);
                return -1;
            }
            sp->labels[sp->n++] = (int)v;
        }
        free(copy);
    } else {
        for (; sp->n < 8 && sp->n < cfg->num_classes; sp->n++)
            sp->labels[sp->n] = sp->n;
    }
    struct sampler_options so = {0};
    so.shift = flow ? flow_resolution_shift(cfg->input_size, cfg->input_size) : 0;
    int steps = o->sample_steps ? o->sample_steps : flow ? 28 : 50;
    if (sampler_init(&sp->s, flow ? SAMPLER_EULER : SAMPLER_DDIM, steps, &so) != 0)
        return -1;
    sp->cfg = cfg->class_dropout_prob > 0 ? (float)o->sample_cfg : 1.0f;
    sp->guided = cfg->in_channels < 3 ? cfg->in_channels : 3; /* as DiT's sample.py */
    int batch = sp->n < 16 ? sp->n : 16;
    return dit_model_create(&sp->m, cfg, ctx, sp->cfg != 1.0f ? 2 * batch : batch, DIT_MEM_INFERENCE, dt);
}

/* What to change when the model or its optimizer state did not fit. */
static const char *memory_hint(const struct options *o, const char *err)
{
    if (!strstr(err, "out of GPU memory") && !strstr(err, "out of memory"))
        return "";
    if (!o->checkpointing)
        return " (--gradient-checkpointing keeps one block's activations at a time; a smaller "
               "--train-batch-size with --gradient-accumulation-steps keeps the effective batch)";
    return " (try a smaller --train-batch-size with --gradient-accumulation-steps to keep the "
           "effective batch)";
}

static int samples_make(struct samples *sp, const struct options *o, const struct trainer *tr,
                        struct tfevents *tb, int64_t step)
{
    const struct dit_config *cfg = &sp->m.cfg;
    dit_weights_set(&sp->m, tr->ema.data ? tr->ema : tr->m->params);
    const int L = cfg->input_size, W = L * sp->enc.factor;
    const int64_t per = (int64_t)cfg->in_channels * L * L;
    float *lat = malloc((size_t)(sp->n * per) * sizeof *lat);
    uint8_t **img = calloc((size_t)sp->n, sizeof *img);
    struct generate_options go = {sp->cfg, sp->guided, (uint64_t)o->seed, NULL, NULL};
    int rc = lat && img ? dit_generate(&sp->m, &sp->s, sp->labels, sp->n, &go, lat) : -1;
    for (int k = 0; rc == 0 && k < sp->n; k++)
        rc = !(img[k] = malloc((size_t)W * W * 3)) || sp->enc.decode(&sp->enc, lat + k * per, W, W, img[k]);
    uint8_t *grid = NULL;
    int gw, gh;
    const uint8_t bg[3] = {255, 255, 255};
    if (rc == 0)
        rc = image_grid_rgb8((const uint8_t *const *)img, sp->n, W, W, sp->n < 8 ? sp->n : 8, 2, bg, &grid, &gw, &gh);
    char dir[4096], path[4200], text[256];
    snprintf(dir, sizeof dir, "%s/samples", o->output);
    snprintf(path, sizeof path, "%s/step-%07lld.png", dir, (long long)step);
    snprintf(text, sizeof text, "dit-train step %lld, seed %lld, %s %d steps, cfg %g", (long long)step,
             (long long)o->seed, sp->s.kind == SAMPLER_EULER ? "euler" : "ddim", sampler_num_steps(&sp->s),
             sp->cfg);
    struct png_text pt = {"parameters", text};
    if (rc == 0 && (mkdir(dir, 0777) == 0 || errno == EEXIST))
        rc = png_write_rgb8(path, grid, gw, gh, &pt, 1);
    if (rc == 0 && tb) {
        void *png;
        size_t size;
        rc = png_encode_rgb8(grid, gw, gh, &pt, 1, &png, &size);
        if (rc == 0) {
            rc = tfevents_image(tb, "samples", step, now(), gw, gh, 3, png, size);
            free(png);
        }
    }
    if (rc == 0)
        log_info("samples: %s", path);
    for (int k = 0; img && k < sp->n; k++)
        free(img[k]);
    free(img), free(lat), free(grid);
    return rc;
}

static void samples_free(struct samples *sp)
{
    dit_model_free(&sp->m);
    sampler_free(&sp->s);
    encoder_close(&sp->enc);
    free(sp->labels);
}

int main(int argc, char **argv)
{
    struct options o = {.model = "DiT-XL/2", .objective = "ddpm", .scheduler = "constant", .mixed = NULL,
                        .report_to = "none", .batch = 8, .accum = 1, .epochs = 1, .log_every = 100,
                        .ckpt_every = 1000, .seed = 0, .sample_cfg = 4.0, .lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .wd = 0.0, .clip = 0.0, .ema = 0.9999, .local_rank = -1};
    const struct opt opts[] = {
        {"data-path", 0, OPT_STRING, &o.data, "DIR", "the shard set to train on (dit-precompute's output)"},
        {"train-data-path", 0, OPT_STRING, &o.data, "DIR", "the same as --data-path"},
        {"val-data-path", 0, OPT_STRING, &o.val_data, "DIR", "a shard set for the validation loss"},
        {"output-dir", 'o', OPT_STRING, &o.output, "DIR", "checkpoints, metrics and logs go here"},
        {"results-dir", 0, OPT_STRING, &o.output, "DIR", "the same as --output-dir"},
        {"model", 0, OPT_STRING, &o.model, "NAME", "DiT-S/2 ... DiT-XL/8 (DiT-XL/2)"},
        {"pretrained-model-path", 0, OPT_STRING, &o.pretrained, "PATH", "start from a model directory (diffusers or a checkpoint's transformer/)"},
        {"num-classes", 0, OPT_INT, &o.num_classes, "N", "class count (default: from the labels)"},
        {"depth", 0, OPT_INT, &o.depth, "N", "override the model's depth (small experiments)"},
        {"hidden-size", 0, OPT_INT, &o.hidden, "N", "override the model's hidden size"},
        {"num-heads", 0, OPT_INT, &o.heads, "N", "override the model's attention heads"},
        {"image-size", 0, OPT_INT, &o.image_size, "PX", "checked against the data's latents and encoder"},
        {"objective", 0, OPT_STRING, &o.objective, "NAME", "ddpm (DiT's) or flow"},
        {"learning-rate", 0, OPT_DOUBLE, &o.lr, "LR", "1e-4"},
        {"adam-beta1", 0, OPT_DOUBLE, &o.beta1, "B1", "0.9"},
        {"adam-beta2", 0, OPT_DOUBLE, &o.beta2, "B2", "0.999"},
        {"adam-epsilon", 0, OPT_DOUBLE, &o.eps, "EPS", "1e-8"},
        {"weight-decay", 0, OPT_DOUBLE, &o.wd, "WD", "AdamW's decoupled weight decay (0, as DiT)"},
        {"lr-scheduler", 0, OPT_STRING, &o.scheduler, "NAME", "constant (default), linear or cosine"},
        {"num-warmup-steps", 0, OPT_INT64, &o.warmup, "N", "linear warmup steps (0)"},
        {"num-epochs", 0, OPT_INT, &o.epochs, "N", "epochs (1), unless --max-steps"},
        {"epochs", 0, OPT_INT, &o.epochs, "N", "the same as --num-epochs"},
        {"max-steps", 0, OPT_INT64, &o.max_steps, "N", "optimizer steps; wins over --num-epochs"},
        {"train-batch-size", 0, OPT_INT, &o.batch, "N", "samples per micro-batch (8)"},
        {"gradient-accumulation-steps", 0, OPT_INT, &o.accum, "N", "micro-batches per optimizer step (1)"},
        {"max-grad-norm", 0, OPT_DOUBLE, &o.clip, "X", "clip the gradient norm to X (0: off, as DiT)"},
        {"ema-decay", 0, OPT_DOUBLE, &o.ema, "D", "EMA decay (0.9999; 0: no EMA)"},
        {"mixed-precision", 0, OPT_STRING, &o.mixed, "MODE", "no, fp16 or bf16 (default: bf16 on a GPU; the CPU computes in fp32)"},
        {"seed", 0, OPT_INT64, &o.seed, "N", "the seed of every random stream (0)"},
        {"global-seed", 0, OPT_INT64, &o.seed, "N", "the same as --seed"},
        {"gradient-checkpointing", 0, OPT_FLAG, &o.checkpointing, NULL, "recompute blocks in backward to save memory"},
        {"log-every", 0, OPT_INT64, &o.log_every, "N", "log every N steps (100)"},
        {"ckpt-every", 0, OPT_INT64, &o.ckpt_every, "N", "checkpoint every N steps (1000)"},
        {"checkpointing-steps", 0, OPT_INT64, &o.ckpt_every, "N", "the same as --ckpt-every"},
        {"checkpoints-total-limit", 0, OPT_INT, &o.limit, "N", "keep the newest N checkpoints"},
        {"resume", 0, OPT_STRING, &o.resume, "PATH|latest", "continue from a checkpoint"},
        {"resume-from-checkpoint", 0, OPT_STRING, &o.resume, "PATH|latest", "the same as --resume"},
        {"report-to", 0, OPT_STRING, &o.report_to, "WHERE", "none (default), tensorboard; wandb is refused"},
        {"eval-every", 0, OPT_INT64, &o.eval_every, "N", "validation loss every N steps (needs --val-data-path)"},
        {"sample-every", 0, OPT_INT64, &o.sample_every, "N", "a grid of samples every N steps (samples/, TensorBoard)"},
        {"sample-class-labels", 0, OPT_STRING, &o.sample_labels, "LIST", "classes to sample (default: the first 8)"},
        {"sample-steps", 0, OPT_INT, &o.sample_steps, "N", "sampler steps (50 DDIM for ddpm, 28 Euler for flow)"},
        {"sample-cfg-scale", 0, OPT_DOUBLE, &o.sample_cfg, "S", "guidance of the samples (4.0)"},
        {"threads", 0, OPT_INT, &o.threads, "N", "compute threads (default: all cores)"},
        {"num-workers", 0, OPT_INT, &o.threads, "N", "the same as --threads (data is decoded before training)"},
        {"local-rank", 0, OPT_INT, &o.local_rank, "N", "accepted for launchers; one process trains"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-train", "[options] --data-path SHARDS --output-dir DIR",
                                  "Train a class-conditional DiT on a shard set."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first < argc)
        opt_usage_error("unexpected operand '%s'", argv[first]);
    if (!o.data || !o.output)
        opt_usage_error("--data-path and --output-dir are required");
    if (o.batch <= 0 || o.accum <= 0 || o.epochs <= 0 || o.max_steps < 0 || o.log_every <= 0 ||
        o.ckpt_every <= 0 || o.threads < 0 || o.limit < 0 || o.eval_every < 0 || o.warmup < 0)
        opt_usage_error("batch size, accumulation, epochs, log/checkpoint intervals must be positive");
    if (o.local_rank > 0)
        opt_usage_error("--local-rank %d: this build trains in one process (multi-GPU is being built)", o.local_rank);
    if (strcmp(o.report_to, "wandb") == 0 || strcmp(o.report_to, "all") == 0)
        opt_usage_error("--report-to %s: wandb has no offline writer here; use tensorboard", o.report_to);
    if (strcmp(o.report_to, "none") && strcmp(o.report_to, "tensorboard"))
        opt_usage_error("--report-to: '%s' is not none or tensorboard", o.report_to);
    if (o.eval_every > 0 && !o.val_data)
        opt_usage_error("--eval-every needs --val-data-path");
    struct trainer_config tc = {.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.wd,
                                .warmup_steps = o.warmup, .grad_accum = o.accum, .max_grad_norm = o.clip,
                                .ema_decay = o.ema, .seed = (uint64_t)o.seed};
    if (strcmp(o.objective, "ddpm") == 0)
        tc.objective = OBJECTIVE_DDPM;
    else if (strcmp(o.objective, "flow") == 0)
        tc.objective = OBJECTIVE_FLOW;
    else
        opt_usage_error("--objective: '%s' is not ddpm or flow", o.objective);
    if (lr_schedule_parse(o.scheduler, &tc.schedule) != 0)
        opt_usage_error("--lr-scheduler: '%s' is not constant, linear or cosine", o.scheduler);

    enum device_kind dev = device_select(opt_device());
    /* Master weights and optimizer state are f32 always; mixed precision is
     * the dtype of the activations and of the weights the products read
     * (bf16 on a GPU unless asked otherwise), fp16 with loss scaling. */
    enum kdtype cdt;
    int cpu_note = kdtype_for_compute(o.mixed, dev, &cdt);
    if (cpu_note < 0)
        opt_usage_error("--mixed-precision: %s", err_get());
    if (cpu_note)
        log_info("--mixed-precision %s: the CPU backend computes in fp32", o.mixed);
    tc.loss_scaling = cdt == KDT_F16;

    /* Data. */
    struct shardset *data = shardset_open(o.data);
    if (!data)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    struct loader_config lc = {o.batch, (uint64_t)o.seed, "label"};
    struct loader *loader = loader_open(data, &lc);
    if (!loader)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    int C, H, W;
    loader_shape(loader, &C, &H, &W);
    char why[256];
    if (loader_count_mismatched(loader, C, H, W, why, sizeof why) > 0 || H != W)
        die(DIT_EXIT_FAILURE, "%s: a class-conditional DiT trains on one square latent size; %s",
            o.data, H != W ? "the latents are not square" : why);
    int factor = encoder_factor(data);
    if (o.image_size && factor && o.image_size != H * factor)
        die(DIT_EXIT_FAILURE, "--image-size %d, but %s holds %dx%d latents of a factor-%d encoder (%d px)",
            o.image_size, o.data, H, W, factor, H * factor);

    /* Model. */
    struct dit_config cfg;
    float *pretrained = NULL;
    if (o.pretrained) {
        if (dit_load_dir(o.pretrained, &cfg, &pretrained) != 0)
            die(DIT_EXIT_FAILURE, "%s", err_get());
    } else {
        if (dit_config_by_name(&cfg, o.model, H) != 0)
            opt_usage_error("%s", err_get());
        /* The paper's sizes take 4-channel VAE latents; the channels follow
         * the data (3 for the pixel encoder). */
        cfg.in_channels = C;
        if (o.depth)
            cfg.depth = o.depth;
        if (o.hidden)
            cfg.hidden_size = o.hidden;
        if (o.heads)
            cfg.num_heads = o.heads;
    }
    int max_label = loader_max_label(loader);
    if (!o.pretrained)
        cfg.num_classes = o.num_classes ? o.num_classes : max_label + 1;
    else if (o.num_classes && o.num_classes != cfg.num_classes)
        die(DIT_EXIT_FAILURE, "--num-classes %d, but %s has %d", o.num_classes, o.pretrained, cfg.num_classes);
    if (max_label >= cfg.num_classes)
        die(DIT_EXIT_FAILURE, "%s: label %d is outside the model's %d classes", o.data, max_label, cfg.num_classes);
    if (cfg.in_channels != C || cfg.input_size != H)
        die(DIT_EXIT_FAILURE, "%s holds %dx%dx%d latents, the model takes %dx%dx%d", o.data, C, H, W,
            cfg.in_channels, cfg.input_size, cfg.input_size);
    if (dit_config_check(&cfg) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());

    struct kctx ctx;
    if (kctx_init(&ctx, dev, o.threads) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    struct dit_model model;
    if (dit_model_create(&model, &cfg, &ctx, o.batch, o.checkpointing ? DIT_MEM_CHECKPOINT : DIT_MEM_TRAIN,
                         cdt) != 0)
        die(DIT_EXIT_FAILURE, "%s%s", err_get(), memory_hint(&o, err_get()));
    if (!pretrained) {
        pretrained = malloc((size_t)model.n_params * sizeof *pretrained);
        if (!pretrained)
            die(DIT_EXIT_FAILURE, "out of memory for %lld parameters", (long long)model.n_params);
        dit_init(&cfg, pretrained, (uint64_t)o.seed);
    }
    dit_params_upload(&model, pretrained);
    free(pretrained);

    int64_t per_epoch = loader_batches_per_epoch(loader);
    int64_t steps_per_epoch = (per_epoch + o.accum - 1) / o.accum;
    tc.total_steps = o.max_steps ? o.max_steps : steps_per_epoch * o.epochs;
    struct trainer tr;
    if (trainer_init(&tr, &model, &tc) != 0)
        die(DIT_EXIT_FAILURE, "%s%s", err_get(), memory_hint(&o, err_get()));

    struct state st = {0, 0, 0, 0.0, 0};
    if (o.resume) {
        char *dir = NULL;
        int64_t s;
        if (strcmp(o.resume, "latest") == 0) {
            int rc = checkpoint_latest(o.output, &dir, &s);
            if (rc < 0)
                die(DIT_EXIT_FAILURE, "%s", err_get());
            if (rc == 1)
                log_info("--resume latest: no checkpoint in %s yet, starting from step 0", o.output);
        } else {
            dir = strdup(o.resume);
        }
        if (dir) {
            if (load_checkpoint(dir, &tr, &st) != 0 || loader_seek(loader, st.epoch, st.index) != 0)
                die(DIT_EXIT_FAILURE, "%s", err_get());
            log_info("resumed from %s: step %lld, epoch %lld, batch %lld", dir, (long long)st.step,
                     (long long)st.epoch, (long long)st.index);
            free(dir);
        }
    }

    int64_t pbytes, abytes;
    dit_model_sizes(&model, &pbytes, &abytes);
    int64_t state_bytes = model.n_params * 4 * (tr.ema.data ? 3 : 2);
    int64_t mem_now, mem_peak;
    k_mem_usage(&ctx, &mem_now, &mem_peak);
    log_info("%s: %lld parameters; weights and gradients %.1f MB, AdamW moments%s %.1f MB, "
             "activations %.1f MB (%s%s); %.1f MB allocated on the %s, peak %.1f MB",
             o.model, (long long)model.n_params, pbytes / 1e6, tr.ema.data ? " and EMA" : "", state_bytes / 1e6,
             abytes / 1e6, kdtype_name(cdt), o.checkpointing ? ", gradient checkpointing" : "", mem_now / 1e6,
             device_name(dev), mem_peak / 1e6);
    log_info("%zu records, %lld batches of up to %d per epoch, %lld optimizer steps", loader_records(loader),
             (long long)per_epoch, o.batch, (long long)tc.total_steps);

    struct shardset *val_set = NULL;
    struct loader *val = NULL;
    if (o.val_data) {
        struct loader_config vc = {o.batch, 0, "label"};
        if (!(val_set = shardset_open(o.val_data)) || !(val = loader_open(val_set, &vc)))
            die(DIT_EXIT_FAILURE, "%s", err_get());
    }
    if (mkdir(o.output, 0777) != 0 && errno != EEXIST)
        die(DIT_EXIT_FAILURE, "%s: %s", o.output, strerror(errno));
    FILE *metrics = open_metrics(o.output, st.step);
    if (!metrics)
        die(DIT_EXIT_FAILURE, "%s/metrics.jsonl: %s", o.output, strerror(errno));
    struct tfevents *tb = NULL;
    if (strcmp(o.report_to, "tensorboard") == 0) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/logs", o.output);
        mkdir(dir, 0777);
        if (!(tb = tfevents_open(dir)))
            die(DIT_EXIT_FAILURE, "%s", err_get());
    }
    struct samples sp;
    int sampling = o.sample_every > 0;
    if (sampling && samples_setup(&sp, &o, &cfg, model.dt, &ctx, tc.objective == OBJECTIVE_FLOW) != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    /* Past a file-size limit, a write should fail (and name its file) rather
     * than kill the run: the checkpoint then fails cleanly. */
    signal(SIGXFSZ, SIG_IGN);

    double t_log = now();
    int64_t images = 0, steps_since = 0;
    int status = DIT_EXIT_OK;
    while (st.step < tc.total_steps) {
        double step_loss = 0;
        int step_n = 0;
        for (int a = 0; a < o.accum; a++) {
            const struct loader_batch *b;
            if (loader_next(loader, &b) != 0)
                die(DIT_EXIT_FAILURE, "%s", err_get());
            double loss = trainer_micro_step(&tr, b->x, b->labels, b->records, b->n, b->epoch);
            if (!isfinite(loss)) {
                log_error("loss is %s at step %lld (epoch %lld, batch %lld): stopping; the last checkpoint in %s "
                          "is intact", isnan(loss) ? "NaN" : "infinite", (long long)st.step + 1,
                          (long long)b->epoch, (long long)b->index, o.output);
                status = DIT_EXIT_FAILURE;
                goto finish;
            }
            step_loss += loss * b->n;
            step_n += b->n;
            st.epoch = b->index + 1 == per_epoch ? b->epoch + 1 : b->epoch;
            st.index = b->index + 1 == per_epoch ? 0 : b->index + 1;
        }
        double gnorm = trainer_optimizer_step(&tr);
        if (!isfinite(gnorm)) {
            log_warn("step %lld: the fp16 gradients overflowed; update skipped, loss scale now %g",
                     (long long)tr.step, tr.loss_scale);
            gnorm = 0.0; /* logs stay JSON */
        }
        st.step = tr.step;
        st.loss_sum += step_loss / step_n;
        st.loss_n++;
        images += step_n;
        steps_since++;
        if (st.step % o.log_every == 0 || st.step == tc.total_steps) {
            double t = now(), dt = t - t_log;
            log_step(metrics, tb, &st, st.loss_sum / st.loss_n, tr.last_lr, gnorm, steps_since / dt, images / dt, mem_peak);
            t_log = t, st.loss_sum = 0, st.loss_n = 0, images = 0, steps_since = 0;
        }
        if (val && o.eval_every && st.step % o.eval_every == 0) {
            double vl = validate(&tr, val, loader_batches_per_epoch(val));
            log_info("step %lld validation loss %.5f", (long long)st.step, vl);
            fprintf(metrics, "{\"step\":%lld,\"val_loss\":%.9g}\n", (long long)st.step, vl);
            fflush(metrics);
            if (tb)
                tfevents_scalar(tb, "val/loss", st.step, now(), (float)vl);
        }
        if (sampling && st.step % o.sample_every == 0 && samples_make(&sp, &o, &tr, tb, st.step) != 0)
            die(DIT_EXIT_FAILURE, "samples at step %lld: %s", (long long)st.step, err_get());
        if (st.step % o.ckpt_every == 0 && st.step < tc.total_steps && save_checkpoint(&o, &tr, &st) != 0)
            die(DIT_EXIT_FAILURE, "checkpoint at step %lld failed, the previous ones are intact: %s",
                (long long)st.step, err_get());
        if (stop_requested) {
            log_info("signal received: checkpointing at step %lld and stopping", (long long)st.step);
            break;
        }
    }
    if (save_checkpoint(&o, &tr, &st) != 0)
        die(DIT_EXIT_FAILURE, "final checkpoint at step %lld failed, the previous ones are intact: %s",
            (long long)st.step, err_get());
finish:
    if (sampling)
        samples_free(&sp);
    if (tb)
        tfevents_close(tb);
    fclose(metrics);
    loader_close(val);
    shardset_close(val_set);
    trainer_free(&tr);
    dit_model_free(&model);
    kctx_free(&ctx);
    loader_close(loader);
    shardset_close(data);
    return status;
}
