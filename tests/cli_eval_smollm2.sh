#!/usr/bin/env bash
# doppel eval's held-out loss on SmolLM2-135M (the Q4_1 GGUF, --precision fp32) with a small
# adapter trained on the sample, equal to transformers + PEFT's masked loss on the same
# conversations (tests/reference/check_eval_peft.py reads the GGUF through transformers'
# gguf_file=, weights and tokenizer, in float64). Skips without the model or the Python stack.
# With DOPPEL_REF_IN_RELEASE=1 (`make test`'s ASan run, after its Release run made it) the
# transformers + PEFT comparison is left out; train and eval still run and the loss must move.
set -u
bin=$1
model=${DOPPEL_SMOLLM2:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "SKIPPED: $model is missing (bash .ci/fetch-smollm2)"; exit 77; }
ref=1
if [ "${DOPPEL_REF_IN_RELEASE:-}" = 1 ]; then
  ref=0
  echo "the transformers + PEFT comparison is left to the Release run (DOPPEL_REF_IN_RELEASE=1)"
else # found, not imported: the imports cost seconds, and the reference imports them anyway
  python3 -c 'import importlib.util as u, sys; sys.exit(any(not u.find_spec(m) for m in sys.argv[1:]))' \
    torch transformers peft tokenizers gguf || { echo "SKIPPED: torch/transformers/peft/gguf not importable"; exit 77; }
fi
tmp=$(mktemp -d /tmp/doppel-cli-eval-smollm2.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
fail=0
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
head -n 6 "$tmp/d.val.jsonl" > "$tmp/v.jsonl"
# 4 steps at a high lr: an adapter far enough from zero that a wrong LoRA path would show
"$bin" train --model "$model" --data "$tmp/d.jsonl" --max-seq 96 --batch-tokens 192 --r 8 \
  --lr 3e-3 --max-steps 4 --persona mossy --out "$tmp/run" --quiet >"$tmp/train.log" 2>&1 \
  || { echo "FAIL: train"; cat "$tmp/train.log"; exit 1; }
"$bin" eval --model "$model" --adapter "$tmp/run" --data "$tmp/v.jsonl" --precision fp32 \
  --contexts 0 --bootstrap 0 --json "$tmp/e.json" --quiet >"$tmp/eval.log" 2>&1 \
  || { echo "FAIL: eval"; cat "$tmp/eval.log"; exit 1; }
# fp32 over 30 layers against float64: a relative 1e-5
[ $ref = 1 ] && { python3 tests/reference/check_eval_peft.py --model "$model" --adapter "$tmp/run" \
  --data "$tmp/v.jsonl" --max-seq 96 --eval-json "$tmp/e.json" --tol 1e-5 2>"$tmp/ref.err" || {
  echo "FAIL: doppel eval's loss differs from transformers + PEFT's"; tail -5 "$tmp/ref.err"; fail=1; }; }
python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))['systems']
assert s[1]['loss'] < s[0]['loss'] - 1e-3, 'the adapter did not move the loss'
" "$tmp/e.json" || { echo "FAIL: the adapter leaves the loss where the base has it"; fail=1; }
exit $fail
