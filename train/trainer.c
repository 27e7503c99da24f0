#include "train/trainer.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int objective_parse(const char *name, enum objective *out)
{
    if (strcmp(name, "ddpm") == 0)
        *out = OBJECTIVE_DDPM;
    else if (strcmp(name, "flow") == 0)
        *out = OBJECTIVE_FLOW;
    else
        return -1;
    return 0;
}

const char *objective_name(enum objective o)
{
    return o == OBJECTIVE_FLOW ? "flow" : "ddpm";
}

struct lr_config trainer_lr_config(const struct trainer_config *c)
{
    struct lr_config l = {c->schedule, c->lr, c->warmup_steps, c->total_steps};
    return l;
}

int trainer_init(struct trainer *tr, struct denoiser *m, const struct trainer_config *cfg)
{
    memset(tr, 0, sizeof *tr);
    tr->cfg = *cfg;
    tr->m = m;
    if (m->inference) {
        err_set("a model planned for inference cannot be trained");
        return -1;
    }
    if (cfg->grad_accum < 1) {
        err_set("gradient accumulation steps %d is below 1", cfg->grad_accum);
        return -1;
    }
    if (ddpm_schedule_linear(&tr->ddpm, 1000) != 0)
        return -1;
    tr->loss_scale = cfg->loss_scaling ? LOSS_SCALE_INIT : 1.0;
    const size_t np = (size_t)m->n_params;
    const int B = m->B, C = m->info.in_channels, CO = m->info.out_channels;
    const size_t hw = (size_t)m->info.height * m->info.width;
    const size_t n = (size_t)B * C * hw, no = (size_t)B * CO * hw;
    struct kctx *k = m->ctx;
    struct optimizer_config oc = {cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay};
    /* A frozen model (LoRA only) has neither optimizer state nor EMA. */
    tr->base_trains = m->grads.data != NULL;
    if (tr->base_trains &&
        optimizer_create(&tr->opt, cfg->optimizer ? cfg->optimizer : "adamw", k, (int64_t)np, &oc, m->table) != 0) {
        trainer_free(tr);
        return -1;
    }
    if (tr->base_trains && cfg->ema_decay > 0 && k_alloc(k, &tr->ema, KDT_F32, (int64_t)np) != 0) {
        err_prefix("the optimizer state");
        trainer_free(tr);
        return -1;
    }
    tr->x_t = malloc(n * sizeof(float));
    tr->noise = malloc(n * sizeof(float));
    tr->target = malloc(n * sizeof(float));
    tr->t = malloc((size_t)B * sizeof(float));
    tr->out = malloc(no * sizeof(float));
    tr->dout = malloc(no * sizeof(float));
    tr->tsteps = malloc((size_t)B * sizeof(int32_t));
    tr->null = malloc((size_t)B);
    if (!tr->x_t || !tr->noise || !tr->target || !tr->t || !tr->out || !tr->dout || !tr->tsteps ||
        !tr->null) {
        trainer_free(tr);
        err_set("out of memory for the optimizer state");
        return -1;
    }
    if (tr->ema.data)
        k_copy(k, tr->ema, m->params, (int64_t)np);
    return 0;
}

int trainer_add_lora(struct trainer *tr, struct nn_lora *l, struct nn_lora_binding *b)
{
    const struct trainer_config *cfg = &tr->cfg;
    struct optimizer_config oc = {cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay};
    const int64_t n = l->table.total;
    if (!l->w.grads.data) {
        err_set("the LoRA was not allocated for training");
        return -1;
    }
    if (optimizer_create(&tr->lora_opt, cfg->optimizer ? cfg->optimizer : "adamw", l->w.ctx, n, &oc, &l->table) != 0)
        return -1;
    tr->lora = l, tr->lora_bind = b;
    if (cfg->ema_decay > 0) {
        if (k_alloc(l->w.ctx, &tr->lora_ema, KDT_F32, n) != 0) {
            err_prefix("the LoRA's EMA");
            return -1;
        }
        k_copy(l->w.ctx, tr->lora_ema, l->w.params, n);
    }
    return 0;
}

void trainer_free(struct trainer *tr)
{
    ddpm_schedule_free(&tr->ddpm);
    if (tr->m) {
        optimizer_free(&tr->opt);
        k_free(tr->m->ctx, &tr->ema);
    }
    if (tr->lora) {
        optimizer_free(&tr->lora_opt);
        k_free(tr->lora->w.ctx, &tr->lora_ema);
    }
    free(tr->x_t);
    free(tr->noise);
    free(tr->target);
    free(tr->t);
    free(tr->out);
    free(tr->dout);
    free(tr->tsteps);
    free(tr->null);
    memset(tr, 0, sizeof *tr);
}

/* The draws of sample `rec` in `epoch` (or, for validation, fixed ones). */
static void draw(struct trainer *tr, int i, uint64_t rec, uint64_t epoch, int validation, int null)
{
    const struct denoiser_info *c = &tr->m->info;
    const size_t n = (size_t)c->in_channels * tr->m->height * tr->m->width;
    const uint64_t seed = tr->cfg.seed;
    struct rng_stream noise = validation ? rng_stream(seed, RNG_VALIDATION, 1, rec)
                                         : rng_stream(seed, RNG_NOISE, epoch, rec);
    rng_normal_f32(&noise, 0, n, tr->noise + i * n);
    struct rng_stream ts = validation ? rng_stream(seed, RNG_VALIDATION, 0, rec)
                                      : rng_stream(seed, RNG_TIMESTEP, epoch, rec);
    if (tr->cfg.objective == OBJECTIVE_DDPM) {
        tr->tsteps[i] = (int32_t)rng_below(&ts, 0, (uint64_t)tr->ddpm.steps);
        tr->t[i] = (float)tr->tsteps[i];
    } else {
        /* z at offset 0 whatever the mix, so a run without the uniform part
         * draws what it always did. */
        float z, u[2];
        rng_normal_f32(&ts, 0, 1, &z);
        float shift = tr->cfg.flow_shift > 0 ? tr->cfg.flow_shift
                                             : flow_resolution_shift(tr->m->height, tr->m->width);
        tr->t[i] = flow_timestep(z, tr->cfg.flow_mean, tr->cfg.flow_std > 0 ? tr->cfg.flow_std : 1.0f, shift);
        if (tr->cfg.flow_uniform > 0) {
            rng_uniform_f32(&ts, 2, 2, u);
            if (u[0] < tr->cfg.flow_uniform)
                tr->t[i] = u[1];
        }
    }
    tr->null[i] = (uint8_t)null;
    const float dropout = tr->cfg.cond_dropout_set ? tr->cfg.cond_dropout : c->cond_dropout;
    if (!validation && dropout > 0) {
        /* Classifier-free guidance: drop the condition to the null one. */
        struct rng_stream ds = rng_stream(seed, RNG_LABEL_DROP, epoch, rec);
        float u;
        rng_uniform_f32(&ds, 0, 1, &u);
        if (u < dropout)
            tr->null[i] = 1;
    }
}

/* Forward and loss; dout (when wanted) is d(mean loss)/d(out) times scale. */
static double forward_loss(struct trainer *tr, const float *x, const struct cond *cond, int n, float scale,
                           int want_grad)
{
    struct denoiser *m = tr->m;
    const struct denoiser_info *c = &m->info;
    const int C = c->in_channels, CO = c->out_channels;
    const int64_t hw = (int64_t)m->height * m->width, per = (int64_t)C * hw;
    struct cond cd = *cond;
    cd.null = tr->null;
    double loss;
    if (tr->cfg.objective == OBJECTIVE_DDPM) {
        ddpm_q_sample(&tr->ddpm, tr->x_t, x, tr->noise, tr->tsteps, n, per);
        denoiser_forward(m, tr->out, tr->x_t, tr->t, &cd, n);
        loss = ddpm_training_loss(&tr->ddpm, tr->out, x, tr->x_t, tr->noise, tr->tsteps, n, C, hw, NULL,
                                  want_grad ? tr->dout : NULL);
    } else {
        /* The model sees t on DiT's 0..1000 scale; with a learned sigma the
         * extra channels are not trained by this objective. */
        float *tm = malloc((size_t)n * sizeof *tm);
        if (!tm)
            return NAN;
        flow_interpolate(tr->x_t, tr->target, x, tr->noise, tr->t, n, per);
        for (int i = 0; i < n; i++)
            tm[i] = tr->cfg.bf16_timesteps ? bf16_to_f32(f32_to_bf16(bf16_to_f32(f32_to_bf16(tr->t[i])) * 1000.0f))
                                           : tr->t[i] * 1000.0f;
        denoiser_forward(m, tr->out, tr->x_t, tm, &cd, n);
        free(tm);
        /* The prediction: the first C output channels of each sample. */
        for (int i = 0; i < n; i++)
            memmove(tr->x_t + i * per, tr->out + (int64_t)i * CO * hw, (size_t)per * sizeof(float));
        loss = flow_loss(tr->x_t, tr->target, n, per, want_grad ? tr->noise : NULL);
        if (want_grad) {
            memset(tr->dout, 0, (size_t)n * CO * hw * sizeof(float));
            for (int i = 0; i < n; i++)
                memcpy(tr->dout + (int64_t)i * CO * hw, tr->noise + i * per, (size_t)per * sizeof(float));
        }
    }
    if (want_grad && scale != 1.0f)
        for (int64_t i = 0; i < (int64_t)n * CO * hw; i++)
            tr->dout[i] *= scale;
    return loss;
}

/* A sample without a condition of its own takes the null one. */
static int null_of(const struct denoiser *m, const struct cond *c, int i)
{
    if (c->null && c->null[i])
        return 1;
    return m->info.cond == COND_LABELS ? !c->labels : !c->text;
}

double trainer_micro_step(struct trainer *tr, const float *x, const struct cond *c,
                          const uint64_t *records, int n, int64_t epoch)
{
    /* Each sample's draws come from its own stream: parallel, same bits. */
#pragma omp parallel for schedule(static) if (n > 1)
    for (int i = 0; i < n; i++)
        draw(tr, i, records[i], (uint64_t)epoch, 0, null_of(tr->m, c, i));
    if (tr->lora_bind)
        nn_lora_binding_batch(tr->lora_bind, records, n, epoch, 1);
    double loss = forward_loss(tr, x, c, n, (float)(tr->loss_scale / tr->cfg.grad_accum), 1);
    if (isfinite(loss))
        denoiser_backward(tr->m, tr->dout, n);
    tr->micro++;
    return loss;
}

/* The gradients of what trains: the model's and the adapters'. */
static void zero_grads(struct trainer *tr)
{
    if (tr->base_trains)
        denoiser_zero_grads(tr->m);
    if (tr->lora)
        nn_weights_zero_grads(&tr->lora->w);
}

double trainer_optimizer_step(struct trainer *tr)
{
    struct denoiser *m = tr->m;
    struct kctx *k = m->ctx;
    const int64_t np = m->n_params;
    struct nn_weights *lw = tr->lora ? &tr->lora->w : NULL;
    const struct lr_config lc = trainer_lr_config(&tr->cfg);
    double lr = lr_at(&lc, tr->step);
    double sq = tr->base_trains ? nn_weights_grads_sum_squares(m->w) : 0.0;
    if (lw)
        sq += nn_weights_grads_sum_squares(lw);
    double norm = sqrt(sq);
    double unscale = 1.0;
    if (tr->cfg.loss_scaling) {
        if (!isfinite(norm)) {
            tr->loss_scale *= 0.5;
            tr->scale_good_steps = 0;
            tr->skipped_steps++;
            zero_grads(tr);
            tr->step++;
            tr->micro = 0;
            tr->last_lr = lr;
            tr->last_grad_norm = NAN;
            return NAN;
        }
        unscale = 1.0 / tr->loss_scale;
        norm *= unscale;
        if (++tr->scale_good_steps == LOSS_SCALE_GROWTH_INTERVAL) {
            tr->loss_scale *= 2.0;
            tr->scale_good_steps = 0;
        }
    }
    /* As torch.nn.utils.clip_grad_norm_ over every trained tensor, on the
     * unscaled gradients: one pass scales by both. */
    double coef = unscale;
    if (tr->cfg.max_grad_norm > 0 && tr->cfg.max_grad_norm / (norm + 1e-6) < 1.0)
        coef = unscale * (tr->cfg.max_grad_norm / (norm + 1e-6));
    if (tr->base_trains) {
        optimizer_step_weights(&tr->opt, m->w, coef, lr, tr->step + 1);
        if (tr->ema.data) /* DiT's update_ema: ema = decay * ema + (1 - decay) * param. */
            k_ema_update(k, tr->ema, m->params, (float)tr->cfg.ema_decay, np);
    }
    if (lw) {
        optimizer_step_weights(&tr->lora_opt, lw, coef, lr, tr->step + 1);
        if (tr->lora_ema.data)
            k_ema_update(lw->ctx, tr->lora_ema, lw->params, (float)tr->cfg.ema_decay, lw->n);
    }
    zero_grads(tr);
    tr->step++;
    tr->micro = 0;
    tr->last_lr = lr;
    tr->last_grad_norm = norm;
    return norm;
}

void trainer_draw_latents(const struct trainer *tr, float *out, const float *mean, const float *std,
                          const uint64_t *records, int n, int64_t per, int64_t epoch, int validation)
{
    const uint64_t seed = tr->cfg.seed;
#pragma omp parallel for schedule(static) if (n > 1)
    for (int i = 0; i < n; i++) {
        struct rng_stream s = validation ? rng_stream(seed, RNG_VALIDATION, 2, records[i])
                                         : rng_stream(seed, RNG_LATENT, (uint64_t)epoch, records[i]);
        float *o = out + i * per;
        rng_normal_f32(&s, 0, (size_t)per, o);
        for (int64_t j = 0; j < per; j++)
            o[j] = mean[i * per + j] + std[i * per + j] * o[j];
    }
}

double trainer_validation_loss(struct trainer *tr, const float *x, const struct cond *c,
                               const uint64_t *records, int n)
{
#pragma omp parallel for schedule(static) if (n > 1)
    for (int i = 0; i < n; i++)
        draw(tr, i, records[i], 0, 1, null_of(tr->m, c, i));
    if (tr->lora_bind)
        nn_lora_binding_batch(tr->lora_bind, records, n, 0, 0);
    return forward_loss(tr, x, c, n, 1.0f, 0);
}
