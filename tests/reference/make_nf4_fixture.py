#!/usr/bin/env python3
"""Writes tests/fixtures/load/nf4.safetensors: fixed fp32 tensors and what bitsandbytes'
quantize_4bit(quant_type="nf4", compress_statistics=True) makes of them on the CPU (the packed
codes, the 8-bit absmax codes, the nested absmax, the offset, both code maps and its packed
quant_state JSON), plus bitsandbytes' dequantize_4bit output. test_nf4 must match the bytes.

Checked with bitsandbytes 0.50.2 / torch 2.15 (CPU): quantize_4bit runs on the CPU there, through
bitsandbytes' pure-torch "default" kernel (midpoint buckets). The nested 8-bit step
(quantize_blockwise of absmax - offset) goes through the native CPU library in that version, whose
BinSearch lookup does not return the nearest code for small values (0.0 -> code 131 = 2.1e-5; about
4% of uniform random inputs differ from the nearest code). The fixture's nested codes therefore come
from bitsandbytes' own default kernel for quantize_blockwise (nearest code by midpoints, run below
with the same torch operations as bitsandbytes/backends/default/ops.py), and the native library's
codes are kept as `<case>.native_absmax` so the test can report how far they differ.
Run by hand: pip install bitsandbytes torch safetensors && python3 tests/reference/make_nf4_fixture.py"""
import json
import os

import bitsandbytes
import bitsandbytes.functional as F
import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "load", "nf4.safetensors")
g = torch.Generator().manual_seed(20241121)
nf4 = F.get_4bit_type("nf4", device="cpu")
mid = [(nf4[i].item() + nf4[i + 1].item()) / 2 for i in range(15)]

cases = {
    # name: (tensor, blocksize)
    "normal": (torch.randn(64, 128, generator=g) * 0.02, 64),
    # 560 blocks of 64: three groups of nested absmax (256 + 256 + 48)
    "many_blocks": (torch.randn(280, 128, generator=g) * torch.linspace(0.5, 3, 128), 64),
    # 300 elements: a partial last block and an even count of codes
    "ragged": (torch.randn(3, 100, generator=g), 64),
    # 63 elements: odd count (the last byte's low nibble is padding)
    "odd": (torch.randn(7, 9, generator=g), 64),
    "block256": (torch.randn(16, 256, generator=g) + 0.1, 256),
    # values exactly on the NF4 midpoints (ties), zeros, a zero block, +-absmax
    "edges": (torch.tensor(([1.0] + mid + [-m for m in mid] + [0.0] * 33 + [-1.0, 0.5] * 8
                            + [0.0] * 64 + [-2.0, 2.0, 1e-30, -1e-30] * 16)), 64),
}

tensors = {}
meta = {"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__}
for name, (x, bs) in cases.items():
    x = x.float().contiguous()
    q, st = F.quantize_4bit(x, blocksize=bs, compress_statistics=True, quant_type="nf4")
    d = st.as_dict(packed=True)
    native_absmax = d["absmax"].clone()
    # the nested step with bitsandbytes' default (reference) kernel
    q0, st0 = F.quantize_4bit(x, blocksize=bs, compress_statistics=False, quant_type="nf4")
    absmax = st0.absmax
    offset = absmax.mean()
    assert torch.equal(q0, q) and offset.item() == st.offset.item()
    v = (absmax - offset).float()
    n = v.numel()
    full = n - n % 256
    groups = v[:full].reshape(-1, 256)
    am2 = groups.abs().max(dim=-1)[0]
    scaled = torch.clamp(groups * (1.0 / am2.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if n % 256:
        am = v[full:].abs().max().clamp(min=1e-38)
        am2 = torch.cat([am2, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(v[full:] / am, -1, 1)])
    code = st.state2.code
    nested_codes = torch.bucketize(scaled, (code[:-1] + code[1:]) / 2, out_int32=True).to(torch.uint8)
    assert torch.equal(am2.clamp(min=1e-38), st.state2.absmax.clamp(min=1e-38))
    d["absmax"] = nested_codes
    d["nested_absmax"] = am2
    st.absmax = nested_codes
    st.state2.absmax = am2
    deq = F.dequantize_4bit(q, st)
    tensors[f"{name}.native_absmax"] = native_absmax
    print(name, "native CPU nested codes differing from the default kernel:",
          int((native_absmax != nested_codes).sum()), "of", n)
    tensors[f"{name}.input"] = x
    tensors[f"{name}.weight"] = q.reshape(-1).contiguous()
    tensors[f"{name}.absmax"] = d["absmax"]
    tensors[f"{name}.nested_absmax"] = d["nested_absmax"]
    tensors[f"{name}.quant_map"] = d["quant_map"]
    tensors[f"{name}.nested_quant_map"] = d["nested_quant_map"]
    tensors[f"{name}.offset"] = st.offset.reshape(1).float()
    tensors[f"{name}.quant_state"] = d["quant_state.bitsandbytes__nf4"]
    tensors[f"{name}.dequant"] = deq.float().contiguous()
    meta[f"{name}.blocksize"] = str(bs)
save_file(tensors, out, metadata=meta)
print("wrote", out, os.path.getsize(out), "bytes")
