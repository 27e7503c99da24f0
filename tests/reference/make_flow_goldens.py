#!/usr/bin/env python3
"""Goldens for the rectified-flow objective from F-Lite's own training code.

    F_LITE_REF=/path/to/f-lite /usr/bin/python3 tests/reference/make_flow_goldens.py

Loads f_lite/precomputed_utils.py from the fal-ai/f-lite checkout named by
F_LITE_REF (default /work/refs/f-lite; never copied into this repository)
and runs forward_with_precomputed_data on a fixed batch with a stand-in model
that records what it is given and returns a fixed prediction. The draws
F-Lite makes from its torch.Generator (z, the uniform mix, the noise) are
replayed with the same seed and stored too, so the C test can recompute the
timesteps, the noisy latents, the target, the loss and its gradient.
Needs torch (Debian's python3-torch 1.13 works) and einops.
Writes tests/fixtures/dit/flow.safetensors.
"""
import importlib.util
import json
import os

import torch
from safetensors.torch import save_file

REF = os.environ.get("F_LITE_REF", "/work/refs/f-lite")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "dit", "flow.safetensors")
B, C, H, W = 16, 16, 8, 8
SEED = 7


def load_precomputed_utils():
    path = os.path.join(REF, "f_lite", "precomputed_utils.py")
    spec = importlib.util.spec_from_file_location("f_lite_precomputed_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Recorder(torch.nn.Module):
    def __init__(self, pred):
        super().__init__()
        self.pred = pred
        self.seen = {}

    def forward(self, z_t, caption, t):
        self.seen["z_t"] = z_t.detach().clone()
        self.seen["t"] = t.detach().clone()
        return self.pred


def main():
    pu = load_precomputed_utils()
    torch.manual_seed(0)
    x0 = torch.randn(B, C, H, W)
    caption = torch.zeros(B, 4, 8)
    pred = torch.randn(B, C, H, W, requires_grad=True)
    model = Recorder(pred)
    g = torch.Generator().manual_seed(SEED)
    loss, _ = pu.forward_with_precomputed_data(model, (x0, caption, [{}] * B), "cpu", 0, False, generator=g)
    loss.backward()

    # The same draws, in the order forward_with_precomputed_data makes them.
    g = torch.Generator().manual_seed(SEED)
    z = torch.randn(B, dtype=torch.float32, generator=g)
    do_uniform = torch.rand(B, dtype=torch.float32, generator=g) < 0.1
    uniform = torch.rand(B, dtype=torch.float32, generator=g)
    noise = torch.randn((B, C, H, W), dtype=torch.bfloat16, generator=g)
    assert do_uniform.any() and (~do_uniform).any(), "pick a seed that mixes both kinds of t"

    tensors = {
        "x0_bf16": x0.to(torch.bfloat16).float(),
        "z": z,
        "do_uniform": do_uniform.float(),
        "uniform": uniform,
        "noise_bf16": noise.float(),
        "t_bf16": model.seen["t"].float(),
        "z_t_bf16": model.seen["z_t"].float(),
        "pred": pred.detach(),
        "loss": loss.detach().reshape(1),
        "grad_pred": pred.grad.detach(),
    }
    meta = {"producer": json.dumps({
        "script": "tests/reference/make_flow_goldens.py",
        "reference": "fal-ai/f-lite f_lite/precomputed_utils.py forward_with_precomputed_data",
        "torch": torch.__version__, "seed": SEED, "shape": [B, C, H, W],
    }, sort_keys=True)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata=meta)
    print(f"wrote {OUT}: loss {loss.item():.6f}, {int(do_uniform.sum())} uniform timesteps of {B}")


if __name__ == "__main__":
    main()
