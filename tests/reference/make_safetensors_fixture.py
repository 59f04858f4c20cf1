#!/usr/bin/env python3
"""Writes tests/fixtures/load/reference.safetensors with the reference implementation
(pip safetensors), one tensor per dtype doppel reads, for test_safetensors.
Run by hand: pip install safetensors numpy torch && python3 tests/reference/make_safetensors_fixture.py"""
import os

import numpy as np
import torch
from safetensors.torch import save_file

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "load", "reference.safetensors")
h = torch.arange(8, dtype=torch.float32) * 0.125 - 1
save_file({
    "f32": (torch.arange(6, dtype=torch.float32) / 4 - 0.5).reshape(2, 3),
    "f16": h.to(torch.float16),
    "bf16": h.to(torch.bfloat16),
    "i64": torch.tensor([-3, 1 << 40], dtype=torch.int64),
    "u8": torch.arange(10, dtype=torch.uint8),
    "i8": torch.arange(10, dtype=torch.int8) - 5,
    "i32": torch.tensor([7, -7], dtype=torch.int32),
}, out, metadata={"format": "doppel-test"})
print("wrote", out)
