#!/usr/bin/env bash
# The README's demo: prep on the bundled sample export, a short QLoRA run on SmolLM2-135M on
# the CPU, base vs adapter replies, eval's table (base vs adapter) and the notebooks. DEMO_STEPS
# shortens training (the test command runs 2 steps); DEMO_CONTEXTS the replies eval samples;
# DEMO_STRICT=1 makes a missing notebook toolchain an error.
set -euo pipefail
bin=${1:-build/doppel}
mkdir -p "${DEMO_OUT:-demo-out}"
out=$(cd "${DEMO_OUT:-demo-out}" && pwd) # absolute: the notebooks run in notebooks/
echo "== doppel info"
"$bin" info
echo
echo "== doppel prep: the bundled sample export -> ChatML conversations (persona: mossy)"
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$out/train.jsonl" \
  --stats "$out/prep-stats.json" --preview 2
echo
echo "== doppel train: LoRA on SmolLM2-135M-Instruct (NF4 base) on the CPU (configs/cpu-demo.json)"
model=${DOPPEL_CACHE:-$HOME/.cache/doppel}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || bash .ci/fetch-smollm2
if [ ! -f "$model" ]; then
  echo "  (no SmolLM2 GGUF and no network: training skipped)"
  [ "${DEMO_STRICT:-0}" = 1 ] && exit 1
  exit 0
fi
# DEMO_STEPS shortens the run (the test command uses a few steps); the preset trains 120.
steps=()
[ -n "${DEMO_STEPS:-}" ] && steps=(--max-steps "$DEMO_STEPS")
rm -rf "$out/run"
"$bin" train --model "$model" --data "$out/train.jsonl" --val "$out/train.val.jsonl" \
  --out "$out/run" --config configs/cpu-demo.json "${steps[@]}" --persona mossy
echo
echo "== replies to fixed prompts: base model, then with the adapter"
for p in "[Theo]: anyone up for a movie tonight?" "[priya.k]: how did the exam go?" \
         "[Sam Walker]: what are you listening to these days?"; do
  echo "-- prompt: $p"
  printf '   base:    '
  "$bin" chat --model "$model" --prompt "$p" --seed 1 --max-tokens 40 --quiet | tr '\n' ' '
  echo
  printf '   adapter: '
  "$bin" chat --model "$model" --adapter "$out/run" --prompt "$p" --seed 1 --max-tokens 40 \
    --quiet | tr '\n' ' '
  echo
done
echo
echo "== doppel eval: held-out perplexity, authorship, style and degeneration, base vs adapter"
"$bin" eval --model "$model" --adapter "$out/run" --data "$out/train.val.jsonl" \
  --export tests/fixtures/sample-export.csv --persona mossy --contexts "${DEMO_CONTEXTS:-16}" \
  --json "$out/eval.json"
if command -v jupyter >/dev/null 2>&1 && python3 -c "import h5py, matplotlib" 2>/dev/null; then
  echo
  echo "== notebooks (executed headless): training curves, the dataset and the evaluation"
  DOPPEL_RUN="$out/run" DOPPEL_DATA="$out/train.jsonl" DOPPEL_STATS="$out/prep-stats.json" \
    DOPPEL_EVAL="$out/eval.json" jupyter nbconvert --to notebook --execute --output-dir "$out" \
    notebooks/training.ipynb notebooks/dataset.ipynb notebooks/eval.ipynb
  echo "  plots: $out/run/training.png $out/train.dataset.png $out/eval.png"
elif [ "${DEMO_STRICT:-0}" = 1 ]; then
  echo "demo: jupyter, h5py and matplotlib are needed for the notebooks (make deps installs them)" >&2
  exit 1
else
  echo "(notebooks skipped: pip install nbconvert ipykernel h5py matplotlib)"
fi
