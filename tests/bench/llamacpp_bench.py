#!/usr/bin/env python3
"""llama.cpp's side of bench_forward: prefill and decode tokens/s and peak RSS for one GGUF, via
llama-cpp-python (pip install llama-cpp-python). Prints one JSON line.
usage: llamacpp_bench.py MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS"""
import json
import resource
import sys
import time


def main():
    path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    try:
        from llama_cpp import Llama
    except ImportError as e:
        print(json.dumps({"error": f"llama-cpp-python not importable: {e}"}))
        return
    llm = Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=n_prompt, verbose=False)
    # the same token ids as doppel's bench: a fixed arithmetic sequence of ordinary tokens
    prompt = [(1000 + 37 * i) % 40000 + 100 for i in range(n_prompt)]
    best_p, best_d = 0.0, 0.0
    for _ in range(2):  # best of two, as doppel's side does
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        tok = 1234
        for _ in range(n_gen):
            llm.eval([tok])
            tok = (tok * 7 + 13) % 40000 + 100  # fixed ids: decoding speed, not sampling
        t2 = time.perf_counter()
        best_p = max(best_p, n_prompt / (t1 - t0))
        best_d = max(best_d, n_gen / (t2 - t1))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import llama_cpp
    print(json.dumps({"prefill_tps": best_p, "decode_tps": best_d, "peak_rss": rss,
                      "version": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
