#!/usr/bin/env bash
# doppel merge against a full disk, simulated with a file-size limit (ulimit -f: a write past it
# fails with EFBIG once SIGXFSZ is ignored, as doppel merge does; without that the kernel kills
# the process with its temporary output left behind): every format (hf, lora-gguf + --ollama on
# the tiny Llama fixture; gguf on SmolLM2 when it is cached) exits 1 with a message naming the
# problem and the fix, and leaves nothing: no output, no PATH.tmp.PID, no Modelfile.
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-merge-disk.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
train=(--data "$tmp/d.jsonl" --max-seq 64 --batch-tokens 128 --r 4 --lr 5e-2 --max-steps 2
       --persona mossy --system "Você é o mossy." --quiet)
"$bin" train --model "$model" "${train[@]}" --out "$tmp/run" >/dev/null 2>"$tmp/err" \
  || { echo "FAIL: train"; cat "$tmp/err"; exit 1; }

full_disk() { # what limit-KiB out merge-options...
  local what=$1 kib=$2 out=$3; shift 3
  mkdir -p "$tmp/o"
  (ulimit -f "$kib"; exec "$bin" merge --adapter "$@" --out "$tmp/o/$out" --quiet) >/dev/null 2>"$tmp/err"
  local rc=$?
  [ $rc = 1 ] || { echo "FAIL: $what on a full disk: exit $rc, expected 1"; cat "$tmp/err"; fail=1; }
  grep -q "File too large" "$tmp/err" && grep -q "free space" "$tmp/err" \
    || { echo "FAIL: $what: the message does not say why and what to do:"; cat "$tmp/err"; fail=1; }
  if [ -n "$(ls -A "$tmp/o")" ]; then echo "FAIL: $what left:"; ls -la "$tmp/o"; fail=1; fi
  rm -rf "$tmp/o"
}
full_disk "hf" 8 hf "$tmp/run" --model "$model"
full_disk "hf sharded" 40 hf "$tmp/run" --model "$model" --max-shard-size 30000
full_disk "lora-gguf --ollama" 4 a.gguf "$tmp/run" --model "$model" --format lora-gguf --ollama
# the same merges fit without the limit (the limit, not something else, made them fail)
"$bin" merge --adapter "$tmp/run" --model "$model" --out "$tmp/ok" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: hf merge without a limit"; fail=1; }
"$bin" merge --adapter "$tmp/run" --model "$model" --out "$tmp/ok.gguf" --format lora-gguf --ollama --quiet \
  >/dev/null 2>&1 || { echo "FAIL: lora-gguf without a limit"; fail=1; }

smol=${DOPPEL_SMOLLM2:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$smol" ]; then
  "$bin" train --model "$smol" "${train[@]}" --max-steps 1 --out "$tmp/srun" >/dev/null 2>"$tmp/err" \
    || { echo "FAIL: train on SmolLM2"; cat "$tmp/err"; fail=1; }
  full_disk "gguf q8_0 --ollama" 20000 m.gguf "$tmp/srun" --model "$smol" --format gguf --ollama
else
  echo "note: $smol is missing: the gguf format was not checked (bash .ci/fetch-smollm2)"
fi

[ $fail = 0 ] && echo "cli_merge_full_disk: all checks passed"
exit $fail
