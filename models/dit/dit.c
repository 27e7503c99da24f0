/* DiT forward and backward on the ops of kernels/kernels.h.
 *
 * Shapes: B batch, T tokens, C hidden, MH mlp hidden, NH heads, F timestep
 * features, PP = patch^2 * in channels (a patch), PO = patch^2 * out channels.
 * The residual stream runs through x[i] (the input of block i); block i adds
 * its attention and MLP branches in place into x[i + 1]. */
#include "models/dit/dit.h"
#include "libcommon/error.h"
#include "nn/arena.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* The terse names of the views every layer below takes (nn/arena.h). */
#define V nn_view_front
#define mod_at nn_view_chunk

struct block_acts {
    struct tensor mod;                 /* [B, 6C]: shift, scale, gate (msa); shift, scale, gate (mlp) */
    struct tensor mean1, rstd1;        /* [B*T] f32: norm1's statistics */
    struct tensor h1;                  /* [B,T,C] modulate(norm1(x)); the norm itself is not kept */
    struct tensor qkv;                 /* [B,T,3C] */
    struct tensor att;                 /* [B,T,C] */
    struct tensor lse;                 /* [B,NH,T] f32 */
    struct tensor proj;                /* [B,T,C] */
    struct tensor mid;                 /* [B,T,C] residual after attention */
    struct tensor mean2, rstd2;        /* [B*T] f32 */
    struct tensor h2;                  /* [B,T,C] modulate(norm2(mid)) */
    struct tensor fc1, gelu;           /* [B,T,MH]; gelu is one buffer for all blocks */
    struct tensor fc2;                 /* [B,T,C] */
};

struct acts {
    struct tensor patches;             /* [B,T,PP] */
    struct tensor t_freq;              /* [B,F] */
    struct tensor t_h, t_act, t_emb, y_emb, c, c_act; /* [B,C] */
    struct tensor x[DIT_MAX_DEPTH + 1]; /* [B,T,C] residual stream: block inputs, then the final input */
    struct block_acts blk[DIT_MAX_DEPTH]; /* one set when checkpointing */
    struct tensor fmod;                /* [B,2C] */
    struct tensor meanf, rstdf, hf;    /* [B*T] f32, [B*T] f32, [B,T,C] */
    struct tensor outtok;              /* [B,T,PO] */
    struct tensor att_scratch;         /* f32 */
    /* backward scratch */
    struct tensor dx;                  /* [B,T,C] gradient of the residual stream */
    struct tensor d1, d2;              /* [B,T,C] */
    struct tensor dqkv;                /* [B,T,3C] */
    struct tensor dm1, dm2;            /* [B,T,MH] */
    struct tensor dmod;                /* [B,6C] */
    struct tensor dfmod;               /* [B,2C] */
    struct tensor dc_act, dc, dtmp1, dtmp2; /* [B,C] */
    struct tensor douttok;             /* [B,T,PO] */
};

/* Lays the arenas out (or, with absent arenas, only counts them): a for the
 * activations in the compute dtype, f for the f32 statistics and scratch. */
static void plan(const struct dit_model *m, struct nn_planner *a_, struct nn_planner *f_,
                 struct acts *a)
{
    const struct dit_config *c = &m->cfg;
    const int64_t B = m->B, T = dit_tokens(c), C = c->hidden_size, MH = dit_mlp_hidden(c);
    const int64_t PP = (int64_t)c->patch_size * c->patch_size * c->in_channels;
    const int64_t PO = (int64_t)c->patch_size * c->patch_size * dit_out_channels(c);
    const int64_t NH = c->num_heads, BTC = B * T * C;
    a->patches = nn_plan_take(a_, B * T * PP);
    a->t_freq = nn_plan_take(a_, B * DIT_FREQ_DIM);
    a->t_h = nn_plan_take(a_, B * C);
    a->t_act = nn_plan_take(a_, B * C);
    a->t_emb = nn_plan_take(a_, B * C);
    a->y_emb = nn_plan_take(a_, B * C);
    a->c = nn_plan_take(a_, B * C);
    a->c_act = nn_plan_take(a_, B * C);
    if (m->inference) {
        /* Nothing is kept for backward: every block updates one residual
         * stream in place (k_gated_residual_forward allows out == res). */
        struct tensor stream = nn_plan_take(a_, BTC);
        for (int i = 0; i <= c->depth; i++)
            a->x[i] = stream;
    } else {
        for (int i = 0; i <= c->depth; i++)
            a->x[i] = nn_plan_take(a_, BTC);
    }
    int sets = m->checkpointing || m->inference ? 1 : c->depth;
    /* GELU's output is the largest activation (4C per token) and the
     * cheapest to recompute from its input: one buffer serves every block,
     * and backward recomputes it (what torch.compile's partitioner does). */
    struct tensor gelu = nn_plan_take(a_, B * T * MH);
    for (int i = 0; i < sets; i++) {
        struct block_acts *b = &a->blk[i];
        b->mod = nn_plan_take(a_, B * 6 * C);
        b->mean1 = nn_plan_take(f_, B * T);
        b->rstd1 = nn_plan_take(f_, B * T);
        b->h1 = nn_plan_take(a_, BTC);
        b->qkv = nn_plan_take(a_, 3 * BTC);
        b->att = nn_plan_take(a_, BTC);
        b->lse = nn_plan_take(f_, B * NH * T);
        b->proj = nn_plan_take(a_, BTC);
        b->mid = nn_plan_take(a_, BTC);
        b->mean2 = nn_plan_take(f_, B * T);
        b->rstd2 = nn_plan_take(f_, B * T);
        b->h2 = nn_plan_take(a_, BTC);
        b->fc1 = nn_plan_take(a_, B * T * MH);
        b->gelu = gelu;
        b->fc2 = nn_plan_take(a_, BTC);
    }
    a->fmod = nn_plan_take(a_, B * 2 * C);
    a->meanf = nn_plan_take(f_, B * T);
    a->rstdf = nn_plan_take(f_, B * T);
    a->hf = nn_plan_take(a_, BTC);
    a->outtok = nn_plan_take(a_, B * T * PO);
    a->att_scratch = nn_plan_take(f_, k_attention_scratch(m->ctx, (int)B, (int)T, (int)NH));
    if (m->inference)
        return;
    a->dx = nn_plan_take(a_, BTC);
    a->d1 = nn_plan_take(a_, BTC);
    a->d2 = nn_plan_take(a_, BTC);
    a->dqkv = nn_plan_take(a_, 3 * BTC);
    a->dm1 = nn_plan_take(a_, B * T * MH);
    a->dm2 = nn_plan_take(a_, B * T * MH);
    a->dmod = nn_plan_take(a_, B * 6 * C);
    a->dfmod = nn_plan_take(a_, B * 2 * C);
    a->dc_act = nn_plan_take(a_, B * C);
    a->dc = nn_plan_take(a_, B * C);
    a->dtmp1 = nn_plan_take(a_, B * C);
    a->dtmp2 = nn_plan_take(a_, B * C);
    a->douttok = nn_plan_take(a_, B * T * PO);
}

/* Scales *bytes to MiB or GiB and names the unit. */
/* Checks the request and fills what planning needs; the arenas' sizes in
 * elements land in *act (compute dtype) and *act32 (f32). */
static int model_setup(struct dit_model *m, const struct dit_config *cfg, struct kctx *ctx, int B,
                       enum dit_memory memory, enum kdtype dt, int64_t *act, int64_t *act32)
{
    memset(m, 0, sizeof *m);
    if (dit_config_check(cfg) != 0)
        return -1;
    if (B <= 0) {
        err_set("batch size %d is not positive", B);
        return -1;
    }
    if (ctx->device == DEVICE_CPU && dt != KDT_F32) {
        err_set("the CPU backend computes in f32, not %s", kdtype_name(dt));
        return -1;
    }
    if (ctx->device == DEVICE_CUDA && cfg->hidden_size / cfg->num_heads > 128) {
        err_set("head size %d (hidden %d over %d heads) is above 128, the most the CUDA attention "
                "takes", cfg->hidden_size / cfg->num_heads, cfg->hidden_size, cfg->num_heads);
        return -1;
    }
    int frozen = (memory & DIT_MEM_FROZEN) != 0;
    const int wbits = (int)memory & NN_MEM_MASK;
    memory = (enum dit_memory)(memory & ~(DIT_MEM_FROZEN | NN_MEM_MASK));
    if (memory != DIT_MEM_TRAIN && memory != DIT_MEM_CHECKPOINT && memory != DIT_MEM_INFERENCE) {
        err_set("unknown DiT memory plan %d", (int)memory);
        return -1;
    }
    m->cfg = *cfg;
    m->ctx = ctx;
    m->dt = dt;
    m->B = B;
    m->checkpointing = memory == DIT_MEM_CHECKPOINT;
    m->inference = memory == DIT_MEM_INFERENCE;
    m->frozen = frozen && !m->inference;
    if (dit_param_table(cfg, &m->table, &m->layers) != 0)
        return -1;
    if (nn_weights_plan_of(&m->wplan, wbits, dt, m->inference || m->frozen) != 0)
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

/* Inference needs neither gradients nor, in a low precision, the f32
 * master copy. */
static int64_t param_bytes_of(const struct dit_model *m)
{
    return nn_weights_model_bytes(&m->table, &m->wplan);
}

int dit_model_plan_bytes(const struct dit_config *cfg, enum device_kind device, int B,
                         enum dit_memory memory, enum kdtype dt, int64_t *param_bytes,
                         int64_t *activation_bytes)
{
    /* Planning reads only the device of a context (for the attention
     * scratch), so none is set up. */
    struct kctx ctx = {.device = device};
    struct dit_model m;
    int64_t act, act32;
    int rc = model_setup(&m, cfg, &ctx, B, memory, dt, &act, &act32);
    if (rc == 0) {
        *param_bytes = param_bytes_of(&m);
        *activation_bytes = act * (int64_t)kdtype_bytes(dt) + act32 * 4;
    }
    free(m.acts);
    nn_params_free(&m.table);
    return rc;
}

int dit_model_create(struct dit_model *m, const struct dit_config *cfg, struct kctx *ctx, int B,
                     enum dit_memory memory, enum kdtype dt)
{
    /* Count first, then allocate and lay out for real. */
    int64_t act, act32;
    if (model_setup(m, cfg, ctx, B, memory, dt, &act, &act32) != 0) {
        free(m->acts);
        nn_params_free(&m->table);
        memset(m, 0, sizeof *m);
        return -1;
    }
    struct acts *a = m->acts;
    const int64_t T = dit_tokens(cfg), C = cfg->hidden_size, H = cfg->input_size;
    const int64_t img_in = (int64_t)B * cfg->in_channels * H * H;
    const int64_t img_out = (int64_t)B * dit_out_channels(cfg) * H * H;
    if (nn_weights_model_alloc(&m->w, ctx, &m->table, &m->wplan) != 0 ||
        k_alloc(ctx, &m->pos_embed, dt, T * C) != 0 || k_alloc(ctx, &m->io_x, dt, img_in) != 0 ||
        k_alloc(ctx, &m->io_out, dt, img_out) != 0 || k_alloc(ctx, &m->io_t, KDT_F32, B) != 0 ||
        k_alloc(ctx, &m->io_y, KDT_F32, B) != 0 || k_alloc(ctx, &m->arena, dt, act) != 0 ||
        k_alloc(ctx, &m->arena32, KDT_F32, act32) != 0) {
        /* What this batch asked for, in the units a user plans memory in. */
        double wv = (double)param_bytes_of(m), av = (double)act * (double)kdtype_bytes(dt) + (double)act32 * 4.0;
        const char *wu = nn_bytes_unit(&wv), *au = nn_bytes_unit(&av);
        err_prefix("a DiT of %lld parameters (%.1f %s of weights and gradients) with %.1f %s of %s "
                   "activations for a batch of %d%s",
                   (long long)m->n_params, wv, wu, av, au, kdtype_name(dt), B,
                   m->checkpointing ? " (gradient checkpointing)"
                   : m->inference   ? " (inference)"
                                    : "");
        dit_model_free(m);
        return -1;
    }
    m->params = m->w.params, m->grads = m->w.grads, m->weights = m->w.weights;
    struct nn_planner ra = {m->arena, 0}, rf = {m->arena32, 0};
    plan(m, &ra, &rf, a);
    dit_layers_bind(&m->layers, cfg, &m->table, m->weights, m->grads);
    dit_zero_grads(m);
    float *pos = malloc((size_t)(T * C) * sizeof *pos);
    if (!pos) {
        dit_model_free(m);
        err_set("out of memory");
        return -1;
    }
    dit_pos_embed(pos, (int)C, cfg->input_size / cfg->patch_size);
    k_upload_f32(ctx, m->pos_embed, pos, T * C);
    k_sync(ctx);
    free(pos);
    return 0;
}

void dit_model_free(struct dit_model *m)
{
    struct kctx *k = m->ctx;
    if (k) {
        nn_weights_free(&m->w);
        k_free(k, &m->pos_embed);
        k_free(k, &m->io_x);
        k_free(k, &m->io_out);
        k_free(k, &m->io_t);
        k_free(k, &m->io_y);
        k_free(k, &m->arena);
        k_free(k, &m->arena32);
    }
    free(m->acts);
    nn_params_free(&m->table);
    memset(m, 0, sizeof *m);
}

void dit_model_sizes(const struct dit_model *m, int64_t *param_bytes, int64_t *activation_bytes)
{
    *param_bytes = param_bytes_of(m);
    *activation_bytes = m->arena.n * (int64_t)kdtype_bytes(m->dt) + m->arena32.n * 4;
}

void dit_params_upload(struct dit_model *m, const float *host)
{
    nn_weights_upload(&m->w, host);
}

void dit_params_download(struct dit_model *m, float *host)
{
    nn_weights_download(&m->w, host);
}

void dit_weights_refresh(struct dit_model *m)
{
    nn_weights_refresh(&m->w);
}

void dit_weights_set(struct dit_model *m, struct tensor src)
{
    nn_weights_set(&m->w, src);
}

void dit_grads_download(struct dit_model *m, float *host)
{
    nn_weights_grads_download(&m->w, host);
}

void dit_zero_grads(struct dit_model *m)
{
    nn_weights_zero_grads(&m->w);
}

static struct block_acts *block_set(struct dit_model *m, int i)
{
    struct acts *a = m->acts;
    return &a->blk[m->checkpointing || m->inference ? 0 : i];
}

/* Block i: x[i + 1] = x[i] + gate_msa * attn(modulate(norm1(x[i])))
 *                          + gate_mlp * mlp(modulate(norm2(mid))). */
static void block_forward(struct dit_model *m, int i, int B)
{
    const struct dit_config *c = &m->cfg;
    struct acts *a = m->acts;
    struct block_acts *b = block_set(m, i);
    const struct dit_block_layers *p = &m->layers.blocks[i];
    struct kctx *k = m->ctx;
    const int T = dit_tokens(c), C = c->hidden_size, MH = dit_mlp_hidden(c), NH = c->num_heads;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T;
    const int S = 6 * C; /* row stride of the modulation buffer */
    const int64_t NM = (int64_t)B * S;
    struct tensor mod = V(b->mod, NM), mid = V(b->mid, BTC), x1 = V(a->x[i + 1], BTC);

    nn_linear_forward(k, &p->ada, mod, V(a->c_act, (int64_t)B * C), B);
    k_adaln_forward(k, V(b->h1, BTC), V(b->mean1, M), V(b->rstd1, M), V(a->x[i], BTC), mod,
                    mod_at(mod, 1, C, NM), B, T, C, S, c->norm_eps);
    nn_linear_forward(k, &p->qkv, V(b->qkv, 3 * BTC), V(b->h1, BTC), (int)M);
    k_attention_forward(k, V(b->att, BTC), V(b->lse, (int64_t)B * NH * T), V(b->qkv, 3 * BTC),
                        a->att_scratch, B, T, C, NH);
    nn_linear_forward(k, &p->proj, V(b->proj, BTC), V(b->att, BTC), (int)M);
    k_gated_residual_forward(k, mid, V(a->x[i], BTC), V(b->proj, BTC), mod_at(mod, 2, C, NM), B, T,
                             C, S);

    k_adaln_forward(k, V(b->h2, BTC), V(b->mean2, M), V(b->rstd2, M), mid, mod_at(mod, 3, C, NM),
                    mod_at(mod, 4, C, NM), B, T, C, S, c->mlp_norm_eps);
    nn_linear_gelu_forward(k, &p->fc1, V(b->gelu, M * MH), V(b->fc1, M * MH), V(b->h2, BTC), (int)M);
    nn_linear_forward(k, &p->fc2, V(b->fc2, BTC), V(b->gelu, M * MH), (int)M);
    k_gated_residual_forward(k, x1, mid, V(b->fc2, BTC), mod_at(mod, 5, C, NM), B, T, C, S);
}

void dit_forward(struct dit_model *m, float *out, const float *x, const float *t, const int32_t *y,
                 int B)
{
    const struct dit_config *c = &m->cfg;
    const struct dit_layers *L = &m->layers;
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    const int T = dit_tokens(c), C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int CO = dit_out_channels(c), H = c->input_size;
    const int PP = P * P * CI, PO = P * P * CO;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T, BC = (int64_t)B * C;
    const int64_t n_in = (int64_t)B * CI * H * H, n_out = (int64_t)B * CO * H * H;

    /* The batch onto the device; labels were checked by the caller (the
     * embedding cannot check ids in device memory). */
    struct tensor xin = V(m->io_x, n_in), tin = V(m->io_t, B), yin = V(m->io_y, B);
    k_upload_f32(k, xin, x, n_in);
    k_upload(k, tin, t, B);
    k_upload(k, yin, y, B); /* int32 in a buffer of 4-byte elements */
    const float *tdev = tin.data;
    const int32_t *ydev = yin.data;

    /* x_embedder: a stride-P convolution as patches times a Linear, plus the fixed positions. */
    k_patchify_forward(k, V(a->patches, M * PP), xin, B, CI, H, H, P);
    nn_linear_forward(k, &L->x_embed, V(a->x[0], BTC), V(a->patches, M * PP), (int)M);
    k_add_broadcast_forward(k, V(a->x[0], BTC), V(a->x[0], BTC), m->pos_embed, B, T, C);

    /* c = t_embedder(t) + y_embedder(y); every adaLN reads silu(c). */
    k_timestep_embedding(k, V(a->t_freq, (int64_t)B * DIT_FREQ_DIM), tdev, B, DIT_FREQ_DIM,
                         DIT_MAX_PERIOD, c->freq_shift);
    nn_linear_forward(k, &L->t1, V(a->t_h, BC), V(a->t_freq, (int64_t)B * DIT_FREQ_DIM), B);
    k_silu_forward(k, V(a->t_act, BC), V(a->t_h, BC), BC);
    nn_linear_forward(k, &L->t2, V(a->t_emb, BC), V(a->t_act, BC), B);
    k_embedding_forward(k, V(a->y_emb, BC), L->y_table, ydev, B, C);
    k_add(k, V(a->c, BC), V(a->t_emb, BC), V(a->y_emb, BC), BC);
    k_silu_forward(k, V(a->c_act, BC), V(a->c, BC), BC);

    for (int i = 0; i < c->depth; i++)
        block_forward(m, i, B);

    /* Final layer: modulate(norm(x), shift, scale), Linear, unpatchify. */
    struct tensor fmod = V(a->fmod, 2 * BC);
    nn_linear_forward(k, &L->f_ada, fmod, V(a->c_act, BC), B);
    k_adaln_forward(k, V(a->hf, BTC), V(a->meanf, M), V(a->rstdf, M), V(a->x[c->depth], BTC), fmod,
                    mod_at(fmod, 1, C, 2 * BC), B, T, C, 2 * C, c->norm_eps);
    nn_linear_forward(k, &L->f_out, V(a->outtok, M * PO), V(a->hf, BTC), (int)M);
    struct tensor o = V(m->io_out, n_out);
    k_unpatchify_forward(k, o, V(a->outtok, M * PO), B, CO, H, H, P);
    k_download_f32(k, out, o, n_out);
}

/* Gradient of block i: on entry a->dx holds dL/dx[i + 1]; on return dL/dx[i].
 * The modulation gradient goes through the adaLN Linear into a->dc_act. */
static void block_backward(struct dit_model *m, int i, int B)
{
    const struct dit_config *c = &m->cfg;
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    if (m->checkpointing)
        block_forward(m, i, B); /* recompute this block's activations */
    struct block_acts *b = block_set(m, i);
    const struct dit_block_layers *p = &m->layers.blocks[i];
    const int T = dit_tokens(c), C = c->hidden_size, MH = dit_mlp_hidden(c), NH = c->num_heads;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T, BC = (int64_t)B * C;
    const int S = 6 * C;
    const int64_t NM = (int64_t)B * S;
    struct tensor dmod = V(a->dmod, NM), mod = V(b->mod, NM), dx = V(a->dx, BTC);
    struct tensor d1 = V(a->d1, BTC), d2 = V(a->d2, BTC);

    k_fill(k, dmod, 0.0f, NM);
    if (!m->checkpointing) /* the shared GELU buffer holds the last block's */
        k_gelu_forward(k, V(b->gelu, M * MH), V(b->fc1, M * MH), M * MH);
    /* MLP branch: x[i+1] = mid + gate_mlp * fc2. */
    k_gated_residual_backward(k, d1, mod_at(dmod, 5, C, NM), dx, V(b->fc2, BTC), mod_at(mod, 5, C, NM), B,
                              T, C, S);
    nn_linear_backward(k, &p->fc2, V(a->dm1, M * MH), d1, V(b->gelu, M * MH), (int)M);
    k_gelu_backward(k, V(a->dm2, M * MH), V(a->dm1, M * MH), V(b->fc1, M * MH), M * MH);
    nn_linear_backward(k, &p->fc1, d1, V(a->dm2, M * MH), V(b->h2, BTC), (int)M);
    /* dx now becomes dL/dmid: the residual path plus the norm2 path. */
    k_adaln_backward(k, dx, mod_at(dmod, 3, C, NM), mod_at(dmod, 4, C, NM), d1, V(b->mid, BTC),
                     V(b->mean2, M), V(b->rstd2, M), mod_at(mod, 4, C, NM), B, T, C, S);

    /* Attention branch: mid = x[i] + gate_msa * proj. */
    k_gated_residual_backward(k, d1, mod_at(dmod, 2, C, NM), dx, V(b->proj, BTC), mod_at(mod, 2, C, NM),
                              B, T, C, S);
    nn_linear_backward(k, &p->proj, d2, d1, V(b->att, BTC), (int)M);
    k_attention_backward(k, V(a->dqkv, 3 * BTC), d2, V(b->att, BTC), V(b->lse, (int64_t)B * NH * T),
                         V(b->qkv, 3 * BTC), a->att_scratch, B, T, C, NH);
    nn_linear_backward(k, &p->qkv, d1, V(a->dqkv, 3 * BTC), V(b->h1, BTC), (int)M);
    k_adaln_backward(k, dx, dmod, mod_at(dmod, 1, C, NM), d1, V(a->x[i], BTC), V(b->mean1, M),
                     V(b->rstd1, M), mod_at(mod, 1, C, NM), B, T, C, S);

    /* mod = adaLN Linear(silu(c)): dc_act accumulates over blocks. */
    nn_linear_backward(k, &p->ada, V(a->dtmp1, BC), dmod, V(a->c_act, BC), B);
    k_axpy(k, V(a->dc_act, BC), 1.0f, V(a->dtmp1, BC), BC);
}

void dit_backward(struct dit_model *m, const float *dout, int B)
{
    /* A caller's mistake, not bad input: the buffers do not exist. */
    assert(!m->inference && "dit_backward on an inference model");
    const struct dit_config *c = &m->cfg;
    const struct dit_layers *L = &m->layers;
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    const int T = dit_tokens(c), C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int CO = dit_out_channels(c), H = c->input_size;
    const int PP = P * P * CI, PO = P * P * CO;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T, BC = (int64_t)B * C;
    const int64_t n_out = (int64_t)B * CO * H * H;
    struct tensor d1 = V(a->d1, BTC), dx = V(a->dx, BTC);
    struct tensor dfmod = V(a->dfmod, 2 * BC), fmod = V(a->fmod, 2 * BC);
    struct tensor dc_act = V(a->dc_act, BC), dc = V(a->dc, BC);
    struct tensor dtmp1 = V(a->dtmp1, BC), dtmp2 = V(a->dtmp2, BC);

    /* Final layer. */
    struct tensor dimg = V(m->io_out, n_out);
    k_upload_f32(k, dimg, dout, n_out);
    k_unpatchify_backward(k, V(a->douttok, M * PO), dimg, B, CO, H, H, P);
    nn_linear_backward(k, &L->f_out, d1, V(a->douttok, M * PO), V(a->hf, BTC), (int)M);
    k_fill(k, dfmod, 0.0f, 2 * BC);
    k_fill(k, dx, 0.0f, BTC);
    k_adaln_backward(k, dx, dfmod, mod_at(dfmod, 1, C, 2 * BC), d1, V(a->x[c->depth], BTC),
                     V(a->meanf, M), V(a->rstdf, M), mod_at(fmod, 1, C, 2 * BC), B, T, C, 2 * C);
    nn_linear_backward(k, &L->f_ada, dc_act, dfmod, V(a->c_act, BC), B);

    for (int i = c->depth - 1; i >= 0; i--)
        block_backward(m, i, B);

    /* Patch embedding: only its weights need a gradient (the input is data;
     * the positional embedding is fixed). */
    nn_linear_backward(k, &L->x_embed, tensor_none(), dx, V(a->patches, M * PP), (int)M);

    /* c = t_emb + y_emb, with every adaLN reading silu(c). */
    k_silu_backward(k, dc, dc_act, V(a->c, BC), BC);
    k_embedding_backward(k, L->dy_table, dc, (const int32_t *)m->io_y.data, B, C);
    nn_linear_backward(k, &L->t2, dtmp1, dc, V(a->t_act, BC), B);
    k_silu_backward(k, dtmp2, dtmp1, V(a->t_h, BC), BC);
    nn_linear_backward(k, &L->t1, tensor_none(), dtmp2, V(a->t_freq, (int64_t)B * DIT_FREQ_DIM), B);
}
