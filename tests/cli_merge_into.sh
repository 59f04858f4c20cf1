#!/usr/bin/env bash
# doppel merge --merge-into auto (the default) on the tiny Llama fixture, a 16-bit Hugging Face
# base: both bases are scored on the run's validation set, both losses are printed and equal
# `doppel eval`'s (--precision nf4 = the NF4-dequantized base training saw, fp32 = the original
# weights), the lower one is merged into (the output is byte-equal to --merge-into of that
# choice), --val overrides the run's set, and a run without one merges into the dequantized
# weights with a note. lora-gguf with --ollama on the same run: the adapter and a Modelfile;
# a system prompt the Modelfile cannot quote leaves nothing.
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-merge-into.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
[ -s "$tmp/d.val.jsonl" ] || { echo "FAIL: prep wrote no validation set"; exit 1; }
train=(--data "$tmp/d.jsonl" --max-seq 128 --batch-tokens 256 --r 4 --lr 5e-2 --max-steps 6
       --persona mossy --system "Você é o mossy." --quiet)
"$bin" train --model "$model" "${train[@]}" --val "$tmp/d.val.jsonl" --out "$tmp/run" >/dev/null 2>"$tmp/err" \
  || { echo "FAIL: train"; cat "$tmp/err"; exit 1; }
"$bin" train --model "$model" "${train[@]}" --out "$tmp/run-noval" >/dev/null 2>"$tmp/err" \
  || { echo "FAIL: train without --val"; cat "$tmp/err"; exit 1; }

"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/auto" --dtype fp32 --quiet >/dev/null 2>"$tmp/err" \
  || { echo "FAIL: merge auto"; cat "$tmp/err"; exit 1; }
line=$(grep '^merge-into: validation loss' "$tmp/err")
[ -n "$line" ] || { echo "FAIL: merge printed no validation losses"; cat "$tmp/err"; fail=1; }
read -r deq org pick < <(sed -E 's/.*dequantized ([0-9.]+), original ([0-9.]+) -> ([a-z]+)/\1 \2 \3/' <<<"$line")
echo "$line"
# the lower loss is the one taken
want=$(python3 -c "import sys; print('original' if float(sys.argv[2]) < float(sys.argv[1]) else 'dequantized')" "$deq" "$org")
[ "$pick" = "$want" ] || { echo "FAIL: picked $pick, the lower loss is $want"; fail=1; }
# the losses are doppel eval's (printed to 4 decimals)
for p in nf4 fp32; do
  "$bin" eval --model "$model" --adapter "$tmp/run" --data "$tmp/d.val.jsonl" --precision $p --contexts 0 \
    --bootstrap 0 >/dev/null 2>"$tmp/eval.err" || { echo "FAIL: eval $p"; cat "$tmp/eval.err"; fail=1; }
  ev=$(grep -E "^eval: $tmp/run +loss" "$tmp/eval.err" | awk '{print $4}')
  mine=$([ $p = nf4 ] && echo "$deq" || echo "$org")
  [ "$(printf '%.4f' "$mine")" = "$ev" ] || { echo "FAIL: merge's $p loss $mine, doppel eval's $ev"; fail=1; }
done
# the output is the chosen base's merge, byte for byte
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/explicit" --dtype fp32 --merge-into "$pick" \
  --quiet >/dev/null 2>"$tmp/err2" || { echo "FAIL: merge --merge-into $pick"; cat "$tmp/err2"; fail=1; }
grep -q 'validation loss' "$tmp/err2" && { echo "FAIL: an explicit --merge-into evaluated"; fail=1; }
cmp -s "$tmp/auto/model.safetensors" "$tmp/explicit/model.safetensors" \
  || { echo "FAIL: auto's weights differ from --merge-into $pick"; fail=1; }
other=$([ "$pick" = original ] && echo dequantized || echo original)
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/other" --dtype fp32 --merge-into "$other" \
  --quiet >/dev/null 2>&1 || { echo "FAIL: merge --merge-into $other"; fail=1; }
cmp -s "$tmp/auto/model.safetensors" "$tmp/other/model.safetensors" \
  && { echo "FAIL: both bases merge to the same bytes: the test cannot tell"; fail=1; }

# too little memory for the fp32 copy scoring needs: no scoring, the dequantized weights, said so
DOPPEL_TEST_MEM_AVAILABLE_MIB=0.001 "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/lowmem" \
  --dtype fp32 --quiet >/dev/null 2>"$tmp/err" || { echo "FAIL: merge auto with little memory"; cat "$tmp/err"; fail=1; }
grep -q 'GiB of memory is available: merged into the NF4-dequantized' "$tmp/err" \
  || { echo "FAIL: no note on memory"; cat "$tmp/err"; fail=1; }
grep -q 'validation loss' "$tmp/err" && { echo "FAIL: scored without the memory for it"; fail=1; }
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/deq" --dtype fp32 --merge-into dequantized \
  --quiet >/dev/null 2>&1 || { echo "FAIL: merge --merge-into dequantized"; fail=1; }
cmp -s "$tmp/lowmem/model.safetensors" "$tmp/deq/model.safetensors" \
  || { echo "FAIL: the low-memory auto merge is not the dequantized one"; fail=1; }

# --val overrides; a run without a validation set says so and takes the dequantized weights
"$bin" merge --model "$model" --adapter "$tmp/run-noval" --out "$tmp/noval" --quiet >/dev/null 2>"$tmp/err" \
  || { echo "FAIL: merge of a run without --val"; cat "$tmp/err"; fail=1; }
grep -q 'no validation set' "$tmp/err" || { echo "FAIL: no note for a run without --val"; cat "$tmp/err"; fail=1; }
"$bin" merge --model "$model" --adapter "$tmp/run-noval" --out "$tmp/val2" --val "$tmp/d.val.jsonl" --quiet \
  >/dev/null 2>"$tmp/err" || { echo "FAIL: merge --val"; cat "$tmp/err"; fail=1; }
grep -q "validation loss on $tmp/d.val.jsonl" "$tmp/err" || { echo "FAIL: --val was not used"; cat "$tmp/err"; fail=1; }
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/x" --val "$tmp/nope.jsonl" >/dev/null 2>&1
[ $? = 2 ] || { echo "FAIL: a missing --val is not refused up front"; fail=1; }

# lora-gguf + Modelfile from the HF base
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/a.gguf" --format lora-gguf --ollama --quiet \
  >"$tmp/out" 2>"$tmp/err" || { echo "FAIL: lora-gguf --ollama"; cat "$tmp/err"; fail=1; }
[ -s "$tmp/a.gguf" ] && [ -s "$tmp/a.Modelfile" ] || { echo "FAIL: no adapter or Modelfile"; ls "$tmp"; fail=1; }
grep -q "^ADAPTER ./a.gguf$" "$tmp/a.Modelfile" || { echo "FAIL: Modelfile has no ADAPTER line"; fail=1; }
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/b.gguf" --format lora-gguf --type q8_0 >/dev/null 2>&1
[ $? = 2 ] || { echo "FAIL: lora-gguf --type q8_0 is not refused"; fail=1; }
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/hf-o" --ollama >/dev/null 2>&1
[ $? = 2 ] || { echo "FAIL: --ollama with --format hf is not refused"; fail=1; }
touch "$tmp/c.Modelfile"
"$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/c.gguf" --format lora-gguf --ollama >/dev/null 2>&1
[ $? = 2 ] && [ ! -e "$tmp/c.gguf" ] || { echo "FAIL: an existing Modelfile is not refused up front"; fail=1; }

# a system prompt Ollama cannot quote: refused, and the adapter written before it goes too
"$bin" train --model "$model" --data "$tmp/d.jsonl" --max-seq 64 --batch-tokens 128 --r 4 --max-steps 1 \
  --persona mossy --system 'diz """oi"""' --quiet --out "$tmp/run-q" >/dev/null 2>&1 || { echo "FAIL: train"; fail=1; }
"$bin" merge --model "$model" --adapter "$tmp/run-q" --out "$tmp/q.gguf" --format lora-gguf --ollama --quiet \
  >/dev/null 2>"$tmp/err"
[ $? = 1 ] && grep -q 'cannot quote' "$tmp/err" || { echo "FAIL: a \"\"\" system prompt"; cat "$tmp/err"; fail=1; }
ls "$tmp" | grep -q '^q\.' && { echo "FAIL: a refused Modelfile left output"; ls "$tmp"; fail=1; }

[ $fail = 0 ] && echo "cli_merge_into: all checks passed"
exit $fail
