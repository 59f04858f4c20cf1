#!/usr/bin/env bash
# doppel serve end to end on the tiny fixture model with two personas (adapters from short
# `doppel train` runs) and an API key: bad options exit 2, /health, every endpoint and error
# status, greedy replies equal to `doppel chat --prompt` for the base and both personas, a load
# run (tests/serve/serve_checks.py, Python's standard library only), then SIGINT drains and
# exits 0. Loopback only, on a port the kernel picks.
set -u
bin=$1
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: no python3"; exit 77; }
tmp=$(mktemp -d /tmp/doppel-cli-serve.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# refused before anything is loaded
"$bin" serve >/dev/null 2>&1; [ $? -eq 2 ] || bad "no --model: not exit 2"
"$bin" serve --model "$model" --adapter nodir >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "NAME=DIR" "$tmp/err" || bad "--adapter without NAME="
"$bin" serve --model "$model" --port 70000 >/dev/null 2>&1; [ $? -eq 2 ] || bad "--port 70000 accepted"
"$bin" serve --model "$model" --decode int4 >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q -- "--decode" "$tmp/err" || bad "--decode int4: $(cat "$tmp/err")"
"$bin" serve --model "$model" --port 0 --adapter x="$tmp/none" >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "none" "$tmp/err" || bad "missing adapter dir: $(cat "$tmp/err")"

# two personas
. tests/serve/lib.sh
train_personas

# what doppel chat answers, greedy, for the same conversation (user Bob says "hello there")
reply() { "$bin" chat --model "$model" "$@" --as Bob --prompt "hello there" --temperature 0 --max-tokens 12 --quiet 2>/dev/null; }
python3 - "$tmp/expect.json" "$(reply)" "$(reply --adapter "$tmp/mossy")" "$(reply --adapter "$tmp/fern")" <<'PY'
import json, sys
out, base, mossy, fern = sys.argv[1:]
json.dump({"models": ["tiny-llama", "mossy", "fern"], "max_body": 4096, "timeout": 2,
           "greedy": {"tiny-llama": base, "mossy": mossy, "fern": fern}}, open(out, "w"))
PY
grep -q '"mossy": ""' "$tmp/expect.json" && bad "doppel chat gave no reply"

echo "secret-key" >"$tmp/keys"
"$bin" serve --model "$model" --adapter mossy="$tmp/mossy" --adapter fern="$tmp/fern" --port 0 \
  --api-key-file "$tmp/keys" --max-body 4KiB --max-context 256 --max-tokens 200 --parallel 3 --timeout 2 --quiet \
  >"$tmp/out" 2>"$tmp/log" &
pid=$!
wait_ready "$tmp/log" 100
[ -n "$port" ] || { echo "FAIL: the server did not start: $(cat "$tmp/log")"; exit 1; }

timeout 120 python3 tests/serve/serve_checks.py "$port" secret-key "$tmp/expect.json" || bad "HTTP checks (above)"

kill -INT "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then bad "still running 10 s after SIGINT"; else
  wait "$pid"; rc=$?; pid=
  [ $rc -eq 0 ] || bad "exit $rc after SIGINT: $(tail -3 "$tmp/log")"
fi
grep -q "finishing running replies" "$tmp/log" || bad "no drain message"

# a non-loopback address without a key is served with a warning
"$bin" serve --model "$model" --host 0.0.0.0 --port 0 --quiet >/dev/null 2>"$tmp/log2" &
pid=$!
for _ in $(seq 50); do grep -q ready "$tmp/log2" 2>/dev/null && break; sleep 0.1; done
grep -q "warning: listening on 0.0.0.0 without --api-key" "$tmp/log2" || bad "no warning for 0.0.0.0: $(cat "$tmp/log2")"
kill -INT "$pid"; wait "$pid"; pid=

[ $fail -eq 0 ] && echo "cli_serve: all checks passed"
exit $fail
