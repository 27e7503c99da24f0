/* The model registry: every denoiser kind the tools know, found by the
 * --model name (a preset such as "DiT-XL/2") or by a model directory's
 * diffusers _class_name. Adding a model is a folder under models/ and one
 * line in models/registry.c (docs/ARCHITECTURE.md, "How to add a model"). */
#ifndef DIT_MODELS_REGISTRY_H
#define DIT_MODELS_REGISTRY_H

#include "models/denoiser.h"

#include <stddef.h>

/* The kinds, NULL-terminated. */
const struct denoiser_kind *const *registry_denoisers(void);
/* The kind whose model dirs carry this _class_name; NULL if none. */
const struct denoiser_kind *registry_denoiser_by_class(const char *class_name);
/* The kind of that family name ("dit"); NULL if none. */
const struct denoiser_kind *registry_denoiser_by_name(const char *name);

#endif
