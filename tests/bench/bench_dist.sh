#!/usr/bin/env bash
# Data-parallel training on the CPU: tokens/s of one process with --grad-accum 2 beside
# `mpirun -np 2` with --grad-accum 1 (the same global batch and numbers), 1 OpenMP thread per
# rank, runs interleaved; medians over REPEATS, the scaling efficiency (2-rank tokens/s over
# twice the 1-rank figure) and the gradient bytes all-reduced per step.
#   tests/bench/bench_dist.sh [build/doppel]
#   env: MODEL (tests/fixtures/tiny-llama; a .gguf or HF dir), STEPS (30), REPEATS (3),
#        MAX_SEQ (128), BATCH_TOKENS (256), R (8)
# Tokens/s is the trainer's own figure (rows read over the training loop's wall time, loading
# excluded). On a shared machine the figures move with its load, printed alongside.
set -euo pipefail
bin=${1:-build/doppel}
model=${MODEL:-tests/fixtures/tiny-llama}
steps=${STEPS:-30}
repeats=${REPEATS:-3}
max_seq=${MAX_SEQ:-128}
batch=${BATCH_TOKENS:-256}
rank_r=${R:-8}
command -v mpirun >/dev/null || { echo "bench_dist: needs mpirun (apt-get install openmpi-bin)"; exit 1; }
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS -x OMP_WAIT_POLICY)
tmp=$(mktemp -d /tmp/doppel-bench-dist.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1
args=(--model "$model" --data "$tmp/d.jsonl" --max-seq "$max_seq" --batch-tokens "$batch"
      --r "$rank_r" --max-steps "$steps" --samples 0 --no-cache)

tps() { sed -n 's/^train: \([0-9.]*\) tokens\/s.*/\1/p' "$1" | tail -1; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

one=() two=()
bytes=""
for i in $(seq 1 "$repeats"); do
  rm -rf "$tmp/one" "$tmp/two"
  "$bin" train "${args[@]}" --grad-accum 2 --out "$tmp/one" >"$tmp/one.log" 2>&1
  "${mpi[@]}" "$bin" train "${args[@]}" --grad-accum 1 --out "$tmp/two" >"$tmp/two.log" 2>&1
  one+=("$(tps "$tmp/one.log")")
  two+=("$(tps "$tmp/two.log")")
  bytes=$(sed -n 's/.* \([0-9]*\) bytes of gradients all-reduced per step/\1/p' "$tmp/two.log")
  echo "run $i: 1 rank x grad-accum 2: ${one[-1]} tok/s;  2 ranks (mpirun): ${two[-1]} tok/s"
done
m1=$(printf '%s\n' "${one[@]}" | median)
m2=$(printf '%s\n' "${two[@]}" | median)
echo
echo "model $model, $steps steps of 2 x $batch tokens, r $rank_r, 1 thread per rank;" \
     "$(getconf _NPROCESSORS_ONLN) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-34s %12s\n" "" "tokens/s (median of $repeats)"
printf "%-34s %12s\n" "1 process, --grad-accum 2" "$m1"
printf "%-34s %12s\n" "mpirun -np 2, --grad-accum 1" "$m2"
awk -v a="$m1" -v b="$m2" 'BEGIN {printf "speed-up %.2fx, scaling efficiency %.0f%% (2 ranks / (2 x 1 rank))\n", b / a, 100 * b / (2 * a)}'
echo "gradient bytes all-reduced per step (each rank): $bytes ($(awk -v b="$bytes" 'BEGIN {printf "%.0f", b / 4}') fp32 LoRA parameters)"
# the communication alone, same sizes: what the step pays for being split
"${mpi[@]}" "$(dirname "$bin")/test_dist" --bench $((bytes / 4)) 2>/dev/null | grep collectives || true
# and for the LoRA of Qwen2.5-7B, r 16, all 7 linears (40.4M parameters, 154 MiB)
"${mpi[@]}" "$(dirname "$bin")/test_dist" --bench 40370176 2>/dev/null | grep collectives || true
