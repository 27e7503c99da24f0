/* The class-conditional DiT behind the denoiser seam (models/denoiser.h). */
#ifndef DIT_MODELS_DIT_DENOISER_H
#define DIT_MODELS_DIT_DENOISER_H

#include "models/denoiser.h"

extern const struct denoiser_kind dit_denoiser_kind;

#endif
