#!/usr/bin/env python3
"""check_ggml_quants.py X.f32 COLS Q8_0.bin Q4_0.bin: the rows of X.f32 (raw little-endian fp32,
COLS per row) quantized by gguf-py (gguf.quants.quantize: ggml's reference Q8_0 / Q4_0 in numpy)
must equal doppel's bytes in Q8_0.bin and Q4_0.bin; prints the blocks that differ, exit 1 on any."""
import sys

import numpy as np
import gguf

x = np.fromfile(sys.argv[1], dtype="<f4").reshape(-1, int(sys.argv[2]))
bad = 0
for path, qt in ((sys.argv[3], gguf.GGMLQuantizationType.Q8_0),
                 (sys.argv[4], gguf.GGMLQuantizationType.Q4_0)):
    want = np.asarray(gguf.quants.quantize(x, qt)).tobytes()
    got = open(path, "rb").read()
    bs = 34 if qt == gguf.GGMLQuantizationType.Q8_0 else 18
    diff = [i for i in range(len(want) // bs) if want[i * bs:(i + 1) * bs] != got[i * bs:(i + 1) * bs]]
    if len(got) != len(want) or diff:
        bad += 1
        print(f"{qt.name}: {len(diff)} of {len(want) // bs} blocks differ from gguf-py "
              f"(first {diff[:5]}; sizes {len(got)} / {len(want)})")
    else:
        print(f"{qt.name}: {len(want) // bs} blocks equal gguf-py's byte for byte")
sys.exit(1 if bad else 0)
