/* Merging LoRAs: into a model's weights (W += ratio * scale * B A), or
 * into one LoRA (ranks side by side, or re-ranked by SVD). dit-lora-merge(1)
 * is the tool; the arithmetic is here so that tests and other tools share it. */
#ifndef DIT_TRAIN_LORA_MERGE_H
#define DIT_TRAIN_LORA_MERGE_H

#include "formats/lora_file.h"
#include "nn/lora.h"
#include "nn/params.h"

/* The dtype the merge computes in, as kohya's --precision: F32 ("float"),
 * F16 or BF16 (W, A and B rounded to it, the product summed in f32, each
 * result rounded to it). */
int lora_merge_precision_parse(const char *name, enum st_dtype *out);

/* W += ratio * scale * B A for every module of f, into host f32 parameters
 * laid out by t. -1 with err_set() naming a module the table lacks or whose
 * shape differs; nothing changed then. */
int lora_merge_into(const struct lora_file *f, float ratio, const struct nn_params *t, float *params,
                    enum st_dtype precision);

/* Adapter modules and their host values (laid out as nn_lora_create lays
 * out its table: A then B, module by module) as a file's entries, each
 * with its module's scale (alpha = scale x rank). With rank > 0 each module
 * is re-ranked to at most rank by the SVD of B A (QR of B and A^T, then the
 * SVD of the small product: exact up to the discarded singular values),
 * the scale folded into B and alpha = rank. -1 with err_set(). */
int lora_to_file(const struct nn_lora_module *mods, size_t n, const float *host, int rank, struct lora_file *out);

#endif
