#!/usr/bin/env python3
"""The peer side of bench_tokenizer: makes the chat text file (when absent) and times Hugging
Face `tokenizers` (Rust, one thread: RAYON_NUM_THREADS=1) encoding it line by line with
encode_batch_fast (no Python call per line, no offsets). Prints `hf_mb_per_s X` and
`hf_tokens N` last.

Usage: hf_tokenizer_speed.py --tokenizer tokenizer.json --text FILE [--mb 20]
"""
import argparse
import os
import random
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

WORDS = ("eu vc mano kkkkkk né tá q isso que não sim pq porque hoje amanhã cara muito bom "
         "demais nossa sério mds bora jogar partida time ganhar perdi ontem aula prova "
         "trabalho chefe reunião pizza cerveja festa sábado domingo acho sei lá tipo assim "
         "então vamos ver depois falou valeu tmj blz the game is so good lol what are you doing "
         "I'm going home tonight don't know maybe later ok yes no thanks bro").split()
EMOJI = ["😂", "😭", "👍🏽", "🔥", "❤️", "👀", "💀", "🙏🏻", "👨‍👩‍👧", "✨"]


def make_text(path, mb):
    rng = random.Random(7)
    target = mb * 1000 * 1000
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        while n < target:
            k = rng.randint(1, 25)
            words = [rng.choice(WORDS) for _ in range(k)]
            if rng.random() < 0.3:
                words.insert(rng.randint(0, k), rng.choice(EMOJI))
            if rng.random() < 0.2:
                words.append(str(rng.randint(0, 100000)))
            if rng.random() < 0.3:
                words[0] = words[0].capitalize()
            line = " ".join(words) + rng.choice(["", "", "?", "!", "...", " kkkk", "!!"])
            if rng.random() < 0.1:
                line = "[" + rng.choice(["ana", "joão", "kaiaku", "bia"]) + "]: " + line
            f.write(line + "\n")
            n += len(line.encode("utf-8")) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--mb", type=int, default=20)
    a = ap.parse_args()
    if not os.path.exists(a.text):
        make_text(a.text, a.mb)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(a.tokenizer)
    lines = open(a.text, encoding="utf-8").read().split("\n")
    nbytes = sum(len(s.encode("utf-8")) for s in lines)
    # encode_batch_fast (no offsets) where this tokenizers version has it: the peer's best
    enc = getattr(tok, "encode_batch_fast", tok.encode_batch)
    enc(lines[:1000], add_special_tokens=False)  # warm up
    t0 = time.perf_counter()
    ntok = 0
    for i in range(0, len(lines), 10000):
        for e in enc(lines[i:i + 10000], add_special_tokens=False):
            ntok += len(e.ids)
    dt = time.perf_counter() - t0
    print(f"hf_mb_per_s {nbytes / dt / 1e6:.3f}")
    print(f"hf_tokens {ntok}")


if __name__ == "__main__":
    main()
