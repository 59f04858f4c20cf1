#!/usr/bin/env python3
"""llama.cpp's side of bench_forward: one measured prefill + decode (after a short warm-up) and
the peak RSS of this process, via llama-cpp-python (pip install llama-cpp-python). Prints one
JSON line. bench_forward runs it once per repetition, alternating with doppel's runs.
usage: llamacpp_bench.py MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS"""
import json
import resource
import sys
import time


def main():
    path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    try:
        from llama_cpp import Llama
        import llama_cpp
    except ImportError as e:
        print(json.dumps({"error": f"llama-cpp-python not importable: {e}"}))
        return
    llm = Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=n_prompt, verbose=False)
    # the same token ids as doppel's bench: a fixed arithmetic sequence of ordinary tokens
    prompt = [(1000 + 37 * i) % 40000 + 100 for i in range(n_prompt)]
    llm.eval(prompt[:8])  # warm-up, as doppel's side does
    llm.eval([1234])
    llm.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    llm.eval(prompt)
    t1, c1 = time.perf_counter(), time.process_time()
    tok = 1234
    for _ in range(n_gen):
        llm.eval([tok])
        tok = (tok * 7 + 13) % 40000 + 100  # fixed ids: decoding speed, not sampling
    t2, c2 = time.perf_counter(), time.process_time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"prefill_tps": n_prompt / (t1 - t0), "decode_tps": n_gen / (t2 - t1),
                      "prefill_cpu_tps": n_prompt / (c1 - c0),  # process CPU time, all threads
                      "decode_cpu_tps": n_gen / (c2 - c1), "peak_rss": rss,
                      "version": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
