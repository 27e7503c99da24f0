/* dit-precompute: decode, resize, crop and encode the images of a bucketed
 * manifest into a shard set, reusing whatever an earlier run (finished or
 * killed) already encoded with the same parameters. The work is
 * data/precompute.h's precompute_run(). */
#include "data/precompute.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "models/encoder.h"
#include "models/text_encoder.h"

#include <stdio.h>
#include <string.h>

/* --text-layer's value before parsing: any layer a user may ask for differs. */
#define TEXT_LAYER_UNSET (-1000000)

struct options {
    const char *encoder, *vae, *filter, *flip_mode, *background, *dtype, *latent_mode;
    const char *pretrained, *text_encoder, *tokenizer, *text_dtype;
    int vae_tiling, max_length, text_layer, text_layer_given, text_final_norm, text_mask;
    int random_flip, exact_decode;
    double shard_mb;
};

/* A stored tensors' dtype option: f32, bf16 or f16; anything else exits. */
static enum st_dtype storage_dtype(const char *flag, const char *v)
{
    static const char *const names[] = {"f32", "bf16", "f16"};
    static const enum st_dtype types[] = {ST_F32, ST_BF16, ST_F16};
    for (int i = 0; i < 3; i++)
        if (strcmp(v, names[i]) == 0)
            return types[i];
    opt_usage_error("%s: '%s' is not f32, bf16 or f16", flag, v);
}

/* The option strings into c; usage errors exit. */
static void parse_values(struct options *o, struct precompute_config *c)
{
    if (resize_filter_parse(o->filter, &c->filter) != 0 ||
        (c->filter != RESIZE_BICUBIC && c->filter != RESIZE_LANCZOS))
        opt_usage_error("--resize-filter: '%s' is not bicubic or lanczos", o->filter);
    if (o->random_flip)
        o->flip_mode = "both";
    if (strcmp(o->flip_mode, "none") && strcmp(o->flip_mode, "both"))
        opt_usage_error("--flip-mode: '%s' is not none or both", o->flip_mode);
    c->flip_both = strcmp(o->flip_mode, "both") == 0;
    int r, g, b;
    char tail;
    if (sscanf(o->background, "%d,%d,%d%c", &r, &g, &b, &tail) != 3 || r < 0 || r > 255 || g < 0 || g > 255 ||
        b < 0 || b > 255)
        opt_usage_error("--background: '%s' is not R,G,B with values 0..255", o->background);
    c->background[0] = (uint8_t)r, c->background[1] = (uint8_t)g, c->background[2] = (uint8_t)b;
    c->dtype = storage_dtype("--dtype", o->dtype);
    if (o->shard_mb <= 0)
        opt_usage_error("--shard-size must be positive (MB)");
    c->shard_bytes = (uint64_t)(o->shard_mb * 1e6);
    if (latent_mode_parse(o->latent_mode, &c->latent_mode) != 0)
        opt_usage_error("--latent-mode: '%s' is not dist, mean or sample", o->latent_mode);
    if (c->fast_decode && o->exact_decode)
        opt_usage_error("--fast-decode and --exact-decode contradict each other");
    c->text_dtype = storage_dtype("--text-dtype", o->text_dtype);
}

/* The text encoder's spec from the options: "t5:PATH" (PATH a text_encoder
 * folder or a pipeline: --text-encoder, else --pretrained-model-path) with
 * the tokenizer, layer, norm, mask and length as options; a --text-encoder
 * that is already a spec ("t5:...") gets the options appended. NULL when
 * no text encoder is asked for. */
static const char *text_spec(const struct options *o, char *spec, size_t size)
{
    const char *path = o->text_encoder ? o->text_encoder : o->pretrained;
    if (!path) {
        if (o->tokenizer || o->text_layer_given || o->text_final_norm || o->text_mask || o->max_length)
            opt_usage_error("the text options need --text-encoder or --pretrained-model-path");
        return NULL;
    }
    if (o->max_length < 0)
        opt_usage_error("--max-sequence-length must be positive");
    if (text_encoder_spec_t5(spec, size, path, o->tokenizer, o->text_layer_given, o->text_layer,
                             o->text_final_norm, o->text_mask, o->max_length) != 0)
        opt_usage_error("%s", err_get());
    return spec;
}

int main(int argc, char **argv)
{
    struct precompute_config c;
    precompute_config_init(&c);
    struct options o = {.text_layer = TEXT_LAYER_UNSET, .filter = "bicubic", .flip_mode = "none",
                        .background = "255,255,255", .dtype = "f32", .shard_mb = 256,
                        .latent_mode = "dist", .text_dtype = "bf16"};
    const struct opt opts[] = {
        {"output-dir", 'o', OPT_STRING, &c.output_dir, "DIR", "the shard set to write (required)"},
        {"encoder", 0, OPT_STRING, &o.encoder, "SPEC", "pixel, pixel:F (space-to-depth by F) or vae:PATH[,OPTIONS]"},
        {"vae", 0, OPT_STRING, &o.vae, "PATH", "the AutoencoderKL of PATH (the same as --encoder vae:PATH)"},
        {"vae-tiling", 0, OPT_FLAG, &o.vae_tiling, NULL, "with --vae: encode large images in tiles, as diffusers"},
        {"pretrained-model-path", 0, OPT_STRING, &o.pretrained, "DIR",
         "a pipeline folder: its vae/ (unless --vae or --encoder) and its text_encoder/ and tokenizer/"},
        {"text-encoder", 0, OPT_STRING, &o.text_encoder, "PATH",
         "encode the captions with the T5 encoder of PATH (a text_encoder/ or pipeline folder)"},
        {"tokenizer", 0, OPT_STRING, &o.tokenizer, "DIR", "the tokenizer/ folder (default: the pipeline's)"},
        {"caption-column", 0, OPT_STRING, &c.caption_column, "NAME", "the manifest column of the captions (caption)"},
        {"max-sequence-length", 0, OPT_INT, &o.max_length, "N", "tokens per caption, padded or cut (512)"},
        {"text-layer", 0, OPT_INT, &o.text_layer, "N", "the hidden state to store (-1, the last; F-Lite: -8)"},
        {"text-final-norm", 0, OPT_FLAG, &o.text_final_norm, NULL, "apply the final layer norm to it (F-Lite)"},
        {"text-attention-mask", 0, OPT_FLAG, &o.text_mask, NULL,
         "the encoder attends with the padding mask (F-Lite and FLUX do not)"},
        {"text-dtype", 0, OPT_STRING, &o.text_dtype, "TYPE", "text embeddings in bf16 (default), f16 or f32"},
        {"latent-mode", 0, OPT_STRING, &o.latent_mode, "MODE",
         "a VAE's latents: dist (mean and std, drawn at training), mean, or sample"},
        {"resize-filter", 0, OPT_STRING, &o.filter, "NAME", "bicubic (default) or lanczos, as Pillow"},
        {"flip-mode", 0, OPT_STRING, &o.flip_mode, "MODE", "none, or both: also store the mirrored encoding"},
        {"random-flip", 0, OPT_FLAG, &o.random_flip, NULL, "the same as --flip-mode both"},
        {"background", 0, OPT_STRING, &o.background, "R,G,B", "colour under transparent pixels (255,255,255)"},
        {"dtype", 0, OPT_STRING, &o.dtype, "TYPE", "f32 (default), bf16 or f16"},
        {"shard-size", 0, OPT_DOUBLE, &o.shard_mb, "MB", "about how large a shard grows (256)"},
        {"base-dir", 0, OPT_STRING, &c.base_dir, "DIR", "relative sources are under DIR (default: the manifest's folder)"},
        {"exact-decode", 0, OPT_FLAG, &o.exact_decode, NULL, "decode JPEGs at full size, as Pillow does (the default)"},
        {"fast-decode", 0, OPT_FLAG, &c.fast_decode, NULL, "decode JPEGs with DCT scaling: faster, Pillow's draft() pixels"},
        {"jobs", 'j', OPT_INT, &c.jobs, "N", "decode and resize threads (default: all cores)"},
        {"strict", 0, OPT_FLAG, &c.strict, NULL, "any rejected record makes the run fail"},
        {"rejects", 0, OPT_STRING, &c.rejects, "FILE", "write the rejected records as a manifest"},
        {"prune", 0, OPT_FLAG, &c.prune, NULL, "delete the shards the new manifest does not use"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-precompute", "[options] -o DIR [MANIFEST]",
                                  "Decode, resize, crop and encode a bucketed manifest into a shard set."};
    int first = opt_parse(&tool, opts, argc, argv);
    o.text_layer_given = o.text_layer != TEXT_LAYER_UNSET;
    if (!c.output_dir)
        opt_usage_error("-o DIR is required");
    if (argc - first > 1)
        opt_usage_error("one MANIFEST at most (default: standard input)");
    if (c.jobs < 0)
        opt_usage_error("--jobs must not be negative");
    if (opt_device_given())
        device_select(opt_device()); /* the pixel encoder runs on the CPU */
    char vae_spec[4200];
    if (o.pretrained && !o.vae && !o.encoder)
        o.vae = o.pretrained; /* the pipeline's vae/ */
    if (!o.encoder)
        o.encoder = "pixel";
    if (o.vae) {
        snprintf(vae_spec, sizeof vae_spec, "vae:%s%s", o.vae, o.vae_tiling ? ",tiling" : "");
        o.encoder = vae_spec;
    } else if (o.vae_tiling) {
        opt_usage_error("--vae-tiling needs --vae");
    }
    struct encoder enc;
    if (encoder_open(&enc, o.encoder) != 0)
        opt_usage_error("%s", err_get());
    parse_values(&o, &c);
    c.encoder = &enc;
    char spec[8400];
    const char *ts = text_spec(&o, spec, sizeof spec);
    struct text_encoder text;
    if (ts && text_encoder_open(&text, ts) != 0) {
        encoder_close(&enc);
        opt_usage_error("%s", err_get());
    }
    c.text_encoder = ts ? &text : NULL;
    if (first < argc)
        c.input = argv[first];

    int rc = precompute_run(&c, NULL);
    encoder_close(&enc);
    if (ts)
        text_encoder_close(&text);
    if (rc == STAGE_BAD_CONFIG)
        opt_usage_error("%s", err_get());
    if (rc == STAGE_ERROR)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    return rc == STAGE_DONE ? DIT_EXIT_OK : DIT_EXIT_FAILURE;
}
