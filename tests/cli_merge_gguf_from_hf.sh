#!/usr/bin/env bash
# doppel merge --format gguf from a Hugging Face directory, checked by the tools people use: for
# a tiny Qwen2.5-shaped model with the real Qwen tokenizer and a tiny Llama-3-shaped one with the
# real Llama 3 tokenizer (both made on the spot with transformers, tests/reference/
# check_merge_gguf_from_hf.py), the tiny Qwen3 fixture, and SmolLM2 as `merge --format hf` writes
# it from its GGUF:
# llama.cpp (llama-cpp-python) loads the F16 and Q8_0 files, its tokenization of a varied corpus
# equals HF tokenizers' ids, and its greedy reply through the exported chat template equals
# `doppel chat --prompt` with the adapter applied unmerged over the HF base (F16: required on
# every prompt; Q8_0: printed, llama.cpp rounds activations to 8 bits there). llama-cpp-python
# drops bytes that are not UTF-8 (errors="ignore") where doppel writes U+FFFD: the small fixture
# tokenizer's byte tokens make such replies, so U+FFFD is dropped from doppel's reply too.
# Skipped (77) without python3's llama_cpp, tokenizers, transformers, torch or gguf; the SmolLM2
# part is skipped (said so) without the SmolLM2 GGUF. With DOPPEL_REF_IN_RELEASE=1 (`make test`'s
# ASan run, after its Release run made them) the tokenization and llama.cpp checks are left out;
# the tiny models are still made with transformers and every doppel command runs, exit checked.
set -u
bin=$1
fail=0
ref=1 need="llama_cpp tokenizers transformers torch gguf"
if [ "${DOPPEL_REF_IN_RELEASE:-}" = 1 ]; then
  ref=0 need="transformers torch"
  echo "the tokenization and llama.cpp comparisons are left to the Release run (DOPPEL_REF_IN_RELEASE=1)"
fi
# found, not imported: the imports cost seconds, and the checks below import them anyway
python3 -c 'import importlib.util as u, sys; sys.exit(any(not u.find_spec(m) for m in sys.argv[1:]))' $need \
  || { echo "SKIPPED: python3 lacks one of $need"; exit 77; }
shared=../shared/tokenizers
[ -f "$shared/qwen3/tokenizer.json" ] && [ -f "$shared/llama3/tokenizer.json" ] \
  || { echo "SKIPPED: $shared (the real Qwen and Llama 3 tokenizers) is missing"; exit 77; }
tmp=$(mktemp -d /tmp/doppel-cli-merge-gguf-hf.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
ref_py=tests/reference/check_merge_gguf_from_hf.py
system="Você é o mossy."
prompts=("[ana]: oi, tudo bem?" "[bo]: bora jogar hoje?" "[carla]: kkkkkk")

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }

check_family() { # name hf_dir train_steps
  local name=$1 dir=$2 steps=$3
  "$bin" train --model "$dir" --data "$tmp/d.jsonl" --max-seq 64 --batch-tokens 128 --r 8 --lr 3e-3 \
    --max-steps "$steps" --persona mossy --system "$system" --out "$tmp/run-$name" --quiet \
    >/dev/null 2>"$tmp/err" || { echo "FAIL: $name: train"; cat "$tmp/err"; fail=1; return; }
  for t in f16 q8_0; do
    "$bin" merge --model "$dir" --adapter "$tmp/run-$name" --out "$tmp/$name-$t.gguf" --format gguf \
      --type "$t" --merge-into dequantized 2>"$tmp/err" >/dev/null \
      || { echo "FAIL: $name: merge --format gguf --type $t"; cat "$tmp/err"; fail=1; return; }
    grep "^merged" "$tmp/err"
  done
  if [ $ref = 1 ]; then
    python3 "$ref_py" tokens "$tmp/$name-f16.gguf" "$dir" 2>/dev/null || { echo "FAIL: $name: tokenization"; fail=1; }
  fi
  local wants=()
  for p in "${prompts[@]}"; do
    "$bin" chat --model "$dir" --adapter "$tmp/run-$name" --prompt "$p" --temperature 0 \
      --max-tokens 16 --repeat-penalty 1 --exact-lm-head --quiet >"$tmp/want" 2>"$tmp/err" \
      || { echo "FAIL: $name: doppel chat --adapter '$p'"; cat "$tmp/err"; fail=1; }
    wants+=("$(sed 's/\xef\xbf\xbd//g' "$tmp/want")")
  done
  [ $ref = 1 ] || return
  for t in f16 q8_0; do
    local same=0 i
    # one load per file answers every prompt (each from an empty KV cache)
    python3 "$ref_py" chat "$tmp/$name-$t.gguf" 16 --out "$tmp/lc-$name-$t" "${prompts[@]}" 2>"$tmp/err" \
      || { echo "FAIL: $name: llama.cpp on the $t GGUF"; cat "$tmp/err"; fail=1; }
    for i in "${!prompts[@]}"; do
      p=${prompts[$i]} want=${wants[$i]}
      got=$(cat "$tmp/lc-$name-$t-$i" 2>/dev/null)
      if [ "$got" = "$want" ]; then same=$((same + 1)); else
        echo "  $name $t '$p': llama.cpp '$got' / doppel '$want'"; fi
    done
    echo "$name: llama.cpp greedy 16 tokens on the $t GGUF: $same of ${#prompts[@]} equal doppel chat --adapter (unmerged, HF base)"
    [ "$t" = f16 ] && [ $same != ${#prompts[@]} ] && fail=1
  done
}

# both in one process: torch and transformers imported once
python3 "$ref_py" make-tiny qwen2 "$shared/qwen3" "$tmp/tiny-qwen2" llama "$shared/llama3" "$tmp/tiny-llama" \
  >/dev/null 2>"$tmp/err" || { echo "FAIL: make the tiny Qwen2.5- and Llama-3-shaped models"; cat "$tmp/err"; exit 1; }
check_family qwen2 "$tmp/tiny-qwen2" 2
check_family llama "$tmp/tiny-llama" 2

# Qwen3's shape (q/k norms, head_dim != hidden/heads) with the fixture's small ByteLevel tokenizer
# (tokenizer.ggml.pre gpt-2)
check_family qwen3 tests/fixtures/tiny-qwen3 3

smollm2=${DOPPEL_SMOLLM2:-${DOPPEL_CACHE:-$HOME/.cache/doppel}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$smollm2" ]; then
  # an HF directory of SmolLM2 (smollm pre-tokenizer): the GGUF with a first adapter merged in
  "$bin" train --model "$smollm2" --data "$tmp/d.jsonl" --max-seq 64 --batch-tokens 128 --r 8 \
    --lr 3e-3 --max-steps 2 --persona mossy --system "$system" --out "$tmp/run0" --quiet >/dev/null 2>&1 \
    && "$bin" merge --model "$smollm2" --adapter "$tmp/run0" --out "$tmp/smollm2-hf" --quiet >/dev/null 2>&1 \
    || { echo "FAIL: SmolLM2 as a Hugging Face directory"; fail=1; }
  [ -d "$tmp/smollm2-hf" ] && check_family smollm2 "$tmp/smollm2-hf" 4
else
  echo "SmolLM2 part SKIPPED: $smollm2 is missing (bash .ci/fetch-smollm2)"
fi
[ $fail = 0 ] && echo "cli_merge_gguf_from_hf: all checks passed"
exit $fail
