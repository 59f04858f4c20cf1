#!/usr/bin/env python3
"""Writes tests/reference/ops_reference.json: inputs and PyTorch/transformers outputs (autograd
gradients included) for the CPU ops, read by tests/test_ops_reference.c.
Run by hand (CPU torch + transformers): python3 tests/reference/gen_ops_reference.py"""
import json
import os

import torch
import torch.nn.functional as F
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb

torch.manual_seed(1234)
out = {"generator": "tests/reference/gen_ops_reference.py", "torch": torch.__version__}


def flat(t):
    return [float(f"{x:.9g}") for x in t.detach().reshape(-1).tolist()]  # float32 round-trips


# ---- RoPE inverse frequencies: transformers' llama3 scaling (Llama 3.1 8B) and plain (Qwen2.5)
cfg = LlamaConfig(hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072,
                  rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192})
out["rope_llama3"] = {"D": 128, "theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position": 8192,
                      "inv_freq": flat(LlamaRotaryEmbedding(cfg).inv_freq)}
cfg2 = LlamaConfig(hidden_size=896, num_attention_heads=14,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
rot2 = LlamaRotaryEmbedding(cfg2)
out["rope_default"] = {"D": 64, "theta": 1000000.0, "inv_freq": flat(rot2.inv_freq)}

# ---- RoPE applied to q (N, nh, D) at given positions, with transformers' apply_rotary_pos_emb
N, nh, D = 5, 2, 64
pos = torch.tensor([0, 1, 17, 300, 4000])
x = torch.randn(N, nh, D)
cos, sin = rot2(x, pos[None, :])  # (1, N, D)
q_rot, _ = apply_rotary_pos_emb(x.transpose(0, 1)[None], x.transpose(0, 1)[None], cos, sin)
out["rope_apply"] = {"N": N, "nh": nh, "D": D, "theta": 1000000.0, "pos": pos.tolist(),
                     "x": flat(x), "out": flat(q_rot[0].transpose(0, 1))}

# ---- RMSNorm (transformers' module) forward and autograd backward
N, C = 4, 48
x = torch.randn(N, C, requires_grad=True)
norm = LlamaRMSNorm(C, eps=1e-6)
with torch.no_grad():
    norm.weight.copy_(1 + 0.3 * torch.randn(C))
y = norm(x)
g = torch.randn(N, C)
y.backward(g)
out["rmsnorm"] = {"N": N, "C": C, "eps": 1e-6, "x": flat(x), "weight": flat(norm.weight),
                  "dout": flat(g), "out": flat(y), "dx": flat(x.grad), "dweight": flat(norm.weight.grad)}

# ---- packed causal GQA attention through scaled_dot_product_attention, per sequence
cu = [0, 6, 7, 19]
H, KVH, D = 6, 2, 20
Nt = cu[-1]
q = torch.randn(Nt, H, D, requires_grad=True)
k = torch.randn(Nt, KVH, D, requires_grad=True)
v = torch.randn(Nt, KVH, D, requires_grad=True)
outs = []
for s in range(len(cu) - 1):
    a, b = cu[s], cu[s + 1]
    qs, ks, vs = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))  # (1, heads, T, D)
    o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
    outs.append(o[0].transpose(0, 1))
o = torch.cat(outs)
g = torch.randn_like(o)
o.backward(g)
out["attention"] = {"cu_seqlens": cu, "H": H, "KVH": KVH, "D": D, "q": flat(q), "k": flat(k),
                    "v": flat(v), "dout": flat(g), "out": flat(o), "dq": flat(q.grad),
                    "dk": flat(k.grad), "dv": flat(v.grad)}

# ---- SwiGLU
n = 64
gate = (3 * torch.randn(n)).requires_grad_()
up = torch.randn(n, requires_grad=True)
y = F.silu(gate) * up
g = torch.randn(n)
y.backward(g)
out["swiglu"] = {"n": n, "gate": flat(gate), "up": flat(up), "dout": flat(g), "out": flat(y),
                 "dgate": flat(gate.grad), "dup": flat(up.grad)}

# ---- cross-entropy with ignored targets (-100), per-row losses, dlogits scaled by dloss
N, V = 5, 50
logits = (3 * torch.randn(N, V)).requires_grad_()
targets = torch.tensor([4, -100, 49, 0, 17])
losses = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
dloss = 0.125
(losses.sum() * dloss).backward()
out["cross_entropy"] = {"N": N, "V": V, "dloss": dloss, "logits": flat(logits),
                        "targets": targets.tolist(), "losses": flat(losses),
                        "dlogits": flat(logits.grad)}

# ---- AdamW: 4 steps of torch.optim.AdamW on one tensor
n = 40
p = torch.randn(n)
p0 = p.clone()
param = torch.nn.Parameter(p)
opt = torch.optim.AdamW([param], lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
grads = []
for step in range(4):
    gr = torch.randn(n) * (0.01 if step % 2 else 1.0)
    grads.append(flat(gr))
    param.grad = gr.clone()
    opt.step()
out["adamw"] = {"n": n, "lr": 3e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
                "weight_decay": 0.1, "param0": flat(p0), "grads": grads, "param": flat(param),
                "m": flat(opt.state[param]["exp_avg"]), "v": flat(opt.state[param]["exp_avg_sq"])}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops_reference.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(f"wrote {path} ({os.path.getsize(path)} bytes)")
