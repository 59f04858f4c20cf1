#!/usr/bin/env bash
# The `sandbox_emu` ctest suite: every sandbox program's EMU twin validates all its variants
# against the CPU reference at two block sizes, on small ragged shapes (not multiples of the
# block or tile sizes). $1: the build directory holding the sandbox_*_emu programs.
set -euo pipefail
bin="$1"
run() {
  local prog="$bin/sandbox_$1_emu"
  shift
  echo "== $(basename "$prog") $*"
  "$prog" "$@"
}
run rmsnorm_forward --shape 7,200 --blocks 32,256
run rmsnorm_backward --shape 40,200 --blocks 32,512
run nf4_dequantize --shape 37,101 --blocks 32,256
run gemv_nf4 --shape 37,200 --blocks 64,256
run attention_forward --shape 2,21,4,2,40 --blocks 32,128
run attention_backward --shape 2,21,4,2,40 --blocks 32,256
run cross_entropy --shape 5,1000 --blocks 32,256
run adamw --shape 1003 --blocks 32,256
run swiglu_forward --shape 3,333 --blocks 64,1024
# the command line: --help succeeds, a bad variant or shape is a usage error (exit 2)
help=$("$bin/sandbox_adamw_emu" --help)
grep -q "usage: sandbox_adamw" <<<"$help"
for bad in "9" "--shape 0" "--shape 3,4" "--blocks 2048" "--bogus"; do
  rc=0
  "$bin/sandbox_adamw_emu" $bad >/dev/null 2>&1 || rc=$?
  if [ "$rc" != 2 ]; then
    echo "FAIL: sandbox_adamw_emu $bad exited $rc, expected 2 (usage error)"
    exit 1
  fi
done
echo "== every sandbox validated under EMU"
