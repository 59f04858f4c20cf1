#!/usr/bin/env python3
"""The PyTorch peer of bench_train: transformers + PEFT LoRA training steps on the CPU in fp32,
the same batch as doppel's (one sequence of `seq` tokens from the same counter-based generator,
every next token a target), LoRA r on all seven modules, AdamW, `threads` threads.
usage: bench_train_peft.py MODEL(.gguf|dir) SEQ R STEPS THREADS
prints: RESULT tokens_per_s (from the median step time) peak_rss_mib first_loss"""
import os
import resource
import sys
import time


def mix64(z):
    m = (1 << 64) - 1
    z = (z + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def rng_bits(seed, stream, counter):  # data/base/rng.h dp_rng_bits
    return mix64(mix64(seed ^ mix64(stream)) ^ counter)


def main():
    path, seq, r, steps, threads = sys.argv[1], *map(int, sys.argv[2:6])
    import torch
    torch.set_num_threads(threads)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    if path.endswith(".gguf"):
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path) or ".",
                                                     gguf_file=os.path.basename(path),
                                                     torch_dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    model.train()
    ids = torch.tensor([[rng_bits(5, 0, i) % 49152 for i in range(seq)]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                            weight_decay=0.0)
    first = None
    times = []
    for s in range(steps + 1):  # step 0 warms up
        t0 = time.perf_counter()
        opt.zero_grad()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if first is None:
            first = float(out.loss.detach())
        if s > 0:
            times.append(time.perf_counter() - t0)
    dt = sorted(times)[len(times) // 2]  # the median step, as bench_train takes its own
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"RESULT {seq / dt:.3f} {rss:.1f} {first:.6f}")


if __name__ == "__main__":
    main()
