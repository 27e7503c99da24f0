#include "libcommon/tensor_stats.h"
#include "libcommon/error.h"
#include "libcommon/half.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Element i as a double; the data may be unaligned inside the mapping only
 * for odd safetensors writers, so read through memcpy. */
static double element(const struct st_tensor *t, uint64_t i)
{
    const unsigned char *p = (const unsigned char *)t->data + i * st_dtype_size(t->dtype);
    switch (t->dtype) {
    case ST_BOOL: return *p != 0;
    case ST_U8: return *p;
    case ST_I8: return (int8_t)*p;
    case ST_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case ST_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case ST_F16: { uint16_t v; memcpy(&v, p, 2); return f16_to_f32(v); }
    case ST_BF16: { uint16_t v; memcpy(&v, p, 2); return bf16_to_f32(v); }
    case ST_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case ST_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case ST_F32: { float v; memcpy(&v, p, 4); return v; }
    case ST_U64: { uint64_t v; memcpy(&v, p, 8); return (double)v; }
    case ST_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case ST_F64: { double v; memcpy(&v, p, 8); return v; }
    default: return NAN;
    }
}

int tensor_stats_compute(const struct st_tensor *t, struct tensor_stats *out)
{
    memset(out, 0, sizeof *out);
    if (t->dtype == ST_F8_E4M3 || t->dtype == ST_F8_E5M2) {
        err_set("tensor '%s': statistics of %s are not supported", t->name, st_dtype_name(t->dtype));
        return -1;
    }
    uint64_t count = 0, n_nan = 0, n_inf = 0;
    double lo = DBL_MAX, hi = -DBL_MAX, sum = 0;
    const int64_t n = (int64_t)t->nelem;
#pragma omp parallel for reduction(+ : count, n_nan, n_inf, sum) reduction(min : lo) reduction(max : hi) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) {
        double v = element(t, (uint64_t)i);
        if (isnan(v)) {
            n_nan++;
        } else if (isinf(v)) {
            n_inf++;
        } else {
            count++;
            sum += v;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    }
    double mean = count ? sum / count : 0;
    /* Second pass about the mean: stable where sum of squares is not. */
    double ss = 0;
#pragma omp parallel for reduction(+ : ss) if (n > 1 << 16)
    for (int64_t i = 0; i < n; i++) {
        double v = element(t, (uint64_t)i);
        if (isfinite(v))
            ss += (v - mean) * (v - mean);
    }
    out->count = count;
    out->n_nan = n_nan;
    out->n_inf = n_inf;
    out->min = count ? lo : NAN;
    out->max = count ? hi : NAN;
    out->mean = count ? mean : NAN;
    out->std = count ? sqrt(ss / count) : NAN;
    return 0;
}
