/* The T5 encoder forward (transformers' T5Stack, encoder side) on kernels.h
 * ops, its weights on the device (or streamed on the CPU, see t5.h), and
 * its memory plan.
 *
 * Shapes: B captions, T tokens, M = B T rows, C = d_model, NH heads of
 * HS = d_kv, I = NH HS (need not be C), F = d_ff. The residual stream h
 * and the projections' outputs y are f32 in every compute dtype; x (a
 * norm's output) and big (qkv and the attention output, or the
 * feed-forward's wi output and its activation) are in the compute dtype. */
#include "models/t5/t5.h"
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Where a block's tensors sit in its two buffers (struct t5_block). */
struct layout {
    int64_t q, k, v, o, wi, w;  /* in w (dt); wi_1 follows wi_0 */
    int64_t ln0, ln1, wo, w32;  /* in w32 (f32) */
};

static struct layout block_layout(const struct t5_config *c)
{
    const int64_t C = c->d_model, I = (int64_t)c->num_heads * c->d_kv, F = c->d_ff;
    struct layout L;
    L.q = 0, L.k = I * C, L.v = 2 * I * C, L.o = 3 * I * C, L.wi = 4 * I * C;
    L.w = L.wi + (c->gated ? 2 : 1) * F * C;
    L.ln0 = 0, L.ln1 = C, L.wo = 2 * C, L.w32 = 2 * C + C * F;
    return L;
}

/* The offset of a block tensor of role r; *in32: whether it is in w32. */
static int64_t role_offset(const struct layout *L, const struct t5_param *p, int *in32)
{
    *in32 = p->role == T5_LN0 || p->role == T5_LN1 || p->role == T5_WO;
    switch (p->role) {
    case T5_Q: return L->q;
    case T5_K: return L->k;
    case T5_V: return L->v;
    case T5_O: return L->o;
    case T5_WI0: case T5_WI: return L->wi;
    case T5_WI1: return L->wi + p->n;
    case T5_LN0: return L->ln0;
    case T5_LN1: return L->ln1;
    default: return L->wo;
    }
}

/* ---- the memory plan ---------------------------------------------------- */

struct arena_sizes {
    int64_t h, y, x, big, g32, bias, mask, ids, buckets, scratch; /* elements */
};

static struct arena_sizes arena_sizes(const struct kctx *ctx, const struct t5_config *c, enum kdtype dt, int B,
                                      int T)
{
    const int64_t M = (int64_t)B * T, C = c->d_model, I = (int64_t)c->num_heads * c->d_kv, F = c->d_ff;
    const int64_t ff = (c->gated ? 3 : 2) * F, att = 4 * I, TT = (int64_t)T * T;
    struct arena_sizes s;
    s.h = s.y = s.x = M * C;
    s.big = M * (att > ff ? att : ff);
    s.g32 = dt == KDT_F32 ? 0 : M * F;
    s.bias = c->num_heads * TT;
    s.mask = s.ids = M;
    s.buckets = TT;
    const int64_t attn = k_attention_bias_scratch(ctx, B, T, T, c->num_heads, c->d_kv);
    s.scratch = attn > s.bias ? attn : s.bias; /* also holds the bias before its transpose */
    return s;
}

static int64_t arena_bytes(const struct arena_sizes *s, enum kdtype dt)
{
    return 4 * (s->h + s->y + s->g32 + s->bias + s->mask + s->ids + s->buckets + s->scratch) +
           (int64_t)kdtype_bytes(dt) * (s->x + s->big);
}

size_t t5_memory_bytes(const struct kctx *ctx, const struct t5_config *c, int n_blocks, enum kdtype dt,
                       int file_bytes, int B, int T)
{
    const struct layout L = block_layout(c);
    const int64_t dtb = (int64_t)kdtype_bytes(dt);
    int64_t bytes = (int64_t)c->vocab_size * c->d_model * dtb + 4 * (int64_t)c->d_model;
    if (n_blocks > 0) {
        bytes += 4 * (int64_t)c->num_buckets * c->num_heads;
        if (ctx->device == DEVICE_CPU && file_bytes == 2) /* the 16-bit copy and one f32 block */
            bytes += n_blocks * 2 * (L.w + L.w32) + 4 * (L.w + L.w32);
        else
            bytes += n_blocks * (dtb * L.w + 4 * L.w32);
    }
    struct arena_sizes s = arena_sizes(ctx, c, dt, B, T);
    return (size_t)(bytes + arena_bytes(&s, dt));
}

/* ---- the arena ---------------------------------------------------------- */

static void arena_free(struct t5 *m)
{
    struct tensor *t[] = {&m->h, &m->y, &m->x, &m->big, &m->g32, &m->bias, &m->mask, &m->ids, &m->buckets,
                          &m->scratch};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        k_free(m->ctx, t[i]);
    m->planned_b = m->planned_t = m->bias_t = 0;
}

/* bias[NH, T, T] = the table's row for each (query, key) bucket, moved to
 * heads first (compute_bias's permute): a gather of the [T*T] buckets into
 * [T*T, NH] (in scratch), then a transpose. */
static int compute_bias(struct t5 *m, int T)
{
    const struct t5_config *c = &m->cfg;
    const int64_t TT = (int64_t)T * T;
    int32_t *bk = malloc((size_t)TT * sizeof *bk);
    if (!bk) {
        err_set("T5: out of memory for the position buckets of %d tokens", T);
        return -1;
    }
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++)
            bk[(int64_t)i * T + j] = t5_relative_bucket(j - i, c->num_buckets, c->max_distance);
    k_upload(m->ctx, tensor_view(m->buckets, 0, TT), bk, TT); /* int32 in 4-byte elements */
    free(bk);
    struct tensor rows = tensor_view(m->scratch, 0, TT * c->num_heads);
    k_embedding_forward(m->ctx, rows, m->rel_bias, (const int32_t *)m->buckets.data, (int)TT, c->num_heads);
    k_transpose_forward(m->ctx, tensor_view(m->bias, 0, TT * c->num_heads), rows, 1, (int)TT, c->num_heads);
    m->bias_t = T;
    return 0;
}

/* Plans for B captions of T tokens: grows the arena when either exceeds
 * what it holds, and computes the bias when T changes. */
static int arena_reserve(struct t5 *m, int B, int T)
{
    if (!m->h.data || B > m->planned_b || T > m->planned_t) {
        const int b = B > m->planned_b ? B : m->planned_b, t = T > m->planned_t ? T : m->planned_t;
        arena_free(m);
        struct arena_sizes s = arena_sizes(m->ctx, &m->cfg, m->dt, b, t);
        struct kctx *k = m->ctx;
        if (k_alloc(k, &m->h, KDT_F32, s.h) || k_alloc(k, &m->y, KDT_F32, s.y) || k_alloc(k, &m->x, m->dt, s.x) ||
            k_alloc(k, &m->big, m->dt, s.big) || k_alloc(k, &m->g32, KDT_F32, s.g32) ||
            k_alloc(k, &m->bias, KDT_F32, s.bias) || k_alloc(k, &m->mask, KDT_F32, s.mask) ||
            k_alloc(k, &m->ids, KDT_F32, s.ids) || k_alloc(k, &m->buckets, KDT_F32, s.buckets) ||
            k_alloc(k, &m->scratch, KDT_F32, s.scratch)) {
            err_prefix("T5 activations for %d captions of %d tokens", b, t);
            arena_free(m);
            return -1;
        }
        m->planned_b = b, m->planned_t = t;
    }
    if (m->n_blocks > 0 && m->bias_t != T)
        return compute_bias(m, T);
    return 0;
}

/* ---- the forward -------------------------------------------------------- */

/* x[M, C] (dt) = T5LayerNorm(h) with weight[C] (f32): the statistics and
 * the scaling in f32 on the residual, then rounded to dt (through y). */
static void norm_forward(struct t5 *m, struct tensor weight, int M)
{
    const int C = m->cfg.d_model;
    struct tensor h = tensor_view(m->h, 0, (int64_t)M * C), x = tensor_view(m->x, 0, (int64_t)M * C);
    if (m->dt == KDT_F32) {
        k_rmsnorm_forward(m->ctx, x, tensor_none(), h, weight, M, C, m->cfg.eps);
    } else {
        struct tensor y = tensor_view(m->y, 0, (int64_t)M * C);
        k_rmsnorm_forward(m->ctx, y, tensor_none(), h, weight, M, C, m->cfg.eps);
        k_convert(m->ctx, x, y, (int64_t)M * C);
    }
}

/* layer.0 (T5LayerSelfAttention): h += o(attention(LN0(h))). */
static void attention_forward(struct t5 *m, const struct t5_block *w, const struct layout *L, int B, int T,
                              struct tensor key_mask)
{
    struct kctx *k = m->ctx;
    const int C = m->cfg.d_model, NH = m->cfg.num_heads, HS = m->cfg.d_kv, I = NH * HS, M = B * T;
    const int64_t MC = (int64_t)M * C, MI = (int64_t)M * I;
    norm_forward(m, tensor_view(w->w32, L->ln0, C), M);                            /* x [M, C] */
    struct tensor x = tensor_view(m->x, 0, MC), y = tensor_view(m->y, 0, MC), h = tensor_view(m->h, 0, MC);
    struct tensor qkv = tensor_view(m->big, 0, 3 * MI), att = tensor_view(m->big, 3 * MI, MI);
    k_linear_forward(k, qkv, x, tensor_view(w->w, L->q, 3 * (int64_t)I * C), tensor_none(), M, C, 3 * I);
    /* qkv [M, 3I]: q | k | v per row, head h at h HS of each; scores
     * unscaled (T5Attention.scaling = 1) plus bias[NH, T, T]. */
    k_attention_bias_forward(k, att, tensor_none(), qkv, tensor_view(qkv, I, 3 * MI - I),
                             tensor_view(qkv, 2 * (int64_t)I, 3 * MI - 2 * I),
                             tensor_view(m->bias, 0, (int64_t)NH * T * T), key_mask, m->scratch, B, T, T, NH, HS,
                             3 * I, 3 * I, 1.0f);                                   /* att [M, I] */
    struct tensor wo = tensor_view(w->w, L->o, (int64_t)C * I);
    if (m->dt == KDT_F32) {
        k_linear_forward(k, y, att, wo, tensor_none(), M, I, C);                  /* y [M, C] */
    } else { /* x is free again: o's output in dt, then f32 */
        k_linear_forward(k, x, att, wo, tensor_none(), M, I, C);
        k_convert(k, y, x, MC);
    }
    k_axpy(k, h, 1.0f, y, MC);                                                     /* h += y */
}

/* layer.1 (T5LayerFF): h += wo(act(LN1(h))), act = gelu_new(wi_0 x) * wi_1 x
 * or gelu_new(wi x); wo in f32, its input cast to f32 first. */
static void ff_forward(struct t5 *m, const struct t5_block *w, const struct layout *L, int M)
{
    struct kctx *k = m->ctx;
    const int C = m->cfg.d_model, F = m->cfg.d_ff, wide = m->cfg.gated ? 2 * F : F;
    const int64_t MC = (int64_t)M * C, MF = (int64_t)M * F;
    norm_forward(m, tensor_view(w->w32, L->ln1, C), M);                            /* x [M, C] */
    struct tensor x = tensor_view(m->x, 0, MC), y = tensor_view(m->y, 0, MC), h = tensor_view(m->h, 0, MC);
    struct tensor pre = tensor_view(m->big, 0, (int64_t)M * wide), act = tensor_view(m->big, (int64_t)M * wide, MF);
    struct tensor wi = tensor_view(w->w, L->wi, (int64_t)wide * C);
    if (m->cfg.gated) {
        k_linear_forward(k, pre, x, wi, tensor_none(), M, C, wide);                /* pre [M, 2F] */
        k_gated_gelu_forward(k, act, pre, M, F);                                   /* act [M, F] */
    } else {
        k_linear_gelu_forward(k, act, pre, x, wi, tensor_none(), M, C, F);         /* act [M, F] */
    }
    struct tensor wo = tensor_view(w->w32, L->wo, (int64_t)C * F);
    if (m->dt == KDT_F32) {
        k_linear_forward(k, y, act, wo, tensor_none(), M, F, C);                   /* y [M, C] */
    } else {
        struct tensor a32 = tensor_view(m->g32, 0, MF);
        k_convert(k, a32, act, MF);
        k_linear_forward(k, y, a32, wo, tensor_none(), M, F, C);
    }
    k_axpy(k, h, 1.0f, y, MC);                                                     /* h += y */
}

/* Streamed: block b's tensors from their file dtypes into the f32 block. */
static void block_fill(struct t5 *m, int b, const struct layout *L)
{
    for (size_t i = 0; i < m->table.count; i++) {
        const struct t5_param *p = &m->table.p[i];
        if (p->block != b)
            continue;
        int in32;
        const int64_t off = role_offset(L, p, &in32);
        struct tensor dst = tensor_view(in32 ? m->blocks[0].w32 : m->blocks[0].w, off, p->n);
        k_convert(m->ctx, dst, tensor_view(m->store[m->store_dt[i]], m->store_off[i], p->n), p->n);
    }
}

static int forward_locked(struct t5 *m, const int32_t *ids, const uint8_t *mask, int B, int T, int index,
                          int final_norm, float *out)
{
    const struct t5_config *c = &m->cfg;
    const int C = c->d_model, M = B * T;
    const int64_t MC = (int64_t)M * C;
    if (arena_reserve(m, B, T) != 0)
        return -1;
    struct kctx *k = m->ctx;
    struct tensor key_mask = tensor_none();
    if (mask) {
        float *f = malloc((size_t)M * sizeof *f);
        if (!f) {
            err_set("T5: out of memory for the mask of %d tokens", M);
            return -1;
        }
        for (int i = 0; i < M; i++)
            f[i] = mask[i] ? 1.0f : 0.0f;
        key_mask = tensor_view(m->mask, 0, M);
        k_upload(k, key_mask, f, M);
        free(f);
    }
    k_upload(k, tensor_view(m->ids, 0, M), ids, M);
    struct tensor h = tensor_view(m->h, 0, MC);
    if (m->dt == KDT_F32) {                                                        /* h [M, C] */
        k_embedding_forward(k, h, m->embed, (const int32_t *)m->ids.data, M, C);
    } else {
        struct tensor x = tensor_view(m->x, 0, MC);
        k_embedding_forward(k, x, m->embed, (const int32_t *)m->ids.data, M, C);
        k_convert(k, h, x, MC);
    }
    const struct layout L = block_layout(c);
    for (int b = 0; b < index; b++) { /* hidden_states[index] is block index-1's output */
        if (m->streamed)
            block_fill(m, b, &L);
        const struct t5_block *w = &m->blocks[m->streamed ? 0 : b];
        attention_forward(m, w, &L, B, T, key_mask);
        ff_forward(m, w, &L, M);
    }
    /* The last hidden state is the final norm's output; final_norm applies
     * it (again, for the last) to the chosen one. */
    for (int n = (index == c->num_layers) + !!final_norm; n > 0; n--)
        k_rmsnorm_forward(k, h, tensor_none(), h, m->final_ln, M, C, c->eps);
    k_download(k, out, h, MC);
    return 0;
}

int t5_forward(struct t5 *m, const int32_t *ids, const uint8_t *mask, int B, int T, int layer, int final_norm,
               float *out)
{
    int index;
    if (t5_layer_index(&m->cfg, layer, &index) != 0)
        return -1;
    if (index > m->n_blocks) {
        err_set("T5: layer %d needs %d blocks; this encoder holds %d", layer, index, m->n_blocks);
        return -1;
    }
    /* The kernels take rows (B T, and T T for the bias gather) as int. */
    if (B <= 0 || T <= 0 || (int64_t)B * T > INT32_MAX || (int64_t)T * T > INT32_MAX) {
        err_set("T5: %d captions of %d tokens: expected a positive batch within the kernels' int sizes", B, T);
        return -1;
    }
    for (int64_t i = 0; i < (int64_t)B * T; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size) {
            err_set("T5: token id %d (caption %lld, position %lld) is outside the embedding table of %d rows",
                    ids[i], (long long)(i / T), (long long)(i % T), m->cfg.vocab_size);
            return -1;
        }
    pthread_mutex_lock(&m->lock);
    int rc = forward_locked(m, ids, mask, B, T, index, final_norm, out);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ---- loading ------------------------------------------------------------ */

static enum kdtype kdtype_of(enum st_dtype d)
{
    return d == ST_BF16 ? KDT_BF16 : d == ST_F16 ? KDT_F16 : KDT_F32;
}

#define CHUNK (1 << 20) /* elements widened at a time: loading needs 6 MiB of host memory */

/* Elements [off, off + n) of s as f32 into f (via h16 for 16-bit data:
 * the file's data need not be aligned). */
static void widen(const struct st_tensor *s, int64_t off, int64_t n, float *f, uint16_t *h16)
{
    const char *at = (const char *)s->data + off * (int64_t)st_dtype_size(s->dtype);
    if (s->dtype == ST_F32) {
        memcpy(f, at, (size_t)n * sizeof *f);
        return;
    }
    memcpy(h16, at, (size_t)n * sizeof *h16);
    if (s->dtype == ST_BF16)
        bf16_to_f32_array(h16, f, (size_t)n);
    else
        f16_to_f32_array(h16, f, (size_t)n);
}

/* Where entry p lives when held (resident); absent when it is not held or
 * lives in the store. */
static struct tensor destination(struct t5 *m, const struct t5_param *p, const struct layout *L)
{
    switch (p->role) {
    case T5_EMBED: return m->embed;
    case T5_REL_BIAS: return m->n_blocks > 0 ? m->rel_bias : tensor_none();
    case T5_FINAL_LN: return m->final_ln;
    default: break;
    }
    if (p->block >= m->n_blocks || m->streamed)
        return tensor_none();
    int in32;
    const int64_t off = role_offset(L, p, &in32);
    return tensor_view(in32 ? m->blocks[p->block].w32 : m->blocks[p->block].w, off, p->n);
}

static int alloc_weights(struct t5 *m, const struct st_tensor **src)
{
    const struct t5_config *c = &m->cfg;
    const struct layout L = block_layout(c);
    struct kctx *k = m->ctx;
    int64_t per_dt[3] = {0, 0, 0};
    for (size_t i = 0; i < m->table.count; i++)
        if (m->table.p[i].block >= 0 && m->table.p[i].block < m->n_blocks)
            m->streamed |= k->device == DEVICE_CPU && src[i]->dtype != ST_F32;
    if (m->streamed) {
        m->store_off = calloc(m->table.count, sizeof *m->store_off);
        m->store_dt = calloc(m->table.count, sizeof *m->store_dt);
        if (!m->store_off || !m->store_dt) {
            err_set("T5: out of memory");
            return -1;
        }
        for (size_t i = 0; i < m->table.count; i++) {
            const struct t5_param *p = &m->table.p[i];
            if (p->block < 0 || p->block >= m->n_blocks)
                continue;
            m->store_dt[i] = kdtype_of(src[i]->dtype);
            m->store_off[i] = per_dt[m->store_dt[i]];
            per_dt[m->store_dt[i]] += p->n;
        }
    }
    const int nb = m->streamed ? (m->n_blocks > 0) : m->n_blocks;
    m->blocks = calloc(nb > 0 ? (size_t)nb : 1, sizeof *m->blocks);
    if (!m->blocks) {
        err_set("T5: out of memory");
        return -1;
    }
    const enum kdtype wdt = m->streamed ? KDT_F32 : m->dt;
    int64_t before, after, peak;
    k_mem_usage(k, &before, &peak);
    int rc = k_alloc(k, &m->embed, m->dt, (int64_t)c->vocab_size * c->d_model) ||
             k_alloc(k, &m->final_ln, KDT_F32, c->d_model) ||
             (m->n_blocks > 0 && k_alloc(k, &m->rel_bias, KDT_F32, (int64_t)c->num_buckets * c->num_heads));
    for (int b = 0; !rc && b < nb; b++)
        rc = k_alloc(k, &m->blocks[b].w, wdt, L.w) || k_alloc(k, &m->blocks[b].w32, KDT_F32, L.w32);
    for (int d = 0; !rc && d < 3; d++)
        rc = k_alloc(k, &m->store[d], (enum kdtype)d, per_dt[d]);
    if (rc) {
        err_prefix("T5 weights (%d of %d blocks)", m->n_blocks, c->num_layers);
        return -1;
    }
    k_mem_usage(k, &after, &peak);
    m->weight_bytes = after - before;
    return 0;
}

/* Every tensor read once: widened in chunks, hashed, and uploaded where it
 * is held (a streamed block's tensors go to the store as they are). */
static int load_weights(struct t5 *m, const struct st_tensor **src)
{
    const struct layout L = block_layout(&m->cfg);
    float *f = malloc(CHUNK * sizeof *f);
    uint16_t *h16 = malloc(CHUNK * sizeof *h16);
    struct hash_state *hs = hash_begin();
    if (!f || !h16 || !hs) {
        free(f), free(h16);
        if (hs)
            hash_end(hs);
        err_set("T5: out of memory for loading");
        return -1;
    }
    char text[512];
    t5_config_text(&m->cfg, text, sizeof text);
    hash_update(hs, text, strlen(text));
    for (size_t i = 0; i < m->table.count; i++) {
        const struct t5_param *p = &m->table.p[i];
        const struct st_tensor *s = src[i];
        struct tensor dst = destination(m, p, &L);
        if (m->streamed && p->block >= 0 && p->block < m->n_blocks)
            k_upload(m->ctx, tensor_view(m->store[m->store_dt[i]], m->store_off[i], p->n), s->data, p->n);
        for (int64_t off = 0; off < p->n; off += CHUNK) {
            const int64_t n = p->n - off < CHUNK ? p->n - off : CHUNK;
            widen(s, off, n, f, h16);
            hash_update(hs, f, (size_t)n * sizeof *f);
            if (dst.data)
                k_upload_f32(m->ctx, tensor_view(dst, off, n), f, n);
        }
        st_tensor_release(s); /* copied and hashed: T5-XXL's 9.5 GB stay on disk */
    }
    hash_hex(hash_end(hs), m->hash);
    free(f), free(h16);
    k_sync(m->ctx);
    return 0;
}

void t5_close(struct t5 *m)
{
    if (!m->ctx)
        return;
    arena_free(m);
    k_free(m->ctx, &m->embed);
    k_free(m->ctx, &m->rel_bias);
    k_free(m->ctx, &m->final_ln);
    const int nb = m->streamed ? (m->n_blocks > 0) : m->n_blocks;
    for (int b = 0; m->blocks && b < nb; b++) {
        k_free(m->ctx, &m->blocks[b].w);
        k_free(m->ctx, &m->blocks[b].w32);
    }
    for (int d = 0; d < 3; d++)
        k_free(m->ctx, &m->store[d]);
    free(m->blocks);
    free(m->store_off);
    free(m->store_dt);
    t5_params_free(&m->table);
    pthread_mutex_destroy(&m->lock);
    memset(m, 0, sizeof *m);
}

int t5_open(struct t5 *m, const char *dir, int n_blocks, struct kctx *ctx, enum kdtype dt)
{
    memset(m, 0, sizeof *m);
    if (ctx->device == DEVICE_CPU && dt != KDT_F32) {
        err_set("T5 %s: the CPU computes in f32 only", dir);
        return -1;
    }
    if (dt != KDT_F32 && dt != KDT_BF16) {
        err_set("T5 %s: compute dtype %s; f32 or bf16 are implemented", dir, kdtype_name(dt));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        err_set("T5 %s: no such folder", dir);
        return -1;
    }
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/%s", dir, MODEL_DIR_CONFIG);
    if (stat(cpath, &st) != 0) {
        err_set("T5 %s: no %s (a text_encoder folder holds config.json and model.safetensors)", dir,
                MODEL_DIR_CONFIG);
        return -1;
    }
    struct t5_config cfg;
    if (t5_config_read(&cfg, cpath) != 0)
        return -1;
    struct st_set *set = model_dir_open_weights(dir);
    if (!set)
        return -1;
    m->cfg = cfg;
    m->ctx = ctx;
    m->dt = dt;
    m->n_blocks = n_blocks < 0 || n_blocks > cfg.num_layers ? cfg.num_layers : n_blocks;
    pthread_mutex_init(&m->lock, NULL);
    const struct st_tensor **src = NULL;
    int rc = t5_param_table(&cfg, &m->table);
    if (rc == 0 && !(src = calloc(m->table.count, sizeof *src))) {
        err_set("T5 %s: out of memory", dir);
        rc = -1;
    }
    rc = rc || t5_weights_find(&m->table, set, src) || alloc_weights(m, src) || load_weights(m, src);
    free(src);
    st_set_close(set);
    if (rc) {
        t5_close(m);
        return -1;
    }
    return 0;
}
