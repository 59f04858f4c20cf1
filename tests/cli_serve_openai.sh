#!/usr/bin/env bash
# doppel serve with SmolLM2 (base + a persona trained for 2 steps on the bundled sample) through
# the official `openai` Python client (tests/serve/openai_client.py). Skipped (77) without the
# model in ~/.cache/doppel or without `pip install openai`.
set -u
bin=$1
model=${DOPPEL_SMOLLM2:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "SKIPPED: $model is missing (bash .ci/fetch-smollm2)"; exit 77; }
python3 -c "import openai" 2>/dev/null || { echo "SKIPPED: the openai Python package is missing (pip install openai)"; exit 77; }
tmp=$(mktemp -d /tmp/doppel-cli-serve-openai.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 || { echo "FAIL: prep"; exit 1; }
"$bin" train --model "$model" --data "$tmp/d.jsonl" --out "$tmp/mossy" --max-seq 128 --batch-tokens 128 \
  --r 4 --lr 1e-2 --max-steps 2 --persona mossy --seed 1 --quiet >/dev/null 2>"$tmp/err" || { echo "FAIL: train: $(cat "$tmp/err")"; exit 1; }
reply() { "$bin" chat --model "$model" "$@" --as Bob --prompt "hello there" --temperature 0 --max-tokens 16 --quiet 2>/dev/null; }
"$bin" serve --model "$model" --alias smollm2 --adapter mossy="$tmp/mossy" --port 0 --parallel 2 --quiet \
  >/dev/null 2>"$tmp/log" &
pid=$!
base_reply=$(reply)
mossy_reply=$(reply --adapter "$tmp/mossy")
python3 -c 'import json,sys; json.dump({"models":["smollm2","mossy"],"greedy":{"smollm2":sys.argv[2],"mossy":sys.argv[3]}}, open(sys.argv[1],"w"))' \
  "$tmp/expect.json" "$base_reply" "$mossy_reply"
. tests/serve/lib.sh
wait_ready "$tmp/log" 600 "$pid"
grep -q ready "$tmp/log" || { echo "FAIL: the server did not start: $(cat "$tmp/log")"; exit 1; }
timeout 120 python3 tests/serve/openai_client.py "$port" "$tmp/expect.json"
rc=$?
kill -INT "$pid"; wait "$pid"; src=$?; pid=
[ $src -eq 0 ] || { echo "FAIL: serve exit $src after SIGINT"; rc=1; }
exit $rc
