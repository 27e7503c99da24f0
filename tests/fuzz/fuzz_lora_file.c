/* libFuzzer target: LoRA files (safetensors in any naming, or torch.save
 * zips) through lora_file_read_buffer, then lora_file_adopt onto a small
 * class-conditional DiT (diffusers' names: q, k and v fused into its qkv).
 * What it accepts must hold paired, finite adapters with a positive alpha;
 * what adoption accepts, whole adapters (the fusing of q, k and v under
 * the sanitizers). Seeds: tests/fixtures/lora and tests/fixtures/lora/dit.
 * See tests/fuzz/README.md. */
#include "formats/lora_file.h"
#include "models/registry.h"
#include "train/lora.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The tiny DiT of tests/fixtures/dit: width 32, depth 2, patch 2, 8x8. */
static const struct nn_params *dit_table(const struct denoiser_kind **kind)
{
    static struct nn_params t;
    static struct denoiser_config mc;
    static int ready;
    if (!ready) {
        if (denoiser_config_load_dir(&mc, "tests/fixtures/dit/tiny_diffusers", NULL) != 0 ||
            denoiser_config_table(&mc, &t) != 0)
            abort(); /* run from the repository root */
        ready = 1;
    }
    *kind = mc.kind;
    return &t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lora_file f;
    if (lora_file_read_buffer("fuzz.safetensors", data, size, &f) != 0)
        return 0;
    for (size_t i = 0; i < f.n; i++) {
        const struct lora_entry *e = &f.e[i];
        if (e->rank < 1 || e->in < 1 || e->out < 1 || !(e->alpha > 0) || !isfinite(e->alpha) || !e->A || !e->B)
            abort();
        for (int64_t j = 0; j < (int64_t)e->rank * e->in; j++)
            if (!isfinite(e->A[j]))
                abort();
    }
    const struct denoiser_kind *kind;
    const struct nn_params *t = dit_table(&kind);
    /* shapes that do not fit are the binding's to refuse; adoption must
     * leave whole adapters (and the sanitizers watch the fusing) */
    if (lora_file_adopt(&f, kind, t) == 0)
        for (size_t i = 0; i < f.n; i++) {
            const struct lora_entry *e = &f.e[i];
            if (e->rank < 1 || e->in < 1 || e->out < 1 || !e->A || !e->B || !(e->alpha > 0))
                abort();
        }
    lora_file_free(&f);
    return 0;
}
