#include "diffusion/generate.h"
#include "libcommon/error.h"

#include <stdlib.h>
#include <string.h>

int dit_generate(struct dit_model *m, const struct sampler *s, const int *labels, int n,
                 const struct generate_options *opt, float *latents)
{
    const struct dit_config *cfg = &m->cfg;
    const int use_cfg = opt->cfg_scale != 1.0f;
    const int B = use_cfg ? m->B / 2 : m->B;
    if (B < 1) {
        err_set("a model planned for %d samples cannot run guided pairs", m->B);
        return -1;
    }
    const int C = cfg->in_channels, CO = dit_out_channels(cfg), L = cfg->input_size;
    const int64_t hw = (int64_t)L * L, per = C * hw;
    const int steps = sampler_num_steps(s);
    float *x = malloc((size_t)(2 * B * per) * sizeof *x);
    float *out = malloc((size_t)(2 * B) * CO * hw * sizeof *out);
    float *noise = malloc((size_t)(B * per) * sizeof *noise);
    float *t = malloc((size_t)(2 * B) * sizeof *t);
    int32_t *y = malloc((size_t)(2 * B) * sizeof *y);
    int rc = x && out && noise && t && y ? 0 : -1;
    if (rc)
        err_set("out of memory for sampling");
    for (int k0 = 0; rc == 0 && k0 < n; k0 += B) {
        const int b = n - k0 < B ? n - k0 : B;
        /* Each image draws from its own stream: in parallel, same bits. The
         * draws are the host's largest share of a step on a GPU (25 ms for
         * 256 images on one core). */
#pragma omp parallel for schedule(static) if (b > 1)
        for (int i = 0; i < b; i++) {
            sampler_noise(x + i * per, opt->seed, (uint64_t)(k0 + i), 0, per);
            y[i] = labels[k0 + i];
            y[b + i] = cfg->num_classes; /* the null class */
        }
        for (int st = 0; st < steps; st++) {
            const float ts = sampler_model_timestep(s, st);
            for (int i = 0; i < (use_cfg ? 2 * b : b); i++)
                t[i] = ts;
            if (use_cfg) {
                memcpy(x + b * per, x, (size_t)(b * per) * sizeof *x);
                dit_forward(m, out, x, t, y, 2 * b);
                sampler_cfg_combine(out, out, out + (int64_t)b * CO * hw, opt->cfg_scale, b, opt->guided, CO, hw);
            } else {
                dit_forward(m, out, x, t, y, b);
            }
            if (sampler_step_noise(s, st))
#pragma omp parallel for schedule(static) if (b > 1)
                for (int i = 0; i < b; i++)
                    sampler_noise(noise + i * per, opt->seed, (uint64_t)(k0 + i), st + 1, per);
            sampler_step(s, st, x, out, cfg->learn_sigma, noise, b, C, hw);
            if (opt->on_step)
                opt->on_step(opt->ctx);
        }
        memcpy(latents + (int64_t)k0 * per, x, (size_t)(b * per) * sizeof *x);
    }
    free(x), free(out), free(noise), free(t), free(y);
    return rc;
}
