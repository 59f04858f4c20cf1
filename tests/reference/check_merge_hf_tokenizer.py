#!/usr/bin/env python3
"""check_merge_hf_tokenizer.py HF_DIR DOPPEL_IDS.jsonl

The tokenizer.json doppel merge wrote from a GGUF's tokenizer.ggml.* metadata, loaded by
transformers (AutoTokenizer: the `tokenizers` library), must encode every {"text", "ids"} line
(ids from `doppel tokenize --jsonl` on the GGUF; special-token text is a special token, no
BOS/EOS) to the same ids, decode them back to the text, and keep the special tokens of
tokenizer_config.json. Prints the count; exit 1 on any difference."""
import json
import sys

from transformers import AutoTokenizer

tok = AutoTokenizer.from_pretrained(sys.argv[1])
bad = n = 0
for line in open(sys.argv[2], encoding="utf-8"):
    case = json.loads(line)
    n += 1
    got = tok.encode(case["text"], add_special_tokens=False)
    if got != case["ids"]:
        bad += 1
        if bad <= 5:
            print(f"differs: {case['text']!r}\n  transformers {got[:24]}\n  doppel       {case['ids'][:24]}")
    elif tok.decode(got) != case["text"]:
        bad += 1
        if bad <= 5:
            print(f"decode differs: {case['text']!r} -> {tok.decode(got)!r}")
print(f"{n - bad} of {n} texts: transformers on the exported tokenizer.json equals doppel on the GGUF")
sys.exit(1 if bad or not n else 0)
