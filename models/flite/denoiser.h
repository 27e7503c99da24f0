/* F-Lite behind the denoiser seam (models/denoiser.h). */
#ifndef DIT_MODELS_FLITE_DENOISER_H
#define DIT_MODELS_FLITE_DENOISER_H

#include "models/denoiser.h"

extern const struct denoiser_kind flite_denoiser_kind;

#endif
