#!/usr/bin/env bash
# A long fuzzing campaign (not part of `make test`): runs each libFuzzer target in BUILD until
# RUNS executions (default 10 million) or MAX_SECONDS (default 3600) from its committed corpus,
# then merges what grew the coverage back into tests/fuzz/corpus/<name> (libFuzzer -merge=1 keeps
# only inputs that add features). Prints one line per target: executions, seconds, exec/s,
# coverage, corpus before → after. Stops at the first crash, leak or sanitizer report.
# REPLAY=DIR (optional): a second fuzz build (the ASan + UBSan one of `make fuzz`) that runs every
# input of the merged corpus once, so a campaign run in a faster build (-DDOPPEL_FUZZ_SANITIZERS=
# undefined: 2-3x the executions) still has each input it kept checked under AddressSanitizer.
# usage: tests/fuzz/campaign.sh [BUILD=build-fuzz] [TARGET ...]   (build with `make fuzz` first)
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-fuzz}
shift || true
runs=${RUNS:-10000000} max=${MAX_SECONDS:-3600} replay=${REPLAY:-}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || for f in "$build"/fuzz_*; do [ -x "$f" ] && targets+=("$(basename "$f")"); done
for name in "${targets[@]}"; do
  f=$build/$name corpus=tests/fuzz/corpus/${name#fuzz_} work=$build/campaign-$name
  [ -x "$f" ] || { echo "campaign: no $f (run make fuzz first)" >&2; exit 1; }
  mkdir -p "$work" "$corpus" "$build/artifacts-$name"
  before=$(ls "$corpus" | wc -l)
  log=$build/campaign-$name.log
  t0=$(date +%s)
  "$f" -runs="$runs" -max_total_time="$max" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts-$name/" "$work" "$corpus" >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - t0))
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  if [ $rc -ne 0 ]; then
    echo "FAIL $name (exit $rc after ${execs:-?} executions): $log"
    tail -n 30 "$log"
    exit 1
  fi
  "$f" -merge=1 "$corpus" "$work" >"$log.merge" 2>&1 || { echo "merge failed: $log.merge"; exit 1; }
  after=$(ls "$corpus" | wc -l)
  checked=""
  if [ -n "$replay" ]; then
    "$replay/$name" -runs=0 -timeout=10 -rss_limit_mb=2048 "$corpus" >"$log.replay" 2>&1 ||
      { echo "FAIL $name: the corpus replayed in $replay fails: $log.replay"; tail -n 30 "$log.replay"; exit 1; }
    checked=", every input replayed clean in $replay"
  fi
  echo "ok   $name: ${execs:-?} executions in ${secs}s ($(( ${execs:-0} / (secs > 0 ? secs : 1) )) exec/s), cov ${cov:-?}, corpus $before -> $after$checked"
done
