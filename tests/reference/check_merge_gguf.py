#!/usr/bin/env python3
"""Reference checks of `doppel merge --format gguf` with the gguf package and llama.cpp.

  check_merge_gguf.py quants F32.gguf OTHER.gguf [OTHER.gguf...]
      every tensor of each OTHER.gguf (written by doppel from the same merge as F32.gguf) equals
      gguf-py's own quantization (gguf.quants.quantize: ggml's reference Q8_0 / Q4_0, numpy's
      float16 rounding) of the F32 file's tensor, byte for byte; exit 1 on any difference.
  check_merge_gguf.py chat MODEL.gguf N USER
  check_merge_gguf.py chat MODEL.gguf N --out PREFIX USER...
      llama.cpp (llama-cpp-python) loads MODEL.gguf and answers the USER message greedily
      with N tokens at most through the GGUF's own chat template (llama-cpp-python renders
      tokenizer.chat_template with jinja2 and stops on the model's end-of-generation tokens);
      prints the reply as it is, or with --out writes the reply to the i-th USER to PREFIX-i
      (one load for all; each reply computed from an empty KV cache, as by a fresh load).
"""
import sys

import numpy as np


def quants(f32_path: str, other_path: str) -> int:
    import gguf

    ref = {t.name: t for t in gguf.GGUFReader(f32_path).tensors}
    bad = checked = 0
    for t in gguf.GGUFReader(other_path).tensors:
        r = ref[t.name]
        x = np.asarray(r.data, dtype=np.float32).reshape(-1, int(r.shape[0]))
        qt = t.tensor_type
        want = gguf.quants.quantize(x, qt)
        same = np.asarray(want).tobytes() == np.asarray(t.data).tobytes()
        checked += 1
        if not same:
            bad += 1
            print(f"{t.name} ({qt.name}): differs from gguf.quants.quantize")
    print(f"{other_path}: {checked - bad} of {checked} tensors equal gguf-py's quantization")
    return 1 if bad or not checked else 0


def chat(path: str, n: int, users: list, out: str = None) -> int:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False, seed=1)
    for i, user in enumerate(users):
        # n_tokens = 0: no prefix of the previous prompt is reused, the whole prompt is decoded
        llm.reset()
        r = llm.create_chat_completion(messages=[{"role": "user", "content": user}],
                                       temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                       repeat_penalty=1.0, max_tokens=n)
        reply = r["choices"][0]["message"]["content"]
        if out is None:
            sys.stdout.write(reply)
        else:
            with open(f"{out}-{i}", "w", encoding="utf-8") as f:
                f.write(reply)
    return 0


def chat_main(argv: list) -> int:
    """argv: MODEL N USER, or MODEL N --out PREFIX USER..."""
    if argv[2] == "--out":
        return chat(argv[0], int(argv[1]), argv[4:], argv[3])
    if len(argv) != 3:
        sys.exit("chat: one USER, or --out PREFIX before several")
    return chat(argv[0], int(argv[1]), [argv[2]])


if __name__ == "__main__":
    if sys.argv[1] == "quants":
        sys.exit(max(quants(sys.argv[2], other) for other in sys.argv[3:]))
    sys.exit(chat_main(sys.argv[2:]))
