#!/usr/bin/env bash
# Issue 18's check of `doppel train --find-lr` on the bundled sample with SmolLM2-135M
# (configs/cpu-demo.json): the LR range test's suggestion, then short runs (STEPS, default 40,
# cosine with the preset's warmup) at a grid of learning rates and at the suggestion; prints
# each run's validation loss and whether the suggestion is within 5% of the grid's best.
# A benchmark-like program (minutes on a small CPU), not a ctest. Scaled by the environment:
# STEPS, GRID, SEQ (--max-seq and --batch-tokens; default the preset's 256), FL_STEPS (the
# sweep's steps, default 100), JOBS (runs at a time, default 1), SEED (default the preset's),
# REUSE=1 (keep the sweep and the runs an interrupted call left in OUTDIR).
# usage: tests/bench/findlr_grid.sh [BIN=build/doppel] [OUTDIR=/tmp/doppel-findlr]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build/doppel}
out=${2:-/tmp/doppel-findlr}
steps=${STEPS:-40}
grid=${GRID:-"1e-4 3e-4 1e-3 3e-3 1e-2"}
fl_steps=${FL_STEPS:-100}
jobs=${JOBS:-1}
model=${DOPPEL_SMOLLM2_GGUF:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no $model: run .ci/fetch-smollm2" >&2; exit 1; }
mkdir -p "$out"
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$out/d.jsonl" --quiet
common=(--model "$model" --data "$out/d.jsonl" --val "$out/d.val.jsonl" --config configs/cpu-demo.json
        --quiet)
[ -n "${SEQ:-}" ] && common+=(--max-seq "$SEQ" --batch-tokens "$SEQ")
[ -n "${SEED:-}" ] && common+=(--seed "$SEED")
echo "== find-lr ($fl_steps steps, 1e-6 .. 1)${SEQ:+, max-seq $SEQ}"
if [ "${REUSE:-}" = 1 ] && grep -q '^suggested peak lr' "$out/findlr.txt" 2>/dev/null; then
  cat "$out/findlr.txt"
else
  "$bin" train "${common[@]}" --find-lr --find-lr-steps "$fl_steps" --find-lr-csv "$out/findlr.csv" \
    | tee "$out/findlr.txt"
fi
sug=$(sed -n 's/^suggested peak lr: \([^ ]*\) .*/\1/p' "$out/findlr.txt")
echo "== $steps-step runs (cosine, the preset's warmup), validation loss after"
run() { # lr -> writes the validation loss after to $out/run-LR.val
  [ "${REUSE:-}" = 1 ] && [ -s "$out/run-$1.val" ] && return 0
  rm -rf "$out/run-$1"
  "$bin" train "${common[@]}" --lr "$1" --max-steps "$steps" --eval-every 0 --early-stop 0 \
    --save-every 0 --out "$out/run-$1"
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['training']['val_loss_after'])" \
    "$out/run-$1/doppel.json" > "$out/run-$1.val"
}
export -f run; export bin out steps REUSE
export COMMON="${common[*]}"
# the runs are independent: JOBS of them at a time (the arguments have no spaces)
printf '%s\n' $grid "$sug" | sort -u | xargs -P "$jobs" -I{} bash -c 'common=($COMMON); run {}'
best=; best_lr=
for lr in $grid; do
  v=$(cat "$out/run-$lr.val"); echo "lr $lr: val loss $v"
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $v < $best else 1)"; then best=$v; best_lr=$lr; fi
done
vs=$(cat "$out/run-$sug.val"); echo "suggested lr $sug: val loss $vs"
python3 - "$vs" "$best" "$best_lr" <<'PY'
import sys
vs, best, lr = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ratio = vs / best
print(f"suggestion {vs:.4f} vs grid best {best:.4f} (lr {lr}): {100 * (ratio - 1):+.1f}% "
      f"-> {'within' if ratio <= 1.05 else 'NOT within'} 5%")
PY
