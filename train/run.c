/* train_run: the training loop and everything around it for any denoiser
 * the registry knows. */
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/run_dir.h"
#include "train/run_identity.h"
#include "train/samples.h"
#include "data/loader.h"
#include "formats/checkpoint.h"
#include "formats/shardset.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/safetensors.h"
#include "models/registry.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Everything a run holds, released in one place. */
struct run {
    const struct train_config *cfg;
    struct shardset *data, *val_set;
    struct loader *loader, *val;
    struct denoiser_config mc;
    struct kctx ctx;
    int have_ctx;
    struct denoiser model;
    struct nn_lora lora;          /* --use-lora: the adapter that trains */
    struct nn_lora_binding bind;  /* and its place on the model's layers */
    int have_lora;
    struct trainer tr;
    struct metrics mx;
    struct samples sp;
    int sampling;
    float *drawn;      /* [batch, C, H, W]: latents drawn from stored distributions */
    int text_len, text_dim; /* the records' text embeddings [L, D]; 0: a class-labelled set */
    enum objective tr_objective; /* the run's, known before the model is made */
    char encoder[128]; /* the identity of the encoder that made the latents */
    char text_encoder[1024]; /* and of the text encoder of the captions ("" without text) */
    int factor;        /* its spatial factor, when the identity says */
    struct run_dir dir; /* the output directory, locked for the run */
    char weights_hash[33]; /* of the f32 weights the run starts from */
    json_t *identity;  /* what determines the result (train/run_identity.h) */
};

static void run_free(struct run *r)
{
    if (r->sampling)
        samples_free(&r->sp);
    metrics_close(&r->mx);
    loader_close(r->val);
    shardset_close(r->val_set);
    trainer_free(&r->tr);
    if (r->have_lora) {
        nn_lora_unbind(&r->bind);
        nn_lora_free(&r->lora);
    }
    denoiser_free(&r->model);
    if (r->have_ctx)
        kctx_free(&r->ctx);
    denoiser_config_free(&r->mc);
    loader_close(r->loader);
    shardset_close(r->data);
    free(r->drawn);
    json_decref(r->identity);
    run_dir_unlock(&r->dir);
}

static int has_field(const struct shardset *s, const char *name)
{
    for (size_t f = 0; s->n_records > 0 && f < s->records[0].nfields; f++)
        if (strcmp(s->records[0].fields[f], name) == 0)
            return 1;
    return 0;
}

/* The fields to load: the latent, its std where the set stores the
 * distribution (dit-precompute --latent-mode dist of a VAE), and the
 * caption's text embedding where the set has one. (F-Lite attends to
 * every text token, so text_mask is not loaded.) */
static const char *const *latent_fields(struct shardset *s)
{
    static const char *const lists[4][4] = {
        {"latent", NULL}, {"latent", "latent_std", NULL}, {"latent", "text", NULL},
        {"latent", "latent_std", "text", NULL}};
    return lists[has_field(s, "latent_std") + 2 * has_field(s, "text")];
}

/* The model takes this batch's latent size (its bucket's). */
static int batch_size(struct run *r, const struct loader_batch *b, const char *where)
{
    const struct loader_field *f = &b->fields[0];
    if (f->shape[0] != r->model.info.in_channels) {
        err_set("%s: batch %lld holds %lld-channel latents, the model takes %d (another encoder?)", where,
                (long long)b->index, (long long)f->shape[0], r->model.info.in_channels);
        return -1;
    }
    if (denoiser_set_size(&r->model, (int)f->shape[1], (int)f->shape[2]) != 0) {
        err_prefix("%s, bucket of batch %lld", where, (long long)b->index);
        return -1;
    }
    return 0;
}

/* A batch's condition: its labels, or its text embeddings. */
static struct cond batch_cond(const struct run *r, const struct loader_batch *b)
{
    const struct loader_field *text = loader_batch_field(b, "text");
    if (!text)
        return (struct cond){.labels = b->labels};
    return (struct cond){.text = text->data, .text_len = r->text_len, .text_dim = r->text_dim};
}

/* A batch's latents: as stored, or drawn from the stored distribution. */
static const float *batch_latents(struct run *r, const struct loader_batch *b, int validation)
{
    const struct loader_field *std = loader_batch_field(b, "latent_std");
    if (!std)
        return b->fields[0].data;
    trainer_draw_latents(&r->tr, r->drawn, b->fields[0].data, std->data, b->records, b->n,
                         b->fields[0].per_sample, b->epoch, validation);
    return r->drawn;
}

static int fail(struct run *r)
{
    log_error("%s", err_get());
    run_dir_abandon(&r->dir);
    run_free(r);
    return DIT_EXIT_FAILURE;
}

/* Which encoder made a shard set's latents (pixel/1 s2d=F gives F). */
static void read_encoder(struct run *r)
{
    const struct st_file *f = shardset_shard(r->data, 0);
    const char *enc = f ? st_meta_get(f, "encoder") : NULL;
    if (enc)
        snprintf(r->encoder, sizeof r->encoder, "%s", enc);
    /* The text encoder is in the preprocessing identity (dit-shard(5)). */
    const char *pre = f ? st_meta_get(f, "preprocess") : NULL;
    json_t *pj = pre ? json_loads(pre, 0, NULL) : NULL;
    const char *te = json_string_value(json_object_get(pj, "text_encoder"));
    snprintf(r->text_encoder, sizeof r->text_encoder, "%s", te ? te : "");
    json_decref(pj);
    if (!enc || sscanf(enc, "pixel/1 s2d=%d", &r->factor) != 1)
        r->factor = 0;
}

/* Appends what to change when the model or its optimizer state did not fit
 * (the message is copied first: err_set() writes over err_get()'s buffer). */
static void add_memory_hint(const struct train_config *c);

/* What to change when the model or its optimizer state did not fit: the
 * remedies not in use yet, the cheapest in results first. */
static const char *memory_hint(const struct train_config *c, const char *err)
{
    static char hint[768];
    if (!strstr(err, "out of GPU memory") && !strstr(err, "out of memory"))
        return "";
    const int frozen = c->use_lora && c->train_only_lora;
    const char *opt = c->tc.optimizer ? c->tc.optimizer : "adamw";
    snprintf(hint, sizeof hint, " (try %s%s%s%s%s%sa smaller --train-batch-size with --gradient-accumulation-steps "
             "to keep the effective batch)",
             c->checkpointing ? "" : "--gradient-checkpointing (one block's activations at a time); ",
             !frozen && c->base == NN_BASE_COMPUTE && c->dtype != KDT_F32
                 ? "--base-weight-dtype fp32 (no compute copy of the linears); " : "",
             !frozen && !c->grads_bf16 ? "--grad-accum-dtype bf16 (half the linears' gradient bytes); " : "",
             !frozen && strcmp(opt, "adamw8bit") ? "--use-8bit-adam (a quarter of AdamW's state); " : "",
             !frozen && c->tc.ema_decay > 0 ? "--ema-decay 0 (no f32 EMA copy); " : "",
             frozen && c->base != NN_BASE_FP8 ? "--base-weight-dtype fp8 (the frozen linears in a byte each); "
             : !c->use_lora ? "--use-lora --train-only-lora (the model frozen); " : "");
    return hint;
}

static void add_memory_hint(const struct train_config *c)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", err_get());
    err_set("%s%s", msg, memory_hint(c, msg));
}

static int open_data(struct run *r)
{
    const struct train_config *c = r->cfg;
    if (!(r->data = shardset_open(c->data)))
        return -1;
    const int text = has_field(r->data, "text");
    struct loader_config lc = {c->batch, c->tc.seed, text ? NULL : "label", latent_fields(r->data)};
    if (!(r->loader = loader_open(r->data, &lc)))
        return -1;
    if (text) {
        const struct st_tensor *t = shardset_tensor(r->data, 0, "text");
        if (!t)
            return -1;
        if (t->ndim != 2) {
            err_set("%s: the text embeddings are not [tokens, width]", c->data);
            return -1;
        }
        r->text_len = (int)t->shape[0];
        r->text_dim = (int)t->shape[1];
    }
    int C, H, W;
    char why[256];
    if (text) {
        /* Resolution buckets: a text-to-image model (F-Lite) takes every
         * size in one run, planned for the largest; the channels agree. */
        loader_max_shape(r->loader, &C, &H, &W);
        for (size_t i = 0; i < loader_buckets(r->loader); i++) {
            int bc, bh, bw;
            const char *name = loader_bucket_shape(r->loader, i, &bc, &bh, &bw);
            if (bc != C) {
                err_set("%s: bucket %s has %d-channel latents, others %d", c->data, name, bc, C);
                return -1;
            }
        }
    } else {
        loader_shape(r->loader, &C, &H, &W);
        if (loader_count_mismatched(r->loader, C, H, W, why, sizeof why) > 0 || H != W) {
            err_set("%s: a class-conditional DiT trains on one square latent size; %s", c->data,
                    H != W ? "the latents are not square" : why);
            return -1;
        }
    }
    read_encoder(r);
    if (c->image_size && r->factor && c->image_size != H * r->factor) {
        err_set("--image-size %d, but %s holds %dx%d latents of a factor-%d encoder (%d px)", c->image_size,
                c->data, H, W, r->factor, H * r->factor);
        return -1;
    }
    if (c->val_data) {
        if (!(r->val_set = shardset_open(c->val_data)))
            return -1;
        if (has_field(r->val_set, "text") != text) {
            err_set("%s %s text embeddings and %s %s", c->data, text ? "holds" : "holds no", c->val_data,
                    text ? "none" : "does");
            return -1;
        }
        struct loader_config vc = {c->eval_batch ? c->eval_batch : c->batch, 0, text ? NULL : "label",
                                   latent_fields(r->val_set)};
        if (!(r->val = loader_open(r->val_set, &vc)))
            return -1;
    }
    const int most = c->eval_batch > c->batch ? c->eval_batch : c->batch;
    if (!(r->drawn = malloc((size_t)most * C * H * W * sizeof(float)))) {
        err_set("out of memory for a batch of %d latents", c->batch);
        return -1;
    }
    return 0;
}

/* The configuration from --pretrained-model-path or the preset, checked
 * against the data; *pretrained gets the weights of a model dir. */
static int model_config(struct run *r, float **pretrained)
{
    const struct train_config *c = r->cfg;
    int C, H, W;
    if (r->text_len)
        loader_max_shape(r->loader, &C, &H, &W);
    else
        loader_shape(r->loader, &C, &H, &W);
    int max_label = loader_max_label(r->loader);
    *pretrained = NULL;
    struct denoiser_spec spec = {C, H, W, c->num_classes ? c->num_classes : max_label + 1, c->depth, c->hidden,
                                 c->heads, r->text_len, r->text_dim};
    if (c->pretrained ? denoiser_config_load_dir(&r->mc, c->pretrained, pretrained)
                      : denoiser_config_preset(&r->mc, c->model, &spec))
        return -1;
    if (denoiser_config_fit(&r->mc, &spec) != 0) {
        err_prefix("%s", c->pretrained ? c->pretrained : c->model);
        return -1;
    }
    struct denoiser_info info;
    denoiser_config_info(&r->mc, &info);
    const char *model = c->pretrained ? c->pretrained : c->model;
    if ((info.cond == COND_TEXT) != (r->text_len > 0)) {
        err_set(info.cond == COND_TEXT ? "%s is a text-to-image model, but %s holds no text embeddings "
                                         "(dit-precompute --text-encoder)"
                                       : "%s is class-conditional, but %s holds text embeddings",
                model, c->data);
        return -1;
    }
    if (info.cond == COND_TEXT && info.text_dim != r->text_dim) {
        err_set("%s holds %d-wide text embeddings, %s takes %d", c->data, r->text_dim, model, info.text_dim);
        return -1;
    }
    if (r->tr_objective == OBJECTIVE_DDPM && !info.learned_sigma) {
        err_set("%s predicts no variance, which DiT's ddpm objective trains: use --objective flow", model);
        return -1;
    }
    if (c->tc.cond_dropout_set && info.cond != COND_TEXT) {
        err_set("--caption-dropout-prob is for text-to-image models; a DiT's class dropout is its "
                "configuration's");
        return -1;
    }
    if (c->pretrained && c->num_classes && c->num_classes != info.num_classes) {
        err_set("--num-classes %d, but %s has %d", c->num_classes, c->pretrained, info.num_classes);
        return -1;
    }
    if (info.cond == COND_LABELS && max_label >= info.num_classes) {
        err_set("%s: label %d is outside the model's %d classes", c->data, max_label, info.num_classes);
        return -1;
    }
    if (info.in_channels != C || info.height != H || info.width != W) {
        err_set("%s holds %dx%dx%d latents, the model takes %dx%dx%d", c->data, C, H, W, info.in_channels,
                info.height, info.width);
        return -1;
    }
    return 0;
}

static int create_model(struct run *r, struct trainer_config *tc)
{
    const struct train_config *c = r->cfg;
    float *pretrained;
    if (model_config(r, &pretrained) != 0)
        return -1;
    if (kctx_init(&r->ctx, c->device, c->threads) != 0)
        return -1;
    r->have_ctx = 1;
    int mem = c->checkpointing ? DENOISER_MEM_CHECKPOINT : DENOISER_MEM_TRAIN;
    mem |= DENOISER_MEM_BASE(c->base) | (c->grads_bf16 ? DENOISER_MEM_GRADS_BF16 : 0);
    if (c->use_lora && c->train_only_lora)
        mem |= DENOISER_MEM_FROZEN;
    if (denoiser_create(&r->model, &r->mc, &r->ctx, c->batch, (enum denoiser_memory)mem, c->dtype) != 0) {
        free(pretrained);
        add_memory_hint(c);
        return -1;
    }
    if (!pretrained) {
        pretrained = malloc((size_t)r->model.n_params * sizeof *pretrained);
        if (!pretrained) {
            err_set("out of memory for %lld parameters", (long long)r->model.n_params);
            return -1;
        }
        r->mc.kind->init(r->mc.impl, pretrained, c->tc.seed);
    }
    /* The weights the run starts from, for its identity: a resume of a
     * frozen model's LoRA run must start from the same base. */
    hash_hex(hash_buffer(pretrained, (size_t)r->model.n_params * sizeof *pretrained), r->weights_hash);
    denoiser_params_upload(&r->model, pretrained);
    free(pretrained);
    int64_t per_epoch = loader_batches_per_epoch(r->loader);
    int64_t steps_per_epoch = (per_epoch + tc->grad_accum - 1) / tc->grad_accum;
    tc->total_steps = c->max_steps ? c->max_steps : steps_per_epoch * c->epochs;
    if (trainer_init(&r->tr, &r->model, tc) != 0) {
        add_memory_hint(c);
        return -1;
    }
    if (!c->use_lora)
        return 0;
    if (train_lora_create(&r->lora, &r->bind, &r->model, &c->lora, c->tc.seed) != 0)
        return -1;
    r->have_lora = 1;
    if (trainer_add_lora(&r->tr, &r->lora, &r->bind) != 0) {
        add_memory_hint(c);
        return -1;
    }
    return 0;
}

static int resume(struct run *r, struct train_position *pos)
{
    const struct train_config *c = r->cfg;
    if (!c->resume)
        return 0;
    char *dir = NULL;
    int64_t s;
    if (strcmp(c->resume, "latest") == 0) {
        int rc = checkpoint_latest(c->output, &dir, &s);
        if (rc < 0)
            return -1;
        if (rc == 1)
            log_info("--resume latest: no checkpoint in %s yet, starting from step 0", c->output);
    } else {
        dir = strdup(c->resume);
    }
    if (!dir)
        return 0;
    /* The run it continues must be this one: the same settings that
     * determine the result (train/run_identity.h). */
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoint.json", dir);
    json_t *cj = json_read_file(path);
    int rc = !cj || run_identity_check(json_object_get(cj, "run"), r->identity, dir) != 0;
    json_decref(cj);
    if (rc) {
        free(dir);
        return -1;
    }
    rc = train_checkpoint_load(dir, &r->mc, &r->tr, pos) != 0 || loader_seek(r->loader, pos->epoch, pos->index);
    if (rc == 0)
        log_info("resumed from %s: step %lld, epoch %lld, batch %lld", dir, (long long)pos->step,
                 (long long)pos->epoch, (long long)pos->index);
    free(dir);
    return rc ? -1 : 0;
}

/* The weights' line: frozen or not, and where the linears live when that
 * is not the compute copy. */
static const char *weights_note(const struct run *r)
{
    static char note[128];
    const struct train_config *c = r->cfg;
    const int apart = nn_base_dtype(c->base, c->dtype) != c->dtype;
    if (!r->tr.base_trains)
        snprintf(note, sizeof note, " (frozen%s%s)", apart ? ", linears stored in " : "",
                 apart ? nn_base_name(c->base) : "");
    else
        snprintf(note, sizeof note, " and gradients%s%s", apart ? " (linears read from the fp32 master" : "",
                 c->grads_bf16 ? (apart ? ", their gradients in bf16)" : " (the linears' in bf16)") : apart ? ")" : "");
    return note;
}

static void report_sizes(struct run *r)
{
    const struct train_config *c = r->cfg;
    int64_t pbytes, abytes, mem_now, mem_peak;
    denoiser_sizes(&r->model, &pbytes, &abytes);
    int64_t state_bytes = optimizer_state_bytes(&r->tr.opt) + (r->tr.ema.data ? r->model.n_params * 4 : 0);
    k_mem_usage(&r->ctx, &mem_now, &mem_peak);
    if (r->have_lora) {
        const int64_t n = r->lora.table.total;
        int64_t lbytes = optimizer_state_bytes(&r->tr.lora_opt) + (r->tr.lora_ema.data ? n * 4 : 0);
        double ab = (double)nn_weights_bytes(n, r->lora.w.dt, 0), sb = (double)lbytes;
        const char *au = nn_bytes_unit(&ab), *su = nn_bytes_unit(&sb);
        log_info("LoRA: %zu modules, %lld trainable parameters (%.2f%% of the model's %lld)%s; adapter with "
                 "gradients %.2f %s, its %s state%s %.2f %s",
                 r->lora.n, (long long)n, 100.0 * (double)n / (double)r->model.n_params, (long long)r->model.n_params,
                 r->tr.base_trains ? ", the model's weights train too" : ", the model frozen", ab, au,
                 r->tr.lora_opt.kind->name, r->tr.lora_ema.data ? " and EMA" : "", sb, su);
    }
    log_info("%s: %lld parameters; weights%s %.1f MB, %s state%s %.1f MB, "
             "activations %.1f MB (%s%s); %.1f MB allocated on the %s, peak %.1f MB",
             c->pretrained ? c->pretrained : c->model, (long long)r->model.n_params,
             weights_note(r), pbytes / 1e6,
             r->tr.base_trains ? r->tr.opt.kind->name : "no optimizer", r->tr.ema.data ? " and EMA" : "",
             state_bytes / 1e6, abytes / 1e6, kdtype_name(r->model.dt),
             c->checkpointing ? ", gradient checkpointing" : "", mem_now / 1e6, device_name(c->device),
             mem_peak / 1e6);
    log_info("%zu records, %lld batches of up to %d per epoch, %lld optimizer steps", loader_records(r->loader),
             (long long)loader_batches_per_epoch(r->loader), c->batch, (long long)r->tr.cfg.total_steps);
}

static double validate(struct run *r, struct loader *val)
{
    double sum = 0;
    int64_t n = 0;
    if (loader_seek(val, 0, 0) != 0)
        return NAN;
    for (int64_t i = 0; i < loader_batches_per_epoch(val); i++) {
        const struct loader_batch *b;
        if (loader_next(val, &b) != 0)
            return NAN;
        struct cond cd = batch_cond(r, b);
        if (batch_size(r, b, r->cfg->val_data) != 0)
            return NAN;
        /* An evaluation batch larger than the model's planned one runs in
         * parts: every draw is by record, so the loss is the same. */
        const float *x = batch_latents(r, b, 1);
        const int64_t per = b->fields[0].per_sample, td = (int64_t)cd.text_len * cd.text_dim;
        for (int k = 0; k < b->n; k += r->model.B) {
            const int m = b->n - k < r->model.B ? b->n - k : r->model.B;
            struct cond part = cd;
            if (part.labels)
                part.labels += k;
            if (part.text)
                part.text += k * td;
            sum += trainer_validation_loss(&r->tr, x + k * per, &part, b->records + k, m) * m;
        }
        n += b->n;
    }
    return n ? sum / n : NAN;
}

static int save(struct run *r, const struct train_position *pos)
{
    const struct train_config *c = r->cfg;
    struct checkpoint_info info = {objective_name(r->tr.cfg.objective), r->encoder, c->model, c->tc.seed,
                                   c->tc.grad_accum, r->text_encoder, c->lora_format, NULL, r->identity};
    if (r->have_lora && !c->lora.checkpoint)
        info.lora_targets = c->lora.targets ? c->lora.targets : r->model.kind->lora_targets;
    return train_checkpoint_save(c->output, c->limit, &r->mc, &r->tr, pos, &info);
}

/* One optimizer step of grad_accum micro-batches; its mean loss in *loss
 * (NaN or Inf stop the run), the images it took in *images. */
static int step(struct run *r, struct train_position *pos, double *loss, int *images)
{
    const int64_t per_epoch = loader_batches_per_epoch(r->loader);
    double sum = 0;
    int n = 0;
    for (int a = 0; a < r->tr.cfg.grad_accum; a++) {
        const struct loader_batch *b;
        if (loader_next(r->loader, &b) != 0)
            return -1;
        struct cond cd = batch_cond(r, b);
        if (batch_size(r, b, r->cfg->data) != 0)
            return -1;
        double l = trainer_micro_step(&r->tr, batch_latents(r, b, 0), &cd, b->records, b->n, b->epoch);
        if (!isfinite(l)) {
            err_set("loss is %s at step %lld (epoch %lld, batch %lld): stopping; the last checkpoint in %s is "
                    "intact", isnan(l) ? "NaN" : "infinite", (long long)pos->step + 1, (long long)b->epoch,
                    (long long)b->index, r->cfg->output);
            return -1;
        }
        sum += l * b->n;
        n += b->n;
        pos->epoch = b->index + 1 == per_epoch ? b->epoch + 1 : b->epoch;
        pos->index = b->index + 1 == per_epoch ? 0 : b->index + 1;
    }
    *loss = sum / n;
    *images = n;
    return 0;
}

static int loop(struct run *r, struct train_position *pos)
{
    const struct train_config *c = r->cfg;
    const int64_t total = r->tr.cfg.total_steps;
    int64_t mem_now, mem_peak;
    k_mem_usage(&r->ctx, &mem_now, &mem_peak);
    double t_log = metrics_now();
    int64_t images = 0, steps_since = 0;
    while (pos->step < total) {
        double loss;
        int n;
        if (step(r, pos, &loss, &n) != 0)
            return -1;
        double gnorm = trainer_optimizer_step(&r->tr);
        if (!isfinite(gnorm)) {
            log_warn("step %lld: the fp16 gradients overflowed; update skipped, loss scale now %g",
                     (long long)r->tr.step, r->tr.loss_scale);
            gnorm = 0.0; /* logs stay JSON */
        }
        pos->step = r->tr.step;
        pos->loss_sum += loss;
        pos->loss_n++;
        images += n;
        steps_since++;
        if (pos->step % c->log_every == 0 || pos->step == total) {
            double t = metrics_now(), dt = t - t_log;
            struct step_metrics sm = {pos->step, pos->epoch, pos->loss_sum / pos->loss_n, r->tr.last_lr, gnorm,
                                      steps_since / dt, images / dt, mem_peak};
            metrics_log_step(&r->mx, &sm);
            t_log = t, pos->loss_sum = 0, pos->loss_n = 0, images = 0, steps_since = 0;
        }
        if (r->val && c->eval_every && pos->step % c->eval_every == 0) {
            err_clear();
            double v = validate(r, r->val);
            if (isnan(v) && *err_get()) /* the run goes on; the log says why there is no value */
                log_warn("step %lld: no validation loss: %s", (long long)pos->step, err_get());
            metrics_log_validation(&r->mx, pos->step, v);
        }
        if (r->sampling && pos->step % c->sample_every == 0 && samples_make(&r->sp, &r->tr, &r->mx, pos->step) != 0) {
            err_prefix("samples at step %lld", (long long)pos->step);
            return -1;
        }
        if (pos->step % c->ckpt_every == 0 && pos->step < total && save(r, pos) != 0) {
            err_prefix("checkpoint at step %lld failed, the previous ones are intact", (long long)pos->step);
            return -1;
        }
        if (stop_requested) {
            log_info("signal received: checkpointing at step %lld and stopping", (long long)pos->step);
            break;
        }
    }
    if (save(r, pos) != 0) {
        err_prefix("final checkpoint at step %lld failed, the previous ones are intact", (long long)pos->step);
        return -1;
    }
    return 0;
}

/* Whether --resume continues the run of the output directory ("latest",
 * or one of its checkpoints) rather than one from elsewhere. */
static int resumes_here(const struct train_config *c)
{
    if (strcmp(c->resume, "latest") == 0)
        return 1;
    char *parent = strdup(c->resume), *a = NULL, *b = NULL;
    int here = 0;
    if (parent) {
        size_t n = strlen(parent);
        while (n > 1 && parent[n - 1] == '/')
            parent[--n] = 0;
        char *slash = strrchr(parent, '/');
        if (slash)
            *slash = 0;
        a = realpath(slash ? (*parent ? parent : "/") : ".", NULL);
        b = realpath(c->output, NULL);
        here = a && b && strcmp(a, b) == 0;
    }
    free(parent), free(a), free(b);
    return here;
}

/* The output directory, taken for this run before anything is read: a
 * second process is refused at once, and a fresh run never writes into
 * another run's directory (replaced only when asked). */
static int take_output(struct run *r)
{
    const struct train_config *c = r->cfg;
    if (run_dir_lock(&r->dir, c->output) != 0)
        return -1;
    char what[256];
    int used = run_dir_used(c->output, what, sizeof what);
    if (used <= 0 || (c->resume && resumes_here(c)))
        return used < 0 ? -1 : 0;
    if (c->resume) {
        err_set("%s holds another run (%s) than --resume %s continues: resume into an empty --output-dir, or "
                "continue that run with --resume latest",
                c->output, what, c->resume);
        return -1;
    }
    if (!c->overwrite_output_dir) {
        err_set("%s holds another run (%s): --resume latest continues it, --overwrite-output-dir replaces it, "
                "or give another --output-dir",
                c->output, what);
        return -1;
    }
    if (run_dir_replace(&r->dir) != 0)
        return -1;
    log_info("--overwrite-output-dir: the run in %s (%s) is replaced", c->output, what);
    return 0;
}

/* The run's identity, once the data and the model are known. */
static int make_identity(struct run *r, const struct trainer_config *tc)
{
    const struct train_config *c = r->cfg;
    char path[4200], data[33];
    struct hash128 h;
    snprintf(path, sizeof path, "%s/manifest.tsv", c->data);
    if (hash_file(path, &h) != 0)
        return -1;
    hash_hex(h, data);
    struct run_facts f = {r->mc.kind->config_to_json(r->mc.impl), r->mc.kind->name, r->weights_hash, data,
                          objective_name(tc->objective), NULL, NULL};
    /* the adapted modules by name and rank, hashed: thousands of names */
    char modules[33] = "";
    if (r->have_lora) {
        struct hash_state *hs = hash_begin();
        for (size_t i = 0; hs && i < r->lora.n; i++) {
            hash_update(hs, r->lora.mod[i].name, strlen(r->lora.mod[i].name) + 1);
            hash_update(hs, &r->lora.mod[i].rank, sizeof r->lora.mod[i].rank);
        }
        if (!hs) {
            err_set("out of memory");
            return -1;
        }
        hash_hex(hash_end(hs), modules);
    }
    f.lora_targets = !r->have_lora ? NULL : c->lora.targets ? c->lora.targets : r->model.kind->lora_targets;
    f.lora_modules = r->have_lora ? modules : NULL;
    r->identity = run_identity_new(c, &f);
    return r->identity ? 0 : -1;
}

int train_run(const struct train_config *c)
{
    struct run r;
    memset(&r, 0, sizeof r);
    r.dir.fd = -1;
    r.cfg = c;
    struct trainer_config tc = c->tc;
    tc.loss_scaling = c->dtype == KDT_F16;
    if (take_output(&r) != 0)
        return fail(&r);
    if (open_data(&r) != 0)
        return fail(&r);
    /* The uniform share of flow timesteps, by recipe: F-Lite's 10% for a
     * text-to-image run, none for the class-conditional DiT. */
    if (tc.flow_uniform < 0)
        tc.flow_uniform = r.text_len ? 0.1f : 0.0f;
    if (c->objective_auto)
        tc.objective = r.text_len ? OBJECTIVE_FLOW : OBJECTIVE_DDPM;
    r.tr_objective = tc.objective;
    if (create_model(&r, &tc) != 0)
        return fail(&r);
    struct train_position pos = {0, 0, 0, 0.0, 0};
    if (make_identity(&r, &tc) != 0 || resume(&r, &pos) != 0)
        return fail(&r);
    report_sizes(&r);
    if (metrics_open(&r.mx, c->output, pos.step, c->tensorboard) != 0)
        return fail(&r);
    r.sampling = c->sample_every > 0;
    struct samples_config sc = {c->output, c->sample_labels, r.encoder, c->sample_steps, c->sample_cfg, c->tc.seed,
                                tc.objective, c->sample_prompts, r.text_encoder,
                                c->train_only_lora ? c->base : NN_BASE_COMPUTE};
    if (r.sampling && samples_setup(&r.sp, &sc, &r.mc, r.model.dt, &r.ctx) != 0) {
        r.sampling = 0;
        return fail(&r);
    }
    if (r.sampling && samples_attach(&r.sp, &r.tr) != 0)
        return fail(&r);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    /* Past a file-size limit, a write should fail (and name its file) rather
     * than kill the run: the checkpoint then fails cleanly. */
    signal(SIGXFSZ, SIG_IGN);
    if (loop(&r, &pos) != 0)
        return fail(&r);
    run_free(&r);
    return DIT_EXIT_OK;
}
