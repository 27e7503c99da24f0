/* The whole AutoencoderKL on CUDA against the CPU backend: encode (mean and
 * std) and decode of a tiny random config with and without the mid-block
 * attention and quant convs, in f32 (1e-5) and bf16 (1e-2). */
#include "tests/cuda/cuda_test_util.h"
#include "libcommon/error.h"
#include "models/vae/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct vae_config tiny(int n_blocks, int attention, int quant, int latent)
{
    struct vae_config c = {
        .in_channels = 3, .out_channels = 3, .latent_channels = latent, .n_blocks = n_blocks,
        .block_out_channels = {4, 8, 8}, .layers_per_block = 1, .norm_num_groups = 2,
        .use_quant_conv = quant, .use_post_quant_conv = quant, .mid_block_add_attention = attention,
        .sample_size = 16, .scaling_factor = 0.5f, .shift_factor = 0.0f,
    };
    return c;
}

/* Random parameters that keep activations O(1): weights ~ N(0, 1/fan_in),
 * GroupNorm scales near 1. */
static float *random_params(const struct vae_config *c, uint64_t seed, int64_t *total)
{
    struct vae_params t;
    if (vae_param_table(c, &t) != 0)
        return NULL;
    float *p = test_randn((size_t)t.total, seed, 1.0f);
    for (size_t i = 0; i < t.count; i++) {
        const struct vae_param *q = &t.p[i];
        const int is_norm = strstr(q->name, "norm") && q->ndim == 1;
        const int is_bias = strstr(q->name, ".bias") != NULL;
        const double fan_in = q->ndim > 1 ? (double)q->n / q->shape[0] : 1;
        for (int64_t k = 0; k < q->n; k++) {
            float *v = &p[q->offset + k];
            *v = is_norm && !is_bias ? 1.0f + 0.2f * *v : is_bias ? 0.05f * *v : (float)(*v / sqrt(fan_in));
        }
    }
    *total = t.total;
    vae_params_free(&t);
    return p;
}

static void run(const struct vae_config *c, enum kdtype dt)
{
    const int W = 16, H = 8, f = vae_factor(c);
    const size_t nx = 3 * (size_t)W * H, nl = (size_t)c->latent_channels * (W / f) * (H / f);
    int64_t np = 0;
    float *params = random_params(c, 11, &np);
    float *x = test_randn(nx, 12, 0.6f), *z = test_randn(nl, 13, 1.0f);
    if (dt != KDT_F32) /* the inputs the bf16 run really sees */
        test_round_to(dt, params, (size_t)np), test_round_to(dt, x, nx), test_round_to(dt, z, nl);
    float *m[2], *s[2], *d[2];
    for (int k = 0; k < 2; k++) {
        struct kctx ctx = k ? cuda_test_ctx() : cpu_test_ctx();
        struct vae v;
        if (vae_create(&v, c, params, &ctx, k ? dt : KDT_F32) != 0)
            test_fail(__FILE__, __LINE__, "vae_create: %s", err_get());
        m[k] = malloc(nl * sizeof(float)), s[k] = malloc(nl * sizeof(float)), d[k] = malloc(nx * sizeof(float));
        CHECK_INT(vae_encode(&v, x, W, H, m[k], s[k]), 0);
        CHECK_INT(vae_decode(&v, z, W, H, d[k]), 0);
        vae_close(&v);
        kctx_free(&ctx);
    }
    CHECK_PARITY("vae mean", m[1], m[0], nl, tol_for(dt));
    CHECK_PARITY("vae std", s[1], s[0], nl, tol_for(dt));
    CHECK_PARITY("vae decoded", d[1], d[0], nx, tol_for(dt));
    for (int k = 0; k < 2; k++)
        free(m[k]), free(s[k]), free(d[k]);
    free(params), free(x), free(z);
}

TEST(vae_f32_matches_cpu)
{
    struct vae_config sd = tiny(2, 1, 1, 4), flux = tiny(3, 1, 0, 16), plain = tiny(2, 0, 1, 4);
    run(&sd, KDT_F32);
    run(&flux, KDT_F32);
    run(&plain, KDT_F32);
}

TEST(vae_bf16_matches_cpu)
{
    struct vae_config sd = tiny(2, 1, 1, 4), flux = tiny(3, 1, 0, 16);
    run(&sd, KDT_BF16);
    run(&flux, KDT_BF16);
}
