/* The device memory our F-Lite asks for, counted by the arena planner
 * without allocating (flite_model_plan_bytes): the released 10B at 512 and
 * 1024 px (64 and 128 latents, T5's 512 tokens), batch 1, on a CUDA device
 * in bf16, for each memory plan. Printed as a Markdown table for
 * bench/RESULTS.md, next to PyTorch's saved activations from
 * bench/flite_memory_torch.py.
 *
 * Usage: flite_memory [--model F-Lite|F-Lite-7B] [--batch 1]
 *
 * Columns: activations per sample; weights as the plan keeps them (f32
 * master, f32 gradients and the bf16 compute copy for training; bf16 alone
 * for sampling); the full fine-tune's state: those, AdamW's two f32
 * moments (8 bytes a parameter, no EMA) and the activations. */
#include "libcommon/error.h"
#include "models/flite/flite.h"
#include "nn/lora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *plan_name(enum denoiser_memory p)
{
    return p == DENOISER_MEM_TRAIN ? "train" : p == DENOISER_MEM_CHECKPOINT ? "train, checkpointing" : "sampling";
}

/* The whole training state of the plans issue 18 sets targets for, at
 * 1024 px with gradient checkpointing, counted without allocating, next to
 * F-Lite's own train.py counted the same way (bitsandbytes' AdamW8bit, the
 * model in bf16: bf16 weights and gradients, no f32 master; PEFT's adapters
 * in the base's bf16). 8-bit state: 2 bytes a parameter and 8 a block of
 * 256 (the small tensors' f32 moments are a rounding error here). */
static int plans(const char *model, int batch)
{
    const double gib = 1024.0 * 1024.0 * 1024.0;
    struct flite_config cfg;
    struct nn_params t;
    if (flite_config_by_name(&cfg, model, 128, 128, 512) != 0 || flite_param_table(&cfg, &t, NULL) != 0) {
        fprintf(stderr, "flite_memory: %s\n", err_get());
        return 1;
    }
    /* LoRA rank 16 on F-Lite's default targets */
    const int rank = 16;
    int64_t lora = 0;
    for (size_t i = 0; i < t.count; i++) {
        const struct nn_param *p = &t.p[i];
        char name[NN_NAME_MAX];
        size_t len = strlen(p->name);
        if (p->ndim != 2 || len < 7 || strcmp(p->name + len - 7, ".weight") != 0)
            continue;
        snprintf(name, sizeof name, "%.*s", (int)(len - 7), p->name);
        if (nn_lora_targets_match("qkv,q,context_kv,proj", name))
            lora += (int64_t)rank * (p->shape[0] + p->shape[1]);
    }
    const double n = (double)flite_param_count(&cfg), b8 = 2.0 + 8.0 / 256.0;
    int64_t pb, ab, fpb, fab, f32b, f8b, lowb, unused;
    const enum denoiser_memory frozen = (enum denoiser_memory)(DENOISER_MEM_CHECKPOINT | DENOISER_MEM_FROZEN);
    if (flite_model_plan_bytes(&cfg, DEVICE_CUDA, batch, DENOISER_MEM_CHECKPOINT, KDT_BF16, &pb, &ab) != 0 ||
        flite_model_plan_bytes(&cfg, DEVICE_CUDA, batch, frozen, KDT_BF16, &fpb, &fab) != 0 ||
        flite_model_plan_bytes(&cfg, DEVICE_CUDA, batch, frozen | DENOISER_MEM_BASE(NN_BASE_F32), KDT_BF16, &f32b,
                               &unused) != 0 ||
        flite_model_plan_bytes(&cfg, DEVICE_CUDA, batch, frozen | DENOISER_MEM_BASE(NN_BASE_FP8), KDT_BF16, &f8b,
                               &unused) != 0 ||
        flite_model_plan_bytes(&cfg, DEVICE_CUDA, batch,
                               (enum denoiser_memory)(DENOISER_MEM_CHECKPOINT | DENOISER_MEM_BASE(NN_BASE_F32) |
                                                      DENOISER_MEM_GRADS_BF16),
                               KDT_BF16, &lowb, &unused) != 0) {
        fprintf(stderr, "flite_memory: %s\n", err_get());
        return 1;
    }
    /* the adapter trains in f32 master, f32 gradients and a bf16 copy, as the model would */
    const double lora_w = 10.0 * (double)lora;
    printf("\n%s at 1024 px, batch %d, gradient checkpointing: %.0f parameters, LoRA r%d on "
           "qkv,q,context_kv,proj %lld\n\n", model, batch, n, rank, (long long)lora);
    printf("| plan | weights (+ grads) (GiB) | optimizer state (GiB) | activations (GiB) | total (GiB) | target |\n");
    printf("|---|---:|---:|---:|---:|---|\n");
    const struct {
        const char *name;
        double w, s, a;
        const char *target;
    } rows[] = {
        {"ours: LoRA r16, base bf16 (frozen: the bf16 copy only), AdamW", fpb + lora_w, 8.0 * lora, (double)fab,
         "<= 24 GiB"},
        {"ours: LoRA r16, base bf16, 8-bit AdamW", fpb + lora_w, b8 * lora, (double)fab, "<= 24 GiB"},
        {"ours: LoRA r16, base fp32 (stored apart, narrowed per layer), 8-bit AdamW", f32b + lora_w, b8 * lora,
         (double)fab, ""},
        {"ours: LoRA r16, base fp8 (e4m3, a scale per row), 8-bit AdamW", f8b + lora_w, b8 * lora, (double)fab,
         "<= 24 GiB"},
        {"ours: full, AdamW (f32 master and grads, bf16 copy)", (double)pb, 8.0 * n, (double)ab, ""},
        {"ours: full, 8-bit AdamW (f32 master and grads, bf16 copy)", (double)pb, b8 * n, (double)ab, ""},
        {"ours: full, 8-bit AdamW, linears from the f32 master, their grads bf16", (double)lowb, b8 * n, (double)ab,
         "<= 80 GiB"},
        {"F-Lite train.py: LoRA r16, bf16, AdamW8bit (+ 0.96 GiB recompute)", 2.0 * n + 4.0 * lora, b8 * lora,
         3.79 * gib * batch, ""},
        {"F-Lite train.py: full, bf16, AdamW8bit (+ 0.96 GiB recompute)", 4.0 * n, b8 * n, 3.79 * gib * batch, ""},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (rows[i].w == 0) {
            printf("| %s | | | | | |\n", rows[i].name);
            continue;
        }
        printf("| %s | %.1f | %.2f | %.2f | %.1f | %s |\n", rows[i].name, rows[i].w / gib, rows[i].s / gib,
               rows[i].a / gib, (rows[i].w + rows[i].s + rows[i].a) / gib, rows[i].target);
    }
    nn_params_free(&t);
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = "F-Lite";
    int batch = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--model") == 0)
            model = argv[i + 1];
        else if (strcmp(argv[i], "--batch") == 0)
            batch = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: flite_memory [--model F-Lite|F-Lite-7B] [--batch N]\n");
            return 2;
        }
    }
    const double gib = 1024.0 * 1024.0 * 1024.0;
    printf("| px | plan | activations / sample (GiB) | weights (+ grads) (GiB) | full fine-tune, AdamW (GiB) |\n");
    printf("|---:|---|---:|---:|---:|\n");
    for (int px = 512; px <= 1024; px *= 2) {
        struct flite_config cfg;
        if (flite_config_by_name(&cfg, model, px / 8, px / 8, 512) != 0) {
            fprintf(stderr, "flite_memory: %s\n", err_get());
            return 1;
        }
        for (enum denoiser_memory p = DENOISER_MEM_TRAIN; p <= DENOISER_MEM_INFERENCE; p++) {
            int64_t pbytes, abytes;
            if (flite_model_plan_bytes(&cfg, DEVICE_CUDA, batch, p, KDT_BF16, &pbytes, &abytes) != 0) {
                fprintf(stderr, "flite_memory: %s\n", err_get());
                return 1;
            }
            double state = p == DENOISER_MEM_INFERENCE ? 0.0 : 8.0 * (double)flite_param_count(&cfg);
            printf("| %d | %s | %.2f | %.1f | %s%.1f |\n", px, plan_name(p), abytes / gib / batch, pbytes / gib,
                   p == DENOISER_MEM_INFERENCE ? "(sampling) " : "", (pbytes + state + abytes) / gib);
        }
    }
    return plans(model, batch);
}
