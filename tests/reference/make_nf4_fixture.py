#!/usr/bin/env python3
"""Writes tests/fixtures/load/nf4.safetensors: fixed fp32 tensors and what bitsandbytes'
quantize_4bit(quant_type="nf4", compress_statistics=True) makes of them on the CPU (the packed
codes, the 8-bit absmax codes, the nested absmax, the offset, both code maps and its packed
quant_state JSON), plus bitsandbytes' dequantize_4bit output. test_nf4 must match the bytes.
Every value is computed by bitsandbytes' own code; nothing here re-implements a step.

Checked with bitsandbytes 0.50.2 / torch 2.15 on this CPU: everything runs. quantize_4bit has
only bitsandbytes' portable "default" kernel (backends/default/ops.py: nearest code by midpoints);
its nested step, quantize_blockwise(absmax - offset, blocksize=256), has a native CPU kernel too
(libbitsandbytes_cpu, cquantize_blockwise_cpu_fp32), whose binary search does not always return
the nearest code (0.0 in a group of absmax 3 -> code 131 = 2.1e-5, not 127 = 0.0). Here 2 of the
724 nested codes differ: many_blocks block 201 (-0.002134 -> -0.001844, not the nearer -0.002406)
and the one-block case `odd`, whose only value absmax - offset is 0 in a group of absmax 0
(native: code 0 = -0.99; default: 127 = 0.0). The fixture's nested codes are therefore those of bitsandbytes'
default kernel, called through the op's own CompositeExplicitAutograd registration (the kernel
every device without a native one runs) while quantize_4bit runs unchanged; the native library's
codes are kept as `<case>.native_absmax`, and test_nf4 checks that wherever they differ, doppel's
code is the nearer one.
Run by hand: pip install bitsandbytes torch safetensors && python3 tests/reference/make_nf4_fixture.py"""
import json
import os

import bitsandbytes
import bitsandbytes.functional as F
import torch
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "load", "nf4.safetensors")
g = torch.Generator().manual_seed(20241121)
nf4 = F.get_4bit_type("nf4", device="cpu")
mid = [(nf4[i].item() + nf4[i + 1].item()) / 2 for i in range(15)]
BLOCKWISE = torch.ops.bitsandbytes.quantize_blockwise.default
DEFAULT_KERNEL = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


class DefaultBlockwiseKernel(TorchDispatchMode):
    """Sends bitsandbytes::quantize_blockwise to bitsandbytes' default kernel instead of the
    native CPU library; every other op runs as usual."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is BLOCKWISE:
            return func.redispatch(DEFAULT_KERNEL, *args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


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
    q_native, st_native = F.quantize_4bit(x, blocksize=bs, compress_statistics=True, quant_type="nf4")
    with DefaultBlockwiseKernel():
        q, st = F.quantize_4bit(x, blocksize=bs, compress_statistics=True, quant_type="nf4")
    assert torch.equal(q, q_native) and st.offset.item() == st_native.offset.item()
    # the native kernel leaves an all-zero group's absmax at 0, the default one at 1e-38
    assert torch.equal(st.state2.absmax.clamp(min=1e-38), st_native.state2.absmax.clamp(min=1e-38))
    native_absmax = st_native.absmax
    d = st.as_dict(packed=True)
    deq = F.dequantize_4bit(q, st)
    print(name, "native CPU nested codes differing from the default kernel:",
          int((native_absmax != st.absmax).sum()), "of", st.absmax.numel())
    tensors[f"{name}.native_absmax"] = native_absmax
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
