/* The device memory our DiT asks for, per model and memory plan, counted
 * by the arena planner without allocating (dit_model_plan_bytes): what
 * dit-train and dit-sample print at start on a GPU. Printed as a Markdown
 * table for bench/RESULTS.md, next to PyTorch's saved activations from
 * bench/dit_memory_torch.py.
 *
 * Usage: dit_memory [--latent 32] [--batch 256] [--dtype bf16]
 *
 * Columns: activations per sample (the arena at batch B, divided by B), the
 * weights with gradients as the plan keeps them, and the whole training
 * state at batch B: weights and gradients, AdamW's two f32 moments and the
 * f32 EMA (12 bytes a parameter), and the activations. */
#include "libcommon/error.h"
#include "models/dit/dit.h"
#include "nn/precision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *plan_name(enum dit_memory p)
{
    return p == DIT_MEM_TRAIN ? "train" : p == DIT_MEM_CHECKPOINT ? "train, checkpointing" : "inference";
}

int main(int argc, char **argv)
{
    int latent = 32, batch = 256;
    const char *dtype = "bf16";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--latent") == 0) latent = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0) batch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--dtype") == 0) dtype = argv[i + 1];
        else {
            fprintf(stderr, "usage: dit_memory [--latent N] [--batch N] [--dtype bf16|fp16|fp32]\n");
            return 2;
        }
    }
    enum kdtype dt;
    if (kdtype_for_compute(dtype, DEVICE_CUDA, &dt) != 0) {
        fprintf(stderr, "dit_memory: %s\n", err_get());
        return 2;
    }
    const double mib = 1024.0 * 1024.0, gib = 1024.0 * mib;
    printf("| model | plan | activations / sample (MiB) | weights + grads (GiB) | training state at batch %d (GiB) |\n",
           batch);
    printf("|---|---|---:|---:|---:|\n");
    const char *models[] = {"DiT-S/2", "DiT-B/2", "DiT-L/2", "DiT-XL/2"};
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        struct dit_config cfg;
        if (dit_config_by_name(&cfg, models[k], latent) != 0) {
            fprintf(stderr, "dit_memory: %s\n", err_get());
            return 1;
        }
        for (enum dit_memory p = DIT_MEM_TRAIN; p <= DIT_MEM_INFERENCE; p++) {
            int64_t pbytes, abytes;
            if (dit_model_plan_bytes(&cfg, DEVICE_CUDA, batch, p, dt, &pbytes, &abytes) != 0) {
                fprintf(stderr, "dit_memory: %s\n", err_get());
                return 1;
            }
            double state = p == DIT_MEM_INFERENCE ? 0.0 : 12.0 * (double)dit_param_count(&cfg);
            printf("| %s | %s | %.1f | %.2f | %s%.1f |\n", models[k], plan_name(p), abytes / mib / batch,
                   pbytes / gib, p == DIT_MEM_INFERENCE ? "(sampling) " : "",
                   (pbytes + state + abytes) / gib);
        }
    }
    return 0;
}
