#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD for SECONDS each, from its committed corpus
# (tests/fuzz/corpus/<name>) plus what earlier runs found (BUILD/corpus-fuzz_<name>).
# Fails on the first crash, leak, timeout, out-of-memory or sanitizer report, naming the
# input libFuzzer saved. Usage: run.sh BUILD SECONDS
set -uo pipefail
build=${1:?usage: run.sh BUILD SECONDS} seconds=${2:?usage: run.sh BUILD SECONDS}
cd "$(dirname "$0")/../.."
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
n=0 failed=0
for f in "$build"/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f") corpus=tests/fuzz/corpus/${name#fuzz_} found=$build/corpus-$name
  mkdir -p "$found" "$build/artifacts-$name"
  log=$build/$name.log
  dirs=("$found"); [ -d "$corpus" ] && dirs+=("$corpus")
  "$f" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts-$name/" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  n=$((n + 1))
  if [ $rc -ne 0 ]; then
    failed=$((failed + 1))
    echo "FAIL $name (exit $rc, ${execs:-?} executions): last lines of $log:"
    tail -n 30 "$log"
    ls "$build/artifacts-$name"
  else
    echo "ok   $name: ${execs:-?} executions in ${seconds}s, corpus $(ls "$found" | wc -l) new + $( [ -d "$corpus" ] && ls "$corpus" | wc -l || echo 0) committed"
  fi
done
[ $n -gt 0 ] || { echo "fuzz: no fuzz target built in $build"; exit 1; }
echo "fuzz: $((n - failed)) of $n targets clean"
[ $failed -eq 0 ]
