#!/usr/bin/env python3
"""Writes tests/fixtures/nul-text-ids.jsonl: texts holding NUL and other control characters, and
their ids from Hugging Face `tokenizers` (pip install tokenizers), encode(text,
add_special_tokens=False), with the committed tokenizers (tests/fixtures/toy-tokenizer.json,
tests/fixtures/tiny-qwen3/tokenizer.json) and the real ones of ../shared/tokenizers/{qwen3,llama3}.
tests/cli_tokenize_nul.sh feeds each text to `doppel tokenize --jsonl`, which must give exactly
these ids (cJSON alone cuts a string at its first NUL).

Usage: python3 tests/reference/make_nul_text_fixture.py [--shared ../shared]
"""
import argparse
import json
import os

import tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEXTS = [
    "\u0000\u0001\u0002 control chars",  # the first line: doppel gave []
    "a\u0000b",  # the second line: doppel gave the ids of "a"
    "\u0000",
    "end\u0000",
    "x\u0000\u0000y \\u0000 not a NUL",  # an escaped backslash then "u0000" is plain text
    "\u0000😀\u0000é",
]

ap = argparse.ArgumentParser()
ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
args = ap.parse_args()
models = {
    "toy": os.path.join(ROOT, "tests", "fixtures", "toy-tokenizer.json"),
    "tiny_qwen3": os.path.join(ROOT, "tests", "fixtures", "tiny-qwen3", "tokenizer.json"),
    "qwen3": os.path.join(args.shared, "tokenizers", "qwen3", "tokenizer.json"),
    "llama3": os.path.join(args.shared, "tokenizers", "llama3", "tokenizer.json"),
}
toks = {k: tokenizers.Tokenizer.from_file(p) for k, p in models.items()}
out = os.path.join(ROOT, "tests", "fixtures", "nul-text-ids.jsonl")
with open(out, "w", encoding="utf-8") as f:
    for t in TEXTS:
        row = {"text": t}
        for k, tok in toks.items():
            row[k] = tok.encode(t, add_special_tokens=False).ids
        f.write(json.dumps(row, ensure_ascii=True) + "\n")
print("wrote", out, "with tokenizers", tokenizers.__version__)
