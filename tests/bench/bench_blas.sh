#!/bin/sh
# Issue 17: one benchmark run per OpenBLAS kernel, back to back, so the figures compare: OpenBLAS
# stuck on Prescott (what Debian 12's OpenBLAS picks by itself on CPUs newer than it), doppel's
# fix of that (the same weak detection simulated, doppel re-executes on this CPU's kernel),
# Haswell (AVX2), and OpenBLAS's own detection here. Each header names the kernel that ran.
# usage: tests/bench/bench_blas.sh [BUILD_DIR=build] train|forward [bench options...]
#   forward needs its models: tests/bench/bench_blas.sh build forward --threads 1 MODEL.gguf
set -e
cd "$(dirname "$0")/../.."
build=${1:-build}
what=${2:-train}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
clean="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE -u DOPPEL_BLAS_SET -u DOPPEL_BLAS_DETECTED -u DOPPEL_BLAS_FALLBACK"
for setting in "OPENBLAS_CORETYPE=Prescott" \
               "OPENBLAS_CORETYPE=Prescott DOPPEL_TEST_OPENBLAS_MISDETECT=1" \
               "OPENBLAS_CORETYPE=Haswell" \
               ""; do
  echo "=================== ${setting:-OpenBLAS's own detection}"
  if [ "$what" = train ]; then
    # the transformers + PEFT peer (torch's own BLAS) once, in the last run
    peer=--no-peer
    [ -z "$setting" ] && peer=
    $clean $setting "$build/bench_train" $peer "$@"
  else
    $clean $setting "$build/bench_forward" "$@"
  fi
done
