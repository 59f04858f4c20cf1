#!/usr/bin/env python3
"""Checks a `doppel merge --format hf` directory with the tools people load it with.

  check_merge_hf.py CASES.json

CASES.json (written by tests/test_merge_transformers.c, or by hand):
  {"models": [{"dir": merged dir, "logits": safetensors with "ids" (T) int32 and "logits" (T, V)
               float32 = doppel's forward with the adapter unmerged, "abs_tol", "rel_tol"}],
   "templates": [{"template": Jinja text, "messages": [...], "add_generation_prompt": bool,
                  "expected": doppel's own rendering (data/chat_format.c)}],
   "tokenizer_templates": [{"dir": merged dir, "messages", "add_generation_prompt", "expected"}]}

transformers loads each model (upcast to fp32) and its logits must equal doppel's within
abs_tol + rel_tol * |doppel|; generation_config.json's eos ids must hold the tokenizer's
eos_token (the chat's end-of-turn token); every template renders exactly doppel's text under
jinja2 as transformers configures it (trim_blocks, lstrip_blocks) and as a plain Environment
(llama.cpp's and Ollama's importers do not set those), and through the saved tokenizer's
apply_chat_template. Exit 0 when all hold, 1 otherwise, printing each max difference.
"""
import json
import sys

import jinja2
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> int:
    cases = json.load(open(sys.argv[1], encoding="utf-8"))
    ok = True
    for c in cases.get("models", []):
        ref = load_file(c["logits"])
        ids = ref["ids"].long()[None]
        want = ref["logits"]
        model = AutoModelForCausalLM.from_pretrained(c["dir"], dtype=torch.float32)
        model.eval()
        with torch.no_grad():
            got = model(ids).logits[0].float()
        diff = (got - want).abs()
        tol = c["abs_tol"] + c["rel_tol"] * want.abs()
        bad = int((diff > tol).sum())
        print(f"{c['dir']}: transformers vs doppel logits max|diff| {diff.max().item():.3g} "
              f"(tol {c['abs_tol']} + {c['rel_tol']}*|ref|), {bad} of {diff.numel()} out")
        ok &= bad == 0
        tok = AutoTokenizer.from_pretrained(c["dir"])
        gen = json.load(open(f"{c['dir']}/generation_config.json"))
        eos = gen["eos_token_id"]
        eos = eos if isinstance(eos, list) else [eos]
        eot = tok.convert_tokens_to_ids(tok.eos_token)
        if eot not in eos:
            print(f"{c['dir']}: generation_config eos {eos} lacks {tok.eos_token} ({eot})")
            ok = False
    envs = {
        "transformers-like": jinja2.Environment(trim_blocks=True, lstrip_blocks=True),
        "plain": jinja2.Environment(),
    }
    for i, t in enumerate(cases.get("templates", [])):
        for name, env in envs.items():
            text = env.from_string(t["template"]).render(
                messages=t["messages"], add_generation_prompt=t["add_generation_prompt"])
            if text != t["expected"]:
                print(f"template case {i} ({name}): rendered {text!r}\n  doppel   {t['expected']!r}")
                ok = False
    n_tok = 0
    for t in cases.get("tokenizer_templates", []):
        tok = AutoTokenizer.from_pretrained(t["dir"])
        text = tok.apply_chat_template(t["messages"], tokenize=False,
                                       add_generation_prompt=t["add_generation_prompt"])
        n_tok += 1
        if text != t["expected"]:
            print(f"{t['dir']}: apply_chat_template {text!r}\n  doppel {t['expected']!r}")
            ok = False
    print(f"{len(cases.get('templates', []))} template renderings x {len(envs)} jinja2 setups, "
          f"{n_tok} apply_chat_template: {'all equal' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
