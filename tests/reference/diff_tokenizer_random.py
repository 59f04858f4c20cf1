#!/usr/bin/env python3
"""Differential check, run by hand: random strings over a wide Unicode mix (every general
category, combining marks, all whitespace, digits of many scripts, emoji, special-token text)
encoded by `doppel tokenize --jsonl` and by HF `tokenizers`; prints every mismatch.

Usage: diff_tokenizer_random.py DOPPEL_BIN TOKENIZER_DIR [--n 20000] [--seed 1]
                                [--doppel-model PATH.gguf]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import unicodedata

POOL_RANGES = [(0x20, 0x7f), (0x80, 0x250), (0x300, 0x370), (0x370, 0x530), (0x590, 0x700),
               (0x900, 0x980), (0xe00, 0xe80), (0x1100, 0x1200), (0x1680, 0x1690),
               (0x1800, 0x1810), (0x2000, 0x2070), (0x20a0, 0x20c0), (0x2150, 0x2190),
               (0x2460, 0x2500), (0x3000, 0x3100), (0x4e00, 0x4e40), (0xac00, 0xac40),
               (0xfe00, 0xfe10), (0xff00, 0xff70), (0x1f300, 0x1f650), (0x1f900, 0x1f9ff),
               (0x1d400, 0x1d420), (0x10000, 0x10040), (0xe0000, 0xe0080), (0x1f1e6, 0x1f200)]
SPECIAL = ["\r\n", "\n", "\r", "\t", "  ", "'s", "'S", "'ll", "’s", "<|im_end|>", "<think>",
           "<|eot_id|>", "<|begin_of_text|>", "\u200d", "\ufe0f", "\u00a0", "\u0085", "\u2028",
           "\u3000", "kkkk", "123456", "٣٤٥", "x²", "½"]


def rand_text(rng):
    parts = []
    for _ in range(rng.randint(1, 30)):
        r = rng.random()
        if r < 0.2:
            parts.append(rng.choice(SPECIAL))
        else:
            lo, hi = rng.choice(POOL_RANGES)
            c = chr(rng.randrange(lo, hi))
            if unicodedata.category(c) in ("Cs",):
                continue
            parts.append(c)
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("tokdir")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--doppel-model", help="what doppel loads (e.g. a .gguf); default TOKENIZER_DIR")
    a = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.tokdir, "tokenizer.json"))
    rng = random.Random(a.seed)
    texts = [rand_text(rng) for _ in range(a.n)]
    texts = [t for t in texts if "\x00" not in t]
    inp = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    out = subprocess.run([a.bin, "tokenize", "--model", a.doppel_model or a.tokdir, "--jsonl"], input=inp.encode(),
                         capture_output=True, check=True).stdout.decode().split("\n")
    bad = 0
    for t, line in zip(texts, out):
        got = json.loads(line)["ids"]
        want = tok.encode(t, add_special_tokens=False).ids
        if got != want:
            bad += 1
            if bad <= 10:
                print(repr(t), "\n  hf    ", want, "\n  doppel", got)
    print(f"{a.tokdir}: {bad} of {len(texts)} differ", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
