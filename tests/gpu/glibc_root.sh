#!/usr/bin/env bash
# The portable build's claim, checked: its programs run in a root holding nothing but glibc
# (and, for the CUDA build, cuBLAS: the one library not linked in), with an empty
# LD_LIBRARY_PATH. Builds that root (no debootstrap needed: glibc's own files copied in), then
# runs `doppel info` and the given test programs inside it with chroot (needs root).
# usage: tests/gpu/glibc_root.sh BUILD_DIR TEST_PROGRAM...   (names inside BUILD_DIR)
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:?usage: glibc_root.sh BUILD_DIR TEST...}" && pwd); shift
root=$(mktemp -d /tmp/doppel-glibc-root.XXXXXX)
trap 'umount "$root$repo" 2>/dev/null; rm -rf "$root"' EXIT
mkdir -p "$root/lib/x86_64-linux-gnu" "$root/lib64" "$root/tmp" "$root$repo" "$root$build"
chmod 1777 "$root/tmp"
# glibc only: the loader, libc, libm and the stubs glibc 2.34+ keeps for old links
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
for l in libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$l" "$root/lib/x86_64-linux-gnu/"
done
# /bin/sh and rm (each needs libc alone): test_train_loop cleans up with system("rm -rf")
mkdir -p "$root/bin"
cp -L "$(command -v dash)" "$root/bin/sh" && cp -L "$(command -v rm)" "$root/bin/rm"
# cuBLAS (and what it needs) when the programs ask for it, as a CUDA box would have it
if readelf -d "$build/doppel" | grep -q libcublas; then
  for l in $(ldd "$build/doppel" | awk '/cublas|libgcc_s|libstdc/ {print $3}'); do
    cp -L "$l" "$root/lib/x86_64-linux-gnu/"
  done
fi
# the fixtures at the path the tests were built with, read-only
mount --bind -o ro "$repo" "$root$repo" || { echo "glibc_root.sh: mount needs root"; exit 77; }
echo "root: $(cd "$root" && find . -type f | grep -v "^./work" | sort | paste -sd ' ')"
fail=0
for p in doppel "$@"; do
  [ -e "$root$build/$p" ] || cp "$build/$p" "$root$build/" # a build inside the checkout is there
  args=(); [ "$p" = doppel ] && args=(info)
  env -i LD_LIBRARY_PATH= OMP_NUM_THREADS=2 PATH=/bin "$(command -v chroot)" "$root" "$build/$p" "${args[@]}" \
    >"$root/tmp/out" 2>&1; rc=$?
  # 77: a suite whose optional input (../shared, the SmolLM2 GGUF) is outside this root
  case $rc in 0) r=PASS ;; 77) r=SKIP ;; *) r="FAIL (exit $rc)"; fail=1; tail -5 "$root/tmp/out" ;; esac
  echo "$p: $r: $(tail -1 "$root/tmp/out")"
done
exit $fail
