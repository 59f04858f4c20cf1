#!/usr/bin/env python3
"""Reference check of `doppel merge --format lora-gguf` with gguf-py and llama.cpp.

  check_merge_lora_gguf.py BASE.gguf ADAPTER.gguf RUN_DIR [LOGITS.safetensors]

(Without LOGITS, only part 1.)

1. The file as src/llama-adapter.cpp reads it: general.type = "adapter", adapter.type = "lora",
   general.architecture = the base's, adapter.lora.alpha an f32 such that llama.cpp's
   alpha / rank equals PEFT's scale (lora_alpha / r, or / sqrt(r) with use_rslora); for every
   PEFT module blk.L.<name>.weight.lora_a of numpy shape (r, in) equal to lora_A and .lora_b
   (out, r) equal to lora_B, llama's q/k rows permuted as convert_hf_to_gguf.py's
   LlamaModel.permute does (within f16 rounding for an f16 file), and every base tensor's
   ne[0] / ne[1] matching lora_a's ne[0] / lora_b's ne[1].
2. llama.cpp (llama-cpp-python) evaluates LOGITS.safetensors' ids over BASE.gguf with and without
   the adapter (lora_path): its move, llama(base + adapter) - llama(base), must equal doppel's,
   doppel(base + adapter unmerged) - doppel(base), from the same file: correlation >= 0.9 and
   least-squares slope of llama.cpp's move on doppel's in [0.85, 1.15]. Not closer: llama.cpp
   rounds activations to 8 bits against Q4_1 weights (doppel dequantizes to fp32), which moves
   its logits by up to ~1.7 from doppel's, and a LoRA's change of the activations changes that
   rounding everywhere; the adapter is made large enough (moves of several units) to stand
   above it.
Exit 1 on any failure; prints the figures.
"""
import json
import math
import os
import sys

import numpy as np

LINEARS = [("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
           ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
           ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
           ("ffn_down", "mlp.down_proj")]


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def llama_permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rope halves -> GGUF interleaved)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def check_file(base_path, path, run):
    import gguf
    from safetensors.numpy import load_file

    bad = []
    base = gguf.GGUFReader(base_path)
    ad = gguf.GGUFReader(path)
    arch = field(base, "general.architecture")
    for key, want in [("general.type", "adapter"), ("adapter.type", "lora"),
                      ("general.architecture", arch)]:
        if field(ad, key) != want:
            bad.append(f"{key} = {field(ad, key)!r}, llama.cpp wants {want!r}")
    alpha_f = ad.fields.get("adapter.lora.alpha")
    if alpha_f is None or alpha_f.types[0] != gguf.GGUFValueType.FLOAT32:
        bad.append("adapter.lora.alpha is missing or not f32 (llama.cpp reads it as f32)")
        return bad
    alpha = float(alpha_f.contents())
    cfg = json.load(open(os.path.join(run, "adapter_config.json")))
    r = int(cfg["r"])
    scale = cfg["lora_alpha"] / (math.sqrt(r) if cfg.get("use_rslora") else r)
    if abs(alpha / r - scale) > 1e-6 * scale:
        bad.append(f"llama.cpp's scale alpha / r = {alpha / r} but PEFT's is {scale}")
    n_head = int(field(base, f"{arch}.attention.head_count"))
    n_kv = int(field(base, f"{arch}.attention.head_count_kv") or n_head)
    peft = load_file(os.path.join(run, "adapter_model.safetensors"))
    tensors = {t.name: t for t in ad.tensors}
    base_t = {t.name: t for t in base.tensors}
    n_layers = int(field(base, f"{arch}.block_count"))
    seen = 0
    for layer in range(n_layers):
        for gname, hname in LINEARS:
            pa = f"base_model.model.model.layers.{layer}.{hname}.lora_A.weight"
            if pa not in peft:
                continue
            A = peft[pa].astype(np.float32)
            B = peft[pa.replace("lora_A", "lora_B")].astype(np.float32)
            if arch == "llama" and gname in ("attn_q", "attn_k"):
                B = llama_permute(B, n_head if gname == "attn_q" else n_kv)
            stem = f"blk.{layer}.{gname}.weight"
            for suffix, want in ((".lora_a", A), (".lora_b", B)):
                t = tensors.pop(stem + suffix, None)
                if t is None:
                    bad.append(f"{stem}{suffix} is missing")
                    continue
                got = np.asarray(t.data, dtype=np.float32).reshape(want.shape[0], -1)
                tol = 0 if t.tensor_type == gguf.GGMLQuantizationType.F32 else 1e-3
                if got.shape != want.shape or not np.allclose(got, want, rtol=tol, atol=tol * 1e-2):
                    bad.append(f"{stem}{suffix} differs from PEFT's (shape {got.shape} vs "
                               f"{want.shape})")
            bt = base_t.get(stem)
            ta = next((t for t in ad.tensors if t.name == stem + ".lora_a"), None)
            tb = next((t for t in ad.tensors if t.name == stem + ".lora_b"), None)
            if bt is None:
                bad.append(f"{stem} is not a tensor of the base")
            elif ta is not None and tb is not None and (
                    int(bt.shape[0]) != int(ta.shape[0]) or int(bt.shape[1]) != int(tb.shape[1])
                    or int(ta.shape[1]) != int(tb.shape[0])):
                bad.append(f"{stem}: ne a {list(ta.shape)} b {list(tb.shape)} do not fit the "
                           f"base's {list(bt.shape)} as llama-adapter.cpp checks")
            seen += 1
    if tensors:
        bad.append(f"tensors no PEFT module explains: {sorted(tensors)[:4]}")
    if not seen:
        bad.append("no adapted module")
    print(f"{path}: {seen} modules, alpha {alpha:g} (scale {alpha / r:g}), "
          f"{len(bad)} problems in the file")
    return bad


def llama_logits(base_path, ids, lora=None):
    from llama_cpp import Llama

    kw = {"lora_path": lora} if lora else {}
    llm = Llama(model_path=base_path, n_ctx=256, n_threads=2, n_batch=256, logits_all=True,
                verbose=False, seed=1, **kw)
    llm.eval([int(i) for i in ids])
    return np.array(llm.scores[:len(ids)], dtype=np.float64)


def main():
    base_path, path, run = sys.argv[1:4]
    from safetensors.numpy import load_file

    bad = check_file(base_path, path, run)
    if len(sys.argv) < 5:
        for b in bad:
            print("FAIL:", b)
        return 1 if bad else 0
    logits_path = sys.argv[4]
    d = load_file(logits_path)
    ids = d["ids"]
    moved_doppel = d["adapted"].astype(np.float64) - d["base"].astype(np.float64)
    lb = llama_logits(base_path, ids)
    la = llama_logits(base_path, ids, path)
    moved_llama = la - lb
    biggest = np.abs(moved_doppel).max()
    diff = np.abs(moved_llama - moved_doppel).max()
    x, y = moved_doppel.ravel(), moved_llama.ravel()
    corr = np.corrcoef(x, y)[0, 1]
    slope = float(x @ y / (x @ x))  # llama's move against doppel's, least squares through 0
    base_gap = np.abs(lb - d["base"]).max()
    print(f"{len(ids)} tokens: doppel's adapter moves the logits by up to {biggest:.4f}; "
          f"llama.cpp's move: correlation {corr:.4f}, slope {slope:.4f}, largest difference "
          f"{diff:.4f} (llama.cpp's 8-bit activations against Q4_1 move its own base by up to "
          f"{base_gap:.4f} from doppel's)")
    if not (biggest > 1.0):
        bad.append(f"doppel's adapter barely moves the logits ({biggest}): nothing is checked")
    if corr < 0.9 or not 0.85 <= slope <= 1.15:
        bad.append("llama.cpp's logits do not move as doppel's do (a wrong scale shows in the "
                   "slope, a wrong layout or permutation in the correlation)")
    for b in bad:
        print("FAIL:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
