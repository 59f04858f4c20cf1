#!/usr/bin/env bash
# doppel merge --format gguf checked by the tools people load it with, on SmolLM2: every F16 /
# Q8_0 / Q4_0 tensor equals gguf-py's quantization of the same merge (byte for byte); llama.cpp
# (llama-cpp-python) loads each file, renders the prompt with the exported chat template (its
# default system prompt included) and answers greedily: F16 exactly as doppel chat with the
# adapter applied unmerged on every prompt. Q8_0's and Q4_0's agreement is printed, not
# required: their files are checked byte for byte above, and llama.cpp rounds the activations
# to 8 bits in its quantized dot products, which flips the near-ties of a 2-step adapter (the
# first token of "[ana]: oi, tudo bem?" is "V" 2.3% against "O" 2.2%; 1 to 3 of 4 agree,
# depending on the BLAS kernel that trained the adapter).
# Skipped (77) without SmolLM2, llama_cpp or gguf. With DOPPEL_REF_IN_RELEASE=1 (`make test`'s
# ASan run, after its Release run made them) the gguf-py and llama.cpp checks are left out and
# every doppel command still runs, its exit status checked.
set -u
bin=$1
fail=0
model=${DOPPEL_SMOLLM2:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$model" ] || { echo "SKIPPED: $model is missing (bash .ci/fetch-smollm2)"; exit 77; }
ref=1
if [ "${DOPPEL_REF_IN_RELEASE:-}" = 1 ]; then
  ref=0
  echo "the gguf-py and llama.cpp comparisons are left to the Release run (DOPPEL_REF_IN_RELEASE=1)"
else # found, not imported: the imports cost seconds, and the checks below import them anyway
  python3 -c 'import importlib.util as u, sys; sys.exit(any(not u.find_spec(m) for m in sys.argv[1:]))' \
    llama_cpp gguf numpy || { echo "SKIPPED: python3 lacks llama_cpp (pip install llama-cpp-python) or gguf"; exit 77; }
fi
tmp=$(mktemp -d /tmp/doppel-cli-merge-lc.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
check=tests/reference/check_merge_gguf.py

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
system="Você é o mossy."
"$bin" train --model "$model" --data "$tmp/d.jsonl" --max-seq 64 --batch-tokens 128 --r 8 --lr 3e-3 \
  --max-steps 4 --persona mossy --system "$system" --out "$tmp/run" --quiet >/dev/null 2>"$tmp/err" \
  || { echo "FAIL: train"; cat "$tmp/err"; exit 1; }
for t in f32 f16 q8_0 q4_0; do
  "$bin" merge --model "$model" --adapter "$tmp/run" --out "$tmp/m-$t.gguf" --format gguf --type "$t" \
    --quiet >/dev/null 2>"$tmp/err" || { echo "FAIL: merge $t"; cat "$tmp/err"; exit 1; }
done
# one process for the three files: gguf-py imported once
[ $ref = 1 ] && { python3 "$check" quants "$tmp/m-f32.gguf" "$tmp/m-"{f16,q8_0,q4_0}.gguf || fail=1; }

prompts=("[ana]: oi, tudo bem?" "[bo]: bora jogar hoje?" "[ana]: what did you eat" "[carla]: kkkkkk")
doppel_replies() { # model [chat options...] -> one file per prompt under $tmp/$tag-N
  local tag=$1 m=$2; shift 2
  local input=""
  for p in "${prompts[@]}"; do input+="$p"$'\n/reset\n'; done
  printf '%s' "$input" | "$bin" chat --model "$m" --temperature 0 --max-tokens 24 --repeat-penalty 1 \
    --exact-lm-head --quiet "$@" 2>"$tmp/chat.err" >"$tmp/$tag.all" \
    || { echo "FAIL: doppel chat ($tag)"; cat "$tmp/chat.err"; fail=1; }
  python3 - "$tmp/$tag.all" "$tmp/$tag" <<'PY'
import sys
parts = open(sys.argv[1], encoding="utf-8").read().split("(conversation cleared; system prompt kept)\n")
for i, p in enumerate(parts[:-1]):
    open(f"{sys.argv[2]}-{i}", "w", encoding="utf-8").write(p.rstrip("\n"))
PY
}
doppel_replies unmerged "$model" --adapter "$tmp/run"
for t in f16 q8_0 q4_0; do doppel_replies "doppel-$t" "$tmp/m-$t.gguf" --precision fp32 --system "$system"; done
for t in f16 q8_0 q4_0; do
  [ $ref = 1 ] || break
  same=0 same_file=0
  # one load per file answers every prompt (each from an empty KV cache)
  python3 "$check" chat "$tmp/m-$t.gguf" 24 --out "$tmp/lc-$t" "${prompts[@]}" 2>"$tmp/lc.err" \
    || { echo "FAIL: llama.cpp on the $t GGUF"; cat "$tmp/lc.err"; fail=1; }
  for i in "${!prompts[@]}"; do
    got=$(cat "$tmp/lc-$t-$i" 2>/dev/null)
    [ "$got" = "$(cat "$tmp/unmerged-$i")" ] && same=$((same + 1))
    [ "$got" = "$(cat "$tmp/doppel-$t-$i")" ] && same_file=$((same_file + 1))
    [ "$got" = "$(cat "$tmp/unmerged-$i")" ] || echo "  $t '${prompts[$i]}': llama.cpp '$got' / doppel unmerged '$(cat "$tmp/unmerged-$i")'"
  done
  echo "llama.cpp greedy 24 tokens on the $t GGUF: $same of ${#prompts[@]} equal doppel chat --adapter (unmerged), $same_file of ${#prompts[@]} equal doppel on the same file"
  case $t in
    f16) [ $same = ${#prompts[@]} ] || fail=1 ;;
  esac
done
[ $fail = 0 ] && echo "cli_merge_llamacpp: all checks passed"
exit $fail
