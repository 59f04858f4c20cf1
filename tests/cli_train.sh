#!/usr/bin/env bash
# doppel train from the command line on the tiny Llama fixture and the bundled sample export:
# bad options refused before loading (exit 2), a run writes the PEFT adapter + doppel.json +
# checkpoint + metrics, --stop-at + --resume ends with the same adapter bytes as a run that
# never stopped, SIGINT saves a checkpoint and exits 0, the token cache is reused.
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-train.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

expect() { # code what command...
  local want=$1 what=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"; cat "$tmp/err"; fail=1
  fi
}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
loud=(--model "$model" --data "$tmp/d.jsonl" --val "$tmp/d.val.jsonl" --max-seq 128
      --batch-tokens 256 --grad-accum 2 --r 4 --lr 2e-3 --eval-every 4 --dropout 0.1)
common=("${loud[@]}" --quiet)
run=("${common[@]}" --max-steps 8)

# refused before anything is loaded
expect 2 "no --out" "$bin" train --model "$model" --data "$tmp/d.jsonl"
expect 2 "missing data" "$bin" train --model "$model" --data "$tmp/nope.jsonl" --out "$tmp/x"
expect 2 "rank 0" "$bin" train "${run[@]}" --out "$tmp/x" --r 0
expect 2 "batch < max-seq" "$bin" train "${run[@]}" --out "$tmp/x" --batch-tokens 64
expect 2 "bad target" "$bin" train "${run[@]}" --out "$tmp/x" --targets q_proj,qkv
grep -q "unknown LoRA target 'qkv'" "$tmp/err" || { echo "FAIL: target message"; fail=1; }
expect 2 "bad schedule" "$bin" train "${run[@]}" --out "$tmp/x" --schedule cyclic
expect 2 "early stop without val" "$bin" train --model "$model" --data "$tmp/d.jsonl" --out "$tmp/x" --early-stop 2
expect 2 "resume without checkpoint" "$bin" train "${run[@]}" --out "$tmp/x" --resume
# usage errors with a config file read and arguments gathered (ASan's leak check covers them)
expect 2 "config + unknown option" "$bin" train --config configs/cpu-demo.json "${run[@]}" --out "$tmp/x" --nope
expect 2 "config + stray argument" "$bin" train --config configs/cpu-demo.json "${run[@]}" --out "$tmp/x" stray
expect 2 "grad-accum 0" "$bin" train "${run[@]}" --out "$tmp/x" --grad-accum 0
[ -e "$tmp/x" ] && { echo "FAIL: a refused run created its output directory"; fail=1; }

# a whole run
expect 0 "full run" "$bin" train "${run[@]}" --out "$tmp/full"
for f in adapter_config.json adapter_model.safetensors doppel.json checkpoint.h5 metrics.h5 \
         best/adapter_model.safetensors; do
  [ -s "$tmp/full/$f" ] || { echo "FAIL: full run wrote no $f"; fail=1; }
done
grep -q '"fingerprint"' "$tmp/full/doppel.json" || { echo "FAIL: doppel.json has no fingerprint"; fail=1; }
grep -q '"val_loss_after"' "$tmp/full/doppel.json" || { echo "FAIL: doppel.json has no summary"; fail=1; }
ls "$tmp"/d.jsonl.tok-*.h5 >/dev/null 2>&1 || { echo "FAIL: no token cache beside the data"; fail=1; }
expect 2 "existing checkpoint without --resume" "$bin" train "${run[@]}" --out "$tmp/full"

# recomputation changes no number: --recompute on and off end with the same adapter bytes
expect 0 "recompute on" "$bin" train "${run[@]}" --out "$tmp/rc-on" --recompute on
expect 0 "recompute off" "$bin" train "${run[@]}" --out "$tmp/rc-off" --recompute off
cmp -s "$tmp/rc-on/adapter_model.safetensors" "$tmp/rc-off/adapter_model.safetensors" \
  || { echo "FAIL: --recompute on and off gave different adapters"; fail=1; }
expect 2 "bad --recompute" "$bin" train "${run[@]}" --out "$tmp/x" --recompute sometimes
expect 2 "--no-recompute with --recompute on" "$bin" train "${run[@]}" --out "$tmp/x" --no-recompute \
  --recompute on
# auto (the default): off when the workspace without it fits in a quarter of MemAvailable
for mib in 100000 1; do
  want=$([ $mib = 1 ] && echo on || echo off)
  DOPPEL_TEST_MEM_AVAILABLE_MIB=$mib expect 0 "recompute auto, $mib MiB" "$bin" train "${loud[@]}" \
    --max-steps 1 --out "$tmp/rc-auto-$mib"
  grep -q "recomputation $want (--recompute auto" "$tmp/err" \
    || { echo "FAIL: --recompute auto with $mib MiB available: not $want"; cat "$tmp/err"; fail=1; }
done

# chat applies the adapter unmerged; another base model is refused
expect 0 "chat --adapter" "$bin" chat --model "$model" --adapter "$tmp/full" --prompt "hi" \
  --max-tokens 4 --seed 1 --quiet
if [ -f tests/fixtures/tiny-qwen2/config.json ]; then
  expect 1 "chat --adapter on another model" "$bin" chat --model tests/fixtures/tiny-qwen2 \
    --adapter "$tmp/full" --prompt "hi" --max-tokens 4 --quiet
  grep -q "another base model\|is (" "$tmp/err" || { echo "FAIL: base mismatch message"; cat "$tmp/err"; fail=1; }
fi

# stop at step 4, resume: the same adapter, byte for byte
expect 0 "stop-at" "$bin" train "${run[@]}" --out "$tmp/half" --stop-at 4
expect 2 "resume with another lr" "$bin" train "${run[@]}" --out "$tmp/half" --resume --lr 1e-3
grep -q "option lr" "$tmp/err" || { echo "FAIL: resume mismatch message"; cat "$tmp/err"; fail=1; }
if "$bin" info 2>/dev/null | grep -q "^bf16 products: AVX512_BF16"; then # the run's products were bf16
  expect 2 "resume with another compute dtype" "$bin" train "${run[@]}" --out "$tmp/half" --resume \
    --compute-dtype fp32
  grep -q "option compute_dtype" "$tmp/err" || { echo "FAIL: compute dtype resume message"; cat "$tmp/err"; fail=1; }
fi
expect 0 "resume" "$bin" train "${run[@]}" --out "$tmp/half" --resume
cmp -s "$tmp/full/adapter_model.safetensors" "$tmp/half/adapter_model.safetensors" \
  || { echo "FAIL: stop-at + resume gave a different adapter than the uninterrupted run"; fail=1; }

# SIGINT: checkpoint saved, exit 0, resumable
"$bin" train "${common[@]}" --out "$tmp/int" --max-steps 100000 \
  >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/int/metrics.h5" ] && break; sleep 0.2; done
sleep 0.5
kill -INT $pid
wait $pid
code=$?
[ "$code" = 0 ] || { echo "FAIL: SIGINT exit $code, expected 0"; cat "$tmp/err"; fail=1; }
[ -s "$tmp/int/checkpoint.h5" ] || { echo "FAIL: SIGINT left no checkpoint"; fail=1; }

[ $fail = 0 ] && echo "cli_train: all checks passed"
exit $fail
