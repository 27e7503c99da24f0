/* AdamW with decoupled weight decay, as torch.optim.AdamW. */
#include "kernels/cpu/cpu.h"

#include <math.h>

void cpu_adamw_update(float *param, const float *grad, float *m, float *v, int64_t n,
                      const struct adamw_params *hp)
{
    /* The step-dependent scalars in double, as torch computes them in
     * Python floats, then rounded once; the per-element work stays fp32. */
    double t = (double)hp->step;
    double bc1 = 1.0 - pow(hp->beta1, t);
    double bc2 = 1.0 - pow(hp->beta2, t);
    float step_size = (float)(hp->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = (float)(1.0 - hp->lr * hp->weight_decay);
    float b1 = (float)hp->beta1, b2 = (float)hp->beta2, eps = (float)hp->eps;
    float one_b1 = (float)(1.0 - hp->beta1), one_b2 = (float)(1.0 - hp->beta2);
#pragma omp parallel for schedule(static) if (n >= CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i];
        float mi = b1 * m[i] + one_b1 * g;
        float vi = b2 * v[i] + one_b2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = param[i] * decay - step_size * mi / denom;
    }
}
