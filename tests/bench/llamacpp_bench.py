#!/usr/bin/env python3
"""llama.cpp's side of bench_forward: one measured prefill + decode (after a short warm-up) and
the peak RSS of this process, via llama-cpp-python (pip install llama-cpp-python). Prints one
JSON line. bench_forward runs it once per repetition, alternating with doppel's runs.
usage: llamacpp_bench.py MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS"""
import json
import resource
import sys
import time


def step_bytes(path):
    """What one llama.cpp decode step reads, from the GGUF's tensor sizes: every tensor once,
    except that the token embedding contributes one row when the file has its own output matrix
    (tied, it is the head and read whole); and the f16 KV cache per cached position (llama.cpp's
    default cache type). None when the gguf package is absent."""
    try:
        import gguf
    except ImportError:
        return None
    r = gguf.GGUFReader(path)
    names = {t.name for t in r.tensors}
    total = 0
    for t in r.tensors:
        if t.name == "token_embd.weight" and "output.weight" in names:
            total += int(t.n_bytes) // int(t.shape[-1])  # one row (shape is (cols, rows))
        else:
            total += int(t.n_bytes)

    def field(suffix):
        for k, f in r.fields.items():
            if k.endswith(suffix):
                return int(f.parts[-1][0])
        return None
    n_layer, n_embd = field(".block_count"), field(".embedding_length")
    n_head, n_kv = field(".attention.head_count"), field(".attention.head_count_kv")
    d_k = field(".attention.key_length") or n_embd // n_head
    d_v = field(".attention.value_length") or n_embd // n_head
    return total, n_layer * n_kv * (d_k + d_v) * 2


def main():
    path, threads, n_prompt, n_gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    try:
        from llama_cpp import Llama
        import llama_cpp
    except ImportError as e:
        sb = step_bytes(path)  # the bandwidth analysis still gets llama.cpp's bytes per token
        print(json.dumps({"error": f"llama-cpp-python not importable: {e}",
                          "step_bytes": sb[0] if sb else 0, "kv_bytes_per_pos": sb[1] if sb else 0}))
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
    sb = step_bytes(path)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"prefill_tps": n_prompt / (t1 - t0), "decode_tps": n_gen / (t2 - t1),
                      "prefill_cpu_tps": n_prompt / (c1 - c0),  # process CPU time, all threads
                      "decode_cpu_tps": n_gen / (c2 - c1), "peak_rss": rss,
                      "step_bytes": sb[0] if sb else 0, "kv_bytes_per_pos": sb[1] if sb else 0,
                      "version": llama_cpp.__version__}))


if __name__ == "__main__":
    main()
