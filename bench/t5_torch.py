"""transformers' T5EncoderModel on the CPU, timed as bench/t5_encode.c times
ours: N captions (the same 40-word captions) tokenized by T5TokenizerFast to
512 tokens and encoded in batches, without an attention mask (F-Lite's way),
fp32, inference mode, all hidden states kept as F-Lite asks for them.
Usage: t5_torch.py MODEL_DIR TOKENIZER_DIR N BATCH THREADS  (prints the same line)."""
import resource
import sys
import time

import torch
from transformers import T5EncoderModel, T5TokenizerFast

model_dir, tok_dir, n, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = T5EncoderModel.from_pretrained(model_dir).eval()
tok = T5TokenizerFast.from_pretrained(tok_dir)
words = ["a", "photo", "of", "red", "fox", "in", "the", "snow", "at", "dawn", "soft", "light", "wide", "angle",
         "detailed", "fur"]
caps = [" ".join(words[(i * 7 + w * 3) % 16] for w in range(40)) for i in range(batch)]


def encode(texts):
    ids = tok(texts, padding="max_length", max_length=512, truncation=True, return_tensors="pt").input_ids
    return model(input_ids=ids, output_hidden_states=True).hidden_states[-1]


with torch.inference_mode():
    encode(caps)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(batch, n - done)
        encode(caps[:k])
        done += k
    t1 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"captions {n / (t1 - t0):.3f}/s peak {peak:.0f} MB")
