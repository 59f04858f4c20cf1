#!/usr/bin/env bash
# doppel merge --format hf from the command line on the tiny Llama fixture: options refused
# before loading (exit 2), the merged model answers greedily exactly as the base with the adapter
# applied unmerged does in doppel chat (HF and GGUF outputs), shards load back, an adapter of another
# base model and a GGUF from a HF base with an unnamed pre-tokenizer are refused with no output left
# behind. The GGUF side: cli_merge_gguf.sh.
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-merge.XXXXXX)
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
nothing_left() { # what
  if ls "$tmp" | grep -q '\.tmp\.'; then echo "FAIL: $1 left a temporary output"; ls "$tmp"; fail=1; fi
}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
system=$'Você é o "mossy".\nResponda curto.'
train=(--data "$tmp/d.jsonl" --max-seq 128 --batch-tokens 256 --r 4 --lr 5e-2 --max-steps 6
       --persona mossy --system "$system" --quiet)
expect 0 "train on the HF base" "$bin" train --model "$model" "${train[@]}" --out "$tmp/run"

# refused before anything is loaded
expect 2 "no --out" "$bin" merge --model "$model" --adapter "$tmp/run"
expect 2 "bad format" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/x" --format onnx
expect 2 "bad type" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/x" --format gguf --type q5_k
expect 2 "bad dtype" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/x" --dtype int8
expect 2 "bad merge-into" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/x" --merge-into both
mkdir "$tmp/exists"
expect 2 "existing output" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/exists"
grep -q "already exists" "$tmp/err" || { echo "FAIL: existing-output message"; fail=1; }
[ -e "$tmp/x" ] && { echo "FAIL: a refused merge created its output"; fail=1; }

# refused after loading, with nothing left behind
expect 1 "adapter of another base" "$bin" merge --model tests/fixtures/tiny-qwen2 --adapter "$tmp/run" --out "$tmp/x"
grep -q "another base model" "$tmp/err" || { echo "FAIL: base mismatch message"; cat "$tmp/err"; fail=1; }
# a HF base whose pre-tokenizer llama.cpp has no name for (ByteLevel without its regex): a GGUF
# would tokenize differently in llama.cpp, so it is refused rather than guessed
mkdir "$tmp/odd" && cp "$model"/* "$tmp/odd/" \
  && sed -i '/"pre_tokenizer"/,/}/s/"use_regex": true/"use_regex": false/' "$tmp/odd/tokenizer.json"
expect 1 "gguf from a HF base with an unnamed pre-tokenizer" "$bin" merge --model "$tmp/odd" --adapter "$tmp/run" --out "$tmp/x.gguf" --format gguf
grep -q "a guessed tokenizer.ggml.pre" "$tmp/err" || { echo "FAIL: unnamed pre-tokenizer message"; cat "$tmp/err"; fail=1; }
[ -e "$tmp/x" ] || [ -e "$tmp/x.gguf" ] && { echo "FAIL: a failed merge left its output"; fail=1; }
nothing_left "a failed merge"

# greedy replies: merged model == base + adapter unmerged
say() { # model [chat options...] -> the reply
  "$bin" chat --model "$@" --prompt "[ana]: oi, tudo bem?" --temperature 0 --max-tokens 16 \
    --repeat-penalty 1 --exact-lm-head --quiet 2>"$tmp/chat.err"
}
want=$(say "$model" --adapter "$tmp/run")
expect 0 "merge hf fp32" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/hf" --dtype fp32 --quiet
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
  [ -s "$tmp/hf/$f" ] || { echo "FAIL: merge wrote no $f"; fail=1; }
done
got=$(say "$tmp/hf" --precision fp32 --system "$system")
[ "$got" = "$want" ] || { echo "FAIL: merged hf reply '$got' != unmerged '$want'"; fail=1; }
base=$(say "$model" --system "$system")
[ "$base" != "$want" ] || { echo "FAIL: the adapter does not change the reply ('$base'): the test cannot tell"; fail=1; }
expect 0 "merge hf bf16 sharded" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/hf16" --max-shard-size 100000 --quiet
[ -s "$tmp/hf16/model.safetensors.index.json" ] || { echo "FAIL: no index for shards"; fail=1; }
expect 0 "doppel loads the sharded bf16 merge" say "$tmp/hf16" --precision fp32

# --format gguf from the HF base (tokenizer.ggml.* from tokenizer.json, llama3 rope_freqs):
# doppel loads it back and answers as the base with the adapter unmerged (llama.cpp's side:
# cli_merge_gguf_from_hf.sh)
expect 0 "merge gguf f32 from the HF base" "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/m.gguf" --format gguf --type f32 --quiet
got=$(say "$tmp/m.gguf" --precision fp32 --system "$system")
[ "$got" = "$want" ] || { echo "FAIL: merged gguf reply '$got' != unmerged '$want'"; fail=1; }

nothing_left "a merge"

[ $fail = 0 ] && echo "cli_merge: all checks passed"
exit $fail
