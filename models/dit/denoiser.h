/* The class-conditional DiT behind the denoiser seam (models/denoiser.h). */
#ifndef DIT_MODELS_DIT_DENOISER_H
#define DIT_MODELS_DIT_DENOISER_H

#include "models/denoiser.h"

struct dit_model;

extern const struct denoiser_kind dit_denoiser_kind;

/* A denoiser over a DiT the caller created and frees (tests, benchmarks);
 * denoiser_free releases only the wrapper. */
int dit_denoiser_wrap(struct denoiser *d, struct dit_model *m);

#endif
