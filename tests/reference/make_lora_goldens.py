#!/usr/bin/env python3
"""Goldens for LoRA: PEFT's adapters on fal-ai/f-lite's DiT (the tiny rv_bias
model of tests/fixtures/flite), written in the formats the world uses, and
what the model computes with them.

Run from the repository root with /work/refenv/bin/python (torch, diffusers,
peft, safetensors, einops) and FLITE_SRC naming a checkout of fal-ai/f-lite:

    FLITE_SRC=/tmp/flite_src /work/refenv/bin/python tests/reference/make_lora_goldens.py

Writes tests/fixtures/lora/:
  peft/adapter_model.safetensors + adapter_config.json
                       PEFT's naming (base_model.model.<module>.lora_A.weight), r 4,
                       alpha 8 (scale 2), targets qkv,q,context_kv,proj, gaussian
                       init, then A and B randomised (B is zero at init)
  kohya.safetensors    the same adapter as kohya names it (lora_unet_..., lora_down,
                       lora_up, alpha)
  diffusers_model.safetensors  what diffusers' save_lora_adapter writes (module names
                       without a prefix, LoraConfig in the header)
  lora_weights.pt      F-Lite's train.py save: torch.save(get_peft_model_state_dict)
  model.pt             F-Lite's torch.save(model.state_dict()) with the adapter
                       injected (base_layer and lora_A.default names)
  second.safetensors   a second adapter (r 2, alpha 2, targets qkv,mlp.0) in
                       diffusers' pipeline naming (transformer. prefix, metadata)
  golden.safetensors   out_base: the model; out_lora: with the adapter;
                       out_two: with both, the second at weight 0.5 (PEFT's
                       set_adapters); inputs x, t, context of the rv_bias goldens
When tests/fixtures/lora/ours.safetensors exists (dit-lora-merge's diffusers
file made from peft/, see tests/tools/lora.sh), it is loaded by diffusers'
load_lora_adapter (prefix "transformer") into a fresh model, and its output is
golden.safetensors' out_ours.

The model runs in float64 (F-Lite's norms and rope in float32, as in
make_flite_goldens.py). Nothing of F-Lite is copied: it is imported from
FLITE_SRC and only numbers are written.
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from make_flite_goldens import load_flite  # F-Lite's model.py from FLITE_SRC

FIX = "tests/fixtures/flite"
OUT = "tests/fixtures/lora"
TARGETS = ["qkv", "q", "context_kv", "proj"]


def base_model(fl):
    with open(os.path.join(FIX, "rv_bias", "config.json")) as f:
        cfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    model = fl.DiT(**cfg).double()
    sd = load_file(os.path.join(FIX, "rv_bias", "diffusion_pytorch_model.safetensors"))
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(sd[k].double())
    model.train(False)
    return model


def randomise_lora(model, gen, name):
    with torch.no_grad():
        for k, p in model.named_parameters():
            if "lora_" in k and ("." + name + ".") in k:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.2)


def adapter_tensors(model, name):
    """The adapter's tensors by module: {module: (A, B)}."""
    sd = get_peft_model_state_dict(model, adapter_name=name)
    mods = {}
    for k, v in sd.items():
        mod, part = k.rsplit(".lora_", 1)
        mods.setdefault(mod, {})["A" if part.startswith("A") else "B"] = v.float().contiguous()
    return mods


def main():
    fl = load_flite()
    os.makedirs(os.path.join(OUT, "peft"), exist_ok=True)
    g = load_file(os.path.join(FIX, "rv_bias_golden.safetensors"))
    x, t, ctx = g["x"].double(), g["t"].double(), g["context"].double()
    gen = torch.Generator().manual_seed(17)

    model = base_model(fl)
    with torch.no_grad():
        out_base = model(x, ctx, t)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                     init_lora_weights="gaussian")
    model.add_adapter(cfg, adapter_name="default")
    model.double()
    randomise_lora(model, gen, "default")
    with torch.no_grad():
        out_lora = model(x, ctx, t)
    mods = adapter_tensors(model, "default")

    # PEFT's own layout
    save_file({f"base_model.model.{m}.lora_{p}.weight": v for m, ab in mods.items() for p, v in ab.items()},
              os.path.join(OUT, "peft", "adapter_model.safetensors"), metadata={"format": "pt"})
    pc = cfg.to_dict()
    pc = {k: (sorted(v) if isinstance(v, set) else v) for k, v in pc.items()}
    with open(os.path.join(OUT, "peft", "adapter_config.json"), "w") as f:
        json.dump(pc, f, indent=2, sort_keys=True)
    # kohya's
    kohya = {}
    for m, ab in mods.items():
        base = "lora_unet_" + m.replace(".", "_")
        kohya[base + ".lora_down.weight"] = ab["A"]
        kohya[base + ".lora_up.weight"] = ab["B"]
        kohya[base + ".alpha"] = torch.tensor(8.0)
    save_file(kohya, os.path.join(OUT, "kohya.safetensors"))
    # diffusers' save_lora_adapter
    tmp = os.path.join(OUT, "tmp_diffusers")
    model.float()
    model.save_lora_adapter(tmp, adapter_name="default", safe_serialization=True)
    os.replace(os.path.join(tmp, "pytorch_lora_weights.safetensors"), os.path.join(OUT, "diffusers_model.safetensors"))
    os.rmdir(tmp)
    # F-Lite's .pt files
    torch.save(get_peft_model_state_dict(model), os.path.join(OUT, "lora_weights.pt"))
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("rope.")},
               os.path.join(OUT, "model.pt"))
    model.double()

    # a second adapter at weight 0.5
    cfg2 = LoraConfig(r=2, lora_alpha=2, target_modules=["qkv", "mlp.0"], init_lora_weights="gaussian")
    model.add_adapter(cfg2, adapter_name="second")
    model.double()
    randomise_lora(model, gen, "second")
    mods2 = adapter_tensors(model, "second")
    meta = {"transformer." + k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg2.to_dict().items()}
    save_file({f"transformer.{m}.lora_{p}.weight": v for m, ab in mods2.items() for p, v in ab.items()},
              os.path.join(OUT, "second.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta, sort_keys=True)})
    model.set_adapters(["default", "second"], weights=[1.0, 0.5])
    with torch.no_grad():
        out_two = model(x, ctx, t)

    goldens = {"x": x, "t": t, "context": ctx, "out_base": out_base, "out_lora": out_lora, "out_two": out_two}
    ours = os.path.join(OUT, "ours.safetensors")
    if os.path.exists(ours):
        fresh = base_model(fl)
        fresh.load_lora_adapter(ours, prefix="transformer", adapter_name="ours")
        fresh.double()
        with torch.no_grad():
            goldens["out_ours"] = fresh(x, ctx, t)
        print("ours: loaded by diffusers, max |out_ours - out_lora| =",
              (goldens["out_ours"] - out_lora).abs().max().item())
    save_file({k: v.float().contiguous() for k, v in goldens.items()}, os.path.join(OUT, "golden.safetensors"))
    print("lora modules", len(mods), "max |out_lora - out_base| =", (out_lora - out_base).abs().max().item())


if __name__ == "__main__":
    main()
