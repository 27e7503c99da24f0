"""What the op-golden scripts share: the safetensors writer (numpy only, name
order, one metadata key, so a rerun gives the same bytes) and the float32
rounding of their inputs."""
import json
import os
import struct

import numpy as np


def save_safetensors(path, tensors, metadata):
    """The safetensors layout: u64 header length, JSON header, data; tensors
    in name order, data offsets contiguous, header padded to 8 bytes."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name].detach().numpy(), dtype="<f4")
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def f32(t):
    """t rounded to float32, then held in float64: the inputs the C tests
    read, computed on exactly."""
    return t.float().double()
