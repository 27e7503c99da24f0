/* The CUDA kernels of the non-matmul, non-attention ops (kernels/cuda/
 * norm.cu (layernorm, modulate, the fused adaLN, gated residual),
 * activation.cu, elementwise.cu, patch.cu, embedding.cu, adamw.cu,
 * convert.cu) against the CPU backend, from the same random inputs rounded
 * to the storage dtype: fp32 parity (and bit equality where the kernels
 * promise it: add, axpy, scale, fill, the permutations, the embedding
 * backward, AdamW and the EMA), bf16 and f16 runs within 1e-2; the
 * accumulate rules (pre-filled gradients), overwritten outputs (pre-filled
 * with junk), absent outputs; C not a multiple of 4 or 32, M = 1, rows
 * wider than the register tile, views only 2 or 4 bytes aligned (the
 * scalar paths), reductions over several blocks. */
#include "tests/cuda/cuda_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const enum kdtype ALL_DT[3] = {KDT_F32, KDT_BF16, KDT_F16};

/* n random values already rounded to dt: what both backends compute from. */
static float *rand_in(enum kdtype dt, size_t n, uint64_t seed, float scale)
{
    float *x = test_randn(n, seed, scale);
    test_round_to(dt, x, n);
    return x;
}

/* One tensor on both backends: f32 on the CPU, dt on CUDA at element
 * `offset` of its allocation (1 makes it only 2- or 4-byte aligned). */
struct pair {
    struct tensor c, g, gbase;
    size_t n;
};

static struct pair pair_new(struct kctx *cpu, struct kctx *gpu, enum kdtype dt, const float *host,
                            size_t n, int offset)
{
    struct pair p;
    p.n = n;
    p.c = test_tensor(cpu, KDT_F32, host, n);
    p.gbase = test_tensor(gpu, dt, NULL, n + (size_t)offset);
    p.g = tensor_view(p.gbase, offset, (int64_t)n);
    if (host && n)
        k_upload_f32(gpu, p.g, host, (int64_t)n);
    return p;
}

static void pair_free(struct kctx *cpu, struct kctx *gpu, struct pair *p)
{
    k_free(cpu, &p->c);
    k_free(gpu, &p->gbase);
}

/* The CUDA values of p against the CPU's. */
static void pair_check(struct kctx *cpu, struct kctx *gpu, const struct pair *p, double tol,
                       const char *what)
{
    float *want = test_values(cpu, p->c), *got = test_values(gpu, p->g);
    CHECK_PARITY(what, got, want, p->n, tol);
    free(want);
    free(got);
}

/* The same, bit for bit, once the CPU's f32 result is rounded to the CUDA
 * tensor's dtype: what a kernel that computes in fp32 and rounds once on
 * store must give. */
static void pair_check_exact(struct kctx *cpu, struct kctx *gpu, const struct pair *p,
                             const char *what)
{
    float *want = test_values(cpu, p->c), *got = test_values(gpu, p->g);
    test_round_to(p->g.dtype, want, p->n);
    int bad = 0;
    for (size_t i = 0; i < p->n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ < 5)
            test_fail(__FILE__, __LINE__, "%s[%zu]: got %.9g, want %.9g (not bit-equal)", what,
                      i, (double)got[i], (double)want[i]);
    free(want);
    free(got);
}

/* A view of a pair: n elements from `at` on both sides. */
static struct pair pair_view(const struct pair *p, int64_t at, size_t n)
{
    struct pair v = *p;
    v.c = tensor_view(p->c, at, (int64_t)n);
    v.g = tensor_view(p->g, at, (int64_t)n);
    v.n = n;
    return v;
}

/* ---- layernorm ------------------------------------------------------------- */

static void layernorm_case(enum kdtype dt, int M, int C, int offset, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    size_t n = (size_t)M * C;
    /* A large mean: the two-pass variance must not cancel. */
    float *x = test_randn(n, seed, 2.0f);
    for (size_t i = 0; i < n; i++)
        x[i] += 5.0f;
    test_round_to(dt, x, n);
    float *dy = rand_in(dt, n, seed + 1, 1.0f);
    float *d0 = rand_in(dt, n, seed + 2, 0.5f); /* dinp accumulates onto this */
    float *junk = test_filled(n, 7.0f);

    struct pair in = pair_new(&cpu, &gpu, dt, x, n, offset);
    struct pair out = pair_new(&cpu, &gpu, dt, junk, n, offset);
    struct pair mean = pair_new(&cpu, &gpu, KDT_F32, junk, (size_t)M, 0);
    struct pair rstd = pair_new(&cpu, &gpu, KDT_F32, junk, (size_t)M, 0);
    struct pair dout = pair_new(&cpu, &gpu, dt, dy, n, offset);
    struct pair dinp = pair_new(&cpu, &gpu, dt, d0, n, offset);

    k_layernorm_forward(&cpu, out.c, mean.c, rstd.c, in.c, M, C, 1e-6f);
    k_layernorm_forward(&gpu, out.g, mean.g, rstd.g, in.g, M, C, 1e-6f);
    /* backward from the CPU's statistics on both sides: it is tested alone */
    float *mu = test_values(&cpu, mean.c), *rs = test_values(&cpu, rstd.c);
    struct pair mean_b = pair_new(&cpu, &gpu, KDT_F32, mu, (size_t)M, 0);
    struct pair rstd_b = pair_new(&cpu, &gpu, KDT_F32, rs, (size_t)M, 0);
    k_layernorm_backward(&cpu, dinp.c, dout.c, in.c, mean_b.c, rstd_b.c, M, C);
    k_layernorm_backward(&gpu, dinp.g, dout.g, in.g, mean_b.g, rstd_b.g, M, C);
    /* absent dinp: nothing to do, nothing written */
    k_layernorm_backward(&gpu, tensor_none(), dout.g, in.g, mean_b.g, rstd_b.g, M, C);

    char what[128];
    snprintf(what, sizeof what, "layernorm %s M%d C%d offset %d", kdtype_name(dt), M, C, offset);
    char w2[160];
    snprintf(w2, sizeof w2, "%s out", what);
    pair_check(&cpu, &gpu, &out, tol_for(dt), w2);
    snprintf(w2, sizeof w2, "%s mean", what);
    pair_check(&cpu, &gpu, &mean, TOL_F32, w2);
    snprintf(w2, sizeof w2, "%s rstd", what);
    pair_check(&cpu, &gpu, &rstd, TOL_F32, w2);
    snprintf(w2, sizeof w2, "%s dinp (accumulated)", what);
    pair_check(&cpu, &gpu, &dinp, tol_for(dt), w2);

    struct pair *all[] = {&in, &out, &mean, &rstd, &dout, &dinp, &mean_b, &rstd_b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(x);
    free(dy);
    free(d0);
    free(junk);
    free(mu);
    free(rs);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* C: a multiple of the 16-byte group, from under one group per lane to
 * the register tile's largest (2048 f32 and 3072 bf16 take 16 groups per
 * lane) and beyond it (4104); ragged (37, 1, 6). M = 1 and M not a multiple
 * of the 8 rows of a block. */
static const int LN_SHAPES[][2] = {{5, 64},   {11, 96},   {4, 37},   {1, 288},  {3, 1},  {9, 6},
                                   {2, 1040}, {2, 2048}, {2, 3072}, {2, 4104}, {17, 40}};

TEST(layernorm_f32)
{
    for (size_t s = 0; s < sizeof LN_SHAPES / sizeof LN_SHAPES[0]; s++)
        layernorm_case(KDT_F32, LN_SHAPES[s][0], LN_SHAPES[s][1], 0, 10 + s);
}

TEST(layernorm_bf16_f16)
{
    for (size_t s = 0; s < sizeof LN_SHAPES / sizeof LN_SHAPES[0]; s++) {
        layernorm_case(KDT_BF16, LN_SHAPES[s][0], LN_SHAPES[s][1], 0, 30 + s);
        layernorm_case(KDT_F16, LN_SHAPES[s][0], LN_SHAPES[s][1], 0, 50 + s);
    }
}

TEST(layernorm_unaligned_views)
{
    for (int d = 0; d < 3; d++) {
        layernorm_case(ALL_DT[d], 5, 64, 1, 70 + d);
        layernorm_case(ALL_DT[d], 3, 1040, 1, 80 + d);
    }
}

/* ---- modulate and gated residual ------------------------------------------ */

/* The adaLN buffer [B, 6C]; shift, scale (gate) are views of C at row
 * stride 6C, at element offsets 0 and C (2C for the gate). */
struct adaln_case {
    enum kdtype dt;
    int B, T, C;
    int offset; /* of x, dout and the outputs */
};

static void modulate_case(const struct adaln_case *k, int want_dx, int want_dshift,
                          int want_dscale, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    const enum kdtype dt = k->dt;
    const int B = k->B, T = k->T, C = k->C, ms = 6 * C;
    const size_t n = (size_t)B * T * C, nm = (size_t)B * ms;
    const int64_t ext = (int64_t)(B - 1) * ms + C;
    float *x = rand_in(dt, n, seed, 1.0f), *dy = rand_in(dt, n, seed + 1, 1.0f);
    float *mod = rand_in(dt, nm, seed + 2, 0.5f), *dmod0 = rand_in(dt, nm, seed + 3, 1.0f);
    float *junk = test_filled(n, 7.0f);

    struct pair px = pair_new(&cpu, &gpu, dt, x, n, k->offset);
    struct pair pout = pair_new(&cpu, &gpu, dt, junk, n, k->offset);
    struct pair pmod = pair_new(&cpu, &gpu, dt, mod, nm, 0);
    struct pair pdout = pair_new(&cpu, &gpu, dt, dy, n, k->offset);
    struct pair pdx = pair_new(&cpu, &gpu, dt, junk, n, k->offset);
    struct pair pdmod = pair_new(&cpu, &gpu, dt, dmod0, nm, 0);
    struct pair shift = pair_view(&pmod, 0, (size_t)ext), scale = pair_view(&pmod, C, (size_t)ext);
    struct pair dshift = pair_view(&pdmod, 0, (size_t)ext);
    struct pair dscale = pair_view(&pdmod, C, (size_t)ext);

    k_modulate_forward(&cpu, pout.c, px.c, shift.c, scale.c, B, T, C, ms);
    k_modulate_forward(&gpu, pout.g, px.g, shift.g, scale.g, B, T, C, ms);
    struct tensor none = tensor_none();
    k_modulate_backward(&cpu, want_dx ? pdx.c : none, want_dshift ? dshift.c : none,
                        want_dscale ? dscale.c : none, pdout.c, px.c, scale.c, B, T, C, ms);
    k_modulate_backward(&gpu, want_dx ? pdx.g : none, want_dshift ? dshift.g : none,
                        want_dscale ? dscale.g : none, pdout.g, px.g, scale.g, B, T, C, ms);

    char what[160];
    snprintf(what, sizeof what, "modulate %s B%d T%d C%d offset %d out", kdtype_name(dt), B, T,
             C, k->offset);
    pair_check(&cpu, &gpu, &pout, tol_for(dt), what);
    snprintf(what, sizeof what, "modulate %s B%d T%d C%d dx%d dshift%d dscale%d: dx",
             kdtype_name(dt), B, T, C, want_dx, want_dshift, want_dscale);
    pair_check(&cpu, &gpu, &pdx, tol_for(dt), what); /* junk on both sides when absent */
    /* The whole [B, 6C] buffer: the rows between the views stay untouched. */
    snprintf(what, sizeof what, "modulate %s B%d T%d C%d dx%d dshift%d dscale%d: dmod",
             kdtype_name(dt), B, T, C, want_dx, want_dshift, want_dscale);
    pair_check(&cpu, &gpu, &pdmod, tol_for(dt), what);

    struct pair *all[] = {&px, &pout, &pmod, &pdout, &pdx, &pdmod};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(x);
    free(dy);
    free(mod);
    free(dmod0);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* in_place: out is res (the model's use); else out is a separate tensor
 * pre-filled with junk, and res must come back unchanged. */
static void gated_case(const struct adaln_case *k, int want_dy, int want_dgate, int in_place,
                       uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    const enum kdtype dt = k->dt;
    const int B = k->B, T = k->T, C = k->C, ms = 6 * C;
    const size_t n = (size_t)B * T * C, nm = (size_t)B * ms;
    const int64_t ext = (int64_t)(B - 1) * ms + C;
    float *res = rand_in(dt, n, seed, 1.0f), *y = rand_in(dt, n, seed + 1, 1.0f);
    float *dres = rand_in(dt, n, seed + 2, 1.0f);
    float *mod = rand_in(dt, nm, seed + 3, 0.5f), *dmod0 = rand_in(dt, nm, seed + 4, 1.0f);
    float *junk = test_filled(n, 7.0f);

    struct pair pres = pair_new(&cpu, &gpu, dt, res, n, k->offset);
    struct pair pout = in_place ? pres : pair_new(&cpu, &gpu, dt, junk, n, k->offset);
    struct pair py = pair_new(&cpu, &gpu, dt, y, n, k->offset);
    struct pair pdres = pair_new(&cpu, &gpu, dt, dres, n, k->offset);
    struct pair pdy = pair_new(&cpu, &gpu, dt, junk, n, k->offset);
    struct pair pmod = pair_new(&cpu, &gpu, dt, mod, nm, 0);
    struct pair pdmod = pair_new(&cpu, &gpu, dt, dmod0, nm, 0);
    struct pair gate = pair_view(&pmod, 2 * C, (size_t)ext);
    struct pair dgate = pair_view(&pdmod, 2 * C, (size_t)ext);

    k_gated_residual_forward(&cpu, pout.c, pres.c, py.c, gate.c, B, T, C, ms);
    k_gated_residual_forward(&gpu, pout.g, pres.g, py.g, gate.g, B, T, C, ms);
    struct tensor none = tensor_none();
    k_gated_residual_backward(&cpu, want_dy ? pdy.c : none, want_dgate ? dgate.c : none,
                              pdres.c, py.c, gate.c, B, T, C, ms);
    k_gated_residual_backward(&gpu, want_dy ? pdy.g : none, want_dgate ? dgate.g : none,
                              pdres.g, py.g, gate.g, B, T, C, ms);

    char what[160];
    snprintf(what, sizeof what, "gated_residual %s B%d T%d C%d offset %d in place %d: out",
             kdtype_name(dt), B, T, C, k->offset, in_place);
    pair_check(&cpu, &gpu, &pout, tol_for(dt), what);
    if (!in_place) {
        float *got = test_values(&gpu, pres.g);
        int same = memcmp(got, res, n * sizeof *got) == 0;
        CHECK(same); /* res is read only */
        free(got);
        pair_free(&cpu, &gpu, &pout);
    }
    snprintf(what, sizeof what, "gated_residual %s B%d T%d C%d dy%d dgate%d: dy",
             kdtype_name(dt), B, T, C, want_dy, want_dgate);
    pair_check(&cpu, &gpu, &pdy, tol_for(dt), what);
    snprintf(what, sizeof what, "gated_residual %s B%d T%d C%d dy%d dgate%d: dmod",
             kdtype_name(dt), B, T, C, want_dy, want_dgate);
    pair_check(&cpu, &gpu, &pdmod, tol_for(dt), what);

    struct pair *all[] = {&pres, &py, &pdres, &pdy, &pmod, &pdmod};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(res);
    free(y);
    free(dres);
    free(mod);
    free(dmod0);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* C ragged (37: no vectors, and the scale view misaligned), not a multiple
 * of the 32-column tile (40), several tiles (96), T above the 32 rows of a
 * block, B = 1, and a batch of 9. */
static const int ADALN_SHAPES[][3] = {{2, 16, 96}, {2, 40, 37}, {1, 70, 40}, {9, 5, 64}};

TEST(modulate_parity_all_dtypes)
{
    uint64_t seed = 200;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof ADALN_SHAPES / sizeof ADALN_SHAPES[0]; s++) {
            struct adaln_case k = {ALL_DT[d], ADALN_SHAPES[s][0], ADALN_SHAPES[s][1],
                                   ADALN_SHAPES[s][2], 0};
            modulate_case(&k, 1, 1, 1, seed += 7);
        }
}

/* Every subset of the three gradient outputs, including none. */
TEST(modulate_backward_absent_outputs)
{
    uint64_t seed = 300;
    for (int mask = 0; mask < 8; mask++) {
        struct adaln_case k = {KDT_F32, 2, 24, 40, 0};
        modulate_case(&k, mask & 1, (mask >> 1) & 1, (mask >> 2) & 1, seed += 7);
    }
    struct adaln_case k = {KDT_BF16, 2, 24, 40, 0};
    modulate_case(&k, 1, 0, 0, seed += 7);
    modulate_case(&k, 0, 1, 0, seed += 7);
}

TEST(modulate_unaligned_views)
{
    uint64_t seed = 400;
    for (int d = 0; d < 3; d++) {
        struct adaln_case k = {ALL_DT[d], 2, 16, 64, 1};
        modulate_case(&k, 1, 1, 1, seed += 7);
        modulate_case(&k, 1, 0, 0, seed += 7);
    }
}

TEST(gated_residual_parity_all_dtypes)
{
    uint64_t seed = 500;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof ADALN_SHAPES / sizeof ADALN_SHAPES[0]; s++) {
            struct adaln_case k = {ALL_DT[d], ADALN_SHAPES[s][0], ADALN_SHAPES[s][1],
                                   ADALN_SHAPES[s][2], 0};
            gated_case(&k, 1, 1, 1, seed += 7);
            gated_case(&k, 0, 0, 0, seed += 7);
        }
}

TEST(gated_residual_absent_outputs_and_views)
{
    uint64_t seed = 600;
    for (int mask = 0; mask < 4; mask++) {
        struct adaln_case k = {KDT_F32, 2, 24, 40, 0};
        gated_case(&k, mask & 1, (mask >> 1) & 1, 1, seed += 7);
    }
    for (int d = 0; d < 3; d++) {
        struct adaln_case k = {ALL_DT[d], 2, 16, 64, 1};
        gated_case(&k, 1, 1, 1, seed += 7);
        gated_case(&k, 1, 0, 0, seed += 7);
    }
}

/* ---- adaLN: LayerNorm and modulate fused ------------------------------------ */

/* k_adaln_forward and k_adaln_backward on both backends; shift and scale
 * are chunks 0 and 1 of the [B, 6C] buffer. Backward runs from the CPU's
 * statistics on both sides, so it is tested alone; dx and the whole dmod
 * buffer are pre-filled (both accumulate), and the outputs not wanted stay
 * as they were (mask bits: 1 dx, 2 dshift, 4 dscale). */
static void fused_adaln_case(const struct adaln_case *k, int mask, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    const enum kdtype dt = k->dt;
    const int B = k->B, T = k->T, C = k->C, ms = 6 * C, M = B * T;
    const size_t n = (size_t)B * T * C, nm = (size_t)B * ms;
    const int64_t ext = (int64_t)(B - 1) * ms + C;
    float *x = test_randn(n, seed, 2.0f);
    for (size_t i = 0; i < n; i++)
        x[i] += 3.0f; /* a mean far from 0 */
    test_round_to(dt, x, n);
    float *dy = rand_in(dt, n, seed + 1, 1.0f), *dx0 = rand_in(dt, n, seed + 2, 0.5f);
    float *mod = rand_in(dt, nm, seed + 3, 0.5f), *dmod0 = rand_in(dt, nm, seed + 4, 1.0f);
    float *junk = test_filled(n, 7.0f);

    struct pair px = pair_new(&cpu, &gpu, dt, x, n, k->offset);
    struct pair pout = pair_new(&cpu, &gpu, dt, junk, n, k->offset);
    struct pair mean = pair_new(&cpu, &gpu, KDT_F32, junk, (size_t)M, 0);
    struct pair rstd = pair_new(&cpu, &gpu, KDT_F32, junk, (size_t)M, 0);
    struct pair pmod = pair_new(&cpu, &gpu, dt, mod, nm, 0);
    struct pair pdout = pair_new(&cpu, &gpu, dt, dy, n, k->offset);
    struct pair pdx = pair_new(&cpu, &gpu, dt, dx0, n, k->offset);
    struct pair pdmod = pair_new(&cpu, &gpu, dt, dmod0, nm, 0);
    struct pair shift = pair_view(&pmod, 0, (size_t)ext), scale = pair_view(&pmod, C, (size_t)ext);
    struct pair dshift = pair_view(&pdmod, 0, (size_t)ext);
    struct pair dscale = pair_view(&pdmod, C, (size_t)ext);

    k_adaln_forward(&cpu, pout.c, mean.c, rstd.c, px.c, shift.c, scale.c, B, T, C, ms, 1e-6f);
    k_adaln_forward(&gpu, pout.g, mean.g, rstd.g, px.g, shift.g, scale.g, B, T, C, ms, 1e-6f);
    float *mu = test_values(&cpu, mean.c), *rs = test_values(&cpu, rstd.c);
    struct pair mean_b = pair_new(&cpu, &gpu, KDT_F32, mu, (size_t)M, 0);
    struct pair rstd_b = pair_new(&cpu, &gpu, KDT_F32, rs, (size_t)M, 0);
    struct tensor none = tensor_none();
    k_adaln_backward(&cpu, mask & 1 ? pdx.c : none, mask & 2 ? dshift.c : none,
                     mask & 4 ? dscale.c : none, pdout.c, px.c, mean_b.c, rstd_b.c, scale.c, B,
                     T, C, ms);
    k_adaln_backward(&gpu, mask & 1 ? pdx.g : none, mask & 2 ? dshift.g : none,
                     mask & 4 ? dscale.g : none, pdout.g, px.g, mean_b.g, rstd_b.g, scale.g, B,
                     T, C, ms);

    char what[128], w2[192];
    snprintf(what, sizeof what, "adaln %s B%d T%d C%d offset %d mask %d", kdtype_name(dt), B, T,
             C, k->offset, mask);
    snprintf(w2, sizeof w2, "%s out", what);
    pair_check(&cpu, &gpu, &pout, tol_for(dt), w2);
    snprintf(w2, sizeof w2, "%s mean", what);
    pair_check(&cpu, &gpu, &mean, TOL_F32, w2);
    snprintf(w2, sizeof w2, "%s rstd", what);
    pair_check(&cpu, &gpu, &rstd, TOL_F32, w2);
    snprintf(w2, sizeof w2, "%s dx (accumulated)", what);
    pair_check(&cpu, &gpu, &pdx, tol_for(dt), w2);
    /* The whole [B, 6C] buffer: the chunks beyond shift and scale stay. */
    snprintf(w2, sizeof w2, "%s dmod (accumulated)", what);
    pair_check(&cpu, &gpu, &pdmod, tol_for(dt), w2);
    if (!(mask & 1)) {
        float *got = test_values(&gpu, pdx.g);
        int same = memcmp(got, dx0, n * sizeof *got) == 0;
        CHECK(same); /* absent dx: not written */
        free(got);
    }

    struct pair *all[] = {&px, &pout, &mean, &rstd, &pmod, &pdout, &pdx, &pdmod, &mean_b, &rstd_b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(x);
    free(dy);
    free(dx0);
    free(mod);
    free(dmod0);
    free(junk);
    free(mu);
    free(rs);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* The modulate shapes, plus rows on the register tile's vector path at
 * several groups per lane (1040) and C = 1 (one column, a warp mostly idle). */
static const int FUSED_SHAPES[][3] = {{2, 16, 96}, {2, 40, 37}, {1, 70, 40},
                                      {9, 5, 64},  {2, 3, 1040}, {3, 4, 1}};

TEST(adaln_fused_parity_all_dtypes)
{
    uint64_t seed = 700;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof FUSED_SHAPES / sizeof FUSED_SHAPES[0]; s++) {
            struct adaln_case k = {ALL_DT[d], FUSED_SHAPES[s][0], FUSED_SHAPES[s][1],
                                   FUSED_SHAPES[s][2], 0};
            fused_adaln_case(&k, 7, seed += 7);
        }
}

/* Every subset of dx, dshift, dscale, including none. */
TEST(adaln_fused_absent_outputs)
{
    uint64_t seed = 800;
    for (int mask = 0; mask < 8; mask++) {
        struct adaln_case k = {KDT_F32, 2, 24, 40, 0};
        fused_adaln_case(&k, mask, seed += 7);
    }
    struct adaln_case k = {KDT_BF16, 2, 24, 64, 0};
    fused_adaln_case(&k, 1, seed += 7);
    fused_adaln_case(&k, 6, seed += 7);
}

/* x, out, dout and dx only 2 or 4 bytes aligned: the scalar kernels. */
TEST(adaln_fused_unaligned_views)
{
    uint64_t seed = 900;
    for (int d = 0; d < 3; d++) {
        struct adaln_case k = {ALL_DT[d], 2, 16, 64, 1};
        fused_adaln_case(&k, 7, seed += 7);
        fused_adaln_case(&k, 1, seed += 7);
    }
}

/* ---- activations ------------------------------------------------------------ */

static void activation_case(enum kdtype dt, int gelu, size_t n, int offset, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    float *x = rand_in(dt, n, seed, 3.0f), *dy = rand_in(dt, n, seed + 1, 1.0f);
    float *junk = test_filled(n, 7.0f);
    struct pair px = pair_new(&cpu, &gpu, dt, x, n, offset);
    struct pair pout = pair_new(&cpu, &gpu, dt, junk, n, offset);
    struct pair pdy = pair_new(&cpu, &gpu, dt, dy, n, offset);
    struct pair pdx = pair_new(&cpu, &gpu, dt, junk, n, offset);
    if (gelu) {
        k_gelu_forward(&cpu, pout.c, px.c, (int64_t)n);
        k_gelu_forward(&gpu, pout.g, px.g, (int64_t)n);
        k_gelu_backward(&cpu, pdx.c, pdy.c, px.c, (int64_t)n);
        k_gelu_backward(&gpu, pdx.g, pdy.g, px.g, (int64_t)n);
        k_gelu_backward(&gpu, tensor_none(), pdy.g, px.g, (int64_t)n);
    } else {
        k_silu_forward(&cpu, pout.c, px.c, (int64_t)n);
        k_silu_forward(&gpu, pout.g, px.g, (int64_t)n);
        k_silu_backward(&cpu, pdx.c, pdy.c, px.c, (int64_t)n);
        k_silu_backward(&gpu, pdx.g, pdy.g, px.g, (int64_t)n);
        k_silu_backward(&gpu, tensor_none(), pdy.g, px.g, (int64_t)n);
    }
    char what[128];
    snprintf(what, sizeof what, "%s %s n%zu offset %d forward", gelu ? "gelu" : "silu",
             kdtype_name(dt), n, offset);
    pair_check(&cpu, &gpu, &pout, tol_for(dt), what);
    snprintf(what, sizeof what, "%s %s n%zu offset %d backward", gelu ? "gelu" : "silu",
             kdtype_name(dt), n, offset);
    pair_check(&cpu, &gpu, &pdx, tol_for(dt), what);
    struct pair *all[] = {&px, &pout, &pdy, &pdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(x);
    free(dy);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(gelu_silu_parity)
{
    static const size_t sizes[] = {1, 7, 1000, 4096};
    uint64_t seed = 700;
    for (int gelu = 0; gelu < 2; gelu++)
        for (int d = 0; d < 3; d++)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                activation_case(ALL_DT[d], gelu, sizes[s], 0, seed += 3);
                if (sizes[s] > 1)
                    activation_case(ALL_DT[d], gelu, sizes[s], 1, seed += 3);
            }
}

/* Large |x|: the limits 0 and x without NaN from an overflowing exp. */
TEST(gelu_silu_saturation)
{
    struct kctx gpu = cuda_test_ctx();
    float x[8] = {-200.0f, -90.0f, -20.0f, -0.0f, 0.0f, 20.0f, 90.0f, 200.0f};
    struct tensor t = test_tensor(&gpu, KDT_F32, x, 8), o = test_tensor(&gpu, KDT_F32, NULL, 8);
    k_gelu_forward(&gpu, o, t, 8);
    float *g = test_values(&gpu, o);
    k_silu_forward(&gpu, o, t, 8);
    float *s = test_values(&gpu, o);
    for (int i = 0; i < 8; i++) {
        float want = x[i] > 0 ? x[i] : 0.0f;
        CHECK_NEAR(g[i], want, 1e-4 * fabs(x[i]) + 1e-30);
        CHECK_NEAR(s[i], want, 1e-4 * fabs(x[i]) + 1e-30);
    }
    free(g);
    free(s);
    k_free(&gpu, &t);
    k_free(&gpu, &o);
    kctx_free(&gpu);
}

/* ---- patches --------------------------------------------------------------- */

static void patch_case(enum kdtype dt, int B, int CH, int H, int W, int p, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    size_t n = (size_t)B * CH * H * W;
    float *img = rand_in(dt, n, seed, 1.0f), *tok = rand_in(dt, n, seed + 1, 1.0f);
    float *junk = test_filled(n, 7.0f);
    struct pair pimg = pair_new(&cpu, &gpu, dt, img, n, 0);
    struct pair ptok = pair_new(&cpu, &gpu, dt, tok, n, 0);
    struct pair p1 = pair_new(&cpu, &gpu, dt, junk, n, 0);
    struct pair p2 = pair_new(&cpu, &gpu, dt, junk, n, 0);
    struct pair p3 = pair_new(&cpu, &gpu, dt, junk, n, 0);
    k_patchify_forward(&cpu, p1.c, pimg.c, B, CH, H, W, p);
    k_patchify_forward(&gpu, p1.g, pimg.g, B, CH, H, W, p);
    k_unpatchify_forward(&cpu, p2.c, ptok.c, B, CH, H, W, p);
    k_unpatchify_forward(&gpu, p2.g, ptok.g, B, CH, H, W, p);
    k_unpatchify_backward(&cpu, p3.c, pimg.c, B, CH, H, W, p);
    k_unpatchify_backward(&gpu, p3.g, pimg.g, B, CH, H, W, p);
    k_unpatchify_backward(&gpu, tensor_none(), pimg.g, B, CH, H, W, p);
    char what[128];
    snprintf(what, sizeof what, "patchify %s B%d CH%d %dx%d p%d", kdtype_name(dt), B, CH, H, W,
             p);
    pair_check_exact(&cpu, &gpu, &p1, what);
    snprintf(what, sizeof what, "unpatchify %s B%d CH%d %dx%d p%d", kdtype_name(dt), B, CH, H,
             W, p);
    pair_check_exact(&cpu, &gpu, &p2, what);
    snprintf(what, sizeof what, "unpatchify_backward %s B%d CH%d %dx%d p%d", kdtype_name(dt), B,
             CH, H, W, p);
    pair_check_exact(&cpu, &gpu, &p3, what);
    struct pair *all[] = {&pimg, &ptok, &p1, &p2, &p3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(img);
    free(tok);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(patchify_unpatchify_exact)
{
    uint64_t seed = 800;
    for (int d = 0; d < 3; d++) {
        patch_case(ALL_DT[d], 2, 3, 8, 12, 2, seed += 3);
        patch_case(ALL_DT[d], 1, 4, 8, 8, 4, seed += 3);
        patch_case(ALL_DT[d], 3, 1, 6, 2, 1, seed += 3);
        patch_case(ALL_DT[d], 1, 5, 3, 3, 3, seed += 3);
    }
}

/* ---- embeddings ------------------------------------------------------------- */

static void embedding_case(enum kdtype dt, int B, int C, int rows, const int32_t *ids,
                           uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    size_t nt = (size_t)rows * C, no = (size_t)B * C;
    float *table = rand_in(dt, nt, seed, 1.0f), *dout = rand_in(dt, no, seed + 1, 1.0f);
    float *dtab0 = test_randn(nt, seed + 2, 1.0f), *junk = test_filled(no, 7.0f);
    struct pair ptab = pair_new(&cpu, &gpu, dt, table, nt, 0);
    struct pair pout = pair_new(&cpu, &gpu, dt, junk, no, 0);
    struct pair pdout = pair_new(&cpu, &gpu, dt, dout, no, 0);
    struct pair pdtab = pair_new(&cpu, &gpu, KDT_F32, dtab0, nt, 0);
    /* int32 ids in device memory, through a 4-byte tensor */
    struct tensor gids = test_tensor(&gpu, KDT_F32, NULL, (size_t)B);
    k_upload(&gpu, gids, ids, B);

    k_embedding_forward(&cpu, pout.c, ptab.c, ids, B, C);
    k_embedding_forward(&gpu, pout.g, ptab.g, (const int32_t *)gids.data, B, C);
    k_embedding_backward(&cpu, pdtab.c, pdout.c, ids, B, C);
    k_embedding_backward(&gpu, pdtab.g, pdout.g, (const int32_t *)gids.data, B, C);
    k_embedding_backward(&gpu, tensor_none(), pdout.g, (const int32_t *)gids.data, B, C);

    char what[128];
    snprintf(what, sizeof what, "embedding %s B%d C%d forward", kdtype_name(dt), B, C);
    pair_check_exact(&cpu, &gpu, &pout, what);
    snprintf(what, sizeof what, "embedding %s B%d C%d backward (accumulated)", kdtype_name(dt),
             B, C);
    if (dt == KDT_F32)
        pair_check_exact(&cpu, &gpu, &pdtab, what); /* the CPU's order of the repeats */
    else
        pair_check(&cpu, &gpu, &pdtab, TOL_F32, what);
    k_free(&gpu, &gids);
    struct pair *all[] = {&ptab, &pout, &pdout, &pdtab};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(table);
    free(dout);
    free(dtab0);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(embedding_repeated_ids)
{
    static const int32_t ids[] = {3, 7, 3, 0, 3, 9, 7, 1001 % 10};
    uint64_t seed = 900;
    for (int d = 0; d < 3; d++) {
        embedding_case(ALL_DT[d], 8, 37, 10, ids, seed += 3);
        embedding_case(ALL_DT[d], 5, 64, 10, ids, seed += 3);
        embedding_case(ALL_DT[d], 1, 8, 11, ids + 5, seed += 3);
    }
}

static void timestep_case(enum kdtype dt, int B, int D, float max_period, float shift,
                          uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    float *t = malloc((size_t)B * sizeof *t);
    for (int b = 0; b < B; b++) /* integer and fractional steps up to 999 */
        t[b] = b == 0 ? 0.0f : b == 1 ? 999.0f : (float)((b * 337 + (int)seed) % 1000) + 0.25f * b;
    struct tensor gt = test_tensor(&gpu, KDT_F32, t, (size_t)B);
    float *junk = test_filled((size_t)B * D, 7.0f);
    struct pair out = pair_new(&cpu, &gpu, dt, junk, (size_t)B * D, 0);
    k_timestep_embedding(&cpu, out.c, t, B, D, max_period, shift);
    k_timestep_embedding(&gpu, out.g, (const float *)gt.data, B, D, max_period, shift);
    char what[128];
    snprintf(what, sizeof what, "timestep_embedding %s B%d D%d max_period %g shift %g",
             kdtype_name(dt), B, D, (double)max_period, (double)shift);
    pair_check(&cpu, &gpu, &out, tol_for(dt), what);
    pair_free(&cpu, &gpu, &out);
    k_free(&gpu, &gt);
    free(t);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(timestep_embedding_parity)
{
    for (int d = 0; d < 3; d++) {
        timestep_case(ALL_DT[d], 5, 256, 10000.0f, 0.0f, 1);
        timestep_case(ALL_DT[d], 3, 64, 10000.0f, 1.0f, 2);
        timestep_case(ALL_DT[d], 1, 2, 100.0f, 0.0f, 3);
    }
}

/* ---- elementwise ------------------------------------------------------------ */

static void elementwise_case(enum kdtype dt, size_t n, int offset, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    float *a = rand_in(dt, n, seed, 1.0f), *b = rand_in(dt, n, seed + 1, 1.0f);
    float *junk = test_filled(n, 7.0f);
    struct pair pa = pair_new(&cpu, &gpu, dt, a, n, offset);
    struct pair pb = pair_new(&cpu, &gpu, dt, b, n, offset);
    struct pair po = pair_new(&cpu, &gpu, dt, junk, n, offset);
    struct pair pf = pair_new(&cpu, &gpu, dt, junk, n, offset);
    char what[128];

    k_add(&cpu, po.c, pa.c, pb.c, (int64_t)n);
    k_add(&gpu, po.g, pa.g, pb.g, (int64_t)n);
    snprintf(what, sizeof what, "add %s n%zu offset %d", kdtype_name(dt), n, offset);
    pair_check_exact(&cpu, &gpu, &po, what);

    k_axpy(&cpu, pa.c, -0.37f, pb.c, (int64_t)n);
    k_axpy(&gpu, pa.g, -0.37f, pb.g, (int64_t)n);
    snprintf(what, sizeof what, "axpy %s n%zu offset %d", kdtype_name(dt), n, offset);
    pair_check_exact(&cpu, &gpu, &pa, what);

    k_scale(&cpu, pb.c, 1.7f, (int64_t)n);
    k_scale(&gpu, pb.g, 1.7f, (int64_t)n);
    snprintf(what, sizeof what, "scale %s n%zu offset %d", kdtype_name(dt), n, offset);
    pair_check_exact(&cpu, &gpu, &pb, what);

    k_fill(&cpu, pf.c, -2.5f, (int64_t)n);
    k_fill(&gpu, pf.g, -2.5f, (int64_t)n);
    snprintf(what, sizeof what, "fill %s n%zu offset %d", kdtype_name(dt), n, offset);
    pair_check_exact(&cpu, &gpu, &pf, what);

    struct pair *all[] = {&pa, &pb, &po, &pf};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(a);
    free(b);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(add_axpy_scale_fill_exact)
{
    static const size_t sizes[] = {1, 13, 1000, 4099};
    uint64_t seed = 1000;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            elementwise_case(ALL_DT[d], sizes[s], 0, seed += 3);
            elementwise_case(ALL_DT[d], sizes[s], 1, seed += 3);
        }
}

static void add_broadcast_case(enum kdtype dt, int B, int T, int C, int offset, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    size_t n = (size_t)B * T * C, nb = (size_t)T * C;
    float *a = rand_in(dt, n, seed, 1.0f), *b = rand_in(dt, nb, seed + 1, 1.0f);
    float *junk = test_filled(n, 7.0f);
    struct pair pa = pair_new(&cpu, &gpu, dt, a, n, offset);
    struct pair pb = pair_new(&cpu, &gpu, dt, b, nb, offset);
    struct pair po = pair_new(&cpu, &gpu, dt, junk, n, offset);
    k_add_broadcast_forward(&cpu, po.c, pa.c, pb.c, B, T, C);
    k_add_broadcast_forward(&gpu, po.g, pa.g, pb.g, B, T, C);
    char what[128];
    snprintf(what, sizeof what, "add_broadcast %s B%d T%d C%d offset %d", kdtype_name(dt), B, T,
             C, offset);
    pair_check_exact(&cpu, &gpu, &po, what);
    struct pair *all[] = {&pa, &pb, &po};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(a);
    free(b);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(add_broadcast_exact)
{
    uint64_t seed = 1100;
    for (int d = 0; d < 3; d++) {
        add_broadcast_case(ALL_DT[d], 2, 16, 64, 0, seed += 3);
        add_broadcast_case(ALL_DT[d], 3, 5, 37, 0, seed += 3);
        add_broadcast_case(ALL_DT[d], 2, 16, 64, 1, seed += 3);
        add_broadcast_case(ALL_DT[d], 1, 1, 8, 0, seed += 3);
    }
}

/* ---- reductions ------------------------------------------------------------- */

static void mse_case(enum kdtype dt, size_t n, int with_grad, int offset, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    float *p = rand_in(dt, n, seed, 1.0f), *t = rand_in(dt, n, seed + 1, 1.0f);
    float *junk = test_filled(n, 7.0f);
    struct pair pp = pair_new(&cpu, &gpu, dt, p, n, offset);
    struct pair pt = pair_new(&cpu, &gpu, dt, t, n, offset);
    struct pair pd = pair_new(&cpu, &gpu, dt, junk, n, offset);
    struct tensor none = tensor_none();
    float want = k_mse_forward_backward(&cpu, with_grad ? pd.c : none, pp.c, pt.c, (int64_t)n,
                                        0.5f);
    float got = k_mse_forward_backward(&gpu, with_grad ? pd.g : none, pp.g, pt.g, (int64_t)n,
                                       0.5f);
    char what[128];
    snprintf(what, sizeof what, "mse %s n%zu grad %d offset %d", kdtype_name(dt), n, with_grad,
             offset);
    CHECK_PARITY(what, &got, &want, 1, TOL_F32); /* the sum is fp32 whatever the dtype */
    strncat(what, " dpred", sizeof what - strlen(what) - 1);
    if (dt == KDT_F32)
        pair_check_exact(&cpu, &gpu, &pd, what); /* junk both sides when absent */
    else
        pair_check(&cpu, &gpu, &pd, tol_for(dt), what);
    struct pair *all[] = {&pp, &pt, &pd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(p);
    free(t);
    free(junk);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* 50000 values span several blocks of the reduction in every dtype. */
TEST(mse_forward_backward_parity)
{
    static const size_t sizes[] = {1, 1000, 50000};
    uint64_t seed = 1200;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            mse_case(ALL_DT[d], sizes[s], 1, 0, seed += 3);
            mse_case(ALL_DT[d], sizes[s], 0, 0, seed += 3);
        }
    mse_case(KDT_F32, 1003, 1, 1, seed += 3);
    mse_case(KDT_BF16, 20001, 1, 1, seed += 3);
}

TEST(mse_empty)
{
    struct kctx gpu = cuda_test_ctx();
    float r = k_mse_forward_backward(&gpu, tensor_none(), tensor_none(), tensor_none(), 0, 1.0f);
    CHECK(r == 0.0f);
    kctx_free(&gpu);
}

TEST(sum_squares_parity)
{
    static const size_t sizes[] = {0, 1, 1000, 70001};
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    uint64_t seed = 1300;
    for (int d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (int offset = 0; offset < 2; offset++) {
                size_t n = sizes[s];
                float *x = rand_in(ALL_DT[d], n, seed += 3, 1.5f);
                struct pair px = pair_new(&cpu, &gpu, ALL_DT[d], x, n, offset);
                double want = k_sum_squares(&cpu, px.c, (int64_t)n);
                double got = k_sum_squares(&gpu, px.g, (int64_t)n);
                if (!(fabs(got - want) <= 1e-5 * want))
                    test_fail(__FILE__, __LINE__, "sum_squares %s n%zu offset %d: %.17g vs %.17g",
                              kdtype_name(ALL_DT[d]), n, offset, got, want);
                /* the same bits on a second run: a fixed reduction order */
                double again = k_sum_squares(&gpu, px.g, (int64_t)n);
                CHECK(memcmp(&got, &again, sizeof got) == 0);
                pair_free(&cpu, &gpu, &px);
                free(x);
            }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* ---- optimizer --------------------------------------------------------------- */

static void adamw_case(size_t n, int copy, enum kdtype copy_dt, int offset, uint64_t seed)
{
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    float *p = test_randn(n, seed, 1.0f), *zero = test_filled(n, 0.0f);
    struct pair pp = pair_new(&cpu, &gpu, KDT_F32, p, n, offset);
    struct pair pm = pair_new(&cpu, &gpu, KDT_F32, zero, n, offset);
    struct pair pv = pair_new(&cpu, &gpu, KDT_F32, zero, n, offset);
    struct pair pg = pair_new(&cpu, &gpu, KDT_F32, zero, n, offset);
    struct tensor cc = tensor_none(), gc = tensor_none(), gcbase = tensor_none();
    if (copy) {
        cc = test_tensor(&cpu, copy_dt, NULL, n);
        gcbase = test_tensor(&gpu, copy_dt, NULL, n + (size_t)offset);
        gc = tensor_view(gcbase, offset, (int64_t)n);
    }
    struct adamw_params hp = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0};
    for (int step = 1; step <= 5; step++) {
        float *g = test_randn(n, seed + 10 + (uint64_t)step, step == 3 ? 1e-6f : 0.1f);
        if (n > 2)
            g[1] = 0.0f; /* a zero gradient: v stays small, eps matters */
        k_upload_f32(&cpu, pg.c, g, (int64_t)n);
        k_upload_f32(&gpu, pg.g, g, (int64_t)n);
        hp.step = step;
        hp.lr = step == 4 ? 3e-2 : 1e-3;
        k_adamw_update(&cpu, pp.c, pg.c, pm.c, pv.c, cc, (int64_t)n, &hp);
        k_adamw_update(&gpu, pp.g, pg.g, pm.g, pv.g, gc, (int64_t)n, &hp);
        free(g);
    }
    char what[128];
    snprintf(what, sizeof what, "adamw n%zu copy %s offset %d: param", n,
             copy ? kdtype_name(copy_dt) : "none", offset);
    pair_check_exact(&cpu, &gpu, &pp, what);
    snprintf(what, sizeof what, "adamw n%zu offset %d: m", n, offset);
    pair_check_exact(&cpu, &gpu, &pm, what);
    snprintf(what, sizeof what, "adamw n%zu offset %d: v", n, offset);
    pair_check_exact(&cpu, &gpu, &pv, what);
    if (copy) {
        struct pair pc = {cc, gc, gcbase, n};
        snprintf(what, sizeof what, "adamw n%zu offset %d: %s copy", n, offset,
                 kdtype_name(copy_dt));
        pair_check_exact(&cpu, &gpu, &pc, what);
        pair_free(&cpu, &gpu, &pc);
    }
    struct pair *all[] = {&pp, &pm, &pv, &pg};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        pair_free(&cpu, &gpu, all[i]);
    free(p);
    free(zero);
    kctx_free(&gpu);
    kctx_free(&cpu);
}

TEST(adamw_steps_bitwise)
{
    adamw_case(1, 0, KDT_F32, 0, 1400);
    adamw_case(1003, 0, KDT_F32, 0, 1401);
    adamw_case(1003, 0, KDT_F32, 1, 1402);
    adamw_case(4096, 0, KDT_F32, 0, 1403);
}

TEST(adamw_low_precision_copy)
{
    adamw_case(1003, 1, KDT_BF16, 0, 1500);
    adamw_case(1003, 1, KDT_BF16, 1, 1501);
    adamw_case(64, 1, KDT_F16, 0, 1502);
    adamw_case(37, 1, KDT_F32, 0, 1503);
}

TEST(ema_bitwise)
{
    static const size_t sizes[] = {1, 1003, 4096};
    struct kctx cpu = cpu_test_ctx(), gpu = cuda_test_ctx();
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int offset = 0; offset < 2; offset++) {
            size_t n = sizes[s];
            float *e = test_randn(n, 1600 + s, 1.0f);
            struct pair pe = pair_new(&cpu, &gpu, KDT_F32, e, n, offset);
            struct pair pp = pair_new(&cpu, &gpu, KDT_F32, NULL, n, offset);
            for (int step = 0; step < 4; step++) {
                float *p = test_randn(n, 1700 + s * 10 + (size_t)step, 1.0f);
                k_upload_f32(&cpu, pp.c, p, (int64_t)n);
                k_upload_f32(&gpu, pp.g, p, (int64_t)n);
                float decay = step == 2 ? 0.5f : 0.9999f;
                k_ema_update(&cpu, pe.c, pp.c, decay, (int64_t)n);
                k_ema_update(&gpu, pe.g, pp.g, decay, (int64_t)n);
                free(p);
            }
            char what[64];
            snprintf(what, sizeof what, "ema n%zu offset %d", n, offset);
            pair_check_exact(&cpu, &gpu, &pe, what);
            pair_free(&cpu, &gpu, &pe);
            pair_free(&cpu, &gpu, &pp);
            free(e);
        }
    kctx_free(&gpu);
    kctx_free(&cpu);
}

/* ---- conversion --------------------------------------------------------------- */

/* Device conversion against the host's (libcommon/half through k_upload_f32
 * and k_download_f32), every pair of dtypes, with values that round (ties
 * included: x.5 ulp of bf16), overflow f16 and are subnormal in f16. */
TEST(convert_all_pairs)
{
    struct kctx gpu = cuda_test_ctx();
    const size_t n = 1001;
    float *x = test_randn(n, 1800, 3.0f);
    x[0] = 1.0f + 1.0f / 256.0f;                /* a bf16 tie: rounds to even (1.0) */
    x[1] = 1.0f + 3.0f / 256.0f;                /* a bf16 tie: rounds up */
    x[2] = 70000.0f;                            /* inf in f16 */
    x[3] = 3e-6f;                               /* subnormal in f16 */
    x[4] = -0.0f;
    for (int sd = 0; sd < 3; sd++)
        for (int dd = 0; dd < 3; dd++)
            for (int offset = 0; offset < 2; offset++) {
                enum kdtype sdt = ALL_DT[sd], ddt = ALL_DT[dd];
                struct tensor sbase = test_tensor(&gpu, sdt, NULL, n + (size_t)offset);
                struct tensor dbase = test_tensor(&gpu, ddt, NULL, n + (size_t)offset);
                struct tensor s = tensor_view(sbase, offset, (int64_t)n);
                struct tensor d = tensor_view(dbase, offset, (int64_t)n);
                k_upload_f32(&gpu, s, x, (int64_t)n);
                k_convert(&gpu, d, s, (int64_t)n);
                float *got = test_values(&gpu, d);
                float *want = malloc(n * sizeof *want);
                memcpy(want, x, n * sizeof *want);
                test_round_to(sdt, want, n);
                test_round_to(ddt, want, n);
                int bad = 0;
                for (size_t i = 0; i < n; i++)
                    if (memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ < 5)
                        test_fail(__FILE__, __LINE__,
                                  "convert %s -> %s offset %d [%zu]: got %.9g, want %.9g",
                                  kdtype_name(sdt), kdtype_name(ddt), offset, i, (double)got[i],
                                  (double)want[i]);
                free(got);
                free(want);
                k_free(&gpu, &sbase);
                k_free(&gpu, &dbase);
            }
    free(x);
    kctx_free(&gpu);
}
