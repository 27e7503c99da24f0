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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *plan_name(enum denoiser_memory p)
{
    return p == DENOISER_MEM_TRAIN ? "train" : p == DENOISER_MEM_CHECKPOINT ? "train, checkpointing" : "sampling";
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
    return 0;
}
