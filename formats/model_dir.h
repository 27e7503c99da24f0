/* The diffusers model directory, for any model, exactly as diffusers'
 * save_pretrained writes it and from_pretrained reads it:
 *
 *   config.json                      the model's configuration, with
 *                                    "_class_name" and "_diffusers_version"
 *   diffusion_pytorch_model.safetensors            the weights, or sharded:
 *   diffusion_pytorch_model-00001-of-0000N.safetensors ...
 *   diffusion_pytorch_model.safetensors.index.json {"metadata": {"total_size":
 *                                    bytes of tensor data}, "weight_map":
 *                                    {tensor: shard file}}
 *
 * transformers' folders (a pipeline's text_encoder/) name the weights
 * model.safetensors and model.safetensors.index.json; both names are read.
 * A pipeline folder holds model_index.json, mapping each component name to
 * [library, class], and one such directory per component, named after it.
 *
 * Errors follow libcommon/error.h: NULL or -1 with err_get() naming the
 * directory or the file at fault. */
#ifndef DIT_FORMATS_MODEL_DIR_H
#define DIT_FORMATS_MODEL_DIR_H

#include "libcommon/safetensors.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_DIR_CONFIG "config.json"
#define MODEL_DIR_INDEX "model_index.json"
#define MODEL_DIR_DIFFUSERS_BASE "diffusion_pytorch_model"  /* diffusers' weights */
#define MODEL_DIR_TRANSFORMERS_BASE "model"                 /* transformers' weights */
/* save_pretrained's default max_shard_size, "10GB": huggingface_hub reads
 * GB as 10^9 bytes. */
#define MODEL_DIR_MAX_SHARD_BYTES 10000000000ULL
/* The diffusers release whose layout is written, for "_diffusers_version". */
#define MODEL_DIR_DIFFUSERS_VERSION "0.31.0"

/* One tensor to write; data is read, not copied, during the call. */
struct model_tensor {
    const char *name;
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
};

/* The weights of dir as one set of named tensors, single file or sharded:
 * the first of diffusion_pytorch_model.safetensors.index.json,
 * diffusion_pytorch_model.safetensors, model.safetensors.index.json and
 * model.safetensors that exists (an index before its single file, as
 * from_pretrained looks). A shard the index names that is missing, a tensor
 * mapped to a file that lacks it, or a tensor of a shard that the index does
 * not map is an error naming the file. */
struct st_set *model_dir_open_weights(const char *dir);

/* Writes the tensors under dir (which must exist) as BASE.safetensors, or,
 * when their data exceed max_shard_bytes (0: MODEL_DIR_MAX_SHARD_BYTES), as
 * BASE-0000K-of-0000N.safetensors shards of consecutive tensors plus
 * BASE.safetensors.index.json. Every file is written under a temporary name
 * and renamed into place, the index last; then the files of an earlier save
 * that this one does not use (the other form, shards of another count) are
 * removed, so that no reader finds two sets to choose from. Every file
 * carries the metadata {"format": "pt"}, as save_pretrained writes. Names
 * must be unique. */
int model_dir_write_weights(const char *dir, const char *base, const struct model_tensor *tensors,
                            size_t n, uint64_t max_shard_bytes);

/* dir/config.json; when class_name is not NULL its "_class_name" must be
 * that. A new reference, or NULL. */
json_t *model_dir_read_config(const char *dir, const char *class_name);
/* Writes dir/config.json atomically: config's keys with "_class_name" set to
 * class_name and "_diffusers_version" added when config has none. */
int model_dir_write_config(const char *dir, const char *class_name, const json_t *config);

/* A component of a pipeline folder, from its model_index.json. */
struct model_component {
    char *folder;     /* PIPELINE/NAME, an existing directory */
    char *library;    /* "diffusers", "transformers", ... */
    char *class_name; /* "DiTTransformer2DModel", "AutoencoderKL", ... */
};
/* Looks component `name` up in pipeline_dir/model_index.json: an error when
 * the file is missing or malformed, the component is not listed or listed as
 * [null, null] (saved without it), or its folder is missing. */
int model_index_component(const char *pipeline_dir, const char *name, struct model_component *out);
void model_component_free(struct model_component *c);

#endif
