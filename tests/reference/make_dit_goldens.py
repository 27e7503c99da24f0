#!/usr/bin/env python3
"""Goldens for the DiT model: the original facebookresearch/DiT models.py and
diffusers' DiTTransformer2DModel on one tiny random configuration.

Run from the repository root (see tests/reference/README.md for the exact
Python, packages and versions):

    DIT_REF=/work/refs/DiT /usr/bin/python3 tests/reference/make_dit_goldens.py

DIT_REF names a checkout of facebookresearch/DiT (default /work/refs/DiT); its
models.py is imported from there, never copied into this repository. The
script rewrites the files below (they are committed, so the C tests need no
Python) and prints each one it wrote.

tests/fixtures/dit/tiny_config.json
    The DiT(...) keyword arguments, the seeds and the weight scales used.

tests/fixtures/dit/tiny_init_original.safetensors
    The state dict straight after DiT.__init__ (initialize_weights()) under
    torch.manual_seed(INIT_SEED), original tensor names, pos_embed included.
    For checking initialisation: which tensors are zero, the normal(0.02)
    embeddings, the Xavier-uniform bounds.

tests/fixtures/dit/tiny_original.safetensors
    The same model after every trainable parameter was overwritten with
    deterministic random values (weights normal*WEIGHT_STD, biases and 1-D
    tensors normal*BIAS_STD); pos_embed (frozen) keeps its sin-cos values.
    Original names (x_embedder.proj.weight, blocks.N.attn.qkv.weight, ...).

tests/fixtures/dit/tiny_io.safetensors
    One forward and backward pass of that model in eval mode (no label
    dropout), fp32, CPU:
      x [3,4,8,8] f32, t [3] i64 (what DiT passes), t_float [3] f32,
      y [3] i64 (10 = the classifier-free-guidance null class),
      out [3,8,8,8], R [3,8,8,8], loss [1] = sum(out * R),
      grad/<name> for every trainable parameter, grad_input/x,
      act/t_emb (t_embedder output), act/t_freq (its sinusoidal input
      [3,256]), act/y_emb, act/c (t_emb + y_emb), act/x_embed (x_embedder +
      pos_embed), act/block0_out, act/block1_out, act/final_in (the input of
      final_layer.linear: modulate(norm_final(x), shift, scale)),
      act/final_out (final_layer output before unpatchify [3,16,32]).

tests/fixtures/dit/tiny_diffusers/{config.json,diffusion_pytorch_model.safetensors}
    The same weights in diffusers' DiTTransformer2DModel, converted with the
    key mapping of diffusers' scripts/convert_dit_to_diffusers.py, written by
    save_pretrained(safe_serialization=True).

tests/fixtures/dit/tiny_diffusers_io.safetensors
    The diffusers model on the same x, t (int64, as DiTPipeline passes
    them) and y: out, R (same as above), loss, grad/<diffusers name> for
    every parameter (each block's copy of the embedders has its own).

tests/fixtures/dit/tiny_diffusers_notes.json
    The numerical differences between the two implementations and the max
    abs difference between their outputs.

tests/fixtures/dit/tiny_pos_embed.safetensors
    get_2d_sincos_pos_embed(32, 4) and (32, 16) from models.py: grid4 /
    grid16 as float32 (what DiT copies into pos_embed), grid4_f64 as numpy
    computes it.
"""

import copy
import json
import os
import sys

import numpy as np
import torch

DIT_REF = os.environ.get("DIT_REF", "/work/refs/DiT")
sys.path.insert(0, DIT_REF)

from models import DiT, get_2d_sincos_pos_embed  # noqa: E402  (from DIT_REF)

import diffusers  # noqa: E402
import huggingface_hub  # noqa: E402
import safetensors  # noqa: E402
import timm  # noqa: E402
from diffusers import DiTTransformer2DModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "dit"))

CONFIG = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4,
              mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=10, learn_sigma=True)
INIT_SEED = 0       # torch.manual_seed before DiT(...): the init the C code compares with
WEIGHT_SEED = 1     # generator for the overwritten parameters
INPUT_SEED = 2      # generator for x and R
WEIGHT_STD = 0.15
BIAS_STD = 0.05
T = [0, 500, 999]
Y = [1, 9, 10]

DIFFUSERS_CONFIG = dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=8,
                        num_layers=2, dropout=0.0, attention_bias=True, sample_size=8, patch_size=2,
                        activation_fn="gelu-approximate", num_embeds_ada_norm=10, upcast_attention=False,
                        norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-5)

written = []


def versions():
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "timm": timm.__version__, "diffusers": diffusers.__version__,
            "safetensors": safetensors.__version__, "huggingface_hub": huggingface_hub.__version__}


def metadata(what):
    # One key: safetensors writes __metadata__ in hash order, so several keys
    # would make the header (and the file) differ from run to run.
    m = {"script": "tests/reference/make_dit_goldens.py", "content": what}
    m.update(versions())
    return {"producer": json.dumps(m, sort_keys=True)}


def save_tensors(name, tensors, what):
    path = os.path.join(OUT, name)
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, path, metadata=metadata(what))
    # A reload through the safetensors package must give back the same bits.
    back = load_file(path)
    assert sorted(back) == sorted(tensors), path
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), (path, k)
    written.append(path)


def save_json(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    written.append(path)


def randomize(model):
    """Nonzero values everywhere: DiT's own init zeroes adaLN and the final
    layer, which would make the output (and most gradients) trivially zero."""
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():  # fixed order: registration order
            if not p.requires_grad:
                continue
            std = WEIGHT_STD if p.dim() >= 2 else BIAS_STD
            p.copy_(torch.randn(p.shape, generator=g) * std)


def original_forward(model, x, t, y, acts):
    """DiT.forward with the intermediates recorded; checked against
    model(x, t, y) below so it cannot drift from the real one."""
    xe = model.x_embedder(x) + model.pos_embed
    acts["act/x_embed"] = xe
    acts["act/t_freq"] = model.t_embedder.timestep_embedding(t, model.t_embedder.frequency_embedding_size)
    te = model.t_embedder(t)
    acts["act/t_emb"] = te
    ye = model.y_embedder(y, model.training)
    acts["act/y_emb"] = ye
    c = te + ye
    acts["act/c"] = c
    h = xe
    for i, block in enumerate(model.blocks):
        h = block(h, c)
        acts["act/block%d_out" % i] = h
    fl = model.final_layer
    shift, scale = fl.adaLN_modulation(c).chunk(2, dim=1)
    fin = fl.norm_final(h) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    acts["act/final_in"] = fin
    fo = fl.linear(fin)
    acts["act/final_out"] = fo
    return model.unpatchify(fo)


def to_diffusers(sd, depth):
    """Original DiT state dict -> DiTTransformer2DModel names, following the
    mapping of diffusers' scripts/convert_dit_to_diffusers.py."""
    out = {}
    out["pos_embed.proj.weight"] = sd["x_embedder.proj.weight"]
    out["pos_embed.proj.bias"] = sd["x_embedder.proj.bias"]
    for d in range(depth):
        b = "transformer_blocks.%d." % d
        o = "blocks.%d." % d
        # diffusers gives every block its own copy of the embedders.
        emb = b + "norm1.emb."
        out[emb + "timestep_embedder.linear_1.weight"] = sd["t_embedder.mlp.0.weight"]
        out[emb + "timestep_embedder.linear_1.bias"] = sd["t_embedder.mlp.0.bias"]
        out[emb + "timestep_embedder.linear_2.weight"] = sd["t_embedder.mlp.2.weight"]
        out[emb + "timestep_embedder.linear_2.bias"] = sd["t_embedder.mlp.2.bias"]
        out[emb + "class_embedder.embedding_table.weight"] = sd["y_embedder.embedding_table.weight"]
        out[b + "norm1.linear.weight"] = sd[o + "adaLN_modulation.1.weight"]
        out[b + "norm1.linear.bias"] = sd[o + "adaLN_modulation.1.bias"]
        qw, kw, vw = torch.chunk(sd[o + "attn.qkv.weight"], 3, dim=0)
        qb, kb, vb = torch.chunk(sd[o + "attn.qkv.bias"], 3, dim=0)
        out[b + "attn1.to_q.weight"], out[b + "attn1.to_q.bias"] = qw, qb
        out[b + "attn1.to_k.weight"], out[b + "attn1.to_k.bias"] = kw, kb
        out[b + "attn1.to_v.weight"], out[b + "attn1.to_v.bias"] = vw, vb
        out[b + "attn1.to_out.0.weight"] = sd[o + "attn.proj.weight"]
        out[b + "attn1.to_out.0.bias"] = sd[o + "attn.proj.bias"]
        out[b + "ff.net.0.proj.weight"] = sd[o + "mlp.fc1.weight"]
        out[b + "ff.net.0.proj.bias"] = sd[o + "mlp.fc1.bias"]
        out[b + "ff.net.2.weight"] = sd[o + "mlp.fc2.weight"]
        out[b + "ff.net.2.bias"] = sd[o + "mlp.fc2.bias"]
    out["proj_out_1.weight"] = sd["final_layer.adaLN_modulation.1.weight"]
    out["proj_out_1.bias"] = sd["final_layer.adaLN_modulation.1.bias"]
    out["proj_out_2.weight"] = sd["final_layer.linear.weight"]
    out["proj_out_2.bias"] = sd["final_layer.linear.bias"]
    # "pos_embed" (the frozen sin-cos table) has no counterpart: diffusers
    # recomputes it as a non-persistent buffer; compared in main().
    return {k: v.clone() for k, v in out.items()}


def max_abs(a, b):
    return float((a.detach().double() - b.detach().double()).abs().max())


def main():
    torch.set_num_threads(1)  # one summation order, so reruns give the same bits
    os.makedirs(OUT, exist_ok=True)

    # ---- original DiT --------------------------------------------------
    torch.manual_seed(INIT_SEED)
    model = DiT(**CONFIG)
    init_sd = model.state_dict()
    save_tensors("tiny_init_original.safetensors", init_sd,
                 "DiT state dict right after initialize_weights(), torch.manual_seed(%d)" % INIT_SEED)

    randomize(model)
    save_tensors("tiny_original.safetensors", model.state_dict(),
                 "DiT state dict, trainable parameters overwritten with normal*%g (weights) / normal*%g (1-D)"
                 % (WEIGHT_STD, BIAS_STD))

    save_json("tiny_config.json", {
        "dit_kwargs": CONFIG,
        "init_seed": INIT_SEED,
        "weight_seed": WEIGHT_SEED,
        "input_seed": INPUT_SEED,
        "weight_std": WEIGHT_STD,
        "bias_std": BIAS_STD,
        "frequency_embedding_size": model.t_embedder.frequency_embedding_size,
        "label_table_rows": model.y_embedder.embedding_table.num_embeddings,
        "null_class": CONFIG["num_classes"],
        "layer_norm_eps": 1e-6,
        "t": T,
        "y": Y,
        "note": "t is passed to DiT as int64 (train.py: torch.randint); t_float holds the same values as float32, "
                "which is what timestep_embedding computes with (t[:, None].float()). Eval mode: no label dropout.",
        "versions": versions(),
    })

    g = torch.Generator().manual_seed(INPUT_SEED)
    x = torch.randn(3, 4, 8, 8, generator=g)
    R = torch.randn(3, 8, 8, 8, generator=g)
    t = torch.tensor(T, dtype=torch.int64)
    y = torch.tensor(Y, dtype=torch.int64)

    model.eval()
    xin = x.clone().requires_grad_(True)
    acts = {}
    out = original_forward(model, xin, t, y, acts)
    with torch.no_grad():
        assert torch.equal(out, model(x, t, y)), "original_forward drifted from DiT.forward"
    loss = (out * R).sum()
    model.zero_grad()
    loss.backward()

    io = {"x": x, "t": t, "t_float": t.float(), "y": y, "out": out, "R": R, "loss": loss.reshape(1),
          "grad_input/x": xin.grad}
    io.update(acts)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            io["grad/" + name] = p.grad
    save_tensors("tiny_io.safetensors", io, "DiT eval forward and backward of sum(out * R)")

    # ---- diffusers DiTTransformer2DModel -------------------------------
    dmodel = DiTTransformer2DModel(**DIFFUSERS_CONFIG)
    dsd = to_diffusers(model.state_dict(), CONFIG["depth"])
    dmodel.load_state_dict(dsd, strict=True)
    dmodel.eval()

    ddir = os.path.join(OUT, "tiny_diffusers")
    dmodel.save_pretrained(ddir, safe_serialization=True)
    for f in ("config.json", "diffusion_pytorch_model.safetensors"):
        written.append(os.path.join(ddir, f))
    back = load_file(os.path.join(ddir, "diffusion_pytorch_model.safetensors"))
    assert sorted(back) == sorted(dsd)
    for k, v in dsd.items():
        assert torch.equal(back[k], v), k

    dout = dmodel(x, timestep=t, class_labels=y).sample
    dloss = (dout * R).sum()
    dmodel.zero_grad()
    dloss.backward()
    dio = {"x": x, "t": t, "y": y, "out": dout, "R": R, "loss": dloss.reshape(1)}
    for name, p in dmodel.named_parameters():
        assert p.grad is not None, name
        dio["grad/" + name] = p.grad
    save_tensors("tiny_diffusers_io.safetensors", dio,
                 "DiTTransformer2DModel eval forward and backward of sum(out * R), timestep int64")

    # The same diffusers model with the original's numerics switched on must
    # agree with DiT to rounding: proves the key mapping, so the remaining
    # difference is the documented one.
    pmodel = copy.deepcopy(dmodel)
    for blk in pmodel.transformer_blocks:
        blk.norm1.emb.time_proj.downscale_freq_shift = 0
        blk.norm3.eps = 1e-6
    pout = pmodel(x, timestep=t, class_labels=y).sample
    patched_diff = max_abs(pout, out)
    assert patched_diff < 1e-4, patched_diff
    pmodel.zero_grad()
    (pout * R).sum().backward()
    # Gradients too: the embedder copies' gradients summed over the blocks
    # equal DiT's single embedder gradient.
    ograd = to_diffusers({n: p.grad for n, p in model.named_parameters() if p.requires_grad}, CONFIG["depth"])
    pgrad = dict((n, p.grad) for n, p in pmodel.named_parameters())
    patched_grad_diff = 0.0
    for name, g0 in ograd.items():
        if ".norm1.emb." in name:
            if not name.startswith("transformer_blocks.0."):
                continue
            tail = name[len("transformer_blocks.0."):]
            g1 = sum(pgrad["transformer_blocks.%d.%s" % (d, tail)] for d in range(CONFIG["depth"]))
        else:
            g1 = pgrad[name]
        patched_grad_diff = max(patched_grad_diff, max_abs(g0, g1) / (1.0 + float(g0.abs().max())))
    assert patched_grad_diff < 1e-4, patched_grad_diff

    blk0 = dmodel.transformer_blocks[0]
    with torch.no_grad():
        tf_orig = model.t_embedder.timestep_embedding(t, 256)
        tf_diff = blk0.norm1.emb.time_proj(t)
    notes = {
        "max_abs_diff_out": max_abs(dout, out),
        "max_abs_out": float(out.abs().max()),
        "max_abs_diff_out_with_original_numerics": patched_diff,
        "max_rel_diff_grads_with_original_numerics": patched_grad_diff,
        "with_original_numerics": "the diffusers model with time_proj.downscale_freq_shift = 0 and norm3.eps = "
                                  "1e-6 in every block: checks the key mapping (not saved)",
        "max_abs_diff_timestep_frequencies": max_abs(tf_orig, tf_diff),
        "max_abs_diff_pos_embed": max_abs(dmodel.pos_embed.pos_embed, model.pos_embed),
        "timesteps": "passed as int64 tensor [0, 500, 999] (DiTPipeline passes the scheduler's int64 timesteps, "
                     "expanded to the batch); both models convert with .float() before the sinusoid",
        "differences": {
            "timestep_frequency_shift": "DiT: freqs = exp(-ln(10000) * i / 128), i = 0..127; diffusers Timesteps("
                                        "256, flip_sin_to_cos=True, downscale_freq_shift=1): exp(-ln(10000) * i / "
                                        "(128 - 1)). Both order [cos, sin].",
            "norm_eps": "DiT: every LayerNorm eps 1e-6. diffusers: norm1 (AdaLayerNormZero) 1e-6 and norm_out 1e-6 "
                        "(hard-coded), but norm3 (the pre-MLP norm) uses config norm_eps = %g, the "
                        "DiTTransformer2DModel default." % DIFFUSERS_CONFIG["norm_eps"],
            "final_layer_conditioning": "diffusers computes the final layer's conditioning with "
                                        "transformer_blocks[0].norm1.emb, so block 0's embedder copy also receives "
                                        "the final layer's gradient; other blocks' copies get only their own.",
            "embedder_copies": "the single t_embedder / y_embedder of DiT is copied into every block; the sum of "
                               "the per-block embedder gradients equals DiT's embedder gradient (up to the "
                               "numerics above).",
            "qkv": "DiT's fused qkv (rows q, k, v) is split into to_q / to_k / to_v.",
            "pos_embed": "DiT stores the sin-cos table as a frozen parameter 'pos_embed' in its state dict; "
                         "diffusers recomputes it (non-persistent buffer), so it is absent from the diffusers file.",
            "attention": "diffusers %s on torch %s (no scaled_dot_product_attention): baddbmm with scale "
                         "head_dim**-0.5, then softmax; DiT (timm %s): (q @ k^T) * scale, softmax."
                         % (type(blk0.attn1.processor).__name__, torch.__version__, timm.__version__),
            "label_table": "diffusers num_embeds_ada_norm=10 with its fixed class_dropout_prob 0.1 adds the "
                           "null row itself: embedding_table has 11 rows, like DiT's num_classes=10.",
        },
        "diffusers_config": DIFFUSERS_CONFIG,
        "versions": versions(),
    }
    save_json("tiny_diffusers_notes.json", notes)

    # ---- the fixed 2D sin-cos positional embedding ---------------------
    p4 = get_2d_sincos_pos_embed(32, 4)
    p16 = get_2d_sincos_pos_embed(32, 16)
    save_tensors("tiny_pos_embed.safetensors", {
        "grid4": torch.from_numpy(p4).float(),
        "grid16": torch.from_numpy(p16).float(),
        "grid4_f64": torch.from_numpy(np.ascontiguousarray(p4, dtype=np.float64)),
    }, "models.get_2d_sincos_pos_embed(32, grid) for grid 4 and 16")

    for p in written:
        print("wrote %s (%d bytes)" % (os.path.relpath(p), os.path.getsize(p)))
    print("out max abs %.4g; diffusers vs original max abs diff %.4g (%.3g with the original's numerics)"
          % (notes["max_abs_out"], notes["max_abs_diff_out"], patched_diff))


if __name__ == "__main__":
    main()
