/* LoRA adapters on a model's linear layers (Hu et al. 2021), as PEFT's
 * LoraLayer computes them:
 *
 *   y = x W^T + b + scale * dropout(x) A^T B^T,  A [r, in], B [out, r]
 *
 * with scale = alpha / r (PEFT's default) or alpha / sqrt(r) (rsLoRA). The
 * adapters are parameters of their own (struct nn_lora: a table laid out
 * like a model's, "<module>.lora_A.weight" and "<module>.lora_B.weight"
 * per adapted module, in a flat buffer on the device with its gradients
 * and compute copy), attached to the layers of one model instance through
 * nn_linear's adapter hook (struct nn_lora_binding): the model's code does
 * not know they are there, and the base weight is never changed or copied.
 *
 * Several LoRAs applied together (dit-sample --lora a --lora b) are one
 * nn_lora whose modules hold the files' ranks side by side: sum_k s_k B_k
 * A_k = [s_1 B_1 | s_2 B_2 ...] [A_1; A_2 ...], exact, one adapter per
 * layer (the scales folded into B, scale 1). */
#ifndef DIT_NN_LORA_H
#define DIT_NN_LORA_H

#include "kernels/kernels.h"
#include "nn/linear.h"
#include "nn/params.h"
#include "nn/weights.h"

#include <stddef.h>
#include <stdint.h>

/* One adapted module. */
struct nn_lora_module {
    char name[NN_NAME_MAX]; /* the adapted linear's module name: "blocks.0.self_attn.qkv" */
    int rank, in, out;
    float alpha;            /* as the files record it */
    float scale;            /* what B A is multiplied by: alpha / rank, or alpha / sqrt(rank) */
    size_t a_id, b_id;      /* entries of the table */
};

struct nn_lora {
    struct nn_params table;     /* the adapter tensors, module by module */
    struct nn_lora_module *mod; /* n */
    size_t n;
    struct nn_weights w;        /* on a device once nn_lora_alloc'd */
    float dropout;              /* the probability of dropping an input element in training */
    uint64_t seed;              /* of the dropout masks */
};

/* How a fresh adapter starts; B is zero in both, so the model's output is
 * the base model's until B trains. */
enum nn_lora_init {
    NN_LORA_INIT_DEFAULT,  /* PEFT's True: A uniform in +-1/sqrt(in) (kaiming_uniform, a = sqrt(5)) */
    NN_LORA_INIT_GAUSSIAN, /* PEFT's "gaussian" (F-Lite's choice): A normal, std 1/rank */
};

/* The table of n modules (names, ranks, features and scales filled; the
 * entries are set here). -1 with err_set(). */
int nn_lora_create(struct nn_lora *l, const struct nn_lora_module *mod, size_t n);
/* The buffers on ctx's device in dt: with train, gradients and an f32
 * master; without, the compute copy only (sampling). */
int nn_lora_alloc(struct nn_lora *l, struct kctx *ctx, enum kdtype dt, int train);
void nn_lora_free(struct nn_lora *l);
/* Host f32 initial values laid out by the table (l->table.total). */
void nn_lora_init_weights(const struct nn_lora *l, float *host, enum nn_lora_init init, uint64_t seed);
/* The module of that name, or NULL. */
const struct nn_lora_module *nn_lora_find(const struct nn_lora *l, const char *name);
/* 1 when PEFT's target_modules (comma-separated) selects the module: its
 * name equals an entry or ends with "." and the entry. */
int nn_lora_targets_match(const char *targets, const char *module);

/* One attached adapter: the hook a linear calls, and its views. */
struct nn_lora_binding;
struct nn_lora_layer {
    struct nn_adapter adapter;
    struct nn_lora_binding *bind;
    const struct nn_lora_module *mod;
    struct nn_linear *base;
    int index;                  /* the layer's place among the binding's: its dropout stream */
    struct tensor A, B, dA, dB; /* compute copies; f32 gradient views (absent without) */
};

/* The adapters of one nn_lora on the linears of one model instance, with
 * the scratch they need for that instance's batch. */
struct nn_lora_binding {
    struct nn_lora *lora;
    struct kctx *ctx;
    struct nn_lora_layer *layers;
    size_t n;
    struct tensor h, dh;   /* [rows, rank] for the largest layer */
    struct tensor xd, tmp; /* [rows, in]: the dropped-out input and its gradient (dropout only) */
    struct tensor ids;     /* [max batch] uint64 sample ids on the device, for the masks */
    int max_batch;
    int batch;             /* samples of the next forward */
    int64_t epoch;
    int training;          /* 0: no dropout (validation, sampling) */
};

/* Attaches every module of l to the linear of its name among the n
 * linears (names from table: the weight entry's name without ".weight"),
 * whose largest row counts are max_rows, for batches up to max_batch.
 * -1 with err_set() naming a module the model lacks or whose shape differs
 * from the layer's; nothing attached then. */
int nn_lora_bind(struct nn_lora_binding *b, struct nn_lora *l, struct kctx *ctx, const struct nn_params *table,
                 struct nn_linear *const *linears, const int64_t *max_rows, size_t n, int max_batch);
/* Detaches the adapters and frees the scratch. */
void nn_lora_unbind(struct nn_lora_binding *b);
/* The samples of the next forward (and its backward): their records draw
 * the dropout masks, by epoch, so that a sample's mask does not depend on
 * the batch it is in. training 0: no dropout. */
void nn_lora_binding_batch(struct nn_lora_binding *b, const uint64_t *records, int n, int64_t epoch,
                           int training);

#endif
