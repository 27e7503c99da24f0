/* F-Lite forward and backward on the ops of kernels/kernels.h.
 *
 * Shapes: B batch, T = 16 + N tokens (registers, then patches), N patches,
 * L text tokens, C hidden, DC text width, MH mlp hidden, NH heads of HS,
 * PP = patch^2 * channels. The residual stream runs through x[i] (block i's
 * input); memory is planned for the largest latent and text of the
 * configuration, and a batch uses the front of every buffer. */
#include "models/flite/flite.h"
#include "libcommon/error.h"
#include "nn/arena.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The terse names of the views every layer below takes (nn/arena.h). */
#define V nn_view_front
#define mod_at nn_view_chunk

struct block_acts {
    struct tensor mod;                /* [B, 9C]: shift, scale, gate of self-attn, cross-attn, mlp */
    struct tensor rstd1, rstd2, rstd3; /* [B*T] f32 */
    struct tensor n1, h1;             /* [B,T,C] norm1(x) and its modulation */
    struct tensor qkv;                /* [B,T,3C] the qkv linear's output */
    struct tensor qkr;                /* [B,T,3C] q, k after RoPE and QK-norm; v mixed (residual_v) */
    struct tensor qk_rstd;            /* [B*T*2NH] f32 */
    struct tensor att, lse, proj, mid1; /* [B,T,C], [B,NH,T] f32, [B,T,C], [B,T,C] */
    struct tensor n2, h2;             /* [B,T,C] */
    struct tensor cq, cqn, cq_rstd;   /* [B,T,C], [B,T,C], [B*T*NH] f32 */
    struct tensor ckv, ckvn, ck_rstd; /* [B,L,2C] k | v; k normed in ckvn's k half; [B*L*NH] f32 */
    struct tensor catt, clse, cproj, mid2; /* [B,T,C], [B,NH,T] f32, [B,T,C], [B,T,C] */
    struct tensor n3, h3;             /* [B,T,C] */
    struct tensor fc1, gelu, fc2;     /* [B,T,MH], [B,T,MH] (one for all blocks), [B,T,C] */
};

struct acts {
    struct tensor patches, emb;       /* [B,N,PP], [B,N,C] */
    struct tensor t_freq, t_h, t_act; /* [B,C], [B,4C], [B,4C] */
    struct tensor c, c_act;           /* [B,C] */
    struct tensor x[FLITE_MAX_DEPTH + 1];
    struct tensor v0;                 /* [B,T,C] block 0's value (residual_v) */
    struct block_acts blk[FLITE_MAX_DEPTH];
    struct tensor fmod, rstdf, nf, hf, outtok; /* [B,2C], [B*T] f32, [B,T,C], [B,T,C], [B,T,PP] */
    struct tensor scratch;            /* f32, attention */
    /* backward */
    struct tensor dx, d1, d2, dcq;    /* [B,T,C] */
    struct tensor dqkv, dqkr;         /* [B,T,3C] */
    struct tensor dckv, dckvn;        /* [B,L,2C] */
    struct tensor dm1, dm2;           /* [B,T,MH] */
    struct tensor dmod, dfmod;        /* [B,9C], [B,2C] */
    struct tensor dc_act, dc;         /* [B,C] */
    struct tensor dtmp, dtmp2;        /* [B,4C] */
    struct tensor dv0;                /* [B,T,C] */
    struct tensor douttok, demb;      /* [B,T,PP], [B,N,C] */
};

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static int max_tokens(const struct flite_config *c)
{
    return flite_tokens(c, c->height, c->width);
}

/* Floats of attention scratch: the most any of the four attention calls asks. */
static int64_t scratch_floats(const struct kctx *k, const struct flite_config *c, int B, int inference)
{
    const int T = max_tokens(c), L = c->text_len, NH = c->num_heads, HS = flite_head_size(c);
    int64_t n = max64(k_attention_bias_scratch(k, B, T, T, NH, HS), k_attention_bias_scratch(k, B, T, L, NH, HS));
    if (!inference)
        n = max64(n, max64(k_attention_bias_backward_scratch(k, B, T, T, NH, HS),
                           k_attention_bias_backward_scratch(k, B, T, L, NH, HS)));
    return n;
}

static void plan(const struct flite_model *m, struct nn_planner *a_, struct nn_planner *f_, struct acts *a)
{
    const struct flite_config *c = &m->cfg;
    const int64_t B = m->B, T = max_tokens(c), N = T - FLITE_REGISTERS, L = c->text_len;
    const int64_t C = c->hidden_size, MH = flite_mlp_hidden(c), NH = c->num_heads;
    const int64_t PP = (int64_t)c->patch_size * c->patch_size * c->in_channels;
    const int64_t BTC = B * T * C, BLC = B * L * C;
    a->patches = nn_plan_take(a_, B * N * PP);
    a->emb = nn_plan_take(a_, B * N * C);
    a->t_freq = nn_plan_take(a_, B * C);
    a->t_h = nn_plan_take(a_, B * 4 * C);
    a->t_act = nn_plan_take(a_, B * 4 * C);
    a->c = nn_plan_take(a_, B * C);
    a->c_act = nn_plan_take(a_, B * C);
    if (m->inference) {
        struct tensor stream = nn_plan_take(a_, BTC);
        for (int i = 0; i <= c->depth; i++)
            a->x[i] = stream;
    } else {
        for (int i = 0; i <= c->depth; i++)
            a->x[i] = nn_plan_take(a_, BTC);
    }
    a->v0 = c->residual_v ? nn_plan_take(a_, BTC) : tensor_none();
    int sets = m->checkpointing || m->inference ? 1 : c->depth;
    /* GELU's output is the largest activation and the cheapest to
     * recompute: one buffer for every block, refilled in backward. */
    struct tensor gelu = nn_plan_take(a_, B * T * MH);
    for (int i = 0; i < sets; i++) {
        struct block_acts *b = &a->blk[i];
        b->mod = nn_plan_take(a_, B * 9 * C);
        b->rstd1 = nn_plan_take(f_, B * T);
        b->rstd2 = nn_plan_take(f_, B * T);
        b->rstd3 = nn_plan_take(f_, B * T);
        b->n1 = nn_plan_take(a_, BTC);
        b->h1 = nn_plan_take(a_, BTC);
        b->qkv = nn_plan_take(a_, 3 * BTC);
        b->qkr = nn_plan_take(a_, 3 * BTC);
        b->qk_rstd = nn_plan_take(f_, B * T * 2 * NH);
        b->att = nn_plan_take(a_, BTC);
        b->lse = nn_plan_take(f_, B * NH * T);
        b->proj = nn_plan_take(a_, BTC);
        b->n2 = nn_plan_take(a_, BTC);
        b->h2 = nn_plan_take(a_, BTC);
        b->cq = nn_plan_take(a_, BTC);
        b->cqn = nn_plan_take(a_, BTC);
        b->cq_rstd = nn_plan_take(f_, B * T * NH);
        b->ckv = nn_plan_take(a_, 2 * BLC);
        b->ckvn = nn_plan_take(a_, 2 * BLC);
        b->ck_rstd = nn_plan_take(f_, B * L * NH);
        b->catt = nn_plan_take(a_, BTC);
        b->clse = nn_plan_take(f_, B * NH * T);
        b->cproj = nn_plan_take(a_, BTC);
        b->n3 = nn_plan_take(a_, BTC);
        b->h3 = nn_plan_take(a_, BTC);
        b->fc1 = nn_plan_take(a_, B * T * MH);
        b->gelu = gelu;
        b->fc2 = nn_plan_take(a_, BTC);
        if (m->inference) {
            /* the residual stream is updated in place */
            b->mid1 = b->mid2 = a->x[0];
        } else {
            b->mid1 = nn_plan_take(a_, BTC);
            b->mid2 = nn_plan_take(a_, BTC);
        }
    }
    a->fmod = nn_plan_take(a_, B * 2 * C);
    a->rstdf = nn_plan_take(f_, B * T);
    a->nf = nn_plan_take(a_, BTC);
    a->hf = nn_plan_take(a_, BTC);
    a->outtok = nn_plan_take(a_, B * T * PP);
    a->scratch = nn_plan_take(f_, scratch_floats(m->ctx, c, (int)B, m->inference));
    if (m->inference)
        return;
    a->dx = nn_plan_take(a_, BTC);
    a->d1 = nn_plan_take(a_, BTC);
    a->d2 = nn_plan_take(a_, BTC);
    a->dcq = nn_plan_take(a_, BTC);
    a->dqkv = nn_plan_take(a_, 3 * BTC);
    a->dqkr = nn_plan_take(a_, 3 * BTC);
    a->dckv = nn_plan_take(a_, 2 * BLC);
    a->dckvn = nn_plan_take(a_, 2 * BLC);
    a->dm1 = nn_plan_take(a_, B * T * MH);
    a->dm2 = nn_plan_take(a_, B * T * MH);
    a->dmod = nn_plan_take(a_, B * 9 * C);
    a->dfmod = nn_plan_take(a_, B * 2 * C);
    a->dc_act = nn_plan_take(a_, B * C);
    a->dc = nn_plan_take(a_, B * C);
    a->dtmp = nn_plan_take(a_, B * 4 * C);
    a->dtmp2 = nn_plan_take(a_, B * 4 * C);
    a->dv0 = c->residual_v ? nn_plan_take(a_, BTC) : tensor_none();
    a->douttok = nn_plan_take(a_, B * T * PP);
    a->demb = nn_plan_take(a_, B * N * C);
}

static int model_setup(struct flite_model *m, const struct flite_config *cfg, struct kctx *ctx,
                       int B, enum denoiser_memory memory, enum kdtype dt, int64_t *act,
                       int64_t *act32)
{
    memset(m, 0, sizeof *m);
    if (flite_config_check(cfg) != 0)
        return -1;
    if (B <= 0) {
        err_set("batch size %d is not positive", B);
        return -1;
    }
    if (ctx->device == DEVICE_CPU && dt != KDT_F32) {
        err_set("the CPU backend computes in f32, not %s", kdtype_name(dt));
        return -1;
    }
    int frozen = (memory & DENOISER_MEM_FROZEN) != 0;
    const int wbits = (int)memory & NN_MEM_MASK;
    memory = (enum denoiser_memory)(memory & ~(DENOISER_MEM_FROZEN | NN_MEM_MASK));
    if (memory != DENOISER_MEM_TRAIN && memory != DENOISER_MEM_CHECKPOINT && memory != DENOISER_MEM_INFERENCE) {
        err_set("unknown F-Lite memory plan %d", (int)memory);
        return -1;
    }
    m->cfg = *cfg;
    m->ctx = ctx;
    m->dt = dt;
    m->B = B;
    m->checkpointing = memory == DENOISER_MEM_CHECKPOINT;
    m->inference = memory == DENOISER_MEM_INFERENCE;
    m->frozen = frozen && !m->inference;
    if (nn_weights_plan_of(&m->wplan, wbits, dt, m->inference || m->frozen) != 0 ||
        flite_param_table(cfg, &m->table, &m->layers) != 0)
        return -1;
    m->n_params = m->table.total;
    struct acts *a = calloc(1, sizeof *a);
    m->acts = a;
    if (!a) {
        err_set("out of memory");
        return -1;
    }
    struct nn_planner pa = {{NULL, dt, ctx->device, 0}, 0}, pf = {{NULL, KDT_F32, ctx->device, 0}, 0};
    plan(m, &pa, &pf, a);
    *act = pa.off;
    *act32 = pf.off;
    return 0;
}

static int64_t param_bytes_of(const struct flite_model *m)
{
    return nn_weights_model_bytes(&m->table, &m->wplan);
}

static void acts_free(struct flite_model *m)
{
    free(m->acts);
    m->acts = NULL;
}

int flite_model_plan_bytes(const struct flite_config *cfg, enum device_kind device, int B,
                           enum denoiser_memory memory, enum kdtype dt, int64_t *param_bytes,
                           int64_t *activation_bytes)
{
    struct kctx ctx = {.device = device};
    struct flite_model m;
    int64_t act, act32;
    int rc = model_setup(&m, cfg, &ctx, B, memory, dt, &act, &act32);
    if (rc == 0) {
        *param_bytes = param_bytes_of(&m);
        *activation_bytes = act * (int64_t)kdtype_bytes(dt) + act32 * 4;
    }
    acts_free(&m);
    nn_params_free(&m.table);
    return rc;
}

int flite_model_create(struct flite_model *m, const struct flite_config *cfg, struct kctx *ctx,
                       int B, enum denoiser_memory memory, enum kdtype dt)
{
    int64_t act, act32;
    if (model_setup(m, cfg, ctx, B, memory, dt, &act, &act32) != 0) {
        acts_free(m);
        nn_params_free(&m->table);
        memset(m, 0, sizeof *m);
        return -1;
    }
    struct acts *a = m->acts;
    const int64_t T = max_tokens(cfg), HS = flite_head_size(cfg);
    const int64_t img = (int64_t)B * cfg->in_channels * (T - FLITE_REGISTERS) * cfg->patch_size * cfg->patch_size;
    const int64_t text = (int64_t)B * cfg->text_len * cfg->cross_attn_input_size;
    if (nn_weights_model_alloc(&m->w, ctx, &m->table, &m->wplan) != 0 ||
        k_alloc(ctx, &m->rope_cos, KDT_F32, T * HS / 2) != 0 ||
        k_alloc(ctx, &m->rope_sin, KDT_F32, T * HS / 2) != 0 ||
        k_alloc(ctx, &m->reg_ids, KDT_F32, FLITE_REGISTERS) != 0 ||
        k_alloc(ctx, &m->io_x, dt, img) != 0 || k_alloc(ctx, &m->io_out, dt, img) != 0 ||
        k_alloc(ctx, &m->io_ctx, dt, text) != 0 || k_alloc(ctx, &m->io_t, KDT_F32, B) != 0 ||
        k_alloc(ctx, &m->arena, dt, act) != 0 || k_alloc(ctx, &m->arena32, KDT_F32, act32) != 0) {
        double wv = (double)param_bytes_of(m), av = (double)act * (double)kdtype_bytes(dt) + (double)act32 * 4.0;
        const char *wu = nn_bytes_unit(&wv), *au = nn_bytes_unit(&av);
        err_prefix("an F-Lite of %lld parameters (%.1f %s of weights and gradients) with %.1f %s of "
                   "%s activations for a batch of %d%s",
                   (long long)m->n_params, wv, wu, av, au, kdtype_name(dt), B,
                   m->checkpointing ? " (gradient checkpointing)"
                   : m->inference   ? " (inference)"
                                    : "");
        flite_model_free(m);
        return -1;
    }
    m->params = m->w.params, m->grads = m->w.grads, m->weights = m->w.weights;
    struct nn_planner ra = {m->arena, 0}, rf = {m->arena32, 0};
    plan(m, &ra, &rf, a);
    flite_layers_bind(&m->layers, cfg, &m->table, m->weights, m->grads);
    int32_t ids[FLITE_REGISTERS];
    for (int i = 0; i < FLITE_REGISTERS; i++)
        ids[i] = i;
    k_upload(ctx, m->reg_ids, ids, FLITE_REGISTERS); /* int32 in 4-byte elements */
    k_sync(ctx);
    return 0;
}

void flite_model_free(struct flite_model *m)
{
    struct kctx *k = m->ctx;
    if (k) {
        nn_weights_free(&m->w);
        struct tensor *own[] = {&m->rope_cos, &m->rope_sin, &m->reg_ids,
                                &m->io_x, &m->io_out, &m->io_ctx, &m->io_t, &m->arena, &m->arena32};
        for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
            k_free(k, own[i]);
    }
    acts_free(m);
    nn_params_free(&m->table);
    memset(m, 0, sizeof *m);
}

void flite_model_sizes(const struct flite_model *m, int64_t *param_bytes, int64_t *activation_bytes)
{
    *param_bytes = param_bytes_of(m);
    *activation_bytes = m->arena.n * (int64_t)kdtype_bytes(m->dt) + m->arena32.n * 4;
}

static struct block_acts *block_set(struct flite_model *m, int i)
{
    struct acts *a = m->acts;
    return &a->blk[m->checkpointing || m->inference ? 0 : i];
}

/* Elements [off, off + n) of a view. */
static struct tensor at(struct tensor t, int64_t off, int64_t n)
{
    return tensor_view(t, off, n);
}

/* The sizes of the current batch. */
struct dims {
    int B, T, N, L, C, NH, HS, MH;
    int64_t M, BTC, ML;
    float scale;
};

static struct dims dims_of(const struct flite_model *m, int B)
{
    const struct flite_config *c = &m->cfg;
    struct dims d = {.B = B, .C = c->hidden_size, .NH = c->num_heads, .HS = flite_head_size(c),
                     .MH = flite_mlp_hidden(c), .L = m->text_len};
    d.T = flite_tokens(c, m->cur_h, m->cur_w);
    d.N = d.T - FLITE_REGISTERS;
    d.M = (int64_t)B * d.T;
    d.BTC = d.M * d.C;
    d.ML = (int64_t)B * d.L;
    d.scale = 1.0f / sqrtf((float)d.HS);
    return d;
}

/* The rms norm of a block or the final layer, with its weight when it has one. */
static void block_forward(struct flite_model *m, int i, const struct dims *d)
{
    const struct flite_config *c = &m->cfg;
    struct acts *a = m->acts;
    struct block_acts *b = block_set(m, i);
    const struct flite_block_layers *p = &m->layers.blocks[i];
    struct kctx *k = m->ctx;
    const int B = d->B, T = d->T, C = d->C, NH = d->NH, HS = d->HS, L = d->L;
    const int64_t M = d->M, BTC = d->BTC, S = 9 * (int64_t)C, NM = B * S;
    const int C3 = 3 * C, C2 = 2 * C;
    struct tensor mod = V(b->mod, NM), xi = V(a->x[i], BTC), x1 = V(a->x[i + 1], BTC);
    struct tensor mid1 = V(b->mid1, BTC), mid2 = V(b->mid2, BTC);
    struct tensor qkv = V(b->qkv, 3 * BTC), qkr = V(b->qkr, 3 * BTC);
    const int mixed = c->residual_v && i > 0;

    nn_linear_forward(k, &p->ada, mod, V(a->c_act, (int64_t)B * C), B);

    /* Self-attention: rope and QK-norm on q and k (2NH heads of a row),
     * the value mixed with block 0's. */
    k_rmsnorm_forward(k, V(b->n1, BTC), V(b->rstd1, M), xi, p->norm1, (int)M, C, FLITE_NORM_EPS);
    k_modulate_forward(k, V(b->h1, BTC), V(b->n1, BTC), mod, mod_at(mod, 1, C, NM), B, T, C, (int)S);
    nn_linear_forward(k, &p->qkv, qkv, V(b->h1, BTC), (int)M);
    k_rope_norm_forward(k, qkr, V(b->qk_rstd, M * 2 * NH), qkv, V(m->rope_cos, (int64_t)T * HS / 2),
                        V(m->rope_sin, (int64_t)T * HS / 2), B, T, 2 * NH, HS, C3, C3, FLITE_NORM_EPS);
    struct tensor v = at(qkv, C2, 3 * BTC - C2);
    if (c->residual_v && i == 0)
        k_mix_forward(k, V(a->v0, BTC), v, tensor_none(), tensor_none(), (int)M, C, C, C3, C);
    if (mixed) {
        k_mix_forward(k, at(qkr, C2, 3 * BTC - C2), v, V(a->v0, BTC), p->lambda, (int)M, C, C3, C3, C);
        v = at(qkr, C2, 3 * BTC - C2);
    }
    k_attention_bias_forward(k, V(b->att, BTC), V(b->lse, M * NH), qkr, at(qkr, C, 3 * BTC - C), v,
                             tensor_none(), tensor_none(), a->scratch, B, T, T, NH, HS, C3, C3, d->scale);
    nn_linear_forward(k, &p->proj, V(b->proj, BTC), V(b->att, BTC), (int)M);
    k_gated_residual_forward(k, mid1, xi, V(b->proj, BTC), mod_at(mod, 2, C, NM), B, T, C, (int)S);

    /* Cross-attention to the text: QK-norm, no rope, no mask. */
    struct tensor ckv = V(b->ckv, d->ML * C2), ckvn = V(b->ckvn, d->ML * C2);
    k_rmsnorm_forward(k, V(b->n2, BTC), V(b->rstd2, M), mid1, p->norm2, (int)M, C, FLITE_NORM_EPS);
    k_modulate_forward(k, V(b->h2, BTC), V(b->n2, BTC), mod_at(mod, 3, C, NM), mod_at(mod, 4, C, NM), B, T,
                       C, (int)S);
    nn_linear_forward(k, &p->q, V(b->cq, BTC), V(b->h2, BTC), (int)M);
    k_rope_norm_forward(k, V(b->cqn, BTC), V(b->cq_rstd, M * NH), V(b->cq, BTC), tensor_none(),
                        tensor_none(), B, T, NH, HS, C, C, FLITE_NORM_EPS);
    nn_linear_forward(k, &p->kv, ckv, V(m->io_ctx, d->ML * c->cross_attn_input_size), (int)d->ML);
    k_rope_norm_forward(k, ckvn, V(b->ck_rstd, d->ML * NH), ckv, tensor_none(), tensor_none(), B, L, NH,
                        HS, C2, C2, FLITE_NORM_EPS);
    k_attention_bias_forward(k, V(b->catt, BTC), V(b->clse, M * NH), V(b->cqn, BTC), ckvn,
                             at(ckv, C, d->ML * C2 - C), tensor_none(), tensor_none(), a->scratch, B, T, L,
                             NH, HS, C, C2, d->scale);
    nn_linear_forward(k, &p->cproj, V(b->cproj, BTC), V(b->catt, BTC), (int)M);
    k_gated_residual_forward(k, mid2, mid1, V(b->cproj, BTC), mod_at(mod, 5, C, NM), B, T, C, (int)S);

    /* MLP with the exact GELU. */
    const int64_t MMH = M * d->MH;
    k_rmsnorm_forward(k, V(b->n3, BTC), V(b->rstd3, M), mid2, p->norm3, (int)M, C, FLITE_NORM_EPS);
    k_modulate_forward(k, V(b->h3, BTC), V(b->n3, BTC), mod_at(mod, 6, C, NM), mod_at(mod, 7, C, NM), B, T,
                       C, (int)S);
    nn_linear_forward(k, &p->fc1, V(b->fc1, MMH), V(b->h3, BTC), (int)M);
    k_gelu_erf_forward(k, V(b->gelu, MMH), V(b->fc1, MMH), MMH);
    nn_linear_forward(k, &p->fc2, V(b->fc2, BTC), V(b->gelu, MMH), (int)M);
    k_gated_residual_forward(k, x1, mid2, V(b->fc2, BTC), mod_at(mod, 8, C, NM), B, T, C, (int)S);
}

static void rope_update(struct flite_model *m, int h, int w)
{
    if (m->rope_h == h && m->rope_w == w)
        return;
    const struct flite_config *c = &m->cfg;
    const int gh = h / c->patch_size, gw = w / c->patch_size, T = flite_tokens(c, h, w);
    const int64_t n = (int64_t)T * (flite_head_size(c) / 2);
    float *cs = malloc((size_t)n * 2 * sizeof *cs);
    if (!cs)
        abort(); /* a few MB at most */
    flite_rope_tables(c, gh, gw, cs, cs + n);
    k_upload(m->ctx, V(m->rope_cos, n), cs, n);
    k_upload(m->ctx, V(m->rope_sin, n), cs + n, n);
    k_sync(m->ctx);
    free(cs);
    m->rope_h = h;
    m->rope_w = w;
}

int flite_size_fits(const struct flite_model *m, int h, int w)
{
    const struct flite_config *c = &m->cfg;
    const int P = c->patch_size;
    return h > 0 && w > 0 && h % P == 0 && w % P == 0 && h / P <= FLITE_ROPE_GRID && w / P <= FLITE_ROPE_GRID &&
           flite_tokens(c, h, w) <= max_tokens(c);
}

int flite_forward(struct flite_model *m, float *out, const float *x, const float *t,
                  const float *text, const uint8_t *null, int L, int B, int h, int w)
{
    const struct flite_config *c = &m->cfg;
    const int P = c->patch_size;
    if (B <= 0 || B > m->B) {
        err_set("a batch of %d samples for a model planned for %d", B, m->B);
        return -1;
    }
    if (!flite_size_fits(m, h, w)) {
        err_set("latents of %dx%d: F-Lite takes multiples of %d with at most %d patches (the "
                "planned %dx%d), %d a side", h, w, P, max_tokens(c) - FLITE_REGISTERS, c->height,
                c->width, FLITE_ROPE_GRID);
        return -1;
    }
    if (L <= 0 || L > c->text_len) {
        err_set("text of %d tokens for a model planned for %d", L, c->text_len);
        return -1;
    }
    m->cur_h = h;
    m->cur_w = w;
    m->text_len = L;
    rope_update(m, h, w);
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    const struct flite_layers *Ly = &m->layers;
    const struct dims d = dims_of(m, B);
    const int C = d.C, CI = c->in_channels, PP = P * P * CI, T = d.T, N = d.N;
    const int64_t BC = (int64_t)B * C, n_img = (int64_t)B * CI * h * w, DC = c->cross_attn_input_size;

    struct tensor xin = V(m->io_x, n_img);
    k_upload_f32(k, xin, x, n_img);
    k_upload(k, V(m->io_t, B), t, B);
    for (int i = 0; i < B; i++) {
        struct tensor row = at(m->io_ctx, (int64_t)i * L * DC, (int64_t)L * DC);
        if (null && null[i])
            k_fill(k, row, 0.0f, (int64_t)L * DC);
        else
            k_upload_f32(k, row, text + (int64_t)i * L * DC, (int64_t)L * DC);
    }

    /* Patches through the patch embedding, behind the 16 registers. */
    k_patchify_forward(k, V(a->patches, (int64_t)B * N * PP), xin, B, CI, h, w, P);
    nn_linear_forward(k, &Ly->patch, V(a->emb, (int64_t)B * N * C), V(a->patches, (int64_t)B * N * PP),
                      B * N);
    for (int i = 0; i < B; i++) {
        struct tensor xr = at(a->x[0], (int64_t)i * T * C, (int64_t)T * C);
        k_embedding_forward(k, V(xr, (int64_t)FLITE_REGISTERS * C), Ly->reg, m->reg_ids.data,
                            FLITE_REGISTERS, C);
        k_copy(k, at(xr, (int64_t)FLITE_REGISTERS * C, (int64_t)N * C), at(a->emb, (int64_t)i * N * C, (int64_t)N * C),
               (int64_t)N * C);
    }

    /* c = time_embed(timestep_embedding(T)); the modulations read silu(c). */
    k_timestep_embedding(k, V(a->t_freq, BC), m->io_t.data, B, C, 10000.0f, 0.0f);
    nn_linear_forward(k, &Ly->t1, V(a->t_h, 4 * BC), V(a->t_freq, BC), B);
    k_silu_forward(k, V(a->t_act, 4 * BC), V(a->t_h, 4 * BC), 4 * BC);
    nn_linear_forward(k, &Ly->t2, V(a->c, BC), V(a->t_act, 4 * BC), B);
    k_silu_forward(k, V(a->c_act, BC), V(a->c, BC), BC);

    for (int i = 0; i < c->depth; i++)
        block_forward(m, i, &d);

    /* Final layer over every token (the registers' rows are dropped at the
     * unpatchify, and get no gradient). */
    struct tensor fmod = V(a->fmod, 2 * BC);
    nn_linear_forward(k, &Ly->f_mod, fmod, V(a->c_act, BC), B);
    k_rmsnorm_forward(k, V(a->nf, d.BTC), V(a->rstdf, d.M), V(a->x[c->depth], d.BTC), Ly->fnorm, (int)d.M, C,
                      FLITE_NORM_EPS);
    k_modulate_forward(k, V(a->hf, d.BTC), V(a->nf, d.BTC), fmod, mod_at(fmod, 1, C, 2 * BC), B, T, C, 2 * C);
    nn_linear_forward(k, &Ly->f_out, V(a->outtok, d.M * PP), V(a->hf, d.BTC), (int)d.M);
    const int64_t per_img = (int64_t)CI * h * w;
    for (int i = 0; i < B; i++)
        k_unpatchify_forward(k, at(m->io_out, i * per_img, per_img),
                             at(a->outtok, ((int64_t)i * T + FLITE_REGISTERS) * PP, (int64_t)N * PP), 1, CI,
                             h, w, P);
    k_download_f32(k, out, V(m->io_out, n_img), n_img);
    return 0;
}

/* Gradient of block i: on entry a->dx holds dL/dx[i + 1]; on return dL/dx[i]. */
static void block_backward(struct flite_model *m, int i, const struct dims *d)
{
    const struct flite_config *c = &m->cfg;
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    if (m->checkpointing)
        block_forward(m, i, d);
    struct block_acts *b = block_set(m, i);
    const struct flite_block_layers *p = &m->layers.blocks[i];
    const int B = d->B, T = d->T, C = d->C, NH = d->NH, HS = d->HS, L = d->L;
    const int64_t M = d->M, BTC = d->BTC, S = 9 * (int64_t)C, NM = B * S, BC = (int64_t)B * C;
    const int64_t MMH = M * d->MH;
    const int C3 = 3 * C, C2 = 2 * C;
    struct tensor dmod = V(a->dmod, NM), mod = V(b->mod, NM), dx = V(a->dx, BTC);
    struct tensor d1 = V(a->d1, BTC), d2 = V(a->d2, BTC);
    const int mixed = c->residual_v && i > 0;

    k_fill(k, dmod, 0.0f, NM);
    if (!m->checkpointing) /* the shared GELU buffer holds the last block's */
        k_gelu_erf_forward(k, V(b->gelu, MMH), V(b->fc1, MMH), MMH);

    /* MLP: x[i+1] = mid2 + gate * fc2(gelu(fc1(mod(norm3(mid2))))). */
    k_gated_residual_backward(k, d1, mod_at(dmod, 8, C, NM), dx, V(b->fc2, BTC), mod_at(mod, 8, C, NM), B, T,
                              C, (int)S);
    nn_linear_backward(k, &p->fc2, V(a->dm1, MMH), d1, V(b->gelu, MMH), (int)M);
    k_gelu_erf_backward(k, V(a->dm2, MMH), V(a->dm1, MMH), V(b->fc1, MMH), MMH);
    nn_linear_backward(k, &p->fc1, d1, V(a->dm2, MMH), V(b->h3, BTC), (int)M);
    k_modulate_backward(k, d2, mod_at(dmod, 6, C, NM), mod_at(dmod, 7, C, NM), d1, V(b->n3, BTC),
                        mod_at(mod, 7, C, NM), B, T, C, (int)S);
    k_rmsnorm_backward(k, d1, p->dnorm3, d2, V(b->mid2, BTC), V(b->rstd3, M), p->norm3, (int)M, C);
    k_axpy(k, dx, 1.0f, d1, BTC);

    /* Cross-attention. */
    struct tensor ckv = V(b->ckv, d->ML * C2), ckvn = V(b->ckvn, d->ML * C2);
    struct tensor dckv = V(a->dckv, d->ML * C2), dckvn = V(a->dckvn, d->ML * C2);
    k_gated_residual_backward(k, d1, mod_at(dmod, 5, C, NM), dx, V(b->cproj, BTC), mod_at(mod, 5, C, NM), B,
                              T, C, (int)S);
    nn_linear_backward(k, &p->cproj, d2, d1, V(b->catt, BTC), (int)M);
    k_attention_bias_backward(k, V(a->dcq, BTC), dckvn, at(dckv, C, d->ML * C2 - C), d2, V(b->catt, BTC),
                              V(b->clse, M * NH), V(b->cqn, BTC), ckvn, at(ckv, C, d->ML * C2 - C),
                              tensor_none(), tensor_none(), a->scratch, B, T, L, NH, HS, C, C2, d->scale);
    k_rope_norm_backward(k, d2, V(a->dcq, BTC), V(b->cq, BTC), V(b->cq_rstd, M * NH), tensor_none(),
                         tensor_none(), B, T, NH, HS, C, C);
    nn_linear_backward(k, &p->q, d1, d2, V(b->h2, BTC), (int)M);
    k_rope_norm_backward(k, dckv, dckvn, ckv, V(b->ck_rstd, d->ML * NH), tensor_none(), tensor_none(), B, L,
                         NH, HS, C2, C2);
    /* the text is data: only the weights' gradient */
    nn_linear_backward(k, &p->kv, tensor_none(), dckv, V(m->io_ctx, d->ML * c->cross_attn_input_size),
                       (int)d->ML);
    k_modulate_backward(k, d2, mod_at(dmod, 3, C, NM), mod_at(dmod, 4, C, NM), d1, V(b->n2, BTC),
                        mod_at(mod, 4, C, NM), B, T, C, (int)S);
    k_rmsnorm_backward(k, d1, p->dnorm2, d2, V(b->mid1, BTC), V(b->rstd2, M), p->norm2, (int)M, C);
    k_axpy(k, dx, 1.0f, d1, BTC);

    /* Self-attention. */
    struct tensor qkv = V(b->qkv, 3 * BTC), qkr = V(b->qkr, 3 * BTC);
    struct tensor dqkv = V(a->dqkv, 3 * BTC), dqkr = V(a->dqkr, 3 * BTC);
    struct tensor v = mixed ? at(qkr, C2, 3 * BTC - C2) : at(qkv, C2, 3 * BTC - C2);
    struct tensor dv = mixed ? at(dqkr, C2, 3 * BTC - C2) : at(dqkv, C2, 3 * BTC - C2);
    k_gated_residual_backward(k, d1, mod_at(dmod, 2, C, NM), dx, V(b->proj, BTC), mod_at(mod, 2, C, NM), B, T,
                              C, (int)S);
    nn_linear_backward(k, &p->proj, d2, d1, V(b->att, BTC), (int)M);
    k_fill(k, dqkv, 0.0f, 3 * BTC);
    k_attention_bias_backward(k, dqkr, at(dqkr, C, 3 * BTC - C), dv, d2, V(b->att, BTC), V(b->lse, M * NH), qkr,
                              at(qkr, C, 3 * BTC - C), v, tensor_none(), tensor_none(), a->scratch, B, T, T,
                              NH, HS, C3, C3, d->scale);
    k_rope_norm_backward(k, dqkv, dqkr, qkv, V(b->qk_rstd, M * 2 * NH), V(m->rope_cos, (int64_t)T * HS / 2),
                         V(m->rope_sin, (int64_t)T * HS / 2), B, T, 2 * NH, HS, C3, C3);
    if (mixed)
        k_mix_backward(k, at(dqkv, C2, 3 * BTC - C2), V(a->dv0, BTC), p->dlambda, at(dqkr, C2, 3 * BTC - C2),
                       at(qkv, C2, 3 * BTC - C2), V(a->v0, BTC), p->lambda, (int)M, C, C3, C3, C);
    if (c->residual_v && i == 0) /* block 0's value also fed every later block */
        k_mix_backward(k, at(dqkv, C2, 3 * BTC - C2), tensor_none(), tensor_none(), V(a->dv0, BTC),
                       at(qkv, C2, 3 * BTC - C2), tensor_none(), tensor_none(), (int)M, C, C, C3, C);
    nn_linear_backward(k, &p->qkv, d1, dqkv, V(b->h1, BTC), (int)M);
    k_modulate_backward(k, d2, dmod, mod_at(dmod, 1, C, NM), d1, V(b->n1, BTC), mod_at(mod, 1, C, NM), B, T, C,
                        (int)S);
    k_rmsnorm_backward(k, d1, p->dnorm1, d2, V(a->x[i], BTC), V(b->rstd1, M), p->norm1, (int)M, C);
    k_axpy(k, dx, 1.0f, d1, BTC);

    /* mod = adaLN(silu(c)): dc_act accumulates over the blocks. */
    nn_linear_backward(k, &p->ada, V(a->dc, BC), dmod, V(a->c_act, BC), B);
    k_axpy(k, V(a->dc_act, BC), 1.0f, V(a->dc, BC), BC);
}

void flite_backward(struct flite_model *m, const float *dout, int B)
{
    assert(!m->inference && "flite_backward on an inference model");
    const struct flite_config *c = &m->cfg;
    const struct flite_layers *Ly = &m->layers;
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    const struct dims d = dims_of(m, B);
    const int C = d.C, P = c->patch_size, CI = c->in_channels, PP = P * P * CI, T = d.T, N = d.N;
    const int64_t BC = (int64_t)B * C, per_img = (int64_t)CI * m->cur_h * m->cur_w, n_img = B * per_img;
    struct tensor d1 = V(a->d1, d.BTC), d2 = V(a->d2, d.BTC), dx = V(a->dx, d.BTC);
    struct tensor dfmod = V(a->dfmod, 2 * BC), fmod = V(a->fmod, 2 * BC);
    struct tensor dc_act = V(a->dc_act, BC), dc = V(a->dc, BC);

    /* Final layer; the registers' rows of the output gradient are zero. */
    k_upload_f32(k, V(m->io_out, n_img), dout, n_img);
    k_fill(k, V(a->douttok, d.M * PP), 0.0f, d.M * PP);
    for (int i = 0; i < B; i++)
        k_unpatchify_backward(k, at(a->douttok, ((int64_t)i * T + FLITE_REGISTERS) * PP, (int64_t)N * PP),
                              at(m->io_out, i * per_img, per_img), 1, CI, m->cur_h, m->cur_w, P);
    nn_linear_backward(k, &Ly->f_out, d1, V(a->douttok, d.M * PP), V(a->hf, d.BTC), (int)d.M);
    k_fill(k, dfmod, 0.0f, 2 * BC);
    k_modulate_backward(k, d2, dfmod, mod_at(dfmod, 1, C, 2 * BC), d1, V(a->nf, d.BTC), mod_at(fmod, 1, C, 2 * BC),
                        B, T, C, 2 * C);
    k_rmsnorm_backward(k, dx, Ly->dfnorm, d2, V(a->x[c->depth], d.BTC), V(a->rstdf, d.M), Ly->fnorm, (int)d.M, C);
    nn_linear_backward(k, &Ly->f_mod, dc_act, dfmod, V(a->c_act, BC), B);
    if (c->residual_v)
        k_fill(k, V(a->dv0, d.BTC), 0.0f, d.BTC);

    for (int i = c->depth - 1; i >= 0; i--)
        block_backward(m, i, &d);

    /* Registers and patch embedding (the latents are data). */
    for (int i = 0; i < B; i++) {
        struct tensor dxr = at(dx, (int64_t)i * T * C, (int64_t)T * C);
        if (Ly->dreg.data)
            k_embedding_backward(k, Ly->dreg, V(dxr, (int64_t)FLITE_REGISTERS * C), m->reg_ids.data,
                                 FLITE_REGISTERS, C);
        k_copy(k, at(a->demb, (int64_t)i * N * C, (int64_t)N * C),
               at(dxr, (int64_t)FLITE_REGISTERS * C, (int64_t)N * C),
               (int64_t)N * C);
    }
    nn_linear_backward(k, &Ly->patch, tensor_none(), V(a->demb, (int64_t)B * N * C),
                       V(a->patches, (int64_t)B * N * PP), B * N);

    /* c = t2(silu(t1(freq))), read by every modulation through silu(c). */
    k_silu_backward(k, dc, dc_act, V(a->c, BC), BC);
    nn_linear_backward(k, &Ly->t2, V(a->dtmp, 4 * BC), dc, V(a->t_act, 4 * BC), B);
    k_silu_backward(k, V(a->dtmp2, 4 * BC), V(a->dtmp, 4 * BC), V(a->t_h, 4 * BC), 4 * BC);
    nn_linear_backward(k, &Ly->t1, tensor_none(), V(a->dtmp2, 4 * BC), V(a->t_freq, BC), B);
}
