/* Summary statistics of a tensor's elements, for dit-inspect --stats and
 * for checks in tests: min, max, mean and standard deviation over the finite
 * values, and how many are NaN or infinite. */
#ifndef DIT_TENSOR_STATS_H
#define DIT_TENSOR_STATS_H

#include "libcommon/safetensors.h"

#include <stdint.h>

struct tensor_stats {
    uint64_t count;  /* finite elements */
    uint64_t n_nan, n_inf;
    double min, max, mean, std; /* std is the population standard deviation */
};

/* Returns 0, or -1 with err_set() for a dtype it cannot read (F8 kinds). */
int tensor_stats_compute(const struct st_tensor *t, struct tensor_stats *out);

#endif
