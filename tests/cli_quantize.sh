#!/usr/bin/env bash
# doppel quantize: writes the NF4 file where loading looks for it; bad input exits 1 or 2.
set -u
bin=$1
fix=$(pwd)/tests/fixtures/load
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
cp -r "$fix/tiny-qwen3" "$tmp/m"
"$bin" quantize "$tmp/m" --quiet >"$tmp/out" 2>"$tmp/err" || { echo "FAIL: quantize exit $?"; cat "$tmp/err"; fail=1; }
[ -s "$tmp/m/model.nf4.safetensors" ] || { echo "FAIL: no model.nf4.safetensors"; fail=1; }
grep -q "model.nf4.safetensors" "$tmp/out" || { echo "FAIL: output path not printed"; fail=1; }
"$bin" quantize "$fix/tiny-llama.gguf" --out "$tmp/x.safetensors" --blocksize 256 --quiet >/dev/null 2>&1 \
  || { echo "FAIL: gguf quantize"; fail=1; }
[ -s "$tmp/x.safetensors" ] || { echo "FAIL: --out not written"; fail=1; }
"$bin" quantize "$tmp/nope" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] || { echo "FAIL: missing model exit $rc, expected 1"; fail=1; }
grep -q "no such file or directory" "$tmp/err" || { echo "FAIL: missing model message"; cat "$tmp/err"; fail=1; }
"$bin" quantize "$tmp/m" --blocksize 100 >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL: bad blocksize exit $rc, expected 2"; fail=1; }
"$bin" quantize >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL: no model exit $rc, expected 2"; fail=1; }
[ $fail = 0 ] && echo "cli_quantize: all checks passed"
exit $fail
