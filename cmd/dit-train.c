/* dit-train: train a diffusion model from a shard set, with checkpoints
 * that resume bit for bit, logs, validation, samples and signals. The
 * options become a struct train_config; train/run.c does the rest. */
#include "kernels/device.h"
#include "kernels/kernels.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "nn/precision.h"
#include "train/config.h"
#include "train/launcher.h"

#include <stdint.h>
#include <string.h>

struct options {
    const char *data, *val_data, *output, *model, *pretrained, *objective, *scheduler, *mixed, *resume;
    const char *report_to, *sample_labels, *sample_prompts;
    int batch, accum, epochs, num_classes, image_size, threads, checkpointing, limit, local_rank;
    int depth, hidden, heads, sample_steps, eval_batch;
    double sample_cfg;
    int64_t max_steps, warmup, log_every, ckpt_every, eval_every, sample_every, seed;
    double lr, beta1, beta2, eps, wd, clip, ema;
    double logit_mean, logit_std, uniform_prob, caption_dropout;
    int bf16_timesteps;
    int use_lora, train_only_lora, lora_rank, rslora;
    double lora_alpha, lora_dropout;
    const char *lora_targets, *lora_init, *lora_checkpoint, *lora_format, *base_dtype, *grad_dtype;
    const char *optimizer;
    int use_8bit_adam, overwrite;
};

int main(int argc, char **argv)
{
    struct options o = {.model = "DiT-XL/2", .objective = NULL, .scheduler = "constant", .mixed = NULL,
                        .report_to = "none", .batch = 8, .accum = 1, .epochs = 1, .log_every = 100,
                        .ckpt_every = 1000, .seed = 0, .sample_cfg = 4.0, .lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .wd = 0.0, .clip = 0.0, .ema = 0.9999, .local_rank = -1, .logit_mean = 0.0,
                        .logit_std = 1.0, .uniform_prob = -1.0, .caption_dropout = -1.0, .lora_rank = 64, .lora_init = "gaussian",
                        .lora_format = "diffusers", .optimizer = "adamw"};
    const struct opt opts[] = {
        {"data-path", 0, OPT_STRING, &o.data, "DIR", "the shard set to train on (dit-precompute's output)"},
        {"train-data-path", 0, OPT_STRING, &o.data, "DIR", "the same as --data-path"},
        {"val-data-path", 0, OPT_STRING, &o.val_data, "DIR", "a shard set for the validation loss"},
        {"output-dir", 'o', OPT_STRING, &o.output, "DIR", "checkpoints, metrics and logs go here"},
        {"results-dir", 0, OPT_STRING, &o.output, "DIR", "the same as --output-dir"},
        {"model", 0, OPT_STRING, &o.model, "NAME", "DiT-S/2 ... DiT-XL/8 (DiT-XL/2), F-Lite, F-Lite-7B"},
        {"pretrained-model-path", 0, OPT_STRING, &o.pretrained, "PATH", "start from a model directory (diffusers or a checkpoint's transformer/)"},
        {"num-classes", 0, OPT_INT, &o.num_classes, "N", "class count (default: from the labels)"},
        {"depth", 0, OPT_INT, &o.depth, "N", "override the model's depth (small experiments)"},
        {"hidden-size", 0, OPT_INT, &o.hidden, "N", "override the model's hidden size"},
        {"num-heads", 0, OPT_INT, &o.heads, "N", "override the model's attention heads"},
        {"image-size", 0, OPT_INT, &o.image_size, "PX", "checked against the data's latents and encoder"},
        {"objective", 0, OPT_STRING, &o.objective, "NAME", "ddpm or flow (default: the model's, ddpm for DiT, flow for F-Lite)"},
        {"logit-mean", 0, OPT_DOUBLE, &o.logit_mean, "M", "flow: the logit-normal timesteps' mean (0)"},
        {"logit-std", 0, OPT_DOUBLE, &o.logit_std, "S", "flow: their standard deviation (1)"},
        {"uniform-timestep-prob", 0, OPT_DOUBLE, &o.uniform_prob, "P",
         "flow: the share of uniform, unshifted timesteps (F-Lite's 0.1 for text-to-image models, else 0)"},
        {"caption-dropout-prob", 0, OPT_DOUBLE, &o.caption_dropout, "P",
         "text-to-image: the share of captions dropped to the zero embedding (the model's: F-Lite 0.01)"},
        {"bf16-timesteps", 0, OPT_FLAG, &o.bf16_timesteps, NULL,
         "flow: round t and 1000 t to bf16 as F-Lite's bf16 training does (for parity with it)"},
        {"learning-rate", 0, OPT_DOUBLE, &o.lr, "LR", "1e-4"},
        {"adam-beta1", 0, OPT_DOUBLE, &o.beta1, "B1", "0.9"},
        {"adam-beta2", 0, OPT_DOUBLE, &o.beta2, "B2", "0.999"},
        {"adam-epsilon", 0, OPT_DOUBLE, &o.eps, "EPS", "1e-8"},
        {"weight-decay", 0, OPT_DOUBLE, &o.wd, "WD", "AdamW's decoupled weight decay (0, as DiT)"},
        {"optimizer", 0, OPT_STRING, &o.optimizer, "NAME",
         "adamw (default) or adamw8bit (bitsandbytes' AdamW8bit: 8-bit blockwise moments)"},
        {"use-8bit-adam", 0, OPT_FLAG, &o.use_8bit_adam, NULL, "the same as --optimizer adamw8bit"},
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
        {"overwrite-output-dir", 0, OPT_FLAG, &o.overwrite, NULL,
         "replace the run the output directory holds (refused otherwise)"},
        {"report-to", 0, OPT_STRING, &o.report_to, "WHERE", "none (default), tensorboard; wandb is refused"},
        {"eval-every", 0, OPT_INT64, &o.eval_every, "N", "validation loss every N steps (needs --val-data-path)"},
        {"eval-batch-size", 0, OPT_INT, &o.eval_batch, "N", "validation batch size (default: the training batch's)"},
        {"sample-every", 0, OPT_INT64, &o.sample_every, "N", "a grid of samples every N steps (samples/, TensorBoard)"},
        {"sample-class-labels", 0, OPT_STRING, &o.sample_labels, "LIST", "classes to sample (default: the first 8)"},
        {"sample-prompts-file", 0, OPT_STRING, &o.sample_prompts, "FILE",
         "text models: prompts to sample, one per line (encoded once, by the data's text encoder)"},
        {"sample-steps", 0, OPT_INT, &o.sample_steps, "N", "sampler steps (50 DDIM for ddpm, 28 Euler for flow)"},
        {"sample-cfg-scale", 0, OPT_DOUBLE, &o.sample_cfg, "S", "guidance of the samples (4.0)"},
        {"use-lora", 0, OPT_FLAG, &o.use_lora, NULL, "train LoRA adapters (with the model's weights unless --train-only-lora)"},
        {"train-only-lora", 0, OPT_FLAG, &o.train_only_lora, NULL,
         "freeze the model: only the adapters train (no gradients or optimizer state for the rest)"},
        {"lora-rank", 0, OPT_INT, &o.lora_rank, "R", "the adapters' rank (64, as F-Lite)"},
        {"lora-alpha", 0, OPT_DOUBLE, &o.lora_alpha, "A", "their alpha: scale alpha / rank (default: the rank)"},
        {"lora-dropout", 0, OPT_DOUBLE, &o.lora_dropout, "P", "dropout of the adapters' input (0)"},
        {"lora-target-modules", 0, OPT_STRING, &o.lora_targets, "LIST",
         "module-name suffixes to adapt, as PEFT's target_modules (F-Lite: qkv,q,context_kv,proj; DiT: qkv,proj)"},
        {"lora-init", 0, OPT_STRING, &o.lora_init, "KIND", "gaussian (F-Lite's, default) or default (PEFT's)"},
        {"use-rslora", 0, OPT_FLAG, &o.rslora, NULL, "scale alpha / sqrt(rank) (rsLoRA)"},
        {"lora-checkpoint", 0, OPT_STRING, &o.lora_checkpoint, "FILE", "continue from this adapter (any LoRA file)"},
        {"lora-format", 0, OPT_STRING, &o.lora_format, "NAME", "the checkpoints' adapter files: diffusers (default), peft or kohya"},
        {"base-weight-dtype", 0, OPT_STRING, &o.base_dtype, "DTYPE",
         "the linears' weights: with --train-only-lora stored in fp32, bf16 or fp8 (e4m3, a scale per row); "
         "fp32 for a model that trains: read from its master, no compute copy (default: as computed)"},
        {"grad-accum-dtype", 0, OPT_STRING, &o.grad_dtype, "DTYPE",
         "fp32 (default) or bf16: the dtype the linears' weight gradients accumulate in"},
        {"threads", 0, OPT_INT, &o.threads, "N", "compute threads (default: all cores)"},
        {"num-workers", 0, OPT_INT, &o.threads, "N", "the same as --threads (data is decoded before training)"},
        {"local-rank", 0, OPT_INT, &o.local_rank, "N", "accepted for launchers; one process trains"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-train", "[options] --data-path SHARDS --output-dir DIR",
                                  "Train a class-conditional DiT or a text-to-image F-Lite on a shard set."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first < argc)
        opt_usage_error("unexpected operand '%s'", argv[first]);
    if (!o.data || !o.output)
        opt_usage_error("--data-path and --output-dir are required");
    if (o.batch <= 0 || o.accum <= 0 || o.epochs <= 0 || o.max_steps < 0 || o.log_every <= 0 ||
        o.ckpt_every <= 0 || o.threads < 0 || o.limit < 0 || o.eval_every < 0 || o.warmup < 0 ||
        o.eval_batch < 0)
        opt_usage_error("batch size, accumulation, epochs, log/checkpoint intervals must be positive");
    if (o.local_rank > 0)
        opt_usage_error("--local-rank %d: this build trains in one process (multi-GPU is being built)", o.local_rank);
    /* Started by a launcher as one of several processes, each would train
     * the whole run: refused until data-parallel training exists. */
    struct launcher ln;
    if (launcher_detect(&ln, NULL) != 0)
        opt_usage_error("the launcher's environment: %s", err_get());
    if (ln.world > 1)
        opt_usage_error("started by %s as rank %d of %d: this build trains in one process (data-parallel "
                        "training across processes is being built); start one dit-train",
                        ln.name, ln.rank, ln.world);
    if (strcmp(o.report_to, "wandb") == 0 || strcmp(o.report_to, "all") == 0)
        opt_usage_error("--report-to %s: wandb has no offline writer here; use tensorboard", o.report_to);
    if (strcmp(o.report_to, "none") && strcmp(o.report_to, "tensorboard"))
        opt_usage_error("--report-to: '%s' is not none or tensorboard", o.report_to);
    if (o.overwrite && o.resume)
        opt_usage_error("--overwrite-output-dir replaces a run, --resume continues one: give one of them");
    if (o.eval_every > 0 && !o.val_data)
        opt_usage_error("--eval-every needs --val-data-path");
    if (o.use_8bit_adam)
        o.optimizer = "adamw8bit";
    if (strcmp(o.optimizer, "adamw") && strcmp(o.optimizer, "adamw8bit"))
        opt_usage_error("--optimizer: '%s' is not adamw or adamw8bit", o.optimizer);
    struct trainer_config tc = {.optimizer = o.optimizer, .lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps, .weight_decay = o.wd,
                                .warmup_steps = o.warmup, .grad_accum = o.accum, .max_grad_norm = o.clip,
                                .ema_decay = o.ema, .seed = (uint64_t)o.seed};
    if (!(o.logit_std > 0) || o.uniform_prob > 1 || o.caption_dropout >= 1)
        opt_usage_error("--logit-std must be positive, --uniform-timestep-prob at most 1 and "
                        "--caption-dropout-prob below 1");
    tc.bf16_timesteps = o.bf16_timesteps;
    tc.flow_mean = (float)o.logit_mean;
    tc.flow_std = (float)o.logit_std;
    tc.flow_uniform = (float)o.uniform_prob; /* negative: the model's recipe, decided by train_run */
    tc.cond_dropout_set = o.caption_dropout >= 0;
    tc.cond_dropout = tc.cond_dropout_set ? (float)o.caption_dropout : 0.0f;
    if (o.objective && objective_parse(o.objective, &tc.objective) != 0)
        opt_usage_error("--objective: '%s' is not ddpm or flow", o.objective);
    if (lr_schedule_parse(o.scheduler, &tc.schedule) != 0)
        opt_usage_error("--lr-scheduler: '%s' is not constant, linear or cosine", o.scheduler);

    enum lora_format lfmt;
    if (lora_format_parse(o.lora_format, &lfmt) != 0)
        opt_usage_error("--lora-format: '%s' is not diffusers, peft or kohya", o.lora_format);
    if (strcmp(o.lora_init, "gaussian") && strcmp(o.lora_init, "default"))
        opt_usage_error("--lora-init: '%s' is not gaussian or default", o.lora_init);
    if (o.lora_rank < 1 || o.lora_alpha < 0 || !(o.lora_dropout >= 0 && o.lora_dropout < 1))
        opt_usage_error("--lora-rank must be positive, --lora-alpha not negative, --lora-dropout in [0, 1)");
    if (o.train_only_lora && !o.use_lora)
        opt_usage_error("--train-only-lora needs --use-lora");
    enum nn_base base = NN_BASE_COMPUTE;
    if (o.base_dtype && nn_base_parse(o.base_dtype, &base) != 0)
        opt_usage_error("--base-weight-dtype: %s", err_get());
    if ((base == NN_BASE_BF16 || base == NN_BASE_FP8) && !o.train_only_lora)
        opt_usage_error("--base-weight-dtype %s needs --use-lora --train-only-lora: a base that trains "
                        "stays in its f32 master copy", o.base_dtype);
    int grads_bf16 = 0;
    if (o.grad_dtype && strcmp(o.grad_dtype, "fp32") && !(grads_bf16 = strcmp(o.grad_dtype, "bf16") == 0))
        opt_usage_error("--grad-accum-dtype: '%s' is not fp32 or bf16", o.grad_dtype);
    if (grads_bf16 && o.train_only_lora)
        opt_usage_error("--grad-accum-dtype bf16: with --train-only-lora the model has no gradients (the "
                        "adapters' stay fp32)");
    if (!o.use_lora && (o.lora_checkpoint || o.lora_targets))
        opt_usage_error("--lora-checkpoint and --lora-target-modules need --use-lora");
    struct lora_options lo = {o.lora_rank, (float)o.lora_alpha, (float)o.lora_dropout, o.rslora, o.lora_targets,
                              strcmp(o.lora_init, "gaussian") ? NN_LORA_INIT_DEFAULT : NN_LORA_INIT_GAUSSIAN,
                              o.lora_checkpoint};

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

    struct train_config c = {
        .data = o.data, .val_data = o.val_data, .output = o.output, .model = o.model,
        .pretrained = o.pretrained, .resume = o.resume, .overwrite_output_dir = o.overwrite, .device = dev, .dtype = cdt,
        .tensorboard = strcmp(o.report_to, "tensorboard") == 0, .sample_labels = o.sample_labels,
        .sample_prompts = o.sample_prompts,
        .batch = o.batch, .epochs = o.epochs, .num_classes = o.num_classes, .image_size = o.image_size,
        .threads = o.threads, .checkpointing = o.checkpointing, .limit = o.limit, .depth = o.depth,
        .hidden = o.hidden, .heads = o.heads, .sample_steps = o.sample_steps, .sample_cfg = o.sample_cfg,
        .max_steps = o.max_steps, .log_every = o.log_every, .ckpt_every = o.ckpt_every,
        .eval_every = o.eval_every, .eval_batch = o.eval_batch, .sample_every = o.sample_every, .objective_auto = !o.objective, .tc = tc,
        .use_lora = o.use_lora, .train_only_lora = o.train_only_lora, .lora = lo, .lora_format = lfmt,
        .base = base, .grads_bf16 = grads_bf16,
    };
    return train_run(&c);
}
