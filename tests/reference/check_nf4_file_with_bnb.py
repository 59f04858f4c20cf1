#!/usr/bin/env python3
"""By-hand check that bitsandbytes reads a `doppel quantize` file: every NF4 linear is loaded with
QuantState.from_dict and dequantized by bitsandbytes, and compared with bitsandbytes' own
quantization of the original fp32 weights (codes and dequantized values).
Usage: python3 tests/reference/check_nf4_file_with_bnb.py NF4_FILE ORIGINAL_MODEL.safetensors"""
import sys

import bitsandbytes.functional as F
import torch
from bitsandbytes.functional import QuantState
from safetensors.torch import load_file

q, ref = load_file(sys.argv[1]), load_file(sys.argv[2])
bad = 0
for name in sorted(k[: -len(".weight.absmax")] for k in q if k.endswith(".weight.absmax")):
    qs = {k[len(name) + 8:]: v for k, v in q.items() if k.startswith(name + ".weight.")}
    st = QuantState.from_dict(qs, device=torch.device("cpu"))
    d = F.dequantize_4bit(q[name + ".weight"], st)
    w = ref[name + ".weight"].float()
    q2, st2 = F.quantize_4bit(w, blocksize=st.blocksize, compress_statistics=True, quant_type="nf4")
    d2 = F.dequantize_4bit(q2, st2)
    same = torch.equal(q2.reshape(-1), q[name + ".weight"].reshape(-1))
    diff = (d - d2).abs().max().item()
    bad += (not same) or diff > 1e-6 * w.abs().max().item()
    print(f"{name}: codes equal {same}, max |dequant(doppel) - dequant(bnb)| = {diff:.3g}")
print("mismatching tensors:", bad)
sys.exit(1 if bad else 0)
