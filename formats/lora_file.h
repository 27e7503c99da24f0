/* LoRA files: what the trainers, ComfyUI and diffusers exchange, read and
 * written as host f32 adapters. dit-lora(5) documents the layouts.
 *
 * Read (the format is told by the tensor names, not the file name):
 *   diffusers  pytorch_lora_weights.safetensors: "transformer.<module>.lora_A.weight"
 *              [r, in] and ".lora_B.weight" [out, r]; r and alpha from the
 *              header's "lora_adapter_metadata" (LoraConfig's fields, keys
 *              "transformer.r", "transformer.lora_alpha", ...), else alpha = r
 *              (scale 1) as diffusers assumes
 *   PEFT       adapter_model.safetensors: "base_model.model.<module>.lora_A.weight",
 *              alpha from adapter_config.json beside it (lora_alpha, r,
 *              rank_pattern, alpha_pattern, use_rslora)
 *   kohya      "lora_unet_<module with '.' as '_'>.lora_down.weight" [r, in],
 *              ".lora_up.weight" [out, r], ".alpha" (a scalar; absent or 0: r)
 *   F-Lite     lora_weights.pt (PEFT's state dict, torch.save) and model.pt
 *              (the whole model with PEFT's "base_layer" and "lora_A.default"
 *              names: only the adapters are taken), through formats/torch_pt.h,
 *              which executes nothing
 * Module names are the model's own (the reference's state-dict names
 * without ".weight"); kohya's flattened names are resolved against the
 * model's names by lora_file_resolve. */
#ifndef DIT_FORMATS_LORA_FILE_H
#define DIT_FORMATS_LORA_FILE_H

#include "libcommon/safetensors.h"

#include <stddef.h>

#define LORA_NAME_MAX 96

enum lora_format { LORA_FORMAT_DIFFUSERS, LORA_FORMAT_PEFT, LORA_FORMAT_KOHYA, LORA_FORMAT_TORCH };

/* The file name a format's adapter takes in a checkpoint or an output
 * folder (ema: the EMA's): pytorch_lora_weights.safetensors (diffusers),
 * adapter_model.safetensors (PEFT), lora_kohya.safetensors (kohya). */
const char *lora_file_name(enum lora_format f, int ema);
/* "diffusers", "peft", "kohya"; -1 otherwise (torch is read only). */
int lora_format_parse(const char *name, enum lora_format *out);
const char *lora_format_name(enum lora_format f);

struct lora_entry {
    char name[LORA_NAME_MAX]; /* the module; kohya's flattened form until resolved */
    int rank, in, out;
    float alpha;              /* scale = alpha / rank (alpha / sqrt(rank) with rslora) */
    float *A, *B;             /* [rank, in], [out, rank], host f32, owned */
};

struct lora_file {
    struct lora_entry *e;
    size_t n;
    int rslora;
    float dropout;            /* as recorded (information only) */
    enum lora_format format;  /* what it was read as */
    int kohya_names;          /* names still in kohya's flattened form */
};

/* Reads a LoRA file of any of the formats above: -1 with err_set() naming
 * the file, the tensor and the reason (a missing half, shapes that do not
 * pair, a rank mismatch, a non-finite alpha, a name of no known format). */
int lora_file_read(const char *path, struct lora_file *f);
/* The same from a file's bytes in memory (fuzzing; no adapter_config.json
 * is looked for beside it); name stands for the path in messages. */
int lora_file_read_buffer(const char *name, const void *data, size_t len, struct lora_file *f);
void lora_file_free(struct lora_file *f);
/* The scale of entry e. */
float lora_entry_scale(const struct lora_file *f, const struct lora_entry *e);

/* Kohya's names back to the model's: each of the model's n module names
 * is flattened ('.' to '_', "lora_unet_" before) and matched. -1 with
 * err_set() naming a file module that matches none. A no-op for files in
 * the model's names. */
int lora_file_resolve(struct lora_file *f, const char *const *modules, size_t n);

/* Writes f in a format (diffusers or kohya; PEFT is the diffusers naming
 * with "base_model.model." and adapter_config.json beside) with tensors in
 * dt (F32, BF16, F16), atomically. targets: the target_modules to record
 * (NULL: the modules' names). */
int lora_file_write(const char *path, const struct lora_file *f, enum lora_format fmt, enum st_dtype dt,
                    const char *targets);

#endif
