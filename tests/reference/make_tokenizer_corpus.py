#!/usr/bin/env python3
"""Builds the tokenizer corpus fixture: a varied, seeded corpus (Portuguese chat slang, emoji
with ZWJ and skin tones, CJK, RTL, code, numbers, whitespace runs, CRLF, NFD accents, special
token text) encoded by Hugging Face `tokenizers` (pip install tokenizers) with the real
tokenizer.json files of ../shared/tokenizers/{qwen3,llama3}.

Writes tests/fixtures/tokenizer-corpus.jsonl.zst: one line per text,
{"text": ..., "qwen3": [ids], "llama3": [ids]} (no special tokens added, special-token text in
the input recognized: tokenizers' encode(text, add_special_tokens=False)).
With --smollm2 GGUF_DIR (a directory holding SmolLM2's .gguf, see .ci/fetch-smollm2) it also adds
"smollm2" ids: the GGUF's vocabulary and merges as read by transformers' GGUF tokenizer loader
(pip install transformers gguf) with SmolLM2's pre-tokenizer (Digits, then ByteLevel), and
"smollm2_gpt2" ids: the same with transformers' GGUF pipeline unchanged (ByteLevel only).

It also writes tests/fixtures/chat-render.json: conversations rendered by each model's own
chat_template (tokenizer_config.json, run with jinja2 as transformers does) and those strings'
ids from `tokenizers` (special-token text recognized). Conversations end with a user message
and add_generation_prompt, where Qwen3's template is plain ChatML (it inserts an empty
<think> block only into a final assistant turn).

Usage: python3 tests/reference/make_tokenizer_corpus.py [--shared ../shared] [--smollm2 DIR]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SLANG = ["kkkkkkk", "KKKKKK", "kkkk", "vc", "vcs", "tmj", "blz", "mano", "pq", "né", "tá", "q",
         "slk", "pdp", "n sei", "tlgd", "sla", "mds", "puts", "vlw", "oq", "msm", "hj", "amanhã",
         "ñ", "ctz", "fds", "aff", "ahahaha", "rsrs", "eita", "bora", "partiu", "cadê", "você",
         "ação", "coração", "pão", "São Paulo", "informação", "já", "até", "porém", "ninguém",
         "ÉÉÉ", "Ñ", "çç", "o julio lancelotti", "falso profeta", "que isso", "nossa senhora"]
EMOJI = ["😂", "😂😂😂", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🧑🏿‍💻", "🇧🇷", "🇵🇹🇺🇸", "❤️", "❤",
         "🔥🔥", "👀", "🙏🏻", "🤡", "💀", "✨", "🫠", "👩🏽‍🚀", "🐈‍⬛", "☕", "😭😭", "🥲", "🤌🏼"]
CJK = ["中文分词测试", "我喜欢编程", "日本語のテキスト", "ひらがなカタカナ", "한국어 텍스트", "안녕하세요",
       "東京タワー", "漢字", "ｆｕｌｌｗｉｄｔｈ", "。、「」"]
RTL = ["مرحبا بالعالم", "שלום עולם", "السلام عليكم ورحمة الله", "עברית123", "العربية ٣٤٥"]
CODE = ["int main(void) {\n    return 0;\n}", "def f(x):\n\treturn x ** 2  # square",
        "for (size_t i = 0; i < n; i++) a[i] += b[i];", "if x != None and y >= 3:\n        pass",
        "const s = `hello ${name}`;", "SELECT * FROM users WHERE id = 42;", "#include <stdio.h>",
        "{\"key\": [1, 2, 3], \"ok\": true}", "x=>x*2", "std::vector<int> v{1,2,3};",
        "    indented line\n        more", "$ ls -la | grep .c", "a&&b||c", "<div class=\"x\">"]
NUMBERS = ["1234567890", "3.14159", "1,000,000", "+55 (11) 98765-4321", "2024-01-31",
           "12:34:56", "R$ 1.234,56", "0x1F", "1e-9", "٣٤٥", "１２３", "x²", "½", "Ⅻ", "007",
           "99999999999999", "10%", "v1.2.3"]
WHITESPACE = ["  ", "   ", "\t", "\t\t", " \t ", "\n\n", "\n \n", "  \n", "\u00a0", "\u3000",
              "\u200b", "\u2028", "\r\n", "\r\n\r\n", "\r", " \r\n ", "\u2003", "\u0085", "\x0b",
              "\x0c", "\u180e", "  \u180e's", "\u1680\u180e \u2000", "\x1c\x1d\x1e\x1f"]
ENGLISH = ["Hello, my dog is cute", "I'm sure you'll like it", "DON'T SHOUT", "she's", "They've",
           "it’s curly", "rock'n'roll", "U.S.A.", "e-mail", "well...", "WHAT?!", "o'clock",
           "ſ's", "'S 'T 'RE 'VE 'M 'LL 'D"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
           "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|im_", "<|", "|>", "<<|im_end|>>", "<|reserved_special_token_5|>"]


def nfd(s):
    return unicodedata.normalize("NFD", s)


def corpus(seed=1234):
    rng = random.Random(seed)
    lines = []
    groups = [SLANG, EMOJI, CJK, RTL, CODE, NUMBERS, WHITESPACE, ENGLISH, SPECIAL]
    for g in groups:  # every item alone
        lines.extend(g)
    lines.extend(nfd(s) for s in SLANG if nfd(s) != s)  # NFD accents
    lines.extend(nfd(s) for s in CJK if nfd(s) != s)  # decomposed Hangul / kana
    # chat-like lines: random mixtures
    seps = [" ", " ", " ", "", "\n", "  ", "\r\n", ", ", "! ", "? ", ". ", "\t"]
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(1, 12)):
            g = rng.choice(groups) if rng.random() < 0.4 else SLANG
            w = rng.choice(g)
            if rng.random() < 0.1:
                w = nfd(w)
            if rng.random() < 0.1:
                w = w.upper()
            parts.append(w)
            parts.append(rng.choice(seps))
        lines.append("".join(parts).rstrip(" ") if rng.random() < 0.7 else "".join(parts))
    # long runs and edge cases
    lines += ["k" * 3000, "a" * 500 + "b", " " * 300 + "x", "\n" * 50, "1" * 100, "😂" * 200,
              "é" * 100, nfd("é" * 100), "".join(chr(c) for c in range(0x20, 0x7f)),
              "".join(chr(c) for c in range(0xa0, 0x180)), "\x01\x02 ctrl \x1f\x7f"]
    out, seen = [], set()
    for s in lines:
        if s and s not in seen:
            seen.add(s)
            out.append(s)
    return out


CONVERSATIONS = [
    [{"role": "user", "content": "oi"}],
    [{"role": "system", "content": "Você é o kaiaku. Responda curto."},
     {"role": "user", "content": "[eutefalei]: ele n gosta do julio"},
     {"role": "assistant", "content": "pior né"},
     {"role": "user", "content": "[eutefalei]: kkkkkkk\nmano q isso 😂"}],
    [{"role": "user", "content": "  espaços antes e depois  "},
     {"role": "assistant", "content": "\ncomeça com newline\n\n"},
     {"role": "user", "content": "tab\tcrlf\r\nfim"},
     {"role": "assistant", "content": " 👍🏽 vlw\n"},
     {"role": "user", "content": "e\u0301 NFD, 中文, مرحبا, 1234567"}],
]


def chat_fixture(shared, path):
    import jinja2.sandbox
    from tokenizers import Tokenizer
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **k: json.dumps(x, ensure_ascii=False)
    out = []
    for conv in CONVERSATIONS:
        row = {"messages": conv}
        for name in ("qwen3", "llama3"):
            d = os.path.join(shared, "tokenizers", name)
            cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            text = env.from_string(cfg["chat_template"]).render(
                messages=conv, add_generation_prompt=True, bos_token=cfg.get("bos_token") or "",
                eos_token=cfg.get("eos_token") or "")
            row[name] = {"text": text, "ids": tok.encode(text, add_special_tokens=False).ids}
        out.append(row)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{path}: {len(out)} conversations", file=sys.stderr)


def toy_fixture(fixtures, texts):
    """A small tokenizer.json exercising the generic pipeline (NFC, Digits, a String-free Split,
    ByteLevel with add_prefix_space and its regex, an added token) and HF's ids for texts."""
    from tokenizers import Tokenizer
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): b for b, c in zip(bs, cs)}
    merges = ["h e", "Ġ t", "Ġt he", "k k", "kk kk", "Ã ©", "Ġ Ġ"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    j = {"version": "1.0", "truncation": None, "padding": None,
         "added_tokens": [{"id": len(vocab), "content": "<|im_end|>", "single_word": False,
                           "lstrip": False, "rstrip": False, "normalized": False,
                           "special": True}],
         "normalizer": {"type": "NFC"},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
             {"type": "Digits", "individual_digits": False},
             {"type": "Split", "pattern": {"Regex": "\\s+|\\S+"}, "behavior": "Isolated",
              "invert": False},
             {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
              "use_regex": True}]},
         "post_processor": None,
         "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                     "use_regex": True},
         "model": {"type": "BPE", "dropout": None, "unk_token": None,
                   "continuing_subword_prefix": None, "end_of_word_suffix": None,
                   "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                   "vocab": vocab, "merges": merges}}
    path = os.path.join(fixtures, "toy-tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    tok = Tokenizer.from_file(path)
    with open(os.path.join(fixtures, "toy-tokenizer-ids.jsonl"), "w", encoding="utf-8") as f:
        for s in texts:
            f.write(json.dumps({"text": s, "ids": tok.encode(s, add_special_tokens=False).ids},
                               ensure_ascii=False) + "\n")
    print(f"{path}: {len(texts)} texts", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--smollm2", help="directory holding SmolLM2's .gguf")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures",
                                                  "tokenizer-corpus.jsonl.zst"))
    a = ap.parse_args()
    from tokenizers import Tokenizer
    import tokenizers
    toks = {}
    for name in ("qwen3", "llama3"):
        toks[name] = Tokenizer.from_file(os.path.join(a.shared, "tokenizers", name,
                                                      "tokenizer.json")).encode
    if a.smollm2:
        # transformers reads the GGUF's vocab and merges; its GGUF converter sets the
        # pre-tokenizer to ByteLevel alone, while SmolLM2's own tokenizer.json (and llama.cpp's
        # "smollm" pre-tokenizer) split digits first: the reference restores that pipeline.
        from tokenizers import pre_tokenizers
        from transformers import AutoTokenizer
        gguf = sorted(f for f in os.listdir(a.smollm2) if f.endswith(".gguf"))[0]
        bt = AutoTokenizer.from_pretrained(a.smollm2, gguf_file=gguf).backend_tokenizer
        plain = Tokenizer.from_str(bt.to_str())
        bt.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        toks["smollm2"] = bt.encode
        toks["smollm2_gpt2"] = plain.encode  # the same vocab with pre-tokenizer "gpt2"
        diff = sum(plain.encode(s, add_special_tokens=False).ids !=
                   bt.encode(s, add_special_tokens=False).ids for s in corpus())
        print(f"smollm2: transformers' GGUF pipeline (no Digits step) differs on {diff} texts",
              file=sys.stderr)
    chat_fixture(a.shared, os.path.join(os.path.dirname(a.out), "chat-render.json"))
    texts = corpus()
    toy_fixture(os.path.dirname(a.out), texts[:300])
    rows = []
    for s in texts:
        row = {"text": s}
        for name, enc in toks.items():
            row[name] = enc(s, add_special_tokens=False).ids
        rows.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    data = ("\n".join(rows) + "\n").encode("utf-8")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    subprocess.run(["zstd", "-19", "-q", "-f", "-o", a.out], input=data, check=True)
    print(f"{a.out}: {len(rows)} texts, {len(data)} bytes of JSON, tokenizers "
          f"{tokenizers.__version__}, columns {list(toks)}", file=sys.stderr)


if __name__ == "__main__":
    main()
