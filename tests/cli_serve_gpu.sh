#!/usr/bin/env bash
# doppel serve --device emu (the CUDA kernels and cuBLAS calls of the GPU path, run on the CPU):
# every slot's cache and both personas' adapters in one GPU forward. Three conversations (the
# base and two personas) at once decode in batched GPU steps, and each greedy reply equals
# `doppel chat --device emu --prompt` for the same conversation; three times, so later rounds
# continue from the slots' caches. Then SIGINT drains and exits 0.
set -u
bin=$1
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: no python3"; exit 77; }
tmp=$(mktemp -d /tmp/doppel-cli-serve-gpu.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fail=0
bad() { echo "FAIL: $*"; fail=1; }

"$bin" serve --model "$model" --device emu --decode int8 >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "CPU path" "$tmp/err" || bad "--device emu --decode int8: $(cat "$tmp/err")"
"$bin" serve --model "$model" --device tpu >/dev/null 2>&1; [ $? -eq 2 ] || bad "--device tpu: not exit 2"

. tests/serve/lib.sh
train_personas

# without a device (or a build without CUDA): --device cuda is refused, --device auto serves on
# the CPU and says so
if "$bin" info 2>/dev/null | grep -q "^CUDA device: *none"; then
  "$bin" serve --model "$model" --device cuda --port 0 >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q -E "no CUDA device|not compiled in" "$tmp/err" || bad "--device cuda without a device: $(cat "$tmp/err")"
  "$bin" serve --model "$model" --device auto --port 0 >/dev/null 2>"$tmp/auto" & apid=$!
  wait_ready "$tmp/auto" 300 $apid
  grep -q "no CUDA device.*serving on the CPU" "$tmp/auto" && grep -q "ready.*on the CPU" "$tmp/auto" || bad "--device auto: $(cat "$tmp/auto")"
  kill -INT $apid; wait $apid
fi

reply() { "$bin" chat --model "$model" --device emu "$@" --as Bob --prompt "hello there" --temperature 0 --max-tokens 12 --quiet 2>"$tmp/chat_err"; }
python3 - "$tmp/expect.json" "$(reply)" "$(reply --adapter "$tmp/mossy")" "$(reply --adapter "$tmp/fern")" <<'PY'
import json, sys
out, base, mossy, fern = sys.argv[1:]
json.dump({"tiny-llama": base, "mossy": mossy, "fern": fern}, open(out, "w"))
PY
grep -q '": ""' "$tmp/expect.json" && bad "doppel chat --device emu gave no reply: $(cat "$tmp/chat_err")"

"$bin" serve --model "$model" --device emu --adapter mossy="$tmp/mossy" --adapter fern="$tmp/fern" \
  --port 0 --max-context 256 --max-tokens 64 --parallel 3 >"$tmp/out" 2>"$tmp/log" &
pid=$!
wait_ready "$tmp/log" 300
grep -q "ready.*on the GPU emulator" "$tmp/log" || { echo "FAIL: the server did not start on the emulator: $(cat "$tmp/log")"; exit 1; }
grep -q "GPU forward: .* MiB of device memory: .*(3 sequences of 256 tokens)" "$tmp/log" || bad "no device memory line: $(cat "$tmp/log")"

timeout 300 python3 - "$port" "$tmp/expect.json" <<'PY' || bad "HTTP checks (above)"
import http.client, json, sys, threading
port, want = int(sys.argv[1]), json.load(open(sys.argv[2]))
failures = []

def post(model, out):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=240)
    body = {"model": model, "temperature": 0, "max_tokens": 12,
            "messages": [{"role": "user", "name": "Bob", "content": "hello there"}]}
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    out[model] = (r.status, json.loads(r.read()))

def metric(name):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1

for rnd in (1, 2, 3):  # later rounds reuse each slot's cached prompt
    got = {}
    ts = [threading.Thread(target=post, args=(m, got)) for m in want]
    for t in ts: t.start()
    for t in ts: t.join()
    for m, w in want.items():
        s, r = got.get(m, (None, None))
        text = r["choices"][0]["message"]["content"] if s == 200 else None
        if text != w:
            failures.append("round %d %s: status %s, %r; doppel chat --device emu says %r" % (rnd, m, s, text if s == 200 else r, w))
steps, rows = metric("doppel_batched_steps_total"), metric("doppel_batched_rows_total")
if steps < 1 or rows < 2 * steps:
    failures.append("no batched GPU decode step: %s steps, %s rows" % (steps, rows))
for f in failures: print("FAIL:", f)
print("batched steps %d, rows %d" % (steps, rows))
sys.exit(1 if failures else 0)
PY

kill -INT "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then bad "still running 10 s after SIGINT"; else
  wait "$pid"; rc=$?; pid=
  [ $rc -eq 0 ] || bad "exit $rc after SIGINT: $(tail -3 "$tmp/log")"
fi

[ $fail -eq 0 ] && echo "cli_serve_gpu: all checks passed"
exit $fail
