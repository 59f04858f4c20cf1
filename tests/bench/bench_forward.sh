#!/bin/sh
# The decode benchmark of issue 5: SmolLM2-135M (GGUF Q4_1, fetched by .ci/fetch-smollm2) and a
# random-weight GGUF of Qwen2.5-0.5B's exact shape (generated once into ~/.cache by
# tests/reference/make_qwen05b_gguf.py: pip gguf, numpy), each side by side with llama.cpp.
# usage: tests/bench/bench_forward.sh [BUILD_DIR=build] [bench_forward options...]
set -e
cd "$(dirname "$0")/../.."
build=${1:-build}
[ $# -gt 0 ] && shift
smol=${DOPPEL_SMOLLM2_GGUF:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
qwen=$HOME/.cache/doppel/qwen2.5-0.5b-shaped/qwen2.5-0.5b-shaped.Q4_1.gguf
[ -f "$smol" ] || { echo "no $smol: run .ci/fetch-smollm2" >&2; exit 1; }
[ -f "$qwen" ] || python3 tests/reference/make_qwen05b_gguf.py "$qwen"
exec "$build/bench_forward" "$@" "$smol" "$qwen"
