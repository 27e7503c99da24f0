#include "train/checkpoint.h"
#include "formats/checkpoint.h"
#include "train/lora.h"
#include "libcommon/error.h"
#include "libcommon/json.h"
#include "libcommon/log.h"
#include "libcommon/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int save_model(const struct denoiser_config *mc, struct kctx *k, float *host, struct tensor src, int64_t n,
                      const char *dir)
{
    k_download(k, host, src, n);
    return mkdir(dir, 0777) || denoiser_save_dir(mc, host, dir);
}

/* An optimizer state tensor's dtype in the file: f32, or u8 codes. */
static enum st_dtype state_dtype(enum kdtype dt)
{
    return dt == KDT_U8 ? ST_U8 : ST_F32;
}

static int save_state(const char *path, struct trainer *tr, const struct train_position *pos,
                      const struct checkpoint_info *info)
{
    struct st_writer *w = st_writer_new();
    json_t *state = json_pack("{s:I, s:I, s:I, s:I, s:s, s:s, s:i, s:f, s:I, s:f, s:I, s:I}", "step",
                              (json_int_t)pos->step, "epoch", (json_int_t)pos->epoch, "batch_index",
                              (json_int_t)pos->index, "seed", (json_int_t)info->seed, "objective", info->objective,
                              "model", info->model, "gradient_accumulation_steps", info->grad_accum, "log_loss_sum",
                              pos->loss_sum, "log_loss_n", (json_int_t)pos->loss_n, "loss_scale", tr->loss_scale,
                              "loss_scale_good_steps", (json_int_t)tr->scale_good_steps, "skipped_steps",
                              (json_int_t)tr->skipped_steps);
    char *text = state ? json_to_string(state) : NULL;
    float *host[2 * OPTIMIZER_MAX_STATE] = {0};
    int rc = !w || !text;
    /* Whatever the optimizers list, by their own names: the model's as they
     * are, the adapters' under "lora.". */
    struct optimizer *opts[2] = {tr->base_trains ? &tr->opt : NULL, tr->lora ? &tr->lora_opt : NULL};
    for (int g = 0; g < 2; g++)
        for (int i = 0; rc == 0 && opts[g] && i < opts[g]->nstate; i++) {
            const struct optimizer_state *s = &opts[g]->state[i];
            int64_t shape[1] = {s->t.n};
            char name[128];
            snprintf(name, sizeof name, "%s%s", g ? "lora." : "", s->name);
            float **h = &host[g * OPTIMIZER_MAX_STATE + i];
            rc = !(*h = malloc((size_t)s->t.n * kdtype_bytes(s->t.dtype)));
            if (rc == 0) {
                k_download(opts[g]->ctx, *h, s->t, s->t.n);
                rc = st_writer_add(w, name, state_dtype(s->t.dtype), 1, shape, *h);
            }
        }
    rc = rc || st_writer_meta(w, "state", text) || st_writer_meta(w, "format", "dit-training-state/1") ||
         st_writer_write(w, path);
    st_writer_free(w);
    for (int i = 0; i < 2 * OPTIMIZER_MAX_STATE; i++)
        free(host[i]);
    free(text);
    json_decref(state);
    return rc;
}

int train_checkpoint_save(const char *out, int limit, const struct denoiser_config *mc, struct trainer *tr,
                          const struct train_position *pos, const struct checkpoint_info *info)
{
    char *tmp;
    if (checkpoint_begin(out, pos->step, &tmp) != 0)
        return -1;
    char path[4096];
    struct kctx *k = tr->m->ctx;
    const int64_t np = tr->m->n_params;
    /* The model's state comes off the device one tensor at a time. */
    float *host = malloc((size_t)np * sizeof *host);
    int rc = !host;
    snprintf(path, sizeof path, "%s/transformer", tmp);
    /* A LoRA run with a frozen model saves the adapters only (MBs, not GBs). */
    if (rc == 0 && tr->base_trains)
        rc = save_model(mc, k, host, tr->m->params, np, path);
    if (rc == 0 && tr->ema.data) {
        snprintf(path, sizeof path, "%s/ema", tmp);
        rc = save_model(mc, k, host, tr->ema, np, path);
    }
    free(host);
    if (rc == 0 && tr->lora) {
        snprintf(path, sizeof path, "%s/%s", tmp, lora_file_name(info->lora_format, 0));
        rc = train_lora_save(tr->lora, tr->m->kind, tr->lora->w.params, path, info->lora_format, ST_F32, info->lora_targets);
        if (rc == 0 && tr->lora_ema.data) {
            snprintf(path, sizeof path, "%s/%s", tmp, lora_file_name(info->lora_format, 1));
            rc = train_lora_save(tr->lora, tr->m->kind, tr->lora_ema, path, info->lora_format, ST_F32, info->lora_targets);
        }
    }
    if (rc == 0) {
        /* How to use the model: which objective it learnt and which encoder
         * made its latents (dit-sample decodes with that encoder). */
        json_t *j = json_pack("{s:s, s:s, s:s, s:I}", "objective", info->objective, "encoder", info->encoder,
                              "model", info->model, "step", (json_int_t)pos->step);
        /* and, for a text model, the text encoder (dit-sample encodes its prompts with it) */
        if (j && info->text_encoder && *info->text_encoder)
            json_object_set_new(j, "text_encoder", json_string(info->text_encoder));
        /* and the run it belongs to: a resume must be that run */
        if (j && info->run)
            json_object_set(j, "run", (json_t *)info->run);
        /* and the adapter: dit-sample --lora takes the file */
        if (j && tr->lora)
            json_object_set_new(j, "lora", json_pack("{s:s, s:b}", "file", lora_file_name(info->lora_format, 0),
                                                     "with_model", tr->base_trains));
        snprintf(path, sizeof path, "%s/checkpoint.json", tmp);
        rc = !j || json_write_file(path, j) != 0;
        json_decref(j);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/training_state.safetensors", tmp);
        rc = save_state(path, tr, pos, info);
    }
    if (rc != 0) {
        if (!*err_get())
            err_set("%s: %s", path, strerror(errno));
        checkpoint_abort(tmp);
        return -1;
    }
    char *final = NULL;
    if (checkpoint_commit(out, tmp, pos->step, &final) != 0)
        return -1;
    log_info("checkpoint %s", final);
    free(final);
    if (limit > 0 && checkpoint_prune(out, limit) != 0)
        log_warn("%s", err_get());
    return 0;
}

/* A model dir of the checkpoint into dst (the master weights or the EMA). */
static int load_model(const char *path, const struct denoiser_config *mc, struct trainer *tr, int ema)
{
    struct denoiser_config cfg;
    float *p = NULL;
    if (denoiser_config_load_dir(&cfg, path, &p) != 0)
        return -1;
    int same = denoiser_config_equal(&cfg, mc);
    denoiser_config_free(&cfg);
    if (!same) {
        free(p);
        err_set("%s: the checkpoint's model configuration differs from this run's", path);
        return -1;
    }
    if (ema) {
        k_upload(tr->m->ctx, tr->ema, p, tr->m->n_params);
        k_sync(tr->m->ctx);
    } else {
        denoiser_params_upload(tr->m, p);
    }
    free(p);
    return 0;
}

/* The adapter's master (and EMA) from a LoRA run's checkpoint. */
static int load_lora(const char *dir, struct trainer *tr)
{
    char path[4200];
    /* in whichever format the run wrote it */
    for (int f = 0; f < 3; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, lora_file_name((enum lora_format)f, 0));
        if (access(path, R_OK) != 0)
            continue;
        if (train_lora_load(tr->lora, tr->m->kind, tr->m->table, path, tensor_none()) != 0)
            return -1;
        if (!tr->lora_ema.data)
            return 0;
        snprintf(path, sizeof path, "%s/%s", dir, lora_file_name((enum lora_format)f, 1));
        return train_lora_load(tr->lora, tr->m->kind, tr->m->table, path, tr->lora_ema);
    }
    err_set("%s: a checkpoint without the adapter (%s) of this LoRA run", dir, lora_file_name(LORA_FORMAT_DIFFUSERS, 0));
    return -1;
}

int train_checkpoint_load(const char *dir, const struct denoiser_config *mc, struct trainer *tr,
                          struct train_position *pos)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/transformer", dir);
    if (tr->base_trains && load_model(path, mc, tr, 0) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/ema", dir);
    if (tr->ema.data && load_model(path, mc, tr, 1) != 0)
        return -1;
    if (tr->lora && load_lora(dir, tr) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/training_state.safetensors", dir);
    struct st_file *f = st_open(path);
    if (!f)
        return -1;
    const char *state = st_meta_get(f, "state");
    json_t *j = state ? json_read_buffer(path, state, strlen(state)) : NULL;
    json_int_t step, epoch, index, loss_n;
    double loss_sum;
    int rc = -1;
    struct optimizer *opts[2] = {tr->base_trains ? &tr->opt : NULL, tr->lora ? &tr->lora_opt : NULL};
    char names[2][OPTIMIZER_MAX_STATE][128];
    int fits = 1;
    for (int g = 0; g < 2; g++)
        for (int i = 0; opts[g] && i < opts[g]->nstate; i++) {
            snprintf(names[g][i], sizeof names[g][i], "%s%s", g ? "lora." : "", opts[g]->state[i].name);
            const struct st_tensor *t = st_find(f, names[g][i]);
            fits &= t && t->nelem == (uint64_t)opts[g]->state[i].t.n &&
                    t->dtype == state_dtype(opts[g]->state[i].t.dtype);
        }
    if (!fits || !j ||
        json_unpack(j, "{s:I, s:I, s:I, s:F, s:I}", "step", &step, "epoch", &epoch, "batch_index", &index,
                    "log_loss_sum", &loss_sum, "log_loss_n", &loss_n) != 0) {
        char list[512] = "";
        for (int g = 0; g < 2; g++)
            for (int i = 0; opts[g] && i < opts[g]->nstate; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s, ", names[g][i]);
        err_set("%s: not a training state of this model, adapter and optimizer (%sstate)", path, list);
    } else {
        for (int g = 0; g < 2; g++)
            for (int i = 0; opts[g] && i < opts[g]->nstate; i++) {
                k_upload(opts[g]->ctx, opts[g]->state[i].t, st_find(f, names[g][i])->data, opts[g]->state[i].t.n);
                k_sync(opts[g]->ctx); /* the mapped file closes below */
            }
        pos->step = step, pos->epoch = epoch, pos->index = index;
        pos->loss_sum = loss_sum, pos->loss_n = loss_n;
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

int train_checkpoint_info(const char *dir, char **objective, char **encoder, char **text_encoder)
{
    char path[4096];
    *objective = *encoder = NULL;
    if (text_encoder)
        *text_encoder = NULL;
    snprintf(path, sizeof path, "%s/checkpoint.json", dir);
    json_t *j = json_read_file(path);
    if (!j)
        return -1;
    const char *enc = json_string_value(json_object_get(j, "encoder"));
    const char *obj = json_string_value(json_object_get(j, "objective"));
    if (enc && *enc)
        *encoder = strdup(enc);
    if (obj)
        *objective = strdup(obj);
    const char *te = json_string_value(json_object_get(j, "text_encoder"));
    if (text_encoder && te && *te)
        *text_encoder = strdup(te);
    json_decref(j);
    return 0;
}
