#include "train/run_identity.h"
#include "libcommon/error.h"
#include "libcommon/hash.h"
#include "libcommon/log.h"
#include "train/schedule.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A double as JSON: integers stay exact, the rest round-trip. */
static json_t *real(double v)
{
    return json_real(v);
}

static json_t *fixed_of(const struct train_config *c, struct run_facts *f)
{
    const struct trainer_config *t = &c->tc;
    json_t *lora = json_null();
    /* the adapter it starts from, by content: the file may move */
    char start[33] = "";
    struct hash128 h;
    if (c->use_lora && c->lora.checkpoint && hash_file(c->lora.checkpoint, &h) == 0)
        hash_hex(h, start);
    if (c->use_lora)
        lora = json_pack("{s:i, s:o, s:o, s:b, s:s, s:s, s:s, s:b, s:s?}", "rank", c->lora.rank, "alpha",
                         real(c->lora.alpha > 0 ? c->lora.alpha : c->lora.rank), "dropout", real(c->lora.dropout),
                         "rslora", c->lora.rslora, "targets", f->lora_targets ? f->lora_targets : "", "modules",
                         f->lora_modules ? f->lora_modules : "", "init",
                         c->lora.init == NN_LORA_INIT_GAUSSIAN ? "gaussian" : "default", "train_only",
                         c->train_only_lora, "checkpoint", *start ? start : NULL);
    json_t *model = json_pack("{s:s, s:o, s:s}", "kind", f->model_kind, "config", f->model_config,
                              "initial_weights", f->initial_weights);
    f->model_config = NULL; /* taken by the object (or freed with it on failure) */
    json_t *fixed = json_pack("{s:o, s:s, s:s, s:I, s:i, s:i, s:s, s:{s:s, s:o, s:o, s:o, s:o}, s:s, s:I, s:o, s:o, "
                     "s:{s:o, s:o, s:o}, s:o, s:b, s:o}",
                     "model", model, "data", f->data, "objective", f->objective, "seed", (json_int_t)t->seed,
                     "batch", c->batch, "gradient_accumulation_steps", t->grad_accum, "dtype",
                     kdtype_name(c->dtype), "optimizer", "name", t->optimizer ? t->optimizer : "adamw", "beta1",
                     real(t->beta1), "beta2", real(t->beta2), "eps", real(t->eps), "weight_decay",
                     real(t->weight_decay), "lr_scheduler", lr_schedule_name(t->schedule), "num_warmup_steps",
                     (json_int_t)t->warmup_steps, "max_grad_norm", real(t->max_grad_norm), "ema_decay",
                     real(t->ema_decay), "timesteps", "logit_mean", real(t->flow_mean), "logit_std",
                     real(t->flow_std), "uniform_prob", real(t->flow_uniform), "condition_dropout",
                     t->cond_dropout_set ? real(t->cond_dropout) : json_null(), "bf16_timesteps",
                     t->bf16_timesteps, "lora", lora);
    /* Where a frozen model's linears live changes the numbers; "auto" and
     * the compute dtype's own name are the same storage, and a model that
     * trains computes the same bits from its master as from a full copy. */
    const int frozen = c->use_lora && c->train_only_lora;
    const char *base = frozen && nn_base_dtype(c->base, c->dtype) != c->dtype ? nn_base_name(c->base)
                                                                               : kdtype_name(c->dtype);
    if (fixed && (json_object_set_new(fixed, "base_weight_dtype", json_string(base)) != 0 ||
                  json_object_set_new(fixed, "grad_accum_dtype", json_string(c->grads_bf16 ? "bf16" : "fp32")) != 0)) {
        json_decref(fixed);
        return NULL;
    }
    return fixed;
}

json_t *run_identity_new(const struct train_config *c, struct run_facts *f)
{
    json_t *fixed = fixed_of(c, f);
    json_decref(f->model_config);
    f->model_config = NULL;
    json_t *free_ = json_pack("{s:o, s:I, s:i, s:I, s:I, s:I, s:I, s:i}", "learning_rate", real(c->tc.lr),
                              "max_steps", (json_int_t)c->max_steps, "epochs", c->epochs, "log_every",
                              (json_int_t)c->log_every, "ckpt_every", (json_int_t)c->ckpt_every, "eval_every",
                              (json_int_t)c->eval_every, "sample_every", (json_int_t)c->sample_every,
                              "checkpoints_total_limit", c->limit);
    char *text = fixed ? json_dumps(fixed, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_t *id = NULL;
    if (text && free_) {
        char hex[33];
        hash_hex(hash_buffer(text, strlen(text)), hex);
        id = json_pack("{s:s, s:O, s:O}", "hash", hex, "fixed", fixed, "free", free_);
    }
    free(text);
    json_decref(fixed);
    json_decref(free_);
    if (!id)
        err_set("out of memory for the run's identity");
    return id;
}

/* The options that set a "fixed" field, for the message. */
static const char *option_of(const char *key)
{
    static const struct {
        const char *key, *option;
    } map[] = {
        {"model", "--model, --pretrained-model-path, --depth, --hidden-size, --num-heads"},
        {"data", "--data-path (the shard set's content)"},
        {"objective", "--objective"},
        {"seed", "--seed"},
        {"batch", "--train-batch-size"},
        {"gradient_accumulation_steps", "--gradient-accumulation-steps"},
        {"dtype", "--mixed-precision"},
        {"optimizer", "--optimizer, --adam-beta1, --adam-beta2, --adam-epsilon, --weight-decay"},
        {"lr_scheduler", "--lr-scheduler"},
        {"num_warmup_steps", "--num-warmup-steps"},
        {"max_grad_norm", "--max-grad-norm"},
        {"ema_decay", "--ema-decay"},
        {"timesteps", "--logit-mean, --logit-std, --uniform-timestep-prob"},
        {"condition_dropout", "--caption-dropout-prob"},
        {"bf16_timesteps", "--bf16-timesteps"},
        {"lora", "--use-lora and the --lora-* options"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].key, key) == 0)
            return map[i].option;
    return key;
}

/* v as short JSON text, into buf. */
static const char *shown(const json_t *v, char *buf, size_t size)
{
    char *t = v ? json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9)) : NULL;
    snprintf(buf, size, "%s", t ? t : "(none)");
    if (t && strlen(t) >= size && size > 4)
        memcpy(buf + size - 4, "...", 4);
    free(t);
    return buf;
}

int run_identity_check(const json_t *recorded, const json_t *now, const char *checkpoint)
{
    if (!recorded) {
        log_warn("%s records no run identity (written before dit-train kept one): its settings are not "
                 "checked against this run's", checkpoint);
        return 0;
    }
    const json_t *rf = json_object_get(recorded, "fixed"), *nf = json_object_get(now, "fixed");
    if (!json_is_object(rf)) {
        err_set("%s: checkpoint.json's \"run\" has no \"fixed\" settings", checkpoint);
        return -1;
    }
    char msg[4096] = "", a[160], b[160];
    int differ = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)nf, key, v) {
        const json_t *r = json_object_get(rf, key);
        if (r && json_equal((json_t *)r, v))
            continue;
        /* the initial weights or the configuration: say which */
        if (strcmp(key, "model") == 0 && r) {
            const char *part = !json_equal(json_object_get(r, "config"), json_object_get(v, "config")) ? "configuration"
                               : !json_equal(json_object_get(r, "kind"), json_object_get(v, "kind")) ? "kind"
                                                                                                    : "initial weights";
            snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%s the model's %s (%s)", differ ? ";" : "",
                     part, option_of(key));
        } else {
            snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%s %s: the checkpoint's %s, this run's %s (%s)",
                     differ ? ";" : "", key, shown(r, a, sizeof a), shown(v, b, sizeof b), option_of(key));
        }
        differ++;
    }
    if (differ) {
        err_set("%s: --resume with settings that would not continue that run exactly:%s. Give the run's own "
                "settings, or start a new run in another --output-dir",
                checkpoint, msg);
        return -1;
    }
    const json_t *rfree = json_object_get(recorded, "free"), *nfree = json_object_get(now, "free");
    json_object_foreach((json_t *)nfree, key, v) {
        const json_t *r = json_object_get(rfree, key);
        if (!r || !json_equal((json_t *)r, v))
            log_info("resuming with %s %s (the checkpoint's run had %s)", key, shown(v, b, sizeof b),
                     shown(r, a, sizeof a));
    }
    return 0;
}
