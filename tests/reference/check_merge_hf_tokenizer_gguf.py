#!/usr/bin/env python3
"""Round trip of a Hugging Face tokenizer through GGUF metadata and back, for doppel merge's
tokenizer.json writer (infer/export_hf.c, dp_export_hf_tokenizer_from_gguf):

  check_merge_hf_tokenizer_gguf.py make TOKENIZER.json PRE OUT.gguf
      a GGUF holding only tokenizer.ggml.* as llama.cpp's converter writes them (tokens by id,
      token_type CONTROL for special added tokens, USER_DEFINED for other added tokens, merges
      as "a b", pre = PRE), no tensors.
  check_merge_hf_tokenizer_gguf.py compare TOKENIZER.json EXPORTED_DIR
      the `tokenizers` library encodes a corpus (tests/fixtures/sample-export.csv's lines and
      hard texts) with the original tokenizer.json and with EXPORTED_DIR/tokenizer.json, no
      special tokens added, special-token text allowed: the ids must be equal; exit 1 if not.
"""
import json
import sys

import gguf
from tokenizers import Tokenizer


def make(src, pre, out):
    t = json.load(open(src, encoding="utf-8"))
    vocab = dict(t["model"]["vocab"])
    added = {a["id"]: a for a in t.get("added_tokens", [])}
    n = max(list(vocab.values()) + list(added)) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    types = [gguf.TokenType.UNUSED] * n
    for s, i in vocab.items():
        tokens[i], types[i] = s, gguf.TokenType.NORMAL
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]]
    w = gguf.GGUFWriter(out, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def compare(src, exported):
    a = Tokenizer.from_file(src)
    b = Tokenizer.from_file(f"{exported}/tokenizer.json")
    texts = ["oi, tudo bem?", "  dois  espaços\n\n e linhas\r\n", "12345 67.89 1,000,000 ٣٤٥",
             "emoji 🙂🙂 e acentuação: ção, über, é (e\u0301)", "it's we're THEY'LL I'd", "\t\ttabs\tand   x  ",
             "日本語のテキスト", "def f(x):\n    return x**2  # ok", "kkkkkkkkkkkkkkkkkk", "a", "",
             "<|im_start|>user\nhi<|im_end|>", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"]
    texts += open("tests/fixtures/sample-export.csv", encoding="utf-8").read().split("\n")[:400]
    bad = 0
    for s in texts:
        x, y = a.encode(s, add_special_tokens=False).ids, b.encode(s, add_special_tokens=False).ids
        if x != y:
            bad += 1
            if bad <= 5:
                print(f"differs: {s!r}\n  original {x[:20]}\n  exported {y[:20]}")
    print(f"{src}: {len(texts) - bad} of {len(texts)} texts encode alike through the GGUF round trip")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0)
    sys.exit(compare(sys.argv[2], sys.argv[3]))
