#!/usr/bin/env bash
# Issue 18's check of `doppel train --find-lr` on the bundled sample with SmolLM2-135M
# (configs/cpu-demo.json): the LR range test's suggestion, then short runs (STEPS, default 40,
# cosine with the preset's warmup) at a grid of learning rates and at the suggestion; prints
# each run's validation loss and whether the suggestion is within 5% of the grid's best.
# A benchmark-like program (minutes on a small CPU), not a ctest.
# usage: tests/bench/findlr_grid.sh [BIN=build/doppel] [OUTDIR=/tmp/doppel-findlr]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build/doppel}
out=${2:-/tmp/doppel-findlr}
steps=${STEPS:-40}
grid=${GRID:-"1e-4 3e-4 1e-3 3e-3 1e-2"}
model=${DOPPEL_SMOLLM2_GGUF:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "no $model: run .ci/fetch-smollm2" >&2; exit 1; }
mkdir -p "$out"
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$out/d.jsonl" --quiet
common=(--model "$model" --data "$out/d.jsonl" --val "$out/d.val.jsonl" --config configs/cpu-demo.json
        --quiet)
echo "== find-lr (100 steps, 1e-6 .. 1)"
"$bin" train "${common[@]}" --find-lr --find-lr-csv "$out/findlr.csv" | tee "$out/findlr.txt"
sug=$(sed -n 's/^suggested peak lr: \([^ ]*\) .*/\1/p' "$out/findlr.txt")
echo "== $steps-step runs (cosine, the preset's warmup), validation loss after"
run() { # lr -> prints the validation loss after
  rm -rf "$out/run-$1"
  "$bin" train "${common[@]}" --lr "$1" --max-steps "$steps" --eval-every 0 --early-stop 0 \
    --save-every 0 --out "$out/run-$1"
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['training']['val_loss_after'])" \
    "$out/run-$1/doppel.json"
}
best=; best_lr=
for lr in $grid; do
  v=$(run "$lr"); echo "lr $lr: val loss $v"
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $v < $best else 1)"; then best=$v; best_lr=$lr; fi
done
vs=$(run "$sug"); echo "suggested lr $sug: val loss $vs"
python3 - "$vs" "$best" "$best_lr" <<'PY'
import sys
vs, best, lr = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ratio = vs / best
print(f"suggestion {vs:.4f} vs grid best {best:.4f} (lr {lr}): {100 * (ratio - 1):+.1f}% "
      f"-> {'within' if ratio <= 1.05 else 'NOT within'} 5%")
PY
