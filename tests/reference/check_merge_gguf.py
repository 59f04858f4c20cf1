#!/usr/bin/env python3
"""Reference checks of `doppel merge --format gguf` with the gguf package and llama.cpp.

  check_merge_gguf.py quants F32.gguf OTHER.gguf
      every tensor of OTHER.gguf (written by doppel from the same merge as F32.gguf) equals
      gguf-py's own quantization (gguf.quants.quantize: ggml's reference Q8_0 / Q4_0, numpy's
      float16 rounding) of the F32 file's tensor, byte for byte; exit 1 on any difference.
  check_merge_gguf.py chat MODEL.gguf N USER
      llama.cpp (llama-cpp-python) loads MODEL.gguf and answers the USER message greedily
      with N tokens at most through the GGUF's own chat template (llama-cpp-python renders
      tokenizer.chat_template with jinja2 and stops on the model's end-of-generation tokens);
      prints the reply as it is.
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


def chat(path: str, n: int, user: str) -> int:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False, seed=1)
    r = llm.create_chat_completion(messages=[{"role": "user", "content": user}],
                                   temperature=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                   repeat_penalty=1.0, max_tokens=n)
    sys.stdout.write(r["choices"][0]["message"]["content"])
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "quants":
        sys.exit(quants(sys.argv[2], sys.argv[3]))
    sys.exit(chat(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
