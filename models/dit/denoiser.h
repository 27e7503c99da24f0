/* The class-conditional DiT behind the denoiser seam (models/denoiser.h). */
#ifndef DIT_MODELS_DIT_DENOISER_H
#define DIT_MODELS_DIT_DENOISER_H

#include "models/denoiser.h"

struct dit_model;

extern const struct denoiser_kind dit_denoiser_kind;

/* A denoiser over a DiT the caller created and frees (tests, benchmarks);
 * denoiser_free releases only the wrapper. */
int dit_denoiser_wrap(struct denoiser *d, struct dit_model *m);

/* A bare safetensors state dict (the original DiT's names or diffusers')
 * of the preset name at latent_size (num_classes 0: the preset's) as a
 * denoiser configuration and its fp32 parameters. 0; -2 with err_set() for
 * an unknown preset; -1 with err_set() naming the file. */
int dit_denoiser_config_from_state_dict(struct denoiser_config *mc, float **params, const char *path,
                                        const char *name, int latent_size, int num_classes);

#endif
