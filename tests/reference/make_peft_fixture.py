#!/usr/bin/env python3
"""Reference fixtures for doppel's whole-model LoRA gradient, computed with transformers + PEFT.

For three tiny random models (Llama, Qwen2 with q/k/v bias, Qwen3 with q/k-norm and an explicit
head_dim, untied lm_head) this writes tests/fixtures/peft/<arch>.h5 holding:
  /config         attributes of the model (dims, eps, theta, tie) and of LoRA (r, alpha, rslora)
  /weights/<hf name>           the model's weights (float32)
  /batch/{tokens,targets,pos,cu_seqlens}   a packed batch of 3 sequences; targets = next token
                                           on trained rows, -1 elsewhere
  /lora_init/<peft name>       a fixed NON-ZERO LoRA init (B random too, so every gradient is
                               non-trivial)
  /loss                        masked mean cross-entropy over trained rows (float64 reference)
  /grads/<peft name>           d loss / d every LoRA tensor at the init
  /adamw/{lr,loss,grad_norm}   10 AdamW steps on the same batch from the same init: torch.optim.AdamW
                               (lr 3e-3, betas .9/.999, eps 1e-8, weight decay .01), grad clipping at 1.0
                               (clip_grad_norm_), transformers' cosine schedule with 2 warmup steps;
                               loss[i] and grad_norm[i] are measured before update i
The reference runs in float64 so the fixture's own rounding is negligible.
Usage: pip install torch transformers peft h5py; python3 tests/reference/make_peft_fixture.py
"""
import math
import os
import sys

import h5py
import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM, get_cosine_schedule_with_warmup)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "peft")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
V, C, F, L, H, KVH = 96, 32, 48, 2, 4, 2


def build(arch):
    common = dict(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                  num_attention_heads=H, num_key_value_heads=KVH, rms_norm_eps=1e-5,
                  max_position_embeddings=128, attn_implementation="eager")
    if arch == "llama":
        cfg = LlamaConfig(rope_theta=10000.0, tie_word_embeddings=True, **common)
        return cfg, LlamaForCausalLM(cfg), dict(r=4, alpha=8.0, rslora=False, head_dim=C // H)
    if arch == "qwen2":
        cfg = Qwen2Config(rope_theta=1000000.0, tie_word_embeddings=True, **common)
        return cfg, Qwen2ForCausalLM(cfg), dict(r=4, alpha=8.0, rslora=True, head_dim=C // H)
    cfg = Qwen3Config(rope_theta=1000000.0, tie_word_embeddings=False, head_dim=16, **common)
    return cfg, Qwen3ForCausalLM(cfg), dict(r=8, alpha=16.0, rslora=False, head_dim=16)


def make_batch(gen):
    lens = [7, 12, 5]
    seqs, targets = [], []
    for n in lens:
        ids = torch.randint(0, V, (n,), generator=gen)
        mask = torch.rand(n, generator=gen) < 0.6  # which rows are trained (as targets)
        mask[0] = False  # the first token is never a target
        tgt = torch.full((n,), -1, dtype=torch.long)
        for t in range(n - 1):
            if mask[t + 1]:
                tgt[t] = ids[t + 1]
        seqs.append(ids)
        targets.append(tgt)
    return lens, seqs, targets


def loss_of(model, seqs, targets):
    total, count = 0.0, 0
    for ids, tgt in zip(seqs, targets):
        pos = torch.arange(len(ids)).unsqueeze(0)
        logits = model(input_ids=ids.unsqueeze(0), position_ids=pos).logits[0]
        sel = tgt >= 0
        total = total + torch.nn.functional.cross_entropy(logits[sel], tgt[sel], reduction="sum")
        count += int(sel.sum())
    return total / count


def lora_params(model):
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            out[name.replace(".default", "")] = p
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for arch in ["llama", "qwen2", "qwen3"]:
        torch.manual_seed(1234)
        cfg, base, lc = build(arch)
        with torch.no_grad():  # larger-than-default weights so the logits are not flat
            for n, p in base.named_parameters():
                if "norm" in n:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif p.dim() == 2:
                    p.copy_(torch.randn_like(p) * (0.5 / math.sqrt(p.shape[1])))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
        weights = {n: p.detach().float().numpy().copy() for n, p in base.state_dict().items()}
        base = base.double()
        pc = LoraConfig(r=lc["r"], lora_alpha=lc["alpha"], lora_dropout=0.0, target_modules=TARGETS,
                        use_rslora=lc["rslora"], bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(base, pc)
        gen = torch.Generator().manual_seed(99)
        with torch.no_grad():
            for n, p in lora_params(model).items():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) *
                        (0.3 if "lora_B" in n else 1.0 / math.sqrt(p.shape[1])))
        init = {n: p.detach().float().numpy().copy() for n, p in lora_params(model).items()}
        # the reference starts from exactly the float32 values doppel will load
        with torch.no_grad():
            for n, p in lora_params(model).items():
                p.copy_(torch.from_numpy(init[n]).double())
        lens, seqs, targets = make_batch(gen)
        loss = loss_of(model, seqs, targets)
        loss.backward()
        grads = {n: p.grad.detach().float().numpy().copy() for n, p in lora_params(model).items()}
        model.zero_grad()

        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=10)
        lrs, losses, norms = [], [], []
        for _ in range(10):
            opt.zero_grad()
            l = loss_of(model, seqs, targets)
            l.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            lrs.append(opt.param_groups[0]["lr"])
            losses.append(float(l))
            norms.append(float(norm))
            opt.step()
            sched.step()

        path = os.path.join(OUT, f"{arch}.h5")
        with h5py.File(path, "w") as f:
            g = f.create_group("config")
            for k, v in dict(arch=arch, L=L, C=C, F=F, H=H, KVH=KVH, D=lc["head_dim"], V=V,
                             rms_eps=cfg.rms_norm_eps, rope_theta=float(cfg.rope_theta)
                             if hasattr(cfg, "rope_theta") else float(cfg.rope_parameters["rope_theta"]),
                             tied=int(cfg.tie_word_embeddings), r=lc["r"], alpha=lc["alpha"],
                             rslora=int(lc["rslora"])).items():
                g.attrs[k] = v
            for n, a in weights.items():
                f.create_dataset(f"weights/{n}", data=a)
            tok = np.concatenate([s.numpy() for s in seqs]).astype(np.int32)
            tgt = np.concatenate([t.numpy() for t in targets]).astype(np.int32)
            pos = np.concatenate([np.arange(n) for n in lens]).astype(np.int32)
            f.create_dataset("batch/tokens", data=tok)
            f.create_dataset("batch/targets", data=tgt)
            f.create_dataset("batch/pos", data=pos)
            f.create_dataset("batch/cu_seqlens", data=np.cumsum([0] + lens).astype(np.int32))
            for n, a in init.items():
                f.create_dataset(f"lora_init/{n}", data=a)
            f.create_dataset("loss", data=np.float64(loss.item()))
            for n, a in grads.items():
                f.create_dataset(f"grads/{n}", data=a)
            f.create_dataset("adamw/lr", data=np.array(lrs))
            f.create_dataset("adamw/loss", data=np.array(losses))
            f.create_dataset("adamw/grad_norm", data=np.array(norms))
        print(f"{path}: loss {loss.item():.6f}, {len(grads)} LoRA tensors, "
              f"AdamW losses {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    sys.exit(main())
