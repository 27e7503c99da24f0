#!/usr/bin/env python3
"""Goldens for LoRA on the class-conditional DiT in diffusers' names: PEFT's
adapters on diffusers' DiTTransformer2DModel (tests/fixtures/dit/tiny_diffusers),
whose attention has separate to_q, to_k and to_v where the toolkit's DiT has
one fused qkv.

Run from the repository root with /work/refenv/bin/python (torch, diffusers,
peft, safetensors):

    /work/refenv/bin/python tests/reference/make_dit_lora_goldens.py

Writes tests/fixtures/lora/dit/:
  peft.safetensors  PEFT's adapter (r 2, alpha 4: scale 2; targets to_q, to_k,
                    to_v, to_out.0, ff.net.0.proj, ff.net.2; A and B random) in
                    diffusers' pipeline naming: "transformer." prefix, LoraConfig
                    in the header's lora_adapter_metadata
  golden.safetensors  x, t, y (as float32) of tiny_diffusers_io; out_base: the model;
                    out_lora: with the adapter (DiTTransformer2DModel has no
                    LoRA loader of its own: PEFT's inject_adapter_in_model)
When tests/fixtures/lora/dit/ours.safetensors exists (what
`dit-lora-merge --base tiny_diffusers --lora peft.safetensors --output` writes:
the adapter through the toolkit's fused qkv and back into diffusers' names;
tests/test_lora.c checks the file is what the code writes), it is loaded by
PEFT (inject_adapter_in_model with the LoraConfig of its header, then
set_peft_model_state_dict) into a fresh model: golden.safetensors' out_ours.

The model runs in float64. Only numbers are written.
"""
import json
import os

import torch
from diffusers import DiTTransformer2DModel
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FIX = "tests/fixtures/dit"
OUT = "tests/fixtures/lora/dit"
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]


def base_model():
    model = DiTTransformer2DModel.from_pretrained(os.path.join(FIX, "tiny_diffusers")).double()
    model.train(False)
    return model


def forward(model, x, t, y):
    with torch.no_grad():
        return model(x, timestep=t, class_labels=y).sample


def main():
    os.makedirs(OUT, exist_ok=True)
    io = load_file(os.path.join(FIX, "tiny_diffusers_io.safetensors"))
    x, t, y = io["x"].double(), io["t"], io["y"]
    model = base_model()
    out_base = forward(model, x, t, y)

    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS, lora_dropout=0.0, bias="none",
                     init_lora_weights="gaussian")
    model = inject_adapter_in_model(cfg, model, adapter_name="default")
    model.double()
    gen = torch.Generator().manual_seed(23)
    with torch.no_grad():
        for k, p in model.named_parameters():
            if "lora_" in k:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.2)
    out_lora = forward(model, x, t, y)
    sd = get_peft_model_state_dict(model, adapter_name="default")
    meta = {"transformer." + k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.to_dict().items()}
    save_file({"transformer." + k: v.float().contiguous() for k, v in sd.items()},
              os.path.join(OUT, "peft.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(meta, sort_keys=True)})
    print("adapted modules:", len(sd) // 2, "max |out_lora - out_base| =", (out_lora - out_base).abs().max().item())

    goldens = {"x": x, "t": t, "y": y, "out_base": out_base, "out_lora": out_lora}
    ours = os.path.join(OUT, "ours.safetensors")
    if os.path.exists(ours):
        with safe_open(ours, "pt") as f:
            m = json.loads(f.metadata()["lora_adapter_metadata"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        lc = {k[len("transformer."):]: v for k, v in m.items() if k.startswith("transformer.")}
        fields = set(LoraConfig.__dataclass_fields__)
        oc = LoraConfig(**{k: v for k, v in lc.items() if k in fields})
        fresh = inject_adapter_in_model(oc, base_model(), adapter_name="default")
        fresh.double()
        res = set_peft_model_state_dict(fresh, {k[len("transformer."):]: v.double() for k, v in tensors.items()},
                                        adapter_name="default")
        assert not res.unexpected_keys, res.unexpected_keys
        missing = [k for k in res.missing_keys if "lora_" in k]
        assert not missing, missing
        goldens["out_ours"] = forward(fresh, x, t, y)
        print("ours: loaded by PEFT, r", oc.r, "max |out_ours - out_lora| =",
              (goldens["out_ours"] - out_lora).abs().max().item())
    save_file({k: v.float().contiguous() for k, v in goldens.items()},
              os.path.join(OUT, "golden.safetensors"),
              metadata={"torch": torch.__version__, "what": "DiTTransformer2DModel with PEFT LoRA, float64"})


if __name__ == "__main__":
    main()
