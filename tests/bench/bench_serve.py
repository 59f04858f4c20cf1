"""Benchmark (not a test): aggregate generated tokens/s of an OpenAI-compatible server with 1, 4
and 8 concurrent streams, time to first token and p50/p99 per-token latency, from the SSE chunk
arrival times (Python's standard library only). Point it at doppel serve or at llama-server
(`--parallel N`) on the same GGUF and thread count, in the same session, and compare.

usage: bench_serve.py PORT MODEL [--tokens 64] [--rounds 2] [--streams 1,4,8] [--pid PID]

--pid: the server's process; its CPU time (all threads, from /proc) per generated token is
printed too, which a shared machine's load disturbs less than wall-clock tokens/s."""
import argparse
import http.client
import json
import os
import statistics
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("model")
ap.add_argument("--tokens", type=int, default=64)
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--streams", default="1,4,8")
ap.add_argument("--pid", type=int, default=0)
a = ap.parse_args()


def one(k, out):
    body = json.dumps({"model": a.model, "stream": True, "max_tokens": a.tokens, "temperature": 0.8, "seed": k,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "name": "P%d" % k, "content": "tell me about your day %d" % k}]})
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
    t0 = time.time()
    c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    times, buf, used = [], b"", None
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            if ev.startswith(b"data: {"):
                j = json.loads(ev[6:])
                if j.get("choices") and j["choices"][0]["delta"].get("content"):
                    times.append(time.time())
                if j.get("usage"):
                    used = j["usage"]["completion_tokens"]
    c.close()
    # a server may send several tokens in one chunk when the client reads slower than it
    # decodes: tokens come from the usage chunk, latencies from the chunks' arrival
    out.append((t0, times, used if used is not None else len(times)))


def cpu_seconds():
    """the server's user + system CPU time (0 without --pid)"""
    if not a.pid:
        return 0.0
    with open("/proc/%d/stat" % a.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics():
    """doppel serve's scheduler counters from /metrics (empty for another server)"""
    try:
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
    except (OSError, http.client.HTTPException):
        return {}
    m = {}
    for line in text.splitlines():
        if line.startswith("doppel_"):
            k, v = line.split()
            m[k] = float(v)
    return m


for n in [int(x) for x in a.streams.split(",")]:
    results = []
    m0 = metrics()
    c0 = cpu_seconds()
    t_start = time.time()
    for rnd in range(a.rounds):
        th = [threading.Thread(target=one, args=(rnd * n + i, results)) for i in range(n)]
        for t in th:
            t.start()
        for t in th:
            t.join()
    wall = time.time() - t_start
    cpu = cpu_seconds() - c0
    tokens = sum(n for _, _, n in results)
    chunks = sum(len(t) for _, t, _ in results)
    ttft = [t[0] - t0 for t0, t, _ in results if t]
    # per token: a gap between chunks over the tokens a chunk of that request carries on average
    gaps = [(b - a_) * len(t) / max(n, 1) for _, t, n in results for a_, b in zip(t, t[1:])]
    gaps.sort()
    p = lambda q: gaps[min(len(gaps) - 1, int(q * len(gaps)))] * 1000 if gaps else float("nan")
    print("%d streams: %5.1f tok/s aggregate (%d tokens in %d chunks, %.1f s), TTFT median %.0f ms, per token p50 %.0f ms p99 %.0f ms"
          % (n, tokens / wall, tokens, chunks, wall, statistics.median(ttft) * 1000 if ttft else float("nan"), p(0.5), p(0.99))
          + (", server CPU %.1f ms/token" % (cpu / tokens * 1e3) if a.pid and tokens else ""),
          flush=True)
    m1 = metrics()
    if m0 and m1 and m1.get("doppel_decode_steps_total", 0) > m0.get("doppel_decode_steps_total", 0):
        d = {k: m1[k] - m0.get(k, 0) for k in m1}
        steps = d["doppel_decode_steps_total"]
        fwd, smp = d["doppel_tokens_predicted_seconds_total"], d["doppel_sample_seconds_total"]
        pre, busy = d["doppel_prompt_seconds_total"], d["doppel_busy_seconds_total"]
        # per decode step: the forward, sampling + publishing, the loop's own rest; prompts apart
        print("   doppel scheduler: %d steps of %.2f rows; per step forward %.2f ms, sampling %.2f ms, "
              "rest of the loop %.2f ms; prompts %.0f ms in all; idle %.0f%% of the wall time"
              % (steps, d["doppel_decode_rows_total"] / steps, fwd / steps * 1e3, smp / steps * 1e3,
                 (busy - fwd - smp - pre) / steps * 1e3, pre * 1e3, max(0.0, 100 * (1 - busy / wall))),
              flush=True)
