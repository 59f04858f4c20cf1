#!/usr/bin/env bash
# doppel train on a GPU backend from the command line, on the tiny Llama fixture: a run the
# memory plan says will not fit --vram is refused before anything is loaded (exit 2) with a
# --max-seq that fits, and that suggestion is accepted; --device cuda without a device is
# refused; the hidden --device emu (the CUDA kernels on CPU fibers) trains to the validation
# loss the CPU reaches (Release builds only: under the sanitizers EMU is ~50x slower).
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-train-gpu.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
"$bin" train --help | grep -q -- "--vram" || { echo "FAIL: train has no --vram"; exit 1; }

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
# a model directory with the config alone: loading it would fail (exit 1), so exit 2 with the
# plan's message shows the refusal came before anything was loaded
mkdir "$tmp/config-only" && cp "$model/config.json" "$tmp/config-only/"
common=(--data "$tmp/d.jsonl" --val "$tmp/d.val.jsonl" --r 4 --lr 2e-3 --dropout 0.1 --quiet)

if ! "$bin" train "${common[@]}" --model "$tmp/config-only" --out "$tmp/x" --device emu \
     --max-seq 256 --vram 1MB >/dev/null 2>"$tmp/err"; then :; fi
grep -q "EMU backend" "$tmp/err" && { echo "SKIPPED: this binary has no EMU backend"; exit 77; }

# the fixed rows (CUDA context estimate 400 MiB + cuBLAS workspace 32 MiB) leave ~1 MiB here
"$bin" train "${common[@]}" --model "$tmp/config-only" --out "$tmp/x" --device emu \
  --max-seq 256 --vram 433MiB >/dev/null 2>"$tmp/err"; rc=$?
fits=$(sed -n 's/.*--max-seq \([0-9]*\) --batch-tokens.*/\1/p' "$tmp/err")
echo "refused at --max-seq 256 in 433 MiB: exit $rc, suggestion --max-seq '$fits'"
[ $rc = 2 ] && grep -q "more than the 433 MiB" "$tmp/err" || { echo "FAIL: exit $rc"; cat "$tmp/err"; fail=1; }
[ -n "$fits" ] && [ "$fits" -ge 16 ] && [ "$fits" -lt 256 ] || { echo "FAIL: suggestion '$fits'"; fail=1; }
[ -e "$tmp/x" ] && { echo "FAIL: the refused run created its --out"; fail=1; }
# the suggestion passes the plan (the config-only model then fails to load: exit 1, not 2)
if [ -n "$fits" ]; then
  "$bin" train "${common[@]}" --model "$tmp/config-only" --out "$tmp/y" --device emu \
    --max-seq "$fits" --vram 433MiB >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc = 1 ] && ! grep -q "GPU memory" "$tmp/err" || { echo "FAIL: suggested --max-seq $fits: exit $rc"; cat "$tmp/err"; fail=1; }
fi
# nothing fits: no suggestion, exit 2
"$bin" train "${common[@]}" --model "$tmp/config-only" --out "$tmp/x" --device emu --vram 2MB \
  >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 2 ] && grep -q "not even 16" "$tmp/err" || { echo "FAIL: 2MB: exit $rc"; cat "$tmp/err"; fail=1; }
# --device cuda on a machine without one (every machine of this project), and a bad name
if ! "$bin" info | grep -q "^CUDA device: *[^n]"; then
  "$bin" train "${common[@]}" --model "$model" --out "$tmp/x" --device cuda >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc = 2 ] && grep -q -- "--device cpu" "$tmp/err" || { echo "FAIL: --device cuda: exit $rc"; cat "$tmp/err"; fail=1; }
fi
"$bin" train "${common[@]}" --model "$model" --out "$tmp/x" --device tpu >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL: --device tpu: exit $rc"; fail=1; }

# the same 2 steps on the CPU and on EMU: validation loss after training (computed on the CPU
# from the parameters the GPU step produced) within bf16 tolerance
if "$bin" info | grep -q "(Release build)"; then
  run=(--data "$tmp/d.jsonl" --val "$tmp/d.val.jsonl" --r 4 --lr 2e-3 --dropout 0.1
       --model "$model" --max-seq 64 --batch-tokens 128 --max-steps 2)
  val_after() { sed -n 's/.*validation loss [0-9.]* before, \([0-9.]*\) after.*/\1/p' "$1"; }
  "$bin" train "${run[@]}" --out "$tmp/cpu" --device cpu >/dev/null 2>"$tmp/cpu.log" || { echo "FAIL: cpu run"; cat "$tmp/cpu.log"; fail=1; }
  "$bin" train "${run[@]}" --out "$tmp/emu" --device emu >/dev/null 2>"$tmp/emu.log" || { echo "FAIL: emu run"; cat "$tmp/emu.log"; fail=1; }
  grep -q "on emu" "$tmp/emu.log" || { echo "FAIL: the emu run did not say it trains on emu"; fail=1; }
  c=$(val_after "$tmp/cpu.log"); e=$(val_after "$tmp/emu.log")
  echo "validation loss after 2 steps: CPU $c, EMU (bf16 activations) $e"
  awk -v c="$c" -v e="$e" 'BEGIN { d = c - e; if (d < 0) d = -d; exit !(c != "" && e != "" && d <= 0.01) }' \
    || { echo "FAIL: CPU $c vs EMU $e (tolerance 0.01)"; fail=1; }
  [ -f "$tmp/emu/adapter_model.safetensors" ] && [ -f "$tmp/emu/checkpoint.h5" ] \
    || { echo "FAIL: the emu run wrote no adapter/checkpoint"; fail=1; }
  # stopped after step 1 on EMU, resumed on the CPU: the checkpoint carries the GPU's
  # parameters and AdamW moments, and the run ends where the CPU-only one does
  "$bin" train "${run[@]}" --out "$tmp/mix" --device emu --stop-at 1 >/dev/null 2>"$tmp/mix.log" \
    || { echo "FAIL: emu --stop-at 1"; cat "$tmp/mix.log"; fail=1; }
  "$bin" train "${run[@]}" --out "$tmp/mix" --device cpu --resume >/dev/null 2>"$tmp/mix.log" \
    || { echo "FAIL: cpu --resume"; cat "$tmp/mix.log"; fail=1; }
  x=$(sed -n 's/.*validation loss \([0-9.]*\) before, \([0-9.]*\) after.*/\2/p' "$tmp/mix.log")
  [ -z "$x" ] && x=$(sed -n 's/.*, \([0-9.]*\) after.*/\1/p' "$tmp/mix.log")
  echo "validation loss after 1 step on EMU + 1 on the CPU: $x"
  awk -v c="$c" -v e="$x" 'BEGIN { d = c - e; if (d < 0) d = -d; exit !(c != "" && e != "" && d <= 0.01) }' \
    || { echo "FAIL: CPU $c vs EMU+CPU '$x' (tolerance 0.01)"; cat "$tmp/mix.log"; fail=1; }
else
  echo "sanitizer/debug build: the EMU training run is left to the Release suite"
fi
[ $fail = 0 ] && echo "cli_train_gpu: all checks passed"
exit $fail
