#!/usr/bin/env python3
"""Loads an adapter directory written by doppel with PEFT onto a tiny fixture model and compares
PEFT's logits with the logits doppel computed for the fixture's batch.

usage: check_peft_adapter.py FIXTURE.h5 ADAPTER_DIR DOPPEL_LOGITS.f32 [more triples...]
DOPPEL_LOGITS.f32: raw little-endian float32, (N, V) for the fixture's packed batch.
Exit 0 when every logit agrees within 1e-4 + 1e-4*|ref|, 1 otherwise; prints the max diff."""
import os
import sys

import h5py
import numpy as np
import torch
from peft import PeftModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_peft_fixture import build  # noqa: E402


def check(fixture, adapter, logits_path):
    with h5py.File(fixture, "r") as f:
        arch = os.path.splitext(os.path.basename(fixture))[0]
        _, base, _ = build(arch)
        state = {k: torch.from_numpy(np.array(v)) for k, v in f["weights"].items()}
        tokens = np.array(f["batch/tokens"])
        cu = np.array(f["batch/cu_seqlens"])
        V = int(f["config"].attrs["V"])
    missing, unexpected = base.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    model = PeftModel.from_pretrained(base, adapter)
    model.eval()
    got = np.fromfile(logits_path, dtype="<f4").reshape(-1, V)
    worst, ok = 0.0, True
    with torch.no_grad():
        for s in range(len(cu) - 1):
            ids = torch.from_numpy(tokens[cu[s]:cu[s + 1]].astype(np.int64)).unsqueeze(0)
            pos = torch.arange(ids.shape[1]).unsqueeze(0)
            ref = model(input_ids=ids, position_ids=pos).logits[0].numpy()
            d = np.abs(ref - got[cu[s]:cu[s + 1]])
            worst = max(worst, float(d.max()))
            ok &= bool((d <= 1e-4 + 1e-4 * np.abs(ref)).all())
    print(f"{arch}: PEFT-loaded adapter vs doppel logits: max|diff| {worst:.3g} "
          f"(tol 1e-4 + 1e-4*|ref|) {'ok' if ok else 'FAIL'}")
    return ok


def main():
    args = sys.argv[1:]
    if not args or len(args) % 3:
        print(__doc__)
        return 2
    ok = True
    for i in range(0, len(args), 3):
        ok &= check(*args[i:i + 3])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
