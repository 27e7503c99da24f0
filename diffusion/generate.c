#include "diffusion/generate.h"
#include "libcommon/error.h"

#include <stdlib.h>
#include <string.h>

/* The condition of a guided batch: samples k0 .. k0 + b - 1, then the same
 * samples under the null condition. */
struct batch_cond {
    struct cond c;
    int32_t *labels;
    float *text, *mask;
    uint8_t *null;
};

static int batch_cond_alloc(struct batch_cond *bc, const struct cond *c, int B2)
{
    memset(bc, 0, sizeof *bc);
    const size_t tokens = (size_t)c->text_len;
    bc->null = malloc((size_t)B2);
    bc->labels = c->labels ? malloc((size_t)B2 * sizeof *bc->labels) : NULL;
    bc->text = c->text ? malloc((size_t)B2 * tokens * (size_t)c->text_dim * sizeof *bc->text) : NULL;
    bc->mask = c->text_mask ? malloc((size_t)B2 * tokens * sizeof *bc->mask) : NULL;
    bc->c = (struct cond){bc->labels, bc->text, bc->mask, c->text_len, c->text_dim, bc->null};
    return bc->null && (!c->labels || bc->labels) && (!c->text || bc->text) && (!c->text_mask || bc->mask) ? 0 : -1;
}

static void batch_cond_free(struct batch_cond *bc)
{
    free(bc->labels), free(bc->text), free(bc->mask), free(bc->null);
}

/* Row i of the batch takes sample k's condition, null or not. */
static void batch_cond_set(struct batch_cond *bc, const struct cond *c, int i, int k, int null,
                           const float *negative_text)
{
    const size_t td = (size_t)c->text_len * c->text_dim;
    if (c->labels)
        bc->labels[i] = c->labels[k];
    /* A negative prompt stands in for the null condition: its embedding,
     * not the zero one. */
    const int negative = null && negative_text;
    if (c->text)
        memcpy(bc->text + i * td, negative ? negative_text : c->text + k * td, td * sizeof *bc->text);
    if (c->text_mask)
        memcpy(bc->mask + (size_t)i * c->text_len, c->text_mask + (size_t)k * c->text_len,
               (size_t)c->text_len * sizeof *bc->mask);
    bc->null[i] = (uint8_t)(!negative && (null || (c->null && c->null[k])));
}

int generate(struct denoiser *m, const struct sampler *s, const struct cond *c, int n,
             const struct generate_options *opt, float *latents)
{
    const struct denoiser_info *info = &m->info;
    const int use_cfg = opt->cfg_scale != 1.0f;
    const int B = use_cfg ? m->B / 2 : m->B;
    if (B < 1) {
        err_set("a model planned for %d samples cannot run guided pairs", m->B);
        return -1;
    }
    const int C = info->in_channels, CO = info->out_channels;
    const int64_t hw = (int64_t)m->height * m->width, per = C * hw;
    const int steps = sampler_num_steps(s);
    float *x = malloc((size_t)(2 * B * per) * sizeof *x);
    float *out = malloc((size_t)(2 * B) * CO * hw * sizeof *out);
    float *noise = malloc((size_t)(B * per) * sizeof *noise);
    float *t = malloc((size_t)(2 * B) * sizeof *t);
    struct batch_cond bc;
    int rc = batch_cond_alloc(&bc, c, 2 * B) == 0 && x && out && noise && t ? 0 : -1;
    if (rc)
        err_set("out of memory for sampling");
    for (int k0 = 0; rc == 0 && k0 < n; k0 += B) {
        const int b = n - k0 < B ? n - k0 : B;
        /* Each image draws from its own stream: in parallel, same bits. The
         * draws are the host's largest share of a step on a GPU (25 ms for
         * 256 images on one core). */
#pragma omp parallel for schedule(static) if (b > 1)
        for (int i = 0; i < b; i++) {
            if (opt->init_noise)
                memcpy(x + i * per, opt->init_noise + (int64_t)(k0 + i) * per, (size_t)per * sizeof *x);
            else
                sampler_noise(x + i * per, opt->seed, (uint64_t)(k0 + i), 0, per);
            batch_cond_set(&bc, c, i, k0 + i, 0, NULL);
            batch_cond_set(&bc, c, b + i, k0 + i, 1, opt->negative_text);
        }
        for (int st = 0; st < steps; st++) {
            const float ts = sampler_model_timestep(s, st);
            for (int i = 0; i < (use_cfg ? 2 * b : b); i++)
                t[i] = ts;
            if (use_cfg) {
                memcpy(x + b * per, x, (size_t)(b * per) * sizeof *x);
                denoiser_forward(m, out, x, t, &bc.c, 2 * b);
                if (opt->apg)
                    sampler_apg_combine(out, out, out + (int64_t)b * CO * hw, opt->cfg_scale, opt->apg_threshold,
                                        !opt->apg_batch, b, CO, hw);
                else
                    sampler_cfg_combine(out, out, out + (int64_t)b * CO * hw, opt->cfg_scale, b, opt->guided, CO,
                                        hw);
            } else {
                denoiser_forward(m, out, x, t, &bc.c, b);
            }
            if (sampler_step_noise(s, st))
#pragma omp parallel for schedule(static) if (b > 1)
                for (int i = 0; i < b; i++)
                    sampler_noise(noise + i * per, opt->seed, (uint64_t)(k0 + i), st + 1, per);
            sampler_step(s, st, x, out, info->learned_sigma, noise, b, C, hw);
            if (opt->on_step)
                opt->on_step(opt->ctx);
        }
        memcpy(latents + (int64_t)k0 * per, x, (size_t)(b * per) * sizeof *x);
    }
    free(x), free(out), free(noise), free(t);
    batch_cond_free(&bc);
    return rc;
}
