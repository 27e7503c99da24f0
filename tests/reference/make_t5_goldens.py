#!/usr/bin/env python3
"""Goldens for models/t5/: transformers' T5EncoderModel on tiny random configs.

Run from the repository root with /work/refenv/bin/python (transformers 5.24,
torch 2.15, safetensors 0.8, sentencepiece; see tests/reference/README.md).
Reads tests/fixtures/t5_tokenizer/tokenizer/ when it exists (the tokenizer's own
fixture); nothing else of this repository. Writes, under tests/fixtures/t5/:

  <name>/config.json, <name>/model.safetensors   save_pretrained of each
      T5 v1.1-style config (dropout 0, untied), every weight randomised:
      small   3 layers, 4 heads, d_model 32, d_kv 8, d_ff 48, vocab 200,
              16 buckets, max_distance 20; ids [2, 33]; the default save,
              which keeps shared.weight only
      odd     2 layers, 3 heads, d_model 24, d_kv 10 (inner 30, not
              d_model / heads), d_ff 37, vocab 150, 8 buckets, max_distance
              6, eps 1e-5; ids [3, 13]; the file renamed to
              encoder.embed_tokens.weight only
      deep    4 layers, 2 heads, d_model 16, d_kv 8, d_ff 40, vocab >= the
              tokenizer fixture's (1000 without it), 32 buckets,
              max_distance 16; ids [2, 7]; sharded (save_pretrained with
              max_shard_size 30KB: model.safetensors.index.json + shards)
      gelu    1 layer, feed_forward_proj "gelu_new" (not gated: wi, wo),
              2 heads, d_model 16, d_kv 4, d_ff 20, vocab 100, 12 buckets,
              max_distance 9; ids [2, 9]
      full    a T5ForConditionalGeneration (1 encoder and 1 decoder layer,
              vocab 120): shared.weight, encoder.*, decoder.*, as the
              original t5-v1_1 checkpoints ship, plus a random untied
              lm_head.weight; its encoder is
              T5EncoderModel.from_pretrained of the folder; ids [1, 11]
      small_bf16  small's weights in bfloat16 (save_pretrained of
              from_pretrained(dtype=bfloat16)): transformers keeps every
              tensor bf16, wo included (_keep_in_fp32_modules applies to
              float16 only, modeling_utils._get_dtype_plan)
      small_f16   the same with dtype=float16: wo stays float32 in the model
              and in the file (a mixed F16/F32 file)
  <name>_golden.safetensors, for every name above (small_bf16 and
      small_f16 run their 16-bit weights in fp32, so the C side compares
      the same numbers):
      input_ids       int32 [B, T]: random ids >= 2, an EOS (1) after each
                      row's content, pad (0) after it; one row unpadded
      attention_mask  int32 [B, T]: 1 over the content and the EOS
      then for v in "mask" (attention_mask passed) and "nomask" (none:
      F-Lite's and FLUX's way):
      v.hidden_states.I   float32 [B, T, d_model], I = 0 .. num_layers, of
                          output_hidden_states=True (0 the embeddings, I the
                          output of block I-1, num_layers after the final
                          layer norm)
      v.last_hidden_state float32 [B, T, d_model]
      v.final_norm.K      encoder.final_layer_norm(hidden_states[-K]) for
                          K in {2, num_layers, num_layers + 1} but 1
                          (F-Lite takes K = 8 of T5-XXL's 24 layers)
  deep_captions_golden.safetensors, only with the tokenizer fixture:
      CAPTIONS (below) through AutoTokenizer (padding max_length 16,
      truncation) and the deep model: input_ids, attention_mask int32
      [4, 16]; truncated int32 [4] (1: more than 16 tokens untruncated);
      flite float32 [4, 16, 16] = final_layer_norm(
      hidden_states[-2]) without a mask; masked float32 the same with it
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

OUT = "tests/fixtures/t5"
TOKENIZER = "tests/fixtures/t5_tokenizer/tokenizer"
CAPTIONS = [
    "A photo of a person.",
    "a red fox jumping over a lazy dog, highly detailed",
    "",
    "Ünïcödé and   spaces, then a much longer caption that must be truncated at sixteen tokens",
]

COMMON = dict(dropout_rate=0.0, tie_word_embeddings=False)
CONFIGS = {
    "small": dict(num_layers=3, num_heads=4, d_model=32, d_kv=8, d_ff=48, vocab_size=200,
                  relative_attention_num_buckets=16, relative_attention_max_distance=20,
                  feed_forward_proj="gated-gelu"),
    "odd": dict(num_layers=2, num_heads=3, d_model=24, d_kv=10, d_ff=37, vocab_size=150,
                relative_attention_num_buckets=8, relative_attention_max_distance=6, layer_norm_epsilon=1e-5,
                feed_forward_proj="gated-gelu"),
    "deep": dict(num_layers=4, num_heads=2, d_model=16, d_kv=8, d_ff=40, vocab_size=1000,
                 relative_attention_num_buckets=32, relative_attention_max_distance=16,
                 feed_forward_proj="gated-gelu"),
    "gelu": dict(num_layers=1, num_heads=2, d_model=16, d_kv=4, d_ff=20, vocab_size=100,
                 relative_attention_num_buckets=12, relative_attention_max_distance=9,
                 feed_forward_proj="gelu_new"),
    "full": dict(num_layers=1, num_decoder_layers=1, num_heads=2, d_model=16, d_kv=8, d_ff=24, vocab_size=120,
                 relative_attention_num_buckets=8, relative_attention_max_distance=12,
                 feed_forward_proj="gated-gelu"),
}
SHAPES = {"small": (2, 33), "odd": (3, 13), "deep": (2, 7), "gelu": (2, 9), "full": (1, 11)}

written = []


def randomise(model, seed):
    """Every weight random with O(1) activations: Linear weights N(0, 1/fan_in),
    layer norms 1 + N(0, 0.3^2), the embedding N(0, 1), the relative
    attention bias N(0, 1) (so that it visibly shapes the attention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif "relative_attention_bias" in name or name in ("shared.weight", "lm_head.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def tokenizer_vocab():
    if not os.path.exists(os.path.join(TOKENIZER, "spiece.model")):
        return None
    from transformers import AutoTokenizer
    return len(AutoTokenizer.from_pretrained(TOKENIZER))


def save(tensors, path):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata={"format": "pt"})
    back = load_file(path)
    assert set(back) == set(tensors)
    for k in tensors:
        assert torch.equal(back[k], tensors[k]), k
    written.append(path)


def note_folder(d):
    for f in sorted(os.listdir(d)):
        written.append(os.path.join(d, f))


def inputs(cfg, B, T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(B, T, dtype=torch.int64)
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):
        n = T if b == 0 else int(torch.randint(1, T, (1,), generator=g))  # content + EOS
        ids[b, : n - 1] = torch.randint(2, cfg.vocab_size, (n - 1,), generator=g)
        ids[b, n - 1] = 1
        mask[b, :n] = 1
    return ids, mask


def run(model, ids, mask):
    with torch.no_grad():
        o = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hs = o.hidden_states
        N = model.config.num_layers
        assert len(hs) == N + 1 and torch.equal(hs[-1], o.last_hidden_state)
        out = {f"hidden_states.{i}": h[...] for i, h in enumerate(hs)}
        out["last_hidden_state"] = o.last_hidden_state
        for k in sorted({2, N, N + 1} - {1}):
            if k <= N + 1:
                out[f"final_norm.{k}"] = model.encoder.final_layer_norm(hs[-k])
    return out


def goldens(model, name, seed, keep=None):
    model = model.float().eval()
    B, T = SHAPES[name.split("_")[0]]
    ids, mask = inputs(model.config, B, T, seed)
    g = {"input_ids": ids.to(torch.int32), "attention_mask": mask.to(torch.int32)}
    for v, m in (("mask", mask), ("nomask", None)):
        for k, t in run(model, ids, m).items():
            if keep is None or k in keep:
                g[f"{v}.{k}"] = t.float().clone()
    save(g, os.path.join(OUT, f"{name}_golden.safetensors"))


def check_same(d, ref):
    """The folder loads as T5EncoderModel with ref's weights."""
    back = T5EncoderModel.from_pretrained(d)
    sd, rs = back.state_dict(), ref.state_dict()
    for k, v in rs.items():
        assert torch.equal(sd[k].float(), v.float()), (d, k)


def file_dtypes(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k).dtype for k in f.keys()}


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    vocab = tokenizer_vocab()
    if vocab is not None:
        CONFIGS["deep"]["vocab_size"] = max(CONFIGS["deep"]["vocab_size"], vocab)
        print(f"tokenizer fixture: vocab {vocab}; deep vocab_size {CONFIGS['deep']['vocab_size']}")
    else:
        print("no tokenizer fixture: deep vocab_size 1000, no caption goldens")
    seeds = {"small": 1, "odd": 2, "deep": 3, "gelu": 4, "full": 5}
    models = {}
    for name, seed in seeds.items():
        cfg = T5Config(**CONFIGS[name], **COMMON)
        if name != "full":  # what T5EncoderModel sets and saves
            cfg.is_encoder_decoder, cfg.use_cache = False, False
        torch.manual_seed(seed)
        cls = T5ForConditionalGeneration if name == "full" else T5EncoderModel
        m = cls(cfg).eval()
        randomise(m, seed + 100)
        d = os.path.join(OUT, name)
        m.save_pretrained(d, max_shard_size="30KB" if name == "deep" else "10GB")
        if name == "full":
            m = T5EncoderModel.from_pretrained(d).eval()
            keys = file_dtypes(os.path.join(d, "model.safetensors"))
            assert any(k.startswith("decoder.") for k in keys) and "shared.weight" in keys
            # The original checkpoints' untied lm_head, which the encoder ignores.
            p = os.path.join(d, "model.safetensors")
            sd = load_file(p)
            sd["lm_head.weight"] = torch.randn(sd["shared.weight"].shape, generator=torch.Generator().manual_seed(9))
            save_file(sd, p, metadata={"format": "pt"})
            m = T5EncoderModel.from_pretrained(d).eval()
        if name == "odd":  # the embedding under encoder.embed_tokens.weight only
            p = os.path.join(d, "model.safetensors")
            sd = load_file(p)
            sd["encoder.embed_tokens.weight"] = sd.pop("shared.weight")
            save_file(sd, p, metadata={"format": "pt"})
        if name == "deep":
            assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
            assert not os.path.exists(os.path.join(d, "model.safetensors"))
        check_same(d, m)
        note_folder(d)
        models[name] = m
        goldens(m, name, seed + 10)

    # 16-bit files as transformers writes them.
    for name, dt in (("small_bf16", torch.bfloat16), ("small_f16", torch.float16)):
        m = T5EncoderModel.from_pretrained(os.path.join(OUT, "small"), dtype=dt).eval()
        d = os.path.join(OUT, name)
        m.save_pretrained(d)
        dts = file_dtypes(os.path.join(d, "model.safetensors"))
        wo = {v for k, v in dts.items() if k.endswith(".wo.weight")}
        rest = {v for k, v in dts.items() if not k.endswith(".wo.weight")}
        assert rest == {dt} and wo == ({dt} if dt == torch.bfloat16 else {torch.float32}), (name, dts)
        note_folder(d)
        goldens(m, name, seeds["small"] + 10, keep=("last_hidden_state", "final_norm.2"))

    if vocab is not None:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(TOKENIZER)
        enc = tok(CAPTIONS, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        m = models["deep"]
        with torch.no_grad():
            flite = m(input_ids=enc.input_ids, output_hidden_states=True).hidden_states[-2]
            flite = m.encoder.final_layer_norm(flite)
            masked = m(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True)
            masked = m.encoder.final_layer_norm(masked.hidden_states[-2])
        cut = torch.tensor([len(tok(c).input_ids) > 16 for c in CAPTIONS], dtype=torch.int32)
        save({"input_ids": enc.input_ids.to(torch.int32), "attention_mask": enc.attention_mask.to(torch.int32),
              "truncated": cut, "flite": flite, "masked": masked}, os.path.join(OUT, "deep_captions_golden.safetensors"))
        with open(os.path.join(OUT, "deep_captions.json"), "w") as fh:
            json.dump({"captions": CAPTIONS, "max_length": 16, "layer": -2, "final_norm": True}, fh, indent=1)
            fh.write("\n")
        written.append(os.path.join(OUT, "deep_captions.json"))

    total = 0
    for p in written:
        total += os.path.getsize(p)
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")
    print(f"total {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
