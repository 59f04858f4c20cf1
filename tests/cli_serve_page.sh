#!/usr/bin/env bash
# doppel serve's page in headless Chromium, driven over the DevTools protocol by
# tests/serve/page_check.py: load /, type a name and a message, press Send, wait for the
# streamed reply, check the DOM (the two bubbles, the reply finished without error, the
# next-token table), save build/serve_page.png.
# Skipped (77) without chromium (Debian: apt-get install chromium). SmolLM2 when cached, for a
# readable screenshot; else the tiny fixture model.
set -u
bin=$1
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$chrome" ] || { echo "SKIPPED: no chromium (apt-get install chromium)"; exit 77; }
model=${DOPPEL_SMOLLM2:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || model=tests/fixtures/tiny-llama
[ -e "$model" ] || { echo "SKIPPED: no model"; exit 77; }
tmp=$(mktemp -d /tmp/doppel-cli-serve-page.XXXXXX)
out=${DOPPEL_SCREENSHOT_DIR:-$PWD/build}
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fail=0
bad() { echo "FAIL: $*"; fail=1; }

"$bin" serve --model "$model" --alias friend --port 0 --max-tokens 40 --quiet >/dev/null 2>"$tmp/log" &
pid=$!
. tests/serve/lib.sh
wait_ready "$tmp/log" 600 "$pid"
grep -q ready "$tmp/log" || { echo "FAIL: the server did not start: $(cat "$tmp/log")"; exit 1; }
mkdir -p "$out"
timeout 200 python3 tests/serve/page_check.py "$chrome" "http://127.0.0.1:$port/" "$out/serve_page.png" || bad "the page (above)"
kill -INT "$pid"; wait "$pid"; pid=
exit $fail
