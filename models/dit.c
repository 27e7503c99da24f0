/* DiT forward and backward on the ops of kernels/kernels.h.
 *
 * Shapes: B batch, T tokens, C hidden, MH mlp hidden, NH heads, F timestep
 * features, PP = patch^2 * in channels (a patch), PO = patch^2 * out channels.
 * The residual stream runs through x[i] (the input of block i); block i adds
 * its attention and MLP branches in place into x[i + 1]. */
#include "models/dit.h"
#include "libcommon/error.h"

#include <stdlib.h>
#include <string.h>

struct block_acts {
    float *mod;                 /* [B, 6C]: shift, scale, gate (msa); shift, scale, gate (mlp) */
    float *ln1, *mean1, *rstd1; /* [B,T,C], [B*T], [B*T] */
    float *h1;                  /* [B,T,C] modulated */
    float *qkv;                 /* [B,T,3C] */
    float *att;                 /* [B,T,C] */
    float *lse;                 /* [B,NH,T] */
    float *proj;                /* [B,T,C] */
    float *mid;                 /* [B,T,C] residual after attention */
    float *ln2, *mean2, *rstd2;
    float *h2;                  /* [B,T,C] */
    float *fc1, *gelu;          /* [B,T,MH] */
    float *fc2;                 /* [B,T,C] */
};

struct acts {
    float *patches;            /* [B,T,PP] */
    float *t_freq;             /* [B,F] */
    float *t_h, *t_act, *t_emb, *y_emb, *c, *c_act; /* [B,C] */
    float *x[DIT_MAX_DEPTH + 1]; /* [B,T,C] residual stream: block inputs, then the final input */
    struct block_acts blk[DIT_MAX_DEPTH]; /* one set when checkpointing */
    float *fmod;               /* [B,2C] */
    float *lnf, *meanf, *rstdf, *hf; /* [B,T,C], [B*T], [B*T], [B,T,C] */
    float *outtok;             /* [B,T,PO] */
    float *att_scratch;
    /* backward scratch */
    float *dx;                 /* [B,T,C] gradient of the residual stream */
    float *d1, *d2;            /* [B,T,C] */
    float *dqkv;               /* [B,T,3C] */
    float *dm1, *dm2;          /* [B,T,MH] */
    float *dmod;               /* [B,6C] */
    float *dfmod;              /* [B,2C] */
    float *dc_act, *dc, *dtmp1, *dtmp2; /* [B,C] */
    float *douttok;            /* [B,T,PO] */
};

static struct tensor tv(float *p, int64_t n)
{
    return tensor_f32(p, n);
}

/* Lays the arena out (or, with base NULL, only counts it). */
static int64_t plan(const struct dit_model *m, float *base, struct acts *a)
{
    const struct dit_config *c = &m->cfg;
    const int64_t B = m->B, T = dit_tokens(c), C = c->hidden_size, MH = dit_mlp_hidden(c);
    const int64_t PP = (int64_t)c->patch_size * c->patch_size * c->in_channels;
    const int64_t PO = (int64_t)c->patch_size * c->patch_size * dit_out_channels(c);
    const int64_t NH = c->num_heads, BTC = B * T * C;
    int64_t off = 0;
#define TAKE(ptr, count) ((ptr) = base ? base + off : NULL, off += (count))
    TAKE(a->patches, B * T * PP);
    TAKE(a->t_freq, B * DIT_FREQ_DIM);
    TAKE(a->t_h, B * C);
    TAKE(a->t_act, B * C);
    TAKE(a->t_emb, B * C);
    TAKE(a->y_emb, B * C);
    TAKE(a->c, B * C);
    TAKE(a->c_act, B * C);
    for (int i = 0; i <= c->depth; i++)
        TAKE(a->x[i], BTC);
    int sets = m->checkpointing ? 1 : c->depth;
    for (int i = 0; i < sets; i++) {
        struct block_acts *b = &a->blk[i];
        TAKE(b->mod, B * 6 * C);
        TAKE(b->ln1, BTC);
        TAKE(b->mean1, B * T);
        TAKE(b->rstd1, B * T);
        TAKE(b->h1, BTC);
        TAKE(b->qkv, 3 * BTC);
        TAKE(b->att, BTC);
        TAKE(b->lse, B * NH * T);
        TAKE(b->proj, BTC);
        TAKE(b->mid, BTC);
        TAKE(b->ln2, BTC);
        TAKE(b->mean2, B * T);
        TAKE(b->rstd2, B * T);
        TAKE(b->h2, BTC);
        TAKE(b->fc1, B * T * MH);
        TAKE(b->gelu, B * T * MH);
        TAKE(b->fc2, BTC);
    }
    TAKE(a->fmod, B * 2 * C);
    TAKE(a->lnf, BTC);
    TAKE(a->meanf, B * T);
    TAKE(a->rstdf, B * T);
    TAKE(a->hf, BTC);
    TAKE(a->outtok, B * T * PO);
    TAKE(a->att_scratch, k_attention_scratch((int)T, (int)NH, m->ctx->threads));
    TAKE(a->dx, BTC);
    TAKE(a->d1, BTC);
    TAKE(a->d2, BTC);
    TAKE(a->dqkv, 3 * BTC);
    TAKE(a->dm1, B * T * MH);
    TAKE(a->dm2, B * T * MH);
    TAKE(a->dmod, B * 6 * C);
    TAKE(a->dfmod, B * 2 * C);
    TAKE(a->dc_act, B * C);
    TAKE(a->dc, B * C);
    TAKE(a->dtmp1, B * C);
    TAKE(a->dtmp2, B * C);
    TAKE(a->douttok, B * T * PO);
#undef TAKE
    return off;
}

int dit_model_create(struct dit_model *m, const struct dit_config *cfg, struct kctx *ctx, int B,
                     int checkpointing)
{
    memset(m, 0, sizeof *m);
    if (dit_config_check(cfg) != 0)
        return -1;
    if (B <= 0) {
        err_set("batch size %d is not positive", B);
        return -1;
    }
    m->cfg = *cfg;
    m->ctx = ctx;
    m->B = B;
    m->checkpointing = checkpointing;
    m->n_params = dit_param_count(cfg);
    struct acts *a = calloc(1, sizeof *a);
    m->acts = a;
    m->arena_floats = a ? plan(m, NULL, a) : 0;
    const int64_t T = dit_tokens(cfg), C = cfg->hidden_size;
    m->params = calloc((size_t)m->n_params, sizeof(float));
    m->grads = calloc((size_t)m->n_params, sizeof(float));
    m->pos_embed = malloc((size_t)(T * C) * sizeof(float));
    m->arena = malloc((size_t)m->arena_floats * sizeof(float));
    m->labels = calloc((size_t)B, sizeof *m->labels);
    if (!a || !m->params || !m->grads || !m->pos_embed || !m->arena || !m->labels) {
        dit_model_free(m);
        err_set("out of memory for a DiT of %lld parameters and %lld activation floats",
                (long long)m->n_params, (long long)m->arena_floats);
        return -1;
    }
    plan(m, m->arena, a);
    dit_params_view(cfg, m->params, &m->p);
    dit_params_view(cfg, m->grads, &m->g);
    dit_pos_embed(m->pos_embed, (int)C, cfg->input_size / cfg->patch_size);
    return 0;
}

void dit_model_free(struct dit_model *m)
{
    free(m->params);
    free(m->grads);
    free(m->pos_embed);
    free(m->arena);
    free(m->labels);
    free(m->acts);
    memset(m, 0, sizeof *m);
}

void dit_model_sizes(const struct dit_model *m, int64_t *param_bytes, int64_t *activation_bytes)
{
    *param_bytes = m->n_params * (int64_t)sizeof(float);
    *activation_bytes = m->arena_floats * (int64_t)sizeof(float);
}

void dit_zero_grads(struct dit_model *m)
{
    memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
}

static struct block_acts *block_set(struct dit_model *m, int i)
{
    struct acts *a = m->acts;
    return &a->blk[m->checkpointing ? 0 : i];
}

/* Block i: x[i + 1] = x[i] + gate_msa * attn(modulate(norm1(x[i])))
 *                          + gate_mlp * mlp(modulate(norm2(mid))). */
static void block_forward(struct dit_model *m, int i, int B)
{
    const struct dit_config *c = &m->cfg;
    struct acts *a = m->acts;
    struct block_acts *b = block_set(m, i);
    const struct dit_block_params *p = &m->p.blocks[i];
    struct kctx *k = m->ctx;
    const int T = dit_tokens(c), C = c->hidden_size, MH = dit_mlp_hidden(c), NH = c->num_heads;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T;
    const int S = 6 * C; /* row stride of the modulation buffer */

    k_linear_forward(k, tv(b->mod, (int64_t)B * S), tv(a->c_act, (int64_t)B * C), tv(p->ada_w, (int64_t)S * C),
                     tv(p->ada_b, S), B, C, S);
    k_layernorm_forward(k, tv(b->ln1, BTC), tv(b->mean1, M), tv(b->rstd1, M), tv(a->x[i], BTC), (int)M, C,
                        c->norm_eps);
    k_modulate_forward(k, tv(b->h1, BTC), tv(b->ln1, BTC), tv(b->mod, (int64_t)B * S),
                       tv(b->mod + C, (int64_t)B * S - C), B, T, C, S);
    k_linear_forward(k, tv(b->qkv, 3 * BTC), tv(b->h1, BTC), tv(p->qkv_w, 3 * (int64_t)C * C),
                     tv(p->qkv_b, 3 * C), (int)M, C, 3 * C);
    k_attention_forward(k, tv(b->att, BTC), tv(b->lse, (int64_t)B * NH * T), tv(b->qkv, 3 * BTC),
                        tv(a->att_scratch, k_attention_scratch(T, NH, k->threads)), B, T, C, NH);
    k_linear_forward(k, tv(b->proj, BTC), tv(b->att, BTC), tv(p->proj_w, (int64_t)C * C), tv(p->proj_b, C),
                     (int)M, C, C);
    memcpy(b->mid, a->x[i], (size_t)BTC * sizeof(float));
    k_gated_residual_forward(k, tv(b->mid, BTC), tv(b->proj, BTC), tv(b->mod + 2 * C, (int64_t)B * S - 2 * C),
                             B, T, C, S);

    k_layernorm_forward(k, tv(b->ln2, BTC), tv(b->mean2, M), tv(b->rstd2, M), tv(b->mid, BTC), (int)M, C,
                        c->mlp_norm_eps);
    k_modulate_forward(k, tv(b->h2, BTC), tv(b->ln2, BTC), tv(b->mod + 3 * C, (int64_t)B * S - 3 * C),
                       tv(b->mod + 4 * C, (int64_t)B * S - 4 * C), B, T, C, S);
    k_linear_forward(k, tv(b->fc1, M * MH), tv(b->h2, BTC), tv(p->fc1_w, (int64_t)MH * C), tv(p->fc1_b, MH),
                     (int)M, C, MH);
    k_gelu_forward(k, tv(b->gelu, M * MH), tv(b->fc1, M * MH), M * MH);
    k_linear_forward(k, tv(b->fc2, BTC), tv(b->gelu, M * MH), tv(p->fc2_w, (int64_t)C * MH), tv(p->fc2_b, C),
                     (int)M, MH, C);
    memcpy(a->x[i + 1], b->mid, (size_t)BTC * sizeof(float));
    k_gated_residual_forward(k, tv(a->x[i + 1], BTC), tv(b->fc2, BTC),
                             tv(b->mod + 5 * C, (int64_t)B * S - 5 * C), B, T, C, S);
}

void dit_forward(struct dit_model *m, float *out, const float *x, const float *t, const int32_t *y,
                 int B)
{
    const struct dit_config *c = &m->cfg;
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    const int T = dit_tokens(c), C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int CO = dit_out_channels(c), H = c->input_size;
    const int PP = P * P * CI, PO = P * P * CO;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T;

    /* x_embedder: a stride-P convolution as patches times a Linear, plus the fixed positions. */
    k_patchify_forward(k, tv(a->patches, M * PP), tv((float *)x, (int64_t)B * CI * H * H), B, CI, H, H, P);
    k_linear_forward(k, tv(a->x[0], BTC), tv(a->patches, M * PP), tv(m->p.x_w, (int64_t)C * PP),
                     tv(m->p.x_b, C), (int)M, PP, C);
    k_add_broadcast_forward(k, tv(a->x[0], BTC), tv(a->x[0], BTC), tv(m->pos_embed, (int64_t)T * C), B, T,
                            C);

    /* c = t_embedder(t) + y_embedder(y); every adaLN reads silu(c). */
    k_timestep_embedding(k, tv(a->t_freq, (int64_t)B * DIT_FREQ_DIM), t, B, DIT_FREQ_DIM, DIT_MAX_PERIOD,
                         c->freq_shift);
    k_linear_forward(k, tv(a->t_h, (int64_t)B * C), tv(a->t_freq, (int64_t)B * DIT_FREQ_DIM),
                     tv(m->p.t1_w, (int64_t)C * DIT_FREQ_DIM), tv(m->p.t1_b, C), B, DIT_FREQ_DIM, C);
    k_silu_forward(k, tv(a->t_act, (int64_t)B * C), tv(a->t_h, (int64_t)B * C), (int64_t)B * C);
    k_linear_forward(k, tv(a->t_emb, (int64_t)B * C), tv(a->t_act, (int64_t)B * C),
                     tv(m->p.t2_w, (int64_t)C * C), tv(m->p.t2_b, C), B, C, C);
    memcpy(m->labels, y, (size_t)B * sizeof *y);
    k_embedding_forward(k, tv(a->y_emb, (int64_t)B * C), tv(m->p.y_table, (int64_t)dit_table_rows(c) * C), y,
                        B, C);
    k_add(k, tv(a->c, (int64_t)B * C), tv(a->t_emb, (int64_t)B * C), tv(a->y_emb, (int64_t)B * C),
          (int64_t)B * C);
    k_silu_forward(k, tv(a->c_act, (int64_t)B * C), tv(a->c, (int64_t)B * C), (int64_t)B * C);

    for (int i = 0; i < c->depth; i++)
        block_forward(m, i, B);

    /* Final layer: modulate(norm(x), shift, scale), Linear, unpatchify. */
    const float *xf = a->x[c->depth];
    k_linear_forward(k, tv(a->fmod, (int64_t)B * 2 * C), tv(a->c_act, (int64_t)B * C),
                     tv(m->p.f_ada_w, 2 * (int64_t)C * C), tv(m->p.f_ada_b, 2 * C), B, C, 2 * C);
    k_layernorm_forward(k, tv(a->lnf, BTC), tv(a->meanf, M), tv(a->rstdf, M), tv((float *)xf, BTC), (int)M,
                        C, c->norm_eps);
    k_modulate_forward(k, tv(a->hf, BTC), tv(a->lnf, BTC), tv(a->fmod, (int64_t)B * 2 * C),
                       tv(a->fmod + C, (int64_t)B * 2 * C - C), B, T, C, 2 * C);
    k_linear_forward(k, tv(a->outtok, M * PO), tv(a->hf, BTC), tv(m->p.f_w, (int64_t)PO * C), tv(m->p.f_b, PO),
                     (int)M, C, PO);
    k_unpatchify_forward(k, tv(out, (int64_t)B * CO * H * H), tv(a->outtok, M * PO), B, CO, H, H, P);
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
    const struct dit_block_params *p = &m->p.blocks[i];
    struct dit_block_params *g = &m->g.blocks[i];
    const int T = dit_tokens(c), C = c->hidden_size, MH = dit_mlp_hidden(c), NH = c->num_heads;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T;
    const int S = 6 * C;
    const int64_t NM = (int64_t)B * S;

    memset(a->dmod, 0, (size_t)NM * sizeof(float));
    /* MLP branch: x[i+1] = mid + gate_mlp * fc2. */
    k_gated_residual_backward(k, tv(a->d1, BTC), tv(a->dmod + 5 * C, NM - 5 * C), tv(a->dx, BTC),
                              tv(b->fc2, BTC), tv(b->mod + 5 * C, NM - 5 * C), B, T, C, S);
    k_linear_backward(k, tv(a->dm1, M * MH), tv(g->fc2_w, (int64_t)C * MH), tv(g->fc2_b, C), tv(a->d1, BTC),
                      tv(b->gelu, M * MH), tv(p->fc2_w, (int64_t)C * MH), (int)M, MH, C);
    k_gelu_backward(k, tv(a->dm2, M * MH), tv(a->dm1, M * MH), tv(b->fc1, M * MH), M * MH);
    k_linear_backward(k, tv(a->d1, BTC), tv(g->fc1_w, (int64_t)MH * C), tv(g->fc1_b, MH), tv(a->dm2, M * MH),
                      tv(b->h2, BTC), tv(p->fc1_w, (int64_t)MH * C), (int)M, C, MH);
    k_modulate_backward(k, tv(a->d2, BTC), tv(a->dmod + 3 * C, NM - 3 * C), tv(a->dmod + 4 * C, NM - 4 * C),
                        tv(a->d1, BTC), tv(b->ln2, BTC), tv(b->mod + 4 * C, NM - 4 * C), B, T, C, S);
    /* dx now becomes dL/dmid: the residual path plus the norm2 path. */
    k_layernorm_backward(k, tv(a->dx, BTC), tv(a->d2, BTC), tv(b->mid, BTC), tv(b->mean2, M), tv(b->rstd2, M),
                         (int)M, C);

    /* Attention branch: mid = x[i] + gate_msa * proj. */
    k_gated_residual_backward(k, tv(a->d1, BTC), tv(a->dmod + 2 * C, NM - 2 * C), tv(a->dx, BTC),
                              tv(b->proj, BTC), tv(b->mod + 2 * C, NM - 2 * C), B, T, C, S);
    k_linear_backward(k, tv(a->d2, BTC), tv(g->proj_w, (int64_t)C * C), tv(g->proj_b, C), tv(a->d1, BTC),
                      tv(b->att, BTC), tv(p->proj_w, (int64_t)C * C), (int)M, C, C);
    k_attention_backward(k, tv(a->dqkv, 3 * BTC), tv(a->d2, BTC), tv(b->att, BTC),
                         tv(b->lse, (int64_t)B * NH * T), tv(b->qkv, 3 * BTC),
                         tv(a->att_scratch, k_attention_scratch(T, NH, k->threads)), B, T, C, NH);
    k_linear_backward(k, tv(a->d1, BTC), tv(g->qkv_w, 3 * (int64_t)C * C), tv(g->qkv_b, 3 * C),
                      tv(a->dqkv, 3 * BTC), tv(b->h1, BTC), tv(p->qkv_w, 3 * (int64_t)C * C), (int)M, C, 3 * C);
    k_modulate_backward(k, tv(a->d2, BTC), tv(a->dmod, NM), tv(a->dmod + C, NM - C), tv(a->d1, BTC),
                        tv(b->ln1, BTC), tv(b->mod + C, NM - C), B, T, C, S);
    k_layernorm_backward(k, tv(a->dx, BTC), tv(a->d2, BTC), tv(a->x[i], BTC), tv(b->mean1, M), tv(b->rstd1, M),
                         (int)M, C);

    /* mod = adaLN Linear(silu(c)): dc_act accumulates over blocks. */
    k_linear_backward(k, tv(a->dtmp1, (int64_t)B * C), tv(g->ada_w, (int64_t)S * C), tv(g->ada_b, S),
                      tv(a->dmod, NM), tv(a->c_act, (int64_t)B * C), tv(p->ada_w, (int64_t)S * C), B, C, S);
    k_axpy(k, tv(a->dc_act, (int64_t)B * C), 1.0f, tv(a->dtmp1, (int64_t)B * C), (int64_t)B * C);
}

void dit_backward(struct dit_model *m, const float *dout, int B)
{
    const struct dit_config *c = &m->cfg;
    struct acts *a = m->acts;
    struct kctx *k = m->ctx;
    const int T = dit_tokens(c), C = c->hidden_size, P = c->patch_size, CI = c->in_channels;
    const int CO = dit_out_channels(c), H = c->input_size;
    const int PP = P * P * CI, PO = P * P * CO;
    const int64_t BTC = (int64_t)B * T * C, M = (int64_t)B * T, BC = (int64_t)B * C;

    /* Final layer. */
    k_unpatchify_backward(k, tv(a->douttok, M * PO), tv((float *)dout, (int64_t)B * CO * H * H), B, CO, H, H,
                          P);
    k_linear_backward(k, tv(a->d1, BTC), tv(m->g.f_w, (int64_t)PO * C), tv(m->g.f_b, PO), tv(a->douttok, M * PO),
                      tv(a->hf, BTC), tv(m->p.f_w, (int64_t)PO * C), (int)M, C, PO);
    memset(a->dfmod, 0, (size_t)(2 * BC) * sizeof(float));
    k_modulate_backward(k, tv(a->d2, BTC), tv(a->dfmod, 2 * BC), tv(a->dfmod + C, 2 * BC - C), tv(a->d1, BTC),
                        tv(a->lnf, BTC), tv(a->fmod + C, 2 * BC - C), B, T, C, 2 * C);
    memset(a->dx, 0, (size_t)BTC * sizeof(float));
    k_layernorm_backward(k, tv(a->dx, BTC), tv(a->d2, BTC), tv(a->x[c->depth], BTC), tv(a->meanf, M),
                         tv(a->rstdf, M), (int)M, C);
    k_linear_backward(k, tv(a->dc_act, BC), tv(m->g.f_ada_w, 2 * (int64_t)C * C), tv(m->g.f_ada_b, 2 * C),
                      tv(a->dfmod, 2 * BC), tv(a->c_act, BC), tv(m->p.f_ada_w, 2 * (int64_t)C * C), B, C, 2 * C);

    for (int i = c->depth - 1; i >= 0; i--)
        block_backward(m, i, B);

    /* Patch embedding: only its weights need a gradient (the input is data;
     * the positional embedding is fixed). */
    k_linear_backward(k, tensor_none(), tv(m->g.x_w, (int64_t)C * PP), tv(m->g.x_b, C), tv(a->dx, BTC),
                      tv(a->patches, M * PP), tv(m->p.x_w, (int64_t)C * PP), (int)M, PP, C);

    /* c = t_emb + y_emb, with every adaLN reading silu(c). */
    k_silu_backward(k, tv(a->dc, BC), tv(a->dc_act, BC), tv(a->c, BC), BC);
    k_embedding_backward(k, tv(m->g.y_table, (int64_t)dit_table_rows(c) * C), tv(a->dc, BC), m->labels, B, C);
    k_linear_backward(k, tv(a->dtmp1, BC), tv(m->g.t2_w, (int64_t)C * C), tv(m->g.t2_b, C), tv(a->dc, BC),
                      tv(a->t_act, BC), tv(m->p.t2_w, (int64_t)C * C), B, C, C);
    k_silu_backward(k, tv(a->dtmp2, BC), tv(a->dtmp1, BC), tv(a->t_h, BC), BC);
    k_linear_backward(k, tensor_none(), tv(m->g.t1_w, (int64_t)C * DIT_FREQ_DIM), tv(m->g.t1_b, C),
                      tv(a->dtmp2, BC), tv(a->t_freq, (int64_t)B * DIT_FREQ_DIM),
                      tv(m->p.t1_w, (int64_t)C * DIT_FREQ_DIM), B, DIT_FREQ_DIM, C);
}
