/* libFuzzer target: LoRA files (safetensors in any naming, or torch.save
 * zips) through lora_file_read_buffer. What it accepts must hold paired,
 * finite adapters with a positive alpha. Seeds: tests/fixtures/lora. See
 * tests/fuzz/README.md. */
#include "formats/lora_file.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    lora_file_free(&f);
    return 0;
}
