#!/usr/bin/env python3
"""Writes tests/fixtures/load/tiny-llama3.gguf: tests/fixtures/tiny-llama (a Llama with llama3
RoPE scaling, whose transformers logits are in its reference.safetensors) converted the way
llama.cpp's convert_hf_to_gguf.py does it: q/k rows permuted, and the RoPE scaling stored as a
`rope_freqs.weight` tensor of head_dim/2 divisors of the frequencies (no scaling metadata).
doppel loading this file must give transformers' logits.

Run by hand: pip install gguf safetensors numpy && python3 tests/reference/make_llama3_gguf_fixture.py"""
import json
import math
import os

import gguf
import numpy as np
from safetensors.numpy import load_file

fix = os.path.join(os.path.dirname(__file__), "..", "fixtures")
src = os.path.join(fix, "tiny-llama")
cfg = json.load(open(os.path.join(src, "config.json")))
t = load_file(os.path.join(src, "model.safetensors"))
L, C, F = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]
H, KVH, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
sc = cfg["rope_scaling"]


def permute(w, n_head):  # GGUF's llama layout: each head's rotary halves interleaved
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def rope_factors():
    """Per frequency, the divisor llama3 scaling applies: 1 for short wavelengths, `factor` for
    long ones, a smooth interpolation in between (Meta's formula, as a divisor)."""
    old = sc["original_max_position_embeddings"]
    low_wl, high_wl = old / sc["low_freq_factor"], old / sc["high_freq_factor"]
    out = []
    for i in range(0, D, 2):
        freq = 1.0 / cfg["rope_theta"] ** (i / D)
        wl = 2 * math.pi / freq
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(sc["factor"])
        else:
            s = (old / wl - sc["low_freq_factor"]) / (sc["high_freq_factor"] - sc["low_freq_factor"])
            out.append(1.0 / ((1 - s) / sc["factor"] + s))
    return np.array(out, dtype=np.float32)


w = gguf.GGUFWriter(os.path.join(fix, "load", "tiny-llama3.gguf"), "llama")
w.add_block_count(L)
w.add_embedding_length(C)
w.add_feed_forward_length(F)
w.add_head_count(H)
w.add_head_count_kv(KVH)
w.add_key_length(D)
w.add_value_length(D)
w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
w.add_rope_freq_base(cfg["rope_theta"])
w.add_context_length(cfg["max_position_embeddings"])
w.add_eos_token_id(cfg["eos_token_id"])
w.add_tensor("rope_freqs.weight", rope_factors())
w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
w.add_tensor("output_norm.weight", t["model.norm.weight"])
w.add_tensor("output.weight", t["lm_head.weight"])
names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
for i in range(L):
    p = f"model.layers.{i}."
    w.add_tensor(f"blk.{i}.attn_norm.weight", t[p + "input_layernorm.weight"])
    w.add_tensor(f"blk.{i}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
    for hf, g in names.items():
        x = t[p + hf + ".weight"]
        if g == "attn_q":
            x = permute(x, H)
        if g == "attn_k":
            x = permute(x, KVH)
        w.add_tensor(f"blk.{i}.{g}.weight", np.ascontiguousarray(x))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote tiny-llama3.gguf; rope factors", rope_factors())
