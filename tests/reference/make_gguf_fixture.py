#!/usr/bin/env python3
"""Writes tests/fixtures/load/quants.gguf with the reference GGUF writer (pip `gguf`) and the
values the reference dequantizer (gguf.quants) gives for each tensor, so test_gguf can check
doppel's reader and dequantization against an independent implementation.

Run by hand: pip install gguf numpy && python3 tests/reference/make_gguf_fixture.py
Outputs: quants.gguf, quants.expected.f32 (the tensors' dequantized values, concatenated in
the order of quants.expected.json as little-endian float32) and quants.expected.json."""
import json
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "load")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(1234)

w = gguf.GGUFWriter(os.path.join(out, "quants.gguf"), "llama")
# every metadata type, including arrays of strings and of integers
w.add_uint8("test.u8", 200)
w.add_int8("test.i8", -100)
w.add_uint16("test.u16", 60000)
w.add_int16("test.i16", -30000)
w.add_uint32("test.u32", 4000000000)
w.add_int32("test.i32", -2000000000)
w.add_float32("test.f32", 0.15625)
w.add_bool("test.bool", True)
w.add_string("test.string", "héllo wörld")
w.add_uint64("test.u64", 1 << 40)
w.add_int64("test.i64", -(1 << 40))
w.add_float64("test.f64", 1e-300)
w.add_array("test.strings", ["a", "", "Ġthe", "<|im_end|>"])
w.add_array("test.ints", [3, -1, 7])
w.add_array("test.floats", [0.5, -2.25])
w.add_custom_alignment(64)

manifest = []
values = []
def add(name, arr, qtype):
    arr = arr.astype(np.float32)
    if qtype in (Q.F32,):
        data = arr
    elif qtype == Q.F16:
        data = arr.astype(np.float16)
    else:
        data = quants.quantize(arr, qtype)
    w.add_tensor(name, data, raw_dtype=qtype)
    deq = quants.dequantize(np.asarray(data).view(np.uint8) if qtype not in (Q.F32, Q.F16) else data,
                            qtype).astype(np.float32).reshape(arr.shape)
    manifest.append({"name": name, "type": qtype.name, "shape": list(arr.shape)})
    values.append(deq.ravel())

add("t.f32", rng.standard_normal((3, 32)), Q.F32)
add("t.f16", rng.standard_normal((2, 64)), Q.F16)
add("t.bf16", rng.standard_normal((2, 32)), Q.BF16)
add("t.q8_0", rng.standard_normal((4, 64)) * 3, Q.Q8_0)
add("t.q4_0", rng.standard_normal((4, 64)), Q.Q4_0)
add("t.q4_1", rng.standard_normal((5, 96)) + 0.7, Q.Q4_1)
add("t.q4_1_1d", rng.standard_normal(128) * 0.01, Q.Q4_1)

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
np.concatenate(values).astype("<f4").tofile(os.path.join(out, "quants.expected.f32"))
with open(os.path.join(out, "quants.expected.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print("wrote", out)
