/* Shared by the tests that run a denoiser on made-up weights. */
#ifndef DIT_TESTS_DENOISER_FIXTURE_H
#define DIT_TESTS_DENOISER_FIXTURE_H

#include "models/denoiser.h"

#include <stdint.h>

/* The kind's own initialisation from seed, plus 0.02 N(0, 1) everywhere:
 * DiT zero-initialises its adaLN and output layers, which would leave
 * paths that carry no signal. malloc'd, n values. */
float *test_denoiser_random_params(const struct denoiser_config *mc, int64_t n, uint64_t seed);

#endif
