#!/usr/bin/env bash
# doppel merge --format gguf on SmolLM2 (a GGUF base with its tokenizer): every type loads back in
# doppel with the exported template recognized, the F16 merge answers greedily exactly as the base
# with the adapter applied unmerged, a 16-bit-only option and an existing output are refused.
# llama.cpp's side: cli_merge_llamacpp.sh.
set -u
bin=$1
fail=0
model=${DOPPEL_SMOLLM2:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "SKIPPED: $model is missing (bash .ci/fetch-smollm2)"; exit 77; }
tmp=$(mktemp -d /tmp/doppel-cli-merge-gguf.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

expect() { # code what command...
  local want=$1 what=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"; cat "$tmp/err"; fail=1
  fi
}
prompts='[ana]: oi, tudo bem?\n/reset\n[bo]: bora jogar hoje?\n/reset\n[ana]: what did you eat\n/reset\n[carla]: kkkkkk\n'
replies() { # model [chat options...] -> the greedy replies to $prompts, one REPL (one load)
  local m=$1; shift
  printf "$prompts" | "$bin" chat --model "$m" --temperature 0 --max-tokens 24 --repeat-penalty 1 \
    --exact-lm-head --quiet "$@" 2>>"$tmp/chat.err"
}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
system="Você é o mossy."
expect 0 "train" "$bin" train --model "$model" --data "$tmp/d.jsonl" --max-seq 64 --batch-tokens 128 \
  --r 8 --lr 3e-3 --max-steps 4 --persona mossy --system "$system" --out "$tmp/run" --quiet

expect 1 "original weights of a GGUF base" "$bin" merge --model "$model" --adapter "$tmp/run" \
  --out "$tmp/x.gguf" --format gguf --merge-into original
grep -q "already quantized" "$tmp/err" || { echo "FAIL: merge-into message"; cat "$tmp/err"; fail=1; }
[ -e "$tmp/x.gguf" ] && { echo "FAIL: a refused merge left its output"; fail=1; }

for t in f16 q8_0 q4_0; do
  expect 0 "merge $t" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/m-$t.gguf" \
    --format gguf --type "$t"
  grep -q "peak RSS" "$tmp/err" || { echo "FAIL: no time / peak RSS line"; fail=1; }
  grep "peak RSS" "$tmp/err"
done
expect 2 "existing output" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/m-f16.gguf" --format gguf

# the merged files load back (the template says ChatML: no --chat-format needed)
replies "$model" --adapter "$tmp/run" >"$tmp/unmerged" || { echo "FAIL: chat --adapter"; fail=1; }
replies "$model" --system "$system" >"$tmp/base" || { echo "FAIL: chat on the base"; fail=1; }
for t in f16 q8_0 q4_0; do
  replies "$tmp/m-$t.gguf" --precision fp32 --system "$system" >"$tmp/merged-$t" \
    || { echo "FAIL: doppel chat on the $t GGUF"; cat "$tmp/chat.err"; fail=1; }
done
cmp -s "$tmp/base" "$tmp/unmerged" && { echo "FAIL: the adapter does not change the replies"; fail=1; }
if cmp -s "$tmp/merged-f16" "$tmp/unmerged"; then
  echo "F16 merge vs unmerged adapter, greedy 24 tokens x 4 prompts: equal"
else
  echo "FAIL: F16 merge replies differ from the unmerged adapter's:"; diff "$tmp/unmerged" "$tmp/merged-f16"; fail=1
fi
for t in q8_0 q4_0; do
  cmp -s "$tmp/merged-$t" "$tmp/unmerged" && r=equal || r=different
  echo "$t merge vs unmerged adapter (reported, not required): $r"
done
[ $fail = 0 ] && echo "cli_merge_gguf: all checks passed"
exit $fail
