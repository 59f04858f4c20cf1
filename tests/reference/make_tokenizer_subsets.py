#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/{qwen3,llama3}.tokenizer.json.zst: the real tokenizer.json of
../shared/tokenizers/{qwen3,llama3} cut down to what the committed corpus fixture
(tests/fixtures/tokenizer-corpus.jsonl.zst) and test_tokenizer_ref's long runs need, so that
test_tokenizer_ref checks the corpus's Hugging Face ids in every clone, not only beside ../shared.

What is kept: the normalizer, pre-tokenizer, decoder and added tokens unchanged (the added
tokens also entered in the vocab with their ids, see below); the 256 byte tokens; every token of the corpus's ids; and, closed downwards, every merge (a, b) whose result
a+b is a kept token (with a and b kept too), in the original order and with the original ids.
BPE applies, at each step, the earliest-ranked merge present, and every merge applied while
encoding a text builds a part of one of its final tokens, so it is among those kept; removing
merges that are never applied leaves every step's choice unchanged. That argument is checked,
not trusted: Hugging Face `tokenizers` must give the cut-down file exactly the fixture's ids on
every corpus line (and the full file's ids on the long runs), or the script fails.

Usage: pip install tokenizers (and the zstd command); python3 tests/reference/make_tokenizer_subsets.py
       [--shared ../shared]
"""
import argparse
import json
import os
import subprocess

import tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
LONG_RUNS = [c * 100000 for c in "ka \n1"]  # test_tokenizer_ref's check_long_runs


def bytelevel_alphabet():
    """GPT-2's byte -> character table (the 256 base tokens of a byte-level vocabulary)."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    lines = subprocess.run(["zstd", "-dc", os.path.join(FIXTURES, "tokenizer-corpus.jsonl.zst")],
                           check=True, capture_output=True).stdout.decode("utf-8").split("\n")
    corpus = [json.loads(l) for l in lines if l.strip()]
    os.makedirs(os.path.join(FIXTURES, "tokenizers"), exist_ok=True)
    for name in ["qwen3", "llama3"]:
        path = os.path.join(args.shared, "tokenizers", name, "tokenizer.json")
        full = json.load(open(path, encoding="utf-8"))
        full_tok = tokenizers.Tokenizer.from_file(path)
        model = full["model"]
        id_to_token = {i: t for t, i in model["vocab"].items()}
        kept = set(bytelevel_alphabet())
        ids = [i for row in corpus for i in row[name]]
        ids += [i for s in LONG_RUNS for i in full_tok.encode(s, add_special_tokens=False).ids]
        kept.update(id_to_token[i] for i in ids if i in id_to_token)
        pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        by_result = {}
        for k, (a, b) in enumerate(pairs):
            by_result.setdefault(a + b, []).append(k)
        todo, keep_merge = list(kept), set()
        while todo:
            for k in by_result.get(todo.pop(), []):
                if k in keep_merge:
                    continue
                keep_merge.add(k)
                for part in pairs[k]:
                    if part not in kept:
                        kept.add(part)
                        todo.append(part)
        sub = dict(full)
        sub["model"] = dict(model)
        sub["model"]["vocab"] = {t: i for t, i in model["vocab"].items() if t in kept}
        # tokenizers gives an added token missing from the vocab the id len(vocab) + k, not its
        # own: with gaps in the ids that would renumber them, so they go into the vocab too
        sub["model"]["vocab"].update({a["content"]: a["id"] for a in full["added_tokens"]})
        sub["model"]["merges"] = [model["merges"][k] for k in sorted(keep_merge)]
        text = json.dumps(sub, ensure_ascii=False)
        sub_tok = tokenizers.Tokenizer.from_str(text)
        bad = [r["text"] for r in corpus
               if sub_tok.encode(r["text"], add_special_tokens=False).ids != r[name]]
        bad += [s[:1] for s in LONG_RUNS if sub_tok.encode(s, add_special_tokens=False).ids
                != full_tok.encode(s, add_special_tokens=False).ids]
        assert not bad, f"{name}: the cut-down tokenizer differs on {len(bad)} texts: {bad[:3]!r}"
        out = os.path.join(FIXTURES, "tokenizers", f"{name}.tokenizer.json.zst")
        subprocess.run(["zstd", "-19", "-q", "-f", "-o", out], input=text.encode("utf-8"),
                       check=True)
        print(f"{name}: {len(sub['model']['vocab'])} of {len(model['vocab'])} tokens, "
              f"{len(keep_merge)} of {len(pairs)} merges; {len(corpus)} corpus lines and "
              f"{len(LONG_RUNS)} long runs encode identically (tokenizers {tokenizers.__version__}); "
              f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
