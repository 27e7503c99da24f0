/* dit-sample: class-conditional images from a checkpoint, a model directory
 * or a safetensors file, with DDPM, DDIM or Euler and classifier-free
 * guidance; PNGs with their parameters, a grid, the latents. The work is
 * sample_run (train/sample_run.h). */
#include "data/stage.h"
#include "kernels/device.h"
#include "libcommon/error.h"
#include "libcommon/log.h"
#include "libcommon/options.h"
#include "models/text_encoder.h"
#include "nn/precision.h"
#include "nn/weights.h"
#include "train/sample_run.h"

int main(int argc, char **argv)
{
    struct sample_config c;
    sample_config_init(&c);
    const char *precision = NULL, *vae = NULL, *text_encoder = NULL, *tokenizer = NULL, *base_dtype = NULL;
    char vae_spec[4200], text_spec[8400];
    int text_layer = -1000000, text_final_norm = 0, text_mask = 0, max_length = 0;
    struct opt_list loras = {0};
    int64_t seed = 0;
    const struct opt opts[] = {
        {"model-path", 'm', OPT_STRING, &c.model_path, "PATH", "a checkpoint, a model directory or a safetensors file"},
        {"ckpt", 0, OPT_STRING, &c.model_path, "PATH", "the same as --model-path"},
        {"model", 0, OPT_STRING, &c.model_name, "NAME", "for a bare safetensors file: DiT-XL/2 ..."},
        {"latent-size", 0, OPT_INT, &c.latent_size, "N", "for a bare safetensors file: latent side (32 for 256 px)"},
        {"num-classes", 0, OPT_INT, &c.num_classes, "N", "for a bare safetensors file (1000)"},
        {"no-ema", 0, OPT_FLAG, &c.no_ema, NULL, "from a checkpoint, use the raw weights, not the EMA"},
        {"objective", 0, OPT_STRING, &c.objective, "NAME", "ddpm or flow (default: the checkpoint's, else ddpm)"},
        {"sampler", 0, OPT_STRING, &c.sampler, "NAME", "ddpm, ddim or euler (default: ddpm, euler for flow)"},
        {"reference", 0, OPT_STRING, &c.reference, "WHOSE", "dit (sample.py, default) or diffusers (DiTPipeline)"},
        {"num-sampling-steps", 0, OPT_INT, &c.steps, "N", "250 for ddpm, 50 for ddim, 28 for euler"},
        {"num-inference-steps", 0, OPT_INT, &c.steps, "N", "the same as --num-sampling-steps"},
        {"eta", 0, OPT_DOUBLE, &c.eta, "ETA", "DDIM's eta (0)"},
        {"cfg-scale", 0, OPT_DOUBLE, &c.cfg_scale, "S", "classifier-free guidance scale (4 for DiT, 6 for F-Lite; 1: none)"},
        {"guidance-scale", 0, OPT_DOUBLE, &c.cfg_scale, "S", "the same as --cfg-scale"},
        {"apg", 0, OPT_FLAG, &c.apg, NULL, "text models: F-Lite's APG instead of plain guidance"},
        {"apg-batch", 0, OPT_FLAG, &c.apg_batch, NULL, "APG's statistics over the whole batch, as F-Lite's code (default: per image)"},
        {"apg-threshold", 0, OPT_DOUBLE, &c.apg_threshold, "T", "APG's orthogonal threshold (0.03)"},
        {"prompt", 0, OPT_STRING, &c.prompt, "TEXT", "text models: the prompt"},
        {"prompts-file", 0, OPT_STRING, &c.prompts_file, "FILE", "text models: prompts, one per line"},
        {"negative-prompt", 0, OPT_STRING, &c.negative_prompt, "TEXT", "the unconditional half's prompt (default: zeros, as F-Lite)"},
        {"text-encoder", 0, OPT_STRING, &text_encoder, "PATH", "the T5 of the prompts (a text_encoder/ or pipeline folder)"},
        {"tokenizer", 0, OPT_STRING, &tokenizer, "DIR", "its tokenizer/ folder (default: the pipeline's)"},
        {"text-layer", 0, OPT_INT, &text_layer, "N", "the hidden state the model was trained on (F-Lite: -8)"},
        {"text-final-norm", 0, OPT_FLAG, &text_final_norm, NULL, "through the final layer norm (F-Lite)"},
        {"text-attention-mask", 0, OPT_FLAG, &text_mask, NULL, "the encoder attends with the padding mask"},
        {"max-sequence-length", 0, OPT_INT, &max_length, "N", "tokens per prompt (512)"},
        {"num-images-per-prompt", 0, OPT_INT, &c.per_class, "N", "images per prompt (1)"},
        {"cfg-channels", 0, OPT_INT, &c.cfg_channels, "N", "guide the first N latent channels (dit: 3, diffusers: all)"},
        {"class-labels", 0, OPT_STRING, &c.labels, "LIST", "comma-separated class ids (or names with --class-names)"},
        {"classes-file", 0, OPT_STRING, &c.classes_file, "FILE", "class ids or names, one per line"},
        {"class-names", 0, OPT_STRING, &c.class_names, "FILE", "dit-index --classes-out's list, to name classes"},
        {"num-per-class", 0, OPT_INT, &c.per_class, "N", "images per label (1)"},
        {"seed", 0, OPT_INT64, &seed, "N", "image i of seed s is the same whatever the batch (0)"},
        {"batch-size", 0, OPT_INT, &c.batch, "N", "images per model call (16)"},
        {"width", 0, OPT_INT, &c.width, "PX", "DiT: its size; F-Lite: any multiple of 16 with a VAE (1024)"},
        {"height", 0, OPT_INT, &c.height, "PX", "likewise"},
        {"decoder", 0, OPT_STRING, &c.decoder, "SPEC", "pixel, pixel:F or vae:PATH (default: the checkpoint's encoder)"},
        {"vae", 0, OPT_STRING, &vae, "PATH", "decode with the AutoencoderKL of PATH (--decoder vae:PATH)"},
        {"output-dir", 'o', OPT_STRING, &c.output_dir, "DIR", "where the PNGs go (samples)"},
        {"grid", 0, OPT_STRING, &c.grid, "FILE", "also write all images as one grid PNG"},
        {"decode", 0, OPT_STRING, &c.decode, "FILE", "decode FILE's latents to PNGs instead of sampling"},
        {"latents-out", 0, OPT_STRING, &c.latents_out, "FILE", "also write the final latents (safetensors)"},
        {"overwrite", 0, OPT_FLAG, &c.overwrite, NULL, "replace images (and grid, latents) an earlier run left"},
        {"init-noise", 0, OPT_STRING, &c.init_noise, "FILE", "start from FILE's \"noise\" [N, C, H, W] instead of the seed's draws"},
        {"lora", 0, OPT_LIST, &loras, "FILE[:SCALE]",
         "apply a LoRA (diffusers, PEFT, kohya or F-Lite's .pt) at that strength (1); several at once"},
        {"threads", 0, OPT_INT, &c.threads, "N", "compute threads (default: all cores)"},
        {"precision", 0, OPT_STRING, &precision, "P", "fp32, bf16 or fp16 on a GPU (bf16); the CPU computes in fp32"},
        {"base-weight-dtype", 0, OPT_STRING, &base_dtype, "DTYPE",
         "the model's linears stored in fp32, bf16 or fp8 (e4m3, a scale per row), widened layer by layer "
         "(default: as computed)"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct opt_tool tool = {"dit-sample", "[options] --model-path PATH",
                                  "Sample images from a class-conditional DiT or from prompts with F-Lite."};
    int first = opt_parse(&tool, opts, argc, argv);
    if (first < argc)
        opt_usage_error("unexpected operand '%s'", argv[first]);
    if (!c.model_path && !c.decode)
        opt_usage_error("--model-path (or --decode) is required");
    if (c.model_path && c.decode)
        opt_usage_error("--decode takes latents, not a model: give one of --model-path and --decode");
    c.seed = (uint64_t)seed;
    if (vae && c.decoder)
        opt_usage_error("--vae and --decoder both name the decoder: give one");
    if (vae) {
        snprintf(vae_spec, sizeof vae_spec, "vae:%s", vae);
        c.decoder = vae_spec;
    }
    if (text_encoder) {
        if (max_length < 0)
            opt_usage_error("--max-sequence-length must be positive");
        if (text_encoder_spec_t5(text_spec, sizeof text_spec, text_encoder, tokenizer, text_layer != -1000000,
                                 text_layer, text_final_norm, text_mask, max_length) != 0)
            opt_usage_error("%s", err_get());
        c.text_encoder = text_spec;
    } else if (tokenizer || text_layer != -1000000 || text_final_norm || text_mask || max_length) {
        opt_usage_error("the text options need --text-encoder");
    }
    c.device = device_select(opt_device());
    /* The compute dtype: bf16 on a GPU unless asked otherwise; f32 on the CPU. */
    int cpu_note = kdtype_for_compute(precision, c.device, &c.dtype);
    if (cpu_note < 0)
        opt_usage_error("--precision: %s", err_get());
    if (cpu_note)
        log_info("--precision %s: the CPU backend computes in fp32", precision);
    if (base_dtype && nn_base_parse(base_dtype, &c.base) != 0)
        opt_usage_error("--base-weight-dtype: %s", err_get());
    c.loras = loras.v;
    c.n_loras = loras.n;
    int rc = sample_run(&c);
    if (rc == STAGE_BAD_CONFIG)
        opt_usage_error("%s", err_get());
    if (rc != 0)
        die(DIT_EXIT_FAILURE, "%s", err_get());
    return 0;
}
