#!/usr/bin/env bash
# doppel merge's time and peak RSS for every output format, from a GGUF base and from the same
# model as a Hugging Face directory (bf16, as `merge --format hf` writes it), beside the peer for
# the HF output: PEFT's merge_and_unload + save_pretrained over the same HF base and adapter
# (same run, interleaved). Each figure is the median of REPS runs (/usr/bin/time: wall s, max RSS).
# usage: [BENCH_AUTO=0] tests/bench/bench_merge.sh build/doppel MODEL.gguf [REPS=3]
set -u
bin=$1 model=$2 reps=${3:-3}
tmp=$(mktemp -d /tmp/doppel-bench-merge.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1
train() { # base out
  "$bin" train --model "$1" --data "$tmp/d.jsonl" --max-seq 64 --batch-tokens 128 --r 8 --lr 3e-3 \
    --max-steps 2 --persona mossy --out "$2" --quiet >/dev/null 2>&1 || { echo "train on $1 failed"; exit 1; }
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # label command... -> "label: S s, M MiB (median of reps)"
  local label=$1; shift
  : >"$tmp/t"
  for r in $(seq "$reps"); do
    rm -rf "$tmp/out" "$tmp/out.gguf" "$tmp/out.Modelfile"
    /usr/bin/time -f "%e %M" -o "$tmp/t1" "$@" >/dev/null 2>"$tmp/err" || { echo "$label: FAILED"; cat "$tmp/err"; return; }
    cat "$tmp/t1" >>"$tmp/t"
  done
  local s m size
  s=$(awk '{print $1}' "$tmp/t" | median) m=$(awk '{print $2}' "$tmp/t" | median)
  size=$(du -sm "$tmp/out" "$tmp/out.gguf" 2>/dev/null | awk '{s+=$1} END {print s}')
  printf '%-44s %7.1f s %6.0f MiB peak  (output %s MB)\n' "$label" "$s" "$((m / 1024))" "$size"
}
train "$model" "$tmp/run"
echo "== $model (GGUF base), $reps reps"
measure "hf bf16" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/out" --quiet
for t in f16 q8_0 q4_0; do
  measure "gguf $t" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/out.gguf" --format gguf --type $t --quiet
done
measure "lora-gguf f32" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/out.gguf" --format lora-gguf --quiet

"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/hf-base" --quiet >/dev/null 2>&1
train "$tmp/hf-base" "$tmp/run-hf"
echo "== the same model as a HF directory (bf16), $reps reps"
measure "hf bf16 (dequantized)" "$bin" merge --model "$tmp/hf-base" --adapter "$tmp/run-hf" --out "$tmp/out" --merge-into dequantized --quiet
measure "hf bf16 (original)" "$bin" merge --model "$tmp/hf-base" --adapter "$tmp/run-hf" --out "$tmp/out" --merge-into original --quiet
# scoring both over the whole prep output (246 conversations) takes minutes: BENCH_AUTO=0 skips it
[ "${BENCH_AUTO:-1}" = 1 ] && measure "hf bf16 (auto: both scored)" "$bin" merge --model "$tmp/hf-base" --adapter "$tmp/run-hf" --out "$tmp/out" --val "$tmp/d.jsonl" --quiet
for t in f16 q8_0 q4_0; do
  measure "gguf $t (from HF)" "$bin" merge --model "$tmp/hf-base" --adapter "$tmp/run-hf" --out "$tmp/out.gguf" --format gguf --type $t --merge-into dequantized --quiet
done
if python3 -c 'import peft, transformers, torch' 2>/dev/null; then
  measure "peer: PEFT merge_and_unload + save_pretrained" python3 - "$tmp/hf-base" "$tmp/run-hf" "$tmp/out" <<'PY'
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
m = PeftModel.from_pretrained(m, sys.argv[2]).merge_and_unload()
m.save_pretrained(sys.argv[3])
PY
else
  echo "peer: PEFT is not installed"
fi
