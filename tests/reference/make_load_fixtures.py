#!/usr/bin/env python3
"""Writes tiny random models for test_model_load into tests/fixtures/load/:
tiny-llama/ (HF config.json + model.safetensors, F32) and tiny-llama.gguf, the same weights in
GGUF written by the reference writer (pip gguf) with q/k permuted the way llama.cpp's
convert_hf_to_gguf.py does for the llama architecture; tiny-qwen2/ (q/k/v biases, tied) and
tiny-qwen2.gguf (the same weights, not permuted: llama.cpp's qwen2 uses NEOX RoPE);
tiny-qwen3/ (q_norm/k_norm, explicit head_dim, untied lm_head, BF16 weights).
Run by hand: pip install gguf safetensors numpy && python3 tests/reference/make_load_fixtures.py
(renamed from make_tiny_models.py on merge: that name is the forward-pass fixtures script)"""
import json
import os

import gguf
import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

root = os.path.join(os.path.dirname(__file__), "..", "fixtures", "load")
rng = np.random.default_rng(7)
L, C, H, KVH, F, V = 2, 32, 4, 2, 48, 64


def r(*shape):
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def permute(w, n_head):  # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def hf_model(D, bias=False, qk_norm=False, tied=True):
    t = {"model.embed_tokens.weight": r(V, C), "model.norm.weight": 1 + r(C)}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + r(C)
        t[p + "post_attention_layernorm.weight"] = 1 + r(C)
        t[p + "self_attn.q_proj.weight"] = r(H * D, C)
        t[p + "self_attn.k_proj.weight"] = r(KVH * D, C)
        t[p + "self_attn.v_proj.weight"] = r(KVH * D, C)
        t[p + "self_attn.o_proj.weight"] = r(C, H * D)
        t[p + "mlp.gate_proj.weight"] = r(F, C)
        t[p + "mlp.up_proj.weight"] = r(F, C)
        t[p + "mlp.down_proj.weight"] = r(C, F)
        if bias:
            for x, n in (("q", H), ("k", KVH), ("v", KVH)):
                t[p + f"self_attn.{x}_proj.bias"] = r(n * D)
        if qk_norm:
            t[p + "self_attn.q_norm.weight"] = 1 + r(D)
            t[p + "self_attn.k_norm.weight"] = 1 + r(D)
    if not tied:
        t["lm_head.weight"] = r(V, C)
    return t


def write_dir(name, cfg, t, bf16=False):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    if bf16:
        save_torch({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in t.items()},
                   os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    else:
        save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


base = {"hidden_size": C, "intermediate_size": F, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": KVH, "vocab_size": V,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 128, "bos_token_id": 1,
        "eos_token_id": 2}

llama = hf_model(C // H, tied=True)
write_dir("tiny-llama", dict(base, model_type="llama", rope_theta=100000.0,
                             tie_word_embeddings=True), llama)
w = gguf.GGUFWriter(os.path.join(root, "tiny-llama.gguf"), "llama")
w.add_block_count(L)
w.add_embedding_length(C)
w.add_feed_forward_length(F)
w.add_head_count(H)
w.add_head_count_kv(KVH)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_freq_base(100000.0)
w.add_context_length(128)
w.add_eos_token_id(2)
w.add_bos_token_id(1)
w.add_tensor("token_embd.weight", llama["model.embed_tokens.weight"])
w.add_tensor("output_norm.weight", llama["model.norm.weight"])
gname = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}
for i in range(L):
    p = f"model.layers.{i}."
    w.add_tensor(f"blk.{i}.attn_norm.weight", llama[p + "input_layernorm.weight"])
    w.add_tensor(f"blk.{i}.ffn_norm.weight", llama[p + "post_attention_layernorm.weight"])
    for hf, g in gname.items():
        t = llama[p + hf + ".weight"]
        if g == "attn_q":
            t = permute(t, H)
        if g == "attn_k":
            t = permute(t, KVH)
        w.add_tensor(f"blk.{i}.{g}.weight", np.ascontiguousarray(t))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

qwen2 = hf_model(C // H, bias=True)
write_dir("tiny-qwen2", dict(base, model_type="qwen2", rope_theta=1e6, tie_word_embeddings=True),
          qwen2)
write_dir("tiny-qwen3", dict(base, model_type="qwen3", rope_theta=1e6, head_dim=16,
                             tie_word_embeddings=False),
          hf_model(16, qk_norm=True, tied=False), bf16=True)
with open(os.path.join(root, "tiny-qwen3", "generation_config.json"), "w") as f:
    json.dump({"eos_token_id": [2, 5]}, f)
w = gguf.GGUFWriter(os.path.join(root, "tiny-qwen2.gguf"), "qwen2")
w.add_block_count(L)
w.add_embedding_length(C)
w.add_feed_forward_length(F)
w.add_head_count(H)
w.add_head_count_kv(KVH)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_freq_base(1e6)
w.add_context_length(128)
w.add_tensor("token_embd.weight", qwen2["model.embed_tokens.weight"])
w.add_tensor("output_norm.weight", qwen2["model.norm.weight"])
for i in range(L):
    p = f"model.layers.{i}."
    w.add_tensor(f"blk.{i}.attn_norm.weight", qwen2[p + "input_layernorm.weight"])
    w.add_tensor(f"blk.{i}.ffn_norm.weight", qwen2[p + "post_attention_layernorm.weight"])
    for hf, g in gname.items():
        w.add_tensor(f"blk.{i}.{g}.weight", qwen2[p + hf + ".weight"])
        if g in ("attn_q", "attn_k", "attn_v"):
            w.add_tensor(f"blk.{i}.{g}.bias", qwen2[p + hf + ".bias"])
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote tiny models into", root)
