#!/usr/bin/env bash
# Benchmark (not a test): doppel serve, doppel serve --decode $DECODE (int8 unless set) and
# llama.cpp's llama-server in alternating rounds on the same GGUF and thread count (bench_serve.py against each in turn),
# then medians, ranges and the per-round ratios to llama-server: the README's serve table.
# llama-server is built from llama.cpp's source, not committed (~20 min on 2 cores), e.g. from
# llama-cpp-python's sdist (`pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36`):
#   cmake -S llama_cpp_python-0.3.36/vendor/llama.cpp -B build-ls -DCMAKE_BUILD_TYPE=Release \
#     -DGGML_NATIVE=OFF -DGGML_AVX512=ON ... (the flags .ci/deps names from /proc/cpuinfo) \
#     -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON
#   cmake --build build-ls -j2 --target llama-server   # then build-ls/bin/llama-server
# usage: tests/bench/bench_serve_rounds.sh BUILD_DIR LLAMA_SERVER [ROUNDS=5] [OUT_DIR]
#   env: MODEL (default: the SmolLM2 GGUF of .ci/fetch-smollm2), THREADS=2, PARALLEL=8, TOKENS=128,
#        DECODE=int8 (the second doppel's --decode), FIRST_DECODE (the first doppel's, default none)
set -u
cd "$(dirname "$0")/../.."
build=${1:?usage: $0 BUILD_DIR LLAMA_SERVER [ROUNDS] [OUT_DIR]}
llama=${2:?usage: $0 BUILD_DIR LLAMA_SERVER [ROUNDS] [OUT_DIR]}
rounds=${3:-5}
out=${4:-$(mktemp -d /tmp/doppel-bench-serve.XXXXXX)}
model=${MODEL:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
threads=${THREADS:-2} parallel=${PARALLEL:-8} tokens=${TOKENS:-128} decode=${DECODE:-int8}
first=()
[ -n "${FIRST_DECODE:-}" ] && first=(--decode "$FIRST_DECODE")
[ -f "$model" ] || { echo "no $model: run .ci/fetch-smollm2" >&2; exit 1; }
[ -x "$llama" ] || { echo "no llama-server at $llama" >&2; exit 1; }
mkdir -p "$out"
port=${PORT:-8391}

up() { # waits for /health (200) of the server on $port
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

for r in $(seq "$rounds"); do
  for who in doppel "doppel-$decode" llama-server; do
    case $who in
      doppel*)
        extra=("${first[@]}") && [ "$who" != doppel ] && extra=(--decode "$decode")
        OMP_NUM_THREADS=$threads "$build/doppel" serve --model "$model" --parallel "$parallel" \
          --port "$port" --quiet "${extra[@]}" >"$out/$who.log" 2>&1 &
        name=$(basename "$model" .gguf) ;;
      llama-server)
        "$llama" -m "$model" -t "$threads" -tb "$threads" --parallel "$parallel" -c 16384 \
          --port "$port" >"$out/$who.log" 2>&1 &
        name=llama ;;
    esac
    pid=$!
    up $pid || { echo "$who did not come up: $out/$who.log" >&2; kill $pid 2>/dev/null; exit 1; }
    echo "round $r: $who"
    python3 tests/bench/bench_serve.py "$port" "$name" --tokens "$tokens" --streams 1,4,8 \
      --rounds 1 --pid $pid >"$out/$who-$r.txt" 2>&1 || { echo "bench_serve.py failed: $out/$who-$r.txt" >&2; exit 1; }
    kill -INT $pid
    wait $pid
  done
done

python3 - "$out" <<'EOF'
import glob, re, statistics as st, sys
res = {}
for f in sorted(glob.glob(sys.argv[1] + "/*-[0-9]*.txt")):
    who = f.split("/")[-1].rsplit("-", 1)[0]
    for line in open(f):
        m = re.match(r"\s*(\d+) streams:\s+([\d.]+) tok/s.*TTFT median (\d+) ms, per token p50 (\d+) ms "
                     r"p99 (\d+) ms(?:, server CPU ([\d.]+))?", line)
        if m:
            res.setdefault((who, int(m[1])), []).append([float(m[2]), int(m[3]), int(m[4]), int(m[5]),
                                                        float(m[6] or 0)])
print("medians of %d rounds (range); CPU = the server's CPU time per generated token" %
      len(res.get(("doppel", 1), [])))
for k in sorted(res):
    v = res[k]
    t = [x[0] for x in v]
    print("  %-15s %d streams: %6.1f tok/s (%.1f-%.1f), TTFT %d ms, p50 %d / p99 %d ms/token, CPU %.1f ms/token"
          % (k[0], k[1], st.median(t), min(t), max(t), st.median(x[1] for x in v),
             st.median(x[2] for x in v), st.median(x[3] for x in v), st.median(x[4] for x in v)))
for s in sorted({k[1] for k in res}):
    for who in sorted({k[0] for k in res if k[0].startswith("doppel")}):
        a, b = res.get((who, s)), res.get(("llama-server", s))
        if not a or not b:
            continue
        r = [x[0] / y[0] for x, y in zip(a, b)]
        print("  %-15s / llama-server, %d streams: median of the per-round ratios %.2fx (%.2f-%.2f), "
              "%d of %d rounds >= 2x" % (who, s, st.median(r), min(r), max(r), sum(x >= 2 for x in r), len(r)))
EOF
echo "raw outputs: $out"
