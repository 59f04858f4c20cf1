#!/usr/bin/env python3
"""The Python side of tests/gpu/check.sh: random-weight models of a given config (transformers,
no download), the transformers + PEFT peer training run, a device-memory watcher through
cudaMemGetInfo (torch.cuda.mem_get_info), and the final table + JSON.

Subcommands (check.sh calls them; each prints one JSON object on stdout unless said):
  make-model CONFIG.json OUT_DIR TOKENIZER.json [--layers N]   random bf16 weights
  watch-mem OUT.json                       polls free device memory until SIGTERM
  peer MODEL_DIR DATA.jsonl --steps N --seq T --device cuda|cpu   LoRA r16 on all 7 linears
  report RESULTS.jsonl [--json OUT.json]   prints the table (stdout), writes the JSON
"""
import argparse
import json
import os
import signal
import sys
import time

# doppel train's defaults (cmd/train.c): r 16, alpha 2r, dropout 0.05, lr 2e-4, all 7 linears
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_model(a):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in json.load(open(a.config)).items()
                                  if k not in ("architectures",)})
    if a.layers:
        cfg.num_hidden_layers = a.layers
    cfg.torch_dtype = "bfloat16"
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device(dev):  # initialized on the GPU when there is one: 7B in seconds
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    model.save_pretrained(a.out, safe_serialization=True, max_shard_size="4GB")
    os.makedirs(a.out, exist_ok=True)
    tok = json.load(open(a.tokenizer))
    # The fixture tokenizer is Qwen's, trimmed to the ids its tests use; a random model emits
    # any id below V, so every missing id gets a plain filler entry (never produced by
    # encoding, decoded as "<fillN>") and the tokenizer covers the whole vocabulary.
    vocab = tok["model"]["vocab"]
    taken = set(vocab.values()) | {t["id"] for t in tok.get("added_tokens", [])}
    for i in range(cfg.vocab_size):
        if i not in taken:
            vocab[f"<fill{i}>"] = i
    json.dump(tok, open(os.path.join(a.out, "tokenizer.json"), "w"))
    added = {str(t["id"]): {"content": t["content"], "special": t.get("special", True),
                            "lstrip": False, "rstrip": False, "normalized": False,
                            "single_word": False} for t in tok.get("added_tokens", [])}
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
               "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "model_max_length": 32768, "added_tokens_decoder": added,
               "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
                                "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                                "{% endif %}"},
              open(os.path.join(a.out, "tokenizer_config.json"), "w"))
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": n, "layers": cfg.num_hidden_layers, "seconds": time.time() - t0,
                      "device": dev}))


def watch_mem(a):
    """Lowest free device memory seen (cudaMemGetInfo is device-wide, so another process's
    allocations show): the caller subtracts the free memory before its run started."""
    import torch

    torch.cuda.init()
    free0, total = torch.cuda.mem_get_info()
    low = free0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    open(a.out + ".ready", "w").close()
    while not stop:
        low = min(low, torch.cuda.mem_get_info()[0])
        time.sleep(0.02)
    json.dump({"free_before": free0, "free_lowest": low, "total": total,
               "peak_bytes": free0 - low}, open(a.out, "w"))


def peer(a):
    """The same conversations, packed into T-token sequences without padding, trained with
    transformers + PEFT: bf16 base and LoRA on a GPU (bitsandbytes is not there), fp32 on
    the CPU; gradient checkpointing as doppel's recomputation. Tokens/s over the steps after
    the first (which pays for kernel selection)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    dev = a.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model, "tokenizer.json"))
    ids = []
    for line in open(a.data):
        for m in json.loads(line)["messages"]:
            ids += tok.encode(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    while len(ids) < (a.steps + 1) * a.seq:
        ids = ids + ids
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype).to(dev)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    t_start, losses = None, []
    for step in range(a.steps):
        x = torch.tensor(ids[step * a.seq:(step + 1) * a.seq], device=dev)[None]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if dev == "cuda":
            torch.cuda.synchronize()
        if step == 0:
            t_start = time.time()
    timed = max(a.steps - 1, 1)
    secs = time.time() - t_start if a.steps > 1 else float("nan")
    out = {"tokens_per_s": timed * a.seq / secs if a.steps > 1 else None, "steps": a.steps,
           "seq": a.seq, "loss_first": losses[0], "loss_last": losses[-1],
           "dtype": str(dtype).replace("torch.", "")}
    if dev == "cuda":
        out["torch_max_allocated"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


def fmt_bytes(b):
    return "-" if b is None else f"{b / 2**20:.0f} MiB"


def report(a):
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    lines = []
    for r in rows:
        kind = r["kind"]
        if kind == "info":
            lines.append(("doppel info", "PASS" if r["rc"] == 0 else f"FAIL (exit {r['rc']})",
                          r.get("summary", "")))
        elif kind == "suite":
            lines.append((f"suite {r['name']} ({r['backend']})",
                          "PASS" if r["rc"] == 0 else f"FAIL (exit {r['rc']})",
                          f"{r['seconds']:.1f} s; {r.get('last', '')}"))
        elif kind == "sandbox":
            lines.append((f"sandbox {r['name']}", "PASS" if r["rc"] == 0 else f"FAIL (exit {r['rc']})",
                          " / ".join(r.get("highlights", []))[:400]))
        elif kind == "train":
            peer = r.get("peer") or {}
            ratio = (r["tokens_per_s"] / peer["tokens_per_s"]
                     if r.get("tokens_per_s") and peer.get("tokens_per_s") else None)
            lines.append((f"train {r['model']} ({r['device']}, seq {r['seq']}, {r['steps']} steps)",
                          "PASS" if r["rc"] == 0 else f"FAIL (exit {r['rc']})",
                          f"doppel {r.get('tokens_per_s') or 0:.0f} tok/s, peak "
                          f"{fmt_bytes(r.get('peak_bytes'))} (plan {r.get('plan_mib', '-')} MiB); "
                          f"PEFT {peer.get('dtype', '')} {peer.get('tokens_per_s') or 0:.0f} tok/s, "
                          f"peak {fmt_bytes(peer.get('peak_bytes'))}; ratio "
                          + (f"{ratio:.2f}x" if ratio else "-")))
        elif kind == "chat":
            lines.append((f"chat {r['model']} ({r['device']})",
                          "PASS" if r["rc"] == 0 else f"FAIL (exit {r['rc']})",
                          f"decode {r.get('tok_per_s', 0):.1f} tok/s over {r.get('tokens', 0)} "
                          f"tokens; prompt {r.get('prompt_tokens', 0)} tokens in "
                          f"{r.get('prefill_s', 0):.2f} s"))
        elif kind == "serve":
            lines.append((f"serve {r['model']} ({r['device']})",
                          "PASS" if r["rc"] == 0 else f"FAIL (exit {r['rc']})",
                          f"aggregate tok/s by concurrent streams {r.get('tok_per_s_by_streams')} "
                          f"({r.get('tokens')} tokens a reply)"))
        elif kind == "step":
            lines.append((r["name"], "PASS" if r["rc"] == 0 else "SKIPPED" if r["rc"] == 77
                          else f"FAIL (exit {r['rc']})",
                          r.get("note", "")))
    w = max(len(l[0]) for l in lines) if lines else 10
    print(f"{'check':<{w}}  {'result':<14}  details")
    for name, res, det in lines:
        print(f"{name:<{w}}  {res:<14}  {det}")
    skipped = sum(1 for r in rows if r.get("rc", 0) == 77)
    failed = sum(1 for r in rows if r.get("rc", 0) not in (0, 77))
    print(f"gpu check: {len(rows) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    if a.json:
        json.dump({"rows": rows, "failed": failed, "skipped": skipped}, open(a.json, "w"), indent=1)
    return 1 if failed else 77 if skipped else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("config"), p.add_argument("out"), p.add_argument("tokenizer")
    p.add_argument("--layers", type=int, default=0)
    p = sub.add_parser("watch-mem")
    p.add_argument("out")
    p = sub.add_parser("peer")
    p.add_argument("model"), p.add_argument("data")
    p.add_argument("--steps", type=int, default=30), p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--device", default="cuda")
    p = sub.add_parser("report")
    p.add_argument("results"), p.add_argument("--json")
    a = ap.parse_args()
    return {"make-model": make_model, "watch-mem": watch_mem, "peer": peer,
            "report": report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
