#!/usr/bin/env python3
"""Writes a GGUF with Qwen2.5-0.5B's exact shape and random weights, for bench_forward's second
model (no real Qwen2.5-0.5B can be downloaded here). Config as REFERENCE.md section 5: qwen2, 24
layers, hidden 896, 14 heads / 2 kv heads (head_dim 64), intermediate 4864, vocab 151936, q/k/v
biases, tied embeddings, rope theta 1e6, eps 1e-6. Block linears are Q4_1 and token_embd Q8_0
(as llama.cpp's Q4_1 files of small models, e.g. the SmolLM2 one), so doppel and llama.cpp read
the same file. The tokenizer is a made-up but loadable byte-level BPE of the right size: the
256 GPT-2 byte symbols, every 2-symbol merge, 3-symbol merges up to 151643 ordinary tokens, then
Qwen's special tokens (<|endoftext|>, <|im_start|>, <|im_end|>, ...) and padding to 151936.

Not committed output (about 400 MB): generated at bench time into ~/.cache, once.
usage: pip install gguf numpy; python3 tests/reference/make_qwen05b_gguf.py [OUT.gguf]"""
import os
import sys

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

L, C, H, KVH, F, V = 24, 896, 14, 2, 4864, 151936
D = C // H
N_ORDINARY = 151643  # Qwen2.5's BPE tokens; the specials follow
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
            "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
            "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
            "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
            "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                 "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def byte_symbols():
    """GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest above 255."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def vocab():
    sym = byte_symbols()
    tokens, merges = list(sym), []
    for a in sym:  # every pair of byte symbols
        for b in sym:
            tokens.append(a + b)
            merges.append(f"{a} {b}")
    pairs = tokens[256:256 + 65536]
    i = 0
    while len(tokens) < N_ORDINARY:  # pair + symbol, in a fixed order
        p, s = pairs[i // 256], sym[i % 256]
        tokens.append(p + s)
        merges.append(f"{p} {s}")
        i += 1
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for s in SPECIALS:
        tokens.append(s)
        types.append(gguf.TokenType.CONTROL)
    while len(tokens) < V:
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(gguf.TokenType.UNUSED)
    return tokens, types, merges


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
        "~/.cache/doppel/qwen2.5-0.5b-shaped/qwen2.5-0.5b-shaped.Q4_1.gguf")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    rng = np.random.default_rng(2025)
    tmp = out + ".tmp"
    w = gguf.GGUFWriter(tmp, "qwen2")
    w.add_name("Qwen2.5-0.5B-shaped (random weights, benchmark only)")
    w.add_block_count(L)
    w.add_context_length(32768)
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KVH)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    tokens, types, merges = vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(151643)
    w.add_eos_token_id(151645)
    w.add_pad_token_id(151643)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def normal(shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)

    def add(name, arr, qtype):
        data = arr if qtype == Q.F32 else quants.quantize(arr, qtype)
        w.add_tensor(name, data, raw_dtype=qtype)

    add("token_embd.weight", normal((V, C)), Q.Q8_0)
    add("output_norm.weight", np.ones(C, np.float32), Q.F32)
    for i in range(L):
        add(f"blk.{i}.attn_norm.weight", np.ones(C, np.float32), Q.F32)
        add(f"blk.{i}.ffn_norm.weight", np.ones(C, np.float32), Q.F32)
        for name, rows, cols in (("attn_q", H * D, C), ("attn_k", KVH * D, C),
                                 ("attn_v", KVH * D, C), ("attn_output", C, H * D),
                                 ("ffn_gate", F, C), ("ffn_up", F, C), ("ffn_down", C, F)):
            add(f"blk.{i}.{name}.weight", normal((rows, cols)), Q.Q4_1)
            if name in ("attn_q", "attn_k", "attn_v"):
                add(f"blk.{i}.{name}.bias", normal(rows), Q.F32)
        print(f"layer {i + 1}/{L}", file=sys.stderr, flush=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    print(out)


if __name__ == "__main__":
    main()
