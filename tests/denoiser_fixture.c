#include "tests/denoiser_fixture.h"
#include "libcommon/philox.h"

#include <stdlib.h>

float *test_denoiser_random_params(const struct denoiser_config *mc, int64_t n, uint64_t seed)
{
    float *p = malloc((size_t)n * sizeof *p), *z = malloc((size_t)n * sizeof *z);
    if (!p || !z)
        abort();
    mc->kind->init(mc->impl, p, seed);
    struct rng_stream s = rng_stream(seed, RNG_NOISE, 9, 9);
    rng_normal_f32(&s, 0, (size_t)n, z);
    for (int64_t i = 0; i < n; i++)
        p[i] += 0.02f * z[i];
    free(z);
    return p;
}
