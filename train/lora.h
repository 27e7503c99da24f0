/* LoRA adapters between files and devices: what dit-train, dit-sample and
 * dit-lora-merge share. A struct nn_lora's tensors live on a device; a
 * struct lora_file (formats/lora_file.h) holds a file's as host f32. */
#ifndef DIT_TRAIN_LORA_H
#define DIT_TRAIN_LORA_H

#include "formats/lora_file.h"
#include "models/denoiser.h"
#include "nn/lora.h"

/* What dit-train's LoRA options ask for. */
struct lora_options {
    int rank;
    float alpha;           /* 0: the rank (scale 1) */
    float dropout;
    int rslora;
    const char *targets;   /* NULL: the model's default */
    enum nn_lora_init init;
    const char *checkpoint; /* --lora-checkpoint: continue from this adapter (its modules and ranks) */
};

/* The adapter of a training run on d: modules from the options' targets
 * (or from the checkpoint file), allocated for training on d's device in
 * d's compute dtype, initialised (or loaded), and bound to d. -1 with
 * err_set(). */
int train_lora_create(struct nn_lora *l, struct nn_lora_binding *b, struct denoiser *d,
                      const struct lora_options *o, uint64_t seed);

/* The adapter's values in src (an f32 buffer on l's device laid out by its
 * table: the master or an EMA) as a file, in the kind's file naming
 * (lora_file_export; targets are then the modules' names). */
int train_lora_save(const struct nn_lora *l, const struct denoiser_kind *kind, struct tensor src, const char *path,
                    enum lora_format fmt, enum st_dtype dt, const char *targets);
/* A file's values (its names adopted for the kind's model of table t) into
 * the master and compute copy of l, whose modules and ranks it must have;
 * into dst instead (an f32 buffer laid out by the table, an EMA) when dst
 * is present. */
int train_lora_load(struct nn_lora *l, const struct denoiser_kind *kind, const struct nn_params *t, const char *path,
                    struct tensor dst);

/* Files (each with a strength) as one adapter of the combined ranks, for
 * sampling and merging: the scales folded into B, scale 1. *mods and *host
 * (laid out as nn_lora_create lays out *mods) malloc'd. The files' names
 * are adopted for the kind's model of table t (lora_file_adopt); t NULL:
 * taken as the files give them. */
int lora_files_combine(struct lora_file *files, const float *strengths, size_t nfiles,
                       const struct denoiser_kind *kind, const struct nn_params *t, struct nn_lora_module **mods,
                       size_t *nmods, float **host, int64_t *total);

/* A file's module names as the model of table t (of that kind) names its
 * layers: kohya's flattened names resolved, and the kind's file naming
 * (kind->lora_alias) mapped back, parts of one layer fused into one entry
 * exactly (one shared A when lora_file_export wrote them, else the parts'
 * ranks side by side). -1 with err_set() naming a module none of the
 * model's layers is, a part of the wrong shape, or a layer adapted twice. */
int lora_file_adopt(struct lora_file *f, const struct denoiser_kind *kind, const struct nn_params *t);
/* The reverse, for writing: the model's names in the kind's file naming,
 * a fused layer split into its parts (each with the same A and its rows of
 * B, exactly). 1 when renamed; 0 when the kind has no other naming or it
 * lacks one of the file's modules (then the file keeps the model's names);
 * -1 with err_set(). */
int lora_file_export(struct lora_file *f, const struct denoiser_kind *kind);
/* The files (each with a strength) as one adapter on d for sampling, as
 * dit-sample --lora applies them: combined (lora_files_combine against d's
 * layers), allocated on d's device in d's compute dtype without gradients,
 * and bound. *l and *b are to be unbound and freed by the caller. -1 with
 * err_set(), nothing left allocated. */
int lora_files_attach(struct nn_lora *l, struct nn_lora_binding *b, struct denoiser *d, struct lora_file *files,
                      const float *strengths, size_t nfiles);

/* "FILE" or "FILE:SCALE" (--lora): the scale is what follows the last ':'
 * when it reads as a finite number (a path may hold ':' too), else 1. */
void lora_arg_parse(const char *arg, char *path, size_t size, float *scale);

#endif
