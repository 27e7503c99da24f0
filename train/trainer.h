/* One training step of any denoiser: the per-sample draws, the objective,
 * the gradient (accumulated over micro-batches), clipping, the
 * learning-rate schedule, the optimizer and the EMA. Every random draw of a sample comes from the Philox
 * stream (seed, purpose, epoch, record): it does not depend on the batch
 * size, the number of ranks, the device or where a run was resumed. */
#ifndef DIT_TRAIN_TRAINER_H
#define DIT_TRAIN_TRAINER_H

#include "diffusion/diffusion.h"
#include "models/denoiser.h"
#include "train/optimizer.h"
#include "train/schedule.h"

#include <stdint.h>

enum objective { OBJECTIVE_DDPM, OBJECTIVE_FLOW };

/* "ddpm", "flow"; -1 otherwise. */
int objective_parse(const char *name, enum objective *out);
const char *objective_name(enum objective o);

struct trainer_config {
    enum objective objective;
    double lr, beta1, beta2, eps, weight_decay;
    const char *optimizer;  /* NULL: "adamw" */
    enum lr_schedule schedule;
    int64_t warmup_steps, total_steps;
    int grad_accum;        /* micro-batches per optimizer step */
    double max_grad_norm;  /* 0: no clipping */
    double ema_decay;      /* 0: no EMA */
    uint64_t seed;
    float flow_shift;      /* 0: F-Lite's resolution shift for the latent size */
    /* The flow timestep law: t = shift(sigmoid(flow_mean + flow_std z))
     * (flow_std 0: 1), except that with probability flow_uniform t is
     * uniform in [0, 1) and unshifted (F-Lite: mean 0, std 1, 0.1 uniform). */
    float flow_mean, flow_std, flow_uniform;
    /* With cond_dropout_set, the probability of the null condition in
     * training; without, the model's own (DiT's class dropout, F-Lite's
     * 0.01 caption dropout). */
    int cond_dropout_set;
    float cond_dropout;
    /* Flow: t rounded to bf16, then 1000 t rounded to bf16 again, as
     * F-Lite's pure-bf16 training feeds its model (t steps of 4 in
     * [512, 1000)); off: 1000 t in f32. */
    int bf16_timesteps;
    int loss_scaling;      /* dynamic loss scaling, for fp16 activations */
};

/* Dynamic loss scaling as torch.cuda.amp.GradScaler's defaults: start at
 * 2^16, halve on an overflow (the update is skipped), double after 2000
 * steps without one. */
#define LOSS_SCALE_INIT 65536.0
#define LOSS_SCALE_GROWTH_INTERVAL 2000

struct trainer {
    struct trainer_config cfg;
    struct denoiser *m;
    int base_trains;   /* the model's own weights train (0: frozen, LoRA only) */
    struct optimizer opt;
    struct tensor ema; /* f32 on the model's device, n_params; absent without EMA or when frozen */
    /* LoRA adapters training with the model's weights or instead of them
     * (trainer_add_lora); NULL: none. The same lr, clipping over both. */
    struct nn_lora *lora;
    struct nn_lora_binding *lora_bind;
    struct optimizer lora_opt;
    struct tensor lora_ema; /* f32, the adapters' parameters; absent without EMA */
    struct ddpm_schedule ddpm;
    int64_t step;  /* optimizer steps done */
    int micro;     /* micro-batches accumulated since the last step */
    double last_lr, last_grad_norm;
    double loss_scale;          /* 1 without loss scaling */
    int64_t scale_good_steps;   /* steps since the scale last changed */
    int64_t skipped_steps;      /* updates skipped on overflow, in all */
    /* [B * ...] scratch for one micro-batch */
    float *x_t, *noise, *target, *t, *out, *dout;
    int32_t *tsteps;
    uint8_t *null; /* [B] the samples that take the null condition */
};

int trainer_init(struct trainer *tr, struct denoiser *m, const struct trainer_config *cfg);
/* Adapters that train: l allocated for training on the model's device, b
 * its binding to the model. The optimizer state (and EMA) of the adapters
 * is allocated here. -1 with err_set(). */
int trainer_add_lora(struct trainer *tr, struct nn_lora *l, struct nn_lora_binding *b);
void trainer_free(struct trainer *tr);
/* The schedule part of the configuration. */
struct lr_config trainer_lr_config(const struct trainer_config *cfg);

/* Forward and backward of one micro-batch x[n, C, H, W] under condition c
 * (records identify the samples for their draws; epoch too). Gradients
 * accumulate, scaled by 1 / grad_accum. Returns the mean loss of the batch
 * (NaN or Inf are returned as they are: the caller stops). */
double trainer_micro_step(struct trainer *tr, const float *x, const struct cond *c,
                          const uint64_t *records, int n, int64_t epoch);
/* After grad_accum micro-batches: clip, the optimizer at lr_at(step), EMA, zero the
 * gradients, step++. Returns the gradient norm before clipping. With loss
 * scaling, gradients that overflowed skip the update (the step still
 * counts, so schedules and checkpoints stay aligned) and NaN is returned. */
double trainer_optimizer_step(struct trainer *tr);

/* A latent drawn from its stored distribution (dit-shard(5)'s latent and
 * latent_std): out[i] = mean[i] + std[i] * eps, eps from Philox by (seed,
 * epoch, record) so a sample's draw does not depend on batch, ranks or
 * resume; for validation a fixed draw per record whatever the epoch. n
 * samples of per elements each. */
void trainer_draw_latents(const struct trainer *tr, float *out, const float *mean, const float *std,
                          const uint64_t *records, int n, int64_t per, int64_t epoch, int validation);

/* The loss on a batch at fixed timesteps and fixed noise (drawn from the
 * validation stream by record, whatever the step), without gradients, so
 * that curves compare across runs. */
double trainer_validation_loss(struct trainer *tr, const float *x, const struct cond *c,
                               const uint64_t *records, int n);

#endif
