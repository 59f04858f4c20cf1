#!/usr/bin/env bash
# What travels to the GPU machine: the portable build's doppel, the switched *_emu suites and
# the kernel sandbox programs, stripped, plus Qwen's fixture tokenizer unpacked (the GPU machine
# may have no zstd), in one solid .tar.xz. Each program carries the same static libraries
# (OpenBLAS alone is ~25 MB of kernels for every x86 core), so a solid archive with a
# dictionary larger than one program stores them once: ~270 MB of programs in ~7 MB.
# check.sh --bundle FILE unpacks it with Python's tarfile (no xz needed there).
# usage: tests/gpu/pack.sh [BUILD_DIR (build-portable)] [OUT (BUILD_DIR/gpu-bundle.tar.xz)]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$repo/build-portable}
out=${2:-$build/gpu-bundle.tar.xz}
stage=$(mktemp -d /tmp/doppel-gpu-pack.XXXXXX)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/dev/cuda"
files=(doppel test_kernels_emu test_block_emu test_forward_gpu_emu test_generate_emu test_train_step_emu)
for f in "${files[@]}"; do
  [ -x "$build/$f" ] || { echo "pack.sh: $build/$f missing (cmake --build $build)" >&2; exit 1; }
  strip -o "$stage/$f" "$build/$f"
done
n=0
for f in "$build"/dev/cuda/sandbox_*; do
  case $f in *_emu|*.cpp) continue ;; esac
  [ -f "$f" ] && [ -x "$f" ] && strip -o "$stage/dev/cuda/$(basename "$f")" "$f" && n=$((n + 1))
done
[ $n -gt 0 ] || { echo "pack.sh: no sandbox programs in $build/dev/cuda (a build without nvcc?)" >&2; exit 1; }
zstd -qdc "$repo/tests/fixtures/tokenizers/qwen3.tokenizer.json.zst" >"$stage/qwen3.tokenizer.json"
# the programs each hold one copy of the same libraries: the dictionary spans several programs
(cd "$stage" && tar cf - --sort=name --owner=0 --group=0 . |
   xz -T1 --lzma2=preset=6,dict=192MiB) >"$out.tmp"
mv "$out.tmp" "$out"
echo "pack.sh: $out: $(du -sm "$stage" | cut -f1) MiB of programs ($(( ${#files[@]} + n )) files) in $(( $(stat -c %s "$out") / 1024 )) KiB"
