/* The T5 v1.1 encoder stack (transformers' T5EncoderModel, modeling_t5.py),
 * frozen, forward only: token ids to any of its hidden states.
 *
 *   h = embed(ids)                                  hidden_states[0]
 *   for each block i (0 .. num_layers - 1):
 *     h = h + o(attention(LN0(h), bias, mask))      unscaled scores + bias
 *     h = h + wo(gelu_tanh(wi_0 x) * wi_1 x), x = LN1(h)
 *                                                   hidden_states[i + 1]
 *   hidden_states[num_layers] = final_layer_norm(h) (= last_hidden_state;
 *                                  the last block's raw output is not one)
 *
 * LN is T5LayerNorm (RMS, no mean, no bias, statistics in fp32). The
 * relative position bias [NH, T, T] comes from block 0's table only and is
 * shared by every block (T5Stack passes block 0's position_bias on); the
 * attention mask, when asked for, removes padded keys. Dropout is the
 * identity (eval). feed_forward_proj "gelu_new" (not gated: wi, then wo)
 * is implemented too; "relu" (the original T5) is refused.
 *
 * Precision. On the CPU everything is f32. On CUDA the compute dtype is f32
 * or bf16; in bf16 the residual stream, the norms and wo stay f32, which is
 * how transformers runs a 16-bit T5 with wo in fp32 (_keep_in_fp32_modules
 * = ["wo"]): the gated product is cast to fp32 before wo, wo's fp32 output
 * makes the residual sum fp32, and each norm's output is cast back to 16
 * bits for the next projection. transformers 5.24 applies that rule to
 * float16 loads only (modeling_utils._get_dtype_plan); a bfloat16 load keeps
 * wo in bf16. We keep the fp32 wo for bf16 too: it costs 2 bytes a wo
 * weight and is nearer the fp32 model.
 *
 * Memory. The weights a layer needs are held, not more: hidden_states[L]
 * needs blocks 0 .. L-1 (F-Lite's layer -8 of T5-XXL: 17 of 24 blocks).
 * On CUDA they are resident in the compute dtype (wo, norms, the bias
 * table in f32). On the CPU, a file of f32 weights is resident as it is;
 * the blocks of a 16-bit file stay in their file dtypes in host memory and
 * each block is widened into one f32 working block just before it runs, so
 * that T5-XXL from a bf16 file encodes in
 *
 *   17 blocks x 192,946,176 params x 2 bytes   6,560,169,984  (bf16 copy)
 *   the f32 working block                        771,784,704
 *   the embedding table, f32 (32128 x 4096)      526,385,152
 *   activations, 4 captions x 512 tokens         487,604,224  (the bias
 *                                                  [64, 512, 512] included)
 *   total (t5_memory_bytes)                    8,345,968,640  (7.8 GiB)
 *
 * where all 24 blocks from bf16 take 11.0 GB and from an f32 file 19.5 GB
 * (18.2 GiB). Loading reads each tensor once and hashes it. */
#ifndef DIT_MODELS_T5_H
#define DIT_MODELS_T5_H

#include "kernels/kernels.h"
#include "libcommon/safetensors.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define T5_MAX_LAYERS 1024
/* Captions per forward in the text-encoder kind (the arena's batch). */
#define T5_ENCODE_BATCH 4

struct t5_config {
    int vocab_size, d_model, d_kv, d_ff, num_heads, num_layers;
    int num_buckets, max_distance; /* relative_attention_num_buckets, _max_distance */
    float eps;                     /* layer_norm_epsilon */
    int gated;                     /* 1: wi_0 | wi_1 (gated-gelu); 0: wi (gelu_new) */
};

/* Reads a transformers T5 config.json. Keys that change the encoder and
 * values it does not implement (feed_forward_proj "relu", is_decoder true,
 * a model_type other than t5) are errors naming the file, the key and the
 * value; dense_act_fn and is_gated_act, when present, override what
 * feed_forward_proj implies, as T5Config does. 0 or -1. */
int t5_config_read(struct t5_config *c, const char *path);
/* Checks the numbers (positive, sizes in range). */
int t5_config_check(const struct t5_config *c, const char *where);
/* A canonical text of the config, for hashes and messages. */
void t5_config_text(const struct t5_config *c, char *buf, size_t size);
/* hidden_states index of layer as Python indexes the tuple of
 * num_layers + 1: -1 is the last. -1 with err_set() out of range. */
int t5_layer_index(const struct t5_config *c, int layer, int *index);
/* T5Attention._relative_position_bucket, bidirectional, of rel = key
 * position - query position. Integer arithmetic where it is exact; the
 * logarithmic part in float32 as torch computes it. */
int t5_relative_bucket(int rel, int num_buckets, int max_distance);

/* ---- the parameter table (weights.c) ----------------------------------- */

enum t5_role {
    T5_EMBED, T5_REL_BIAS, T5_FINAL_LN,                             /* outside the blocks */
    T5_LN0, T5_Q, T5_K, T5_V, T5_O, T5_LN1, T5_WI0, T5_WI1, T5_WI, T5_WO, /* in block `block` */
};

struct t5_param {
    char name[96]; /* transformers' name (the embedding: shared.weight) */
    enum t5_role role;
    int block;     /* -1 outside the blocks */
    int ndim;
    int64_t shape[2], n;
};

struct t5_params {
    struct t5_param *p;
    size_t count;
};

/* Every parameter of c: the embedding, then block by block, then the final
 * norm. -1 when out of memory. */
int t5_param_table(const struct t5_config *c, struct t5_params *t);
void t5_params_free(struct t5_params *t);
/* The tensor of set for each entry of t (src[t->count]): the embedding as
 * shared.weight or, without it, encoder.embed_tokens.weight; decoder.* and
 * lm_head.* are ignored. A missing or mis-shaped tensor, a dtype other than
 * F32/BF16/F16, or an encoder.* tensor the config does not explain is an
 * error naming the file, the tensor and the shapes. */
int t5_weights_find(const struct t5_params *t, const struct st_set *set, const struct st_tensor **src);

/* ---- the model (t5.c) -------------------------------------------------- */

/* One block's weights on the compute device, at fixed offsets (t5.c). */
struct t5_block {
    struct tensor w;   /* dt:  q | k | v [3I, C], o [C, I], wi_0 | wi_1 [2F, C] (or wi [F, C]) */
    struct tensor w32; /* f32: ln0 [C], ln1 [C], wo [C, F] */
};

struct t5 {
    struct t5_config cfg;
    struct t5_params table;
    struct kctx *ctx;
    enum kdtype dt;          /* compute dtype */
    int n_blocks;            /* blocks held */
    int streamed;            /* CPU, 16-bit file: blocks widened into blocks[0] as they run */
    struct tensor embed;     /* [V, C] in dt */
    struct tensor rel_bias;  /* [num_buckets, NH] f32 */
    struct tensor final_ln;  /* [C] f32 */
    struct t5_block *blocks; /* n_blocks, or the one working block when streamed */
    struct tensor store[3];  /* streamed: the blocks' tensors in their file dtypes, by kdtype */
    int64_t *store_off;      /* streamed: per table entry, its offset in store[store_dt] */
    enum kdtype *store_dt;
    int64_t weight_bytes;    /* what the weights above hold */
    /* The arena, for up to planned_b captions of planned_t tokens. */
    int planned_b, planned_t, bias_t;
    struct tensor h, y, x, big, g32, bias, mask, ids, buckets, scratch;
    char hash[33];           /* xxh128 of the config text and every weight as f32 */
    pthread_mutex_t lock;    /* one forward at a time: the arena is shared */
};

/* Opens a text_encoder/ folder (config.json and model.safetensors or its
 * shards with model.safetensors.index.json), holding the weights of the
 * first n_blocks blocks (-1: all), on ctx's device in dt (f32 on the CPU).
 * Every tensor is read and hashed, held or not. 0 or -1. */
int t5_open(struct t5 *m, const char *dir, int n_blocks, struct kctx *ctx, enum kdtype dt);
void t5_close(struct t5 *m);

/* ids[B*T] (each < vocab_size) to out[B, T, d_model] f32 =
 * hidden_states[layer] (Python indexing of the tuple, so -1 is
 * last_hidden_state), then final_layer_norm when final_norm. mask[B*T]
 * (1 token, 0 padding) is the attention mask, or NULL for none (F-Lite);
 * a caption whose mask is all 0 attends to nothing (attention output 0),
 * where transformers would average every position (tokenized captions
 * always hold an EOS). Runs only the blocks the layer needs. Thread-safe.
 * 0 or -1. */
int t5_forward(struct t5 *m, const int32_t *ids, const uint8_t *mask, int B, int T, int layer, int final_norm,
               float *out);

/* Bytes an encoder of c holds through k_alloc on ctx's device: n_blocks
 * blocks in dt from a file of file_bytes bytes per weight (2 or 4; a 16-bit
 * file on the CPU is streamed), and the arena for B captions of T tokens.
 * For a 16-bit file whose wo is f32 (as transformers saves a float16
 * model) the store is larger by 2 bytes a wo weight. */
size_t t5_memory_bytes(const struct kctx *ctx, const struct t5_config *c, int n_blocks, enum kdtype dt,
                       int file_bytes, int B, int T);

/* The text-encoder kind "t5" (encoder.c): specs and identity described there. */
struct text_encoder_kind;
extern const struct text_encoder_kind t5_text_encoder_kind;

#endif
