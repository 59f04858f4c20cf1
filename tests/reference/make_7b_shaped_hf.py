#!/usr/bin/env python3
"""A Hugging Face directory with Qwen2.5-7B's shapes and random bf16 weights, for measuring
doppel merge's memory on a 7B-sized model (tests/bench/bench_merge.sh's note).

  make_7b_shaped_hf.py OUT_DIR LAYERS TOKENIZER_DIR

Qwen2.5-7B: hidden 3584, intermediate 18944, 28 heads / 4 kv heads (head_dim 128), vocab
152064, untied lm_head, q/k/v biases, rope theta 1e6. LAYERS (28 for the whole model) lets a
smaller machine measure 2 and 4 layers: the merge's memory is a fixed part (embedding and
lm_head) plus a part per layer, so two layer counts give both. Written tensor by tensor, one
safetensors shard per layer + model.safetensors.index.json (memory: one layer, ~0.5 GB).
TOKENIZER_DIR's tokenizer.json / tokenizer_config.json are copied (the real Qwen tokenizer).
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

C, F, H, KVH, V = 3584, 18944, 28, 4, 152064
D = C // H


def main(out, layers, tok_dir):
    os.makedirs(out)
    g = torch.Generator().manual_seed(3)

    def rnd(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).to(torch.bfloat16)

    weight_map = {}

    def shard(name, tensors):
        save_file(tensors, os.path.join(out, name), metadata={"format": "pt"})
        for k in tensors:
            weight_map[k] = name

    shard("embed.safetensors", {"model.embed_tokens.weight": rnd(V, C),
                                "model.norm.weight": torch.ones(C, dtype=torch.bfloat16)})
    shard("head.safetensors", {"lm_head.weight": rnd(V, C)})
    for i in range(layers):
        p = f"model.layers.{i}."
        t = {p + "input_layernorm.weight": torch.ones(C, dtype=torch.bfloat16),
             p + "post_attention_layernorm.weight": torch.ones(C, dtype=torch.bfloat16),
             p + "self_attn.q_proj.weight": rnd(H * D, C), p + "self_attn.q_proj.bias": rnd(H * D),
             p + "self_attn.k_proj.weight": rnd(KVH * D, C), p + "self_attn.k_proj.bias": rnd(KVH * D),
             p + "self_attn.v_proj.weight": rnd(KVH * D, C), p + "self_attn.v_proj.bias": rnd(KVH * D),
             p + "self_attn.o_proj.weight": rnd(C, H * D),
             p + "mlp.gate_proj.weight": rnd(F, C), p + "mlp.up_proj.weight": rnd(F, C),
             p + "mlp.down_proj.weight": rnd(C, F)}
        shard(f"layer-{i:03d}.safetensors", t)
    json.dump({"metadata": {}, "weight_map": weight_map},
              open(os.path.join(out, "model.safetensors.index.json"), "w"))
    json.dump({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": C,
               "intermediate_size": F, "num_hidden_layers": layers, "num_attention_heads": H,
               "num_key_value_heads": KVH, "vocab_size": V, "max_position_embeddings": 32768,
               "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": False,
               "hidden_act": "silu", "torch_dtype": "bfloat16", "bos_token_id": 151643,
               "eos_token_id": 151645}, open(os.path.join(out, "config.json"), "w"), indent=1)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, f), os.path.join(out, f))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
