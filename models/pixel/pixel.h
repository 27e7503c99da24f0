/* The weightless pixel encoder: pixels to [-1, 1] as DiT's data transforms
 * do, optionally space-to-depth by a factor F (torch's pixel_unshuffle), so
 * a DiT can train on pixels at 1/F resolution with 3 F^2 channels.
 * Deterministic (no std), shift 0, scale 1. Specs: "pixel", "pixel:F"
 * (F = 1..64); identity "pixel/1 s2d=F". */
#ifndef DIT_MODELS_PIXEL_H
#define DIT_MODELS_PIXEL_H

#include "models/encoder.h"

extern const struct encoder_kind pixel_encoder_kind;

#endif
