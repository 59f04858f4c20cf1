#!/usr/bin/env python3
"""transformers + PEFT's held-out loss for `doppel eval --precision fp32` (the independent check
of tests/cli_eval.sh): the base model in float64, the adapter of a `doppel train` run through
PEFT, each validation conversation rendered as ChatML by this script with the Hugging Face
`tokenizers` library (`<|im_start|>role\\ncontent<|im_end|>\\n`; the loss on the assistant's
content and its `<|im_end|>` only), cut from the left at message boundaries to fit --max-seq as
training does. Prints the masked mean cross-entropy of the base and of base + adapter, and with
--eval-json compares them with doppel eval's figures (exit 1 beyond the tolerance).
--model is an HF directory (its tokenizer.json) or a .gguf file: transformers then reads the
weights (dequantized, e.g. SmolLM2-135M's Q4_1 to float64) and the tokenizer from the GGUF
itself (gguf_file=), not through doppel.

  check_eval_peft.py --model tests/fixtures/tiny-llama --adapter RUN --data VAL.jsonl \\
      --max-seq 128 [--eval-json eval.json]
  check_eval_peft.py --model ~/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ...
"""
import argparse, json, math, os, sys

import torch
from peft import PeftModel
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def render(tok, msgs):
    ids, mask = [], []
    start, end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    for m in msgs:
        a = int(m["role"] == "assistant")
        head = m["role"] + "\n"
        enc = tok.encode(head + m["content"], add_special_tokens=False)
        ids.append(start), mask.append(0)
        for i, (s, e) in zip(enc.ids, enc.offsets):
            ids.append(i), mask.append(a if e > len(head) else 0)
        ids.append(end), mask.append(a)
        for i in tok.encode("\n", add_special_tokens=False).ids:
            ids.append(i), mask.append(0)
    return ids, mask


def sequences(tok, path, max_seq):
    for line in open(path, encoding="utf-8"):
        msgs = json.loads(line)["messages"]
        first = 1 if msgs and msgs[0]["role"] == "system" else 0
        for f in range(first, len(msgs)):
            ids, mask = render(tok, msgs[:first] + msgs[f:])
            if len(ids) <= max_seq:
                if any(mask[1:]):  # a target exists (the first token is never one)
                    yield ids, mask
                break


@torch.no_grad()
def loss(model, seqs):
    total, n = 0.0, 0
    for ids, mask in seqs:
        x = torch.tensor([ids])
        logp = torch.log_softmax(model(input_ids=x).logits[0].double(), -1)
        for t in range(len(ids) - 1):
            if mask[t + 1]:
                total -= logp[t, ids[t + 1]].item()
                n += 1
    return total / n, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--max-seq", type=int, required=True)
    ap.add_argument("--eval-json")
    ap.add_argument("--tol", type=float, default=1e-6, help="relative")
    a = ap.parse_args()
    if a.model.endswith(".gguf"):
        import gguf
        from transformers import AutoTokenizer

        # transformers parses the GGUF once for the tokenizer and twice for the model, each
        # time building a numpy view per vocabulary entry (~10 s each): parse it once
        parsed, reader = {}, gguf.GGUFReader

        def parse_once(path, *rest):
            key = (os.path.abspath(path), rest)
            if key not in parsed:
                parsed[key] = reader(path, *rest)
            return parsed[key]

        gguf.GGUFReader = parse_once
        where, name = os.path.split(os.path.abspath(a.model))
        tok = AutoTokenizer.from_pretrained(where, gguf_file=name).backend_tokenizer
        base = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float64)
    else:
        tok = Tokenizer.from_file(f"{a.model}/tokenizer.json")
        base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float64)
    seqs = list(sequences(tok, a.data, a.max_seq))
    base.eval()
    lb, nb = loss(base, seqs)
    peft = PeftModel.from_pretrained(base, a.adapter, dtype=torch.float64)
    peft.eval()
    la, na = loss(peft, seqs)
    print(f"transformers + PEFT: {len(seqs)} sequences, {nb} scored tokens; base loss {lb:.9f}, "
          f"adapter loss {la:.9f}")
    if not a.eval_json:
        return 0
    e = json.load(open(a.eval_json))
    ok, worst = True, 0.0
    for want, ntok, got in ((lb, nb, e["systems"][0]), (la, na, e["systems"][1])):
        d = abs(got["loss"] - want)
        worst = max(worst, d / abs(want))
        good = d <= a.tol * abs(want) and got["tokens"] == ntok
        ok &= good
        print(f"  {got['name']}: doppel eval {got['loss']:.9f} ({got['tokens']} tokens), "
              f"reference {want:.9f} ({ntok}); |diff| {d:.2e}, tol {a.tol * abs(want):.2e} "
              f"{'ok' if good else 'FAIL'}")
    print(f"  max relative diff {worst:.2e} (tol {a.tol:.1e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
