/* dit-lora-merge: LoRAs into a model (W += ratio * scale * B A, written as
 * a model dir in the diffusers layout), or several LoRAs into one (their
 * ranks side by side, or re-ranked by SVD). The arithmetic is
 * train/lora_merge.h's; dit-lora-merge(1) documents the tool. */
#include "formats/model_dir.h"
#include "libcommon/error.h"
#include "libcommon/half.h"
#include "libcommon/log.h"
#include "libcommon/names.h"
#include "libcommon/options.h"
#include "models/registry.h"
#include "train/lora.h"
#include "train/lora_merge.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct options {
    const char *base, *output_dir, *output, *precision, *save_precision, *format;
    struct opt_list loras;
    int rank;
    int64_t max_shard;
};

static int read_loras(const struct options *o, struct lora_file *files, float *ratios)
{
    for (int i = 0; i < o->loras.n; i++) {
        char path[4096];
        lora_arg_parse(o->loras.v[i], path, sizeof path, &ratios[i]);
        if (lora_file_read(path, &files[i]) != 0)
            return -1;
        log_info("%s: %zu modules (%s naming), ratio %g", path, files[i].n, lora_format_name(files[i].format),
                 ratios[i]);
    }
    return 0;
}

/* The merged weights in save_dt (and shards of at most max_shard bytes):
 * the kind writes f32; the weights are rewritten in the asked dtype. */
static int rewrite_weights(const char *dir, enum st_dtype save_dt, uint64_t max_shard)
{
    struct st_set *s = model_dir_open_weights(dir);
    if (!s)
        return -1;
    struct model_tensor *t = calloc(s->n_tensors ? s->n_tensors : 1, sizeof *t);
    void **owned = calloc(s->n_tensors ? s->n_tensors : 1, sizeof *owned);
    int rc = !t || !owned;
    for (size_t i = 0; rc == 0 && i < s->n_tensors; i++) {
        const struct st_tensor *x = st_set_tensor(s, i, NULL);
        t[i] = (struct model_tensor){x->name, x->dtype, x->ndim, {0}, x->data};
        memcpy(t[i].shape, x->shape, sizeof t[i].shape);
        if (x->dtype != ST_F32 || save_dt == ST_F32)
            continue;
        float *v = malloc((size_t)(x->nelem ? x->nelem : 1) * sizeof *v);
        uint16_t *h = malloc((size_t)(x->nelem ? x->nelem : 1) * sizeof *h);
        rc = !v || !h || st_tensor_to_f32(x, v) != 0;
        if (rc == 0) {
            if (save_dt == ST_BF16)
                f32_to_bf16_array(v, h, (size_t)x->nelem);
            else
                f32_to_f16_array(v, h, (size_t)x->nelem);
            t[i].dtype = save_dt, t[i].data = h, owned[i] = h;
        } else {
            free(h);
        }
        free(v);
    }
    if (rc == 0)
        rc = model_dir_write_weights(dir, "diffusion_pytorch_model", t, s->n_tensors, max_shard);
    else
        err_set("%s: out of memory converting the weights", dir);
    for (size_t i = 0; owned && i < s->n_tensors; i++)
        free(owned[i]);
    free(owned), free(t);
    st_set_close(s);
    return rc;
}

/* LoRAs into the base model, written to a fresh output folder. */
static int merge_model(const struct options *o, struct lora_file *files, const float *ratios)
{
    enum st_dtype prec = ST_F32, save = ST_F32;
    if (lora_merge_precision_parse(o->precision, &prec) != 0 ||
        lora_merge_precision_parse(o->save_precision ? o->save_precision : o->precision, &save) != 0)
        opt_usage_error("--precision and --save-precision are float, fp16 or bf16");
    struct denoiser_config mc;
    float *params = NULL;
    if (denoiser_config_load_dir(&mc, o->base, &params) != 0)
        return -1;
    struct nn_params t;
    int rc = denoiser_config_table(&mc, &t);
    for (int i = 0; rc == 0 && i < o->loras.n; i++) {
        rc = lora_file_adopt(&files[i], mc.kind, &t);
        if (rc == 0)
            rc = lora_merge_into(&files[i], ratios[i], &t, params, prec);
        if (rc != 0)
            err_prefix("%s", o->loras.v[i]);
    }
    /* Written beside the output and renamed into place: whole or absent. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", o->output_dir, (long)getpid());
    if (rc == 0 && mkdir(tmp, 0777) != 0) {
        err_set("%s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc == 0) {
        rc = denoiser_save_dir(&mc, params, tmp);
        if (rc == 0 && (save != ST_F32 || o->max_shard > 0))
            rc = rewrite_weights(tmp, save, (uint64_t)o->max_shard);
        if (rc == 0 && rename(tmp, o->output_dir) != 0) {
            err_set("%s: %s", o->output_dir, strerror(errno));
            rc = -1;
        }
        if (rc != 0) {
            char cmd[8600];
            snprintf(cmd, sizeof cmd, "%s/config.json", tmp);
            unlink(cmd);
            /* the weights' names are the kind's: remove whatever the folder holds */
            size_t n;
            char **left = dir_list_sorted(tmp, &n);
            for (size_t i = 0; left && i < n; i++) {
                snprintf(cmd, sizeof cmd, "%s/%s", tmp, left[i]);
                unlink(cmd);
            }
            if (left)
                names_free(left, n);
            rmdir(tmp);
        }
    }
    if (rc == 0)
        log_info("merged %d LoRA%s into %s (%s arithmetic, %s weights)", o->loras.n, o->loras.n > 1 ? "s" : "",
                 o->output_dir, o->precision, st_dtype_name(save));
    nn_params_free(&t);
    free(params);
    denoiser_config_free(&mc);
    return rc;
}

/* Several LoRAs as one file. */
static int merge_loras(const struct options *o, struct lora_file *files, const float *ratios)
{
    enum lora_format fmt;
    enum st_dtype save = ST_F32;
    if (lora_format_parse(o->format, &fmt) != 0)
        opt_usage_error("--format: '%s' is not diffusers, peft or kohya", o->format);
    if (o->save_precision && lora_merge_precision_parse(o->save_precision, &save) != 0)
        opt_usage_error("--save-precision is float, fp16 or bf16");
    /* With --base, the files' names are the model's (kohya's resolved,
     * diffusers' DiT q, k and v fused) and are written in the model's file
     * naming; without, they stay as they are, so each file's names must be
     * the same naming. */
    const struct denoiser_kind *kind = NULL;
    if (o->base) {
        struct denoiser_config mc = {0};
        struct nn_params t = {0};
        int rc = denoiser_config_load_dir(&mc, o->base, NULL) != 0 || denoiser_config_table(&mc, &t) != 0;
        for (int i = 0; rc == 0 && i < o->loras.n; i++)
            if ((rc = lora_file_adopt(&files[i], mc.kind, &t)) != 0)
                err_prefix("%s", o->loras.v[i]);
        kind = mc.kind; /* the registry's, not the configuration's */
        nn_params_free(&t);
        denoiser_config_free(&mc);
        if (rc != 0)
            return -1;
    }
    int kohya = files[0].kohya_names;
    for (int i = 1; i < o->loras.n; i++)
        if (files[i].kohya_names != kohya) {
            err_set("%s and %s name their modules differently (kohya and diffusers); give --base to resolve them",
                    o->loras.v[0], o->loras.v[i]);
            return -1;
        }
    if (kohya && fmt != LORA_FORMAT_KOHYA) {
        err_set("%s names its modules as kohya does, which only the model resolves: give --format kohya",
                o->loras.v[0]);
        return -1;
    }
    struct nn_lora_module *mods;
    size_t n;
    float *host;
    int64_t total;
    if (lora_files_combine(files, ratios, (size_t)o->loras.n, NULL, NULL, &mods, &n, &host, &total) != 0)
        return -1;
    struct lora_file out;
    int rc = lora_to_file(mods, n, host, o->rank, &out);
    if (rc == 0 && kohya) {
        /* back from the flattened names as read: lora_unet_ is added again */
        for (size_t i = 0; i < out.n; i++)
            if (strncmp(out.e[i].name, "lora_unet_", 10) == 0)
                memmove(out.e[i].name, out.e[i].name + 10, strlen(out.e[i].name + 10) + 1);
    }
    if (rc == 0 && kind)
        rc = lora_file_export(&out, kind) < 0 ? -1 : 0;
    if (rc == 0)
        rc = lora_file_write(o->output, &out, fmt, save, NULL);
    if (rc == 0) {
        int64_t ranks = 0;
        for (size_t i = 0; i < out.n; i++)
            ranks += out.e[i].rank;
        log_info("%s: %zu modules, ranks %lld in all (%s)", o->output, out.n, (long long)ranks,
                 lora_format_name(fmt));
    }
    if (rc == 0)
        lora_file_free(&out);
    free(mods), free(host);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {.precision = "float", .format = "diffusers"};
    const struct opt opts[] = {
        {"base", 0, OPT_STRING, &o.base, "DIR", "the model to merge into (a model dir, a pipeline or a checkpoint's transformer/)"},
        {"pretrained-model-path", 0, OPT_STRING, &o.base, "DIR", "the same as --base"},
        {"lora", 0, OPT_LIST, &o.loras, "FILE[:RATIO]", "a LoRA (diffusers, PEFT, kohya, F-Lite's .pt) and its ratio (1); repeat for more"},
        {"output-dir", 'o', OPT_STRING, &o.output_dir, "DIR", "with --base: the merged model dir (must not exist)"},
        {"output", 0, OPT_STRING, &o.output, "FILE", "the LoRAs merged into this LoRA file (with --base: named as the model's files name its layers)"},
        {"precision", 0, OPT_STRING, &o.precision, "P", "the merge's arithmetic: float (default), fp16 or bf16"},
        {"save-precision", 0, OPT_STRING, &o.save_precision, "P", "the weights written: float, fp16 or bf16 (default: --precision)"},
        {"max-shard-size", 0, OPT_INT64, &o.max_shard, "BYTES", "shard the merged model's weights at this size"},
        {"rank", 0, OPT_INT, &o.rank, "R", "with --output: re-rank each module to R by SVD (default: ranks side by side)"},
        {"format", 0, OPT_STRING, &o.format, "NAME", "with --output: diffusers (default), peft or kohya"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-lora-merge", "[options] --lora FILE[:RATIO]... (--base DIR --output-dir DIR | --output FILE)",
                                  "Merge LoRAs into a model, or into one LoRA."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first < argc)
        opt_usage_error("unexpected operand '%s'", argv[first]);
    if (o.loras.n == 0)
        opt_usage_error("no --lora given");
    if (!o.output_dir == !o.output || (o.output_dir && !o.base))
        opt_usage_error("--base with --output-dir merges into a model; --output merges into a LoRA");
    if (o.rank < 0 || o.max_shard < 0 || (o.output_dir && o.rank))
        opt_usage_error("--rank (LoRA output only) and --max-shard-size must not be negative");
    if (o.output_dir && access(o.output_dir, F_OK) == 0)
        die(DIT_EXIT_FAILURE, "%s exists: the merged model goes to a new folder", o.output_dir);
    struct lora_file files[OPT_LIST_MAX];
    float ratios[OPT_LIST_MAX];
    memset(files, 0, sizeof files);
    int rc = read_loras(&o, files, ratios);
    if (rc == 0)
        rc = o.output_dir ? merge_model(&o, files, ratios) : merge_loras(&o, files, ratios);
    for (int i = 0; i < o.loras.n; i++)
        lora_file_free(&files[i]);
    if (rc != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    return DIT_EXIT_OK;
}
