#!/usr/bin/env bash
# doppel quantize: writes the NF4 file where loading looks for it; bad input exits 1 or 2;
# an NF4 file left from other weights is not used for the current ones.
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

# MODEL/model.nf4.safetensors records the weights it came from: after model.safetensors is
# replaced by other weights of the same shapes (every F32 value changed), loading quantizes the
# new weights afresh, as a load without the stale file does, instead of reading the old file
cp -r tests/fixtures/tiny-llama "$tmp/ll"
"$bin" quantize "$tmp/ll" --quiet >/dev/null 2>&1 || { echo "FAIL: quantize tiny-llama"; fail=1; }
say() { "$bin" chat --model "$1" --prompt "hello there" --max-tokens 8 --temperature 0 >"$2" 2>"$2.err"; }
say "$tmp/ll" "$tmp/a"
grep -q "from the quantized file" "$tmp/a.err" || { echo "FAIL: the fresh NF4 file was not used"; cat "$tmp/a.err"; fail=1; }
python3 - "$tmp/ll/model.safetensors" <<'PY' || { echo "FAIL: could not rewrite the weights"; fail=1; }
import json, struct, sys
path = sys.argv[1]
b = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
header = json.loads(b[8:8 + n])
for name, t in header.items():
    if name == "__metadata__":
        continue
    assert t["dtype"] == "F32", t["dtype"]
    lo, hi = t["data_offsets"]
    lo, hi = lo + 8 + n, hi + 8 + n
    vals = struct.unpack("<%df" % ((hi - lo) // 4), bytes(b[lo:hi]))
    b[lo:hi] = struct.pack("<%df" % len(vals), *[0.01 - 0.7 * v for v in vals])
open(path, "wb").write(bytes(b))
PY
say "$tmp/ll" "$tmp/b"
grep -q "from the quantized file" "$tmp/b.err" && { echo "FAIL: an NF4 file of other weights was used"; cat "$tmp/b.err"; fail=1; }
grep -q "quantized from other weights" "$tmp/b.err" || { echo "FAIL: no note on the stale NF4 file"; cat "$tmp/b.err"; fail=1; }
mv "$tmp/ll/model.nf4.safetensors" "$tmp/stale.nf4.safetensors"
say "$tmp/ll" "$tmp/c"
cmp -s "$tmp/b" "$tmp/c" || { echo "FAIL: with the stale file present the reply differs from a fresh quantization"; fail=1; }
# quantizing again refreshes it
mv "$tmp/stale.nf4.safetensors" "$tmp/ll/model.nf4.safetensors"
"$bin" quantize "$tmp/ll" --quiet >/dev/null 2>&1 || { echo "FAIL: re-quantize"; fail=1; }
say "$tmp/ll" "$tmp/d"
grep -q "from the quantized file" "$tmp/d.err" || { echo "FAIL: the refreshed NF4 file was not used"; fail=1; }
cmp -s "$tmp/c" "$tmp/d" || { echo "FAIL: the refreshed NF4 file gives another reply than quantizing on load"; fail=1; }
[ $fail = 0 ] && echo "cli_quantize: all checks passed"
exit $fail
