#!/usr/bin/env bash
# The whole GPU truth in one command, from the portable build (cmake --preset portable, then
# tests/gpu/pack.sh): doppel info; every switched *_emu suite on the device
# (DOPPEL_TEST_BACKEND=cuda); the kernel sandbox's timings against cuBLAS; ~30 QLoRA steps on
# random-weight Qwen2.5-1.5B- and 7B-shaped models made here with transformers (tokenizer from
# tests/fixtures) with tokens/s and the real peak device memory (cudaMemGetInfo) against
# `doppel plan`; the same model and data through transformers + PEFT (bf16 LoRA) as the peer;
# `doppel chat` decode tokens/s; `doppel serve --device cuda` with the trained adapter, aggregate
# tokens/s at 1, 4 and 8 concurrent streams (tests/bench/bench_serve.py). One table on stdout,
# the same as JSON in $OUT (or --out).
#
# --emu: the same script on this CPU-only machine: the suites under EMU through the same
# switch, the sandbox's EMU twins, and one tiny Qwen2-shaped model (2 layers, the real vocab)
# trained 2 steps with --device emu against PEFT fp32 on the CPU; chat and serve under EMU.
# ctest gpu_check_emu runs this so the script cannot rot.
#
# usage: tests/gpu/check.sh [--emu] [--build DIR | --bundle FILE.tar.xz] [--out DIR]
#                           [--steps N] [--seq T] [--models 1.5b,7b]
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
mode=cuda build=$repo/build-portable bundle="" out=${OUT:-} steps=30 seq=1024 models=1.5b,7b
while [ $# -gt 0 ]; do
  case $1 in
    --emu) mode=emu ;;
    --build) build=$2; shift ;;
    --bundle) bundle=$2; shift ;;
    --out) out=$2; shift ;;
    --steps) steps=$2; shift ;;
    --seq) seq=$2; shift ;;
    --models) models=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ $mode = emu ]; then
  [ "$steps" = 30 ] && steps=2
  [ "$seq" = 1024 ] && seq=64
  models=tiny
fi
work=$(mktemp -d /tmp/doppel-gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
out=${out:-$work/out}
mkdir -p "$out"
results=$out/gpu-check.jsonl
: >"$results"
py() { python3 "$repo/tests/gpu/gpu_check.py" "$@"; }
# one JSON row per check: json_row KEY=VALUE... (numbers stay numbers)
json_row() {
  python3 - "$@" >>"$results" <<'PY'
import json, sys
row = {}
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    try:
        row[k] = json.loads(v)
    except ValueError:
        row[k] = v
print(json.dumps(row))
PY
}

# ---- the binaries: a bundle (what travels to the GPU machine) or a build tree
if [ -n "$bundle" ]; then
  bin=$work/bin
  python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$bundle" "$bin" ||
    { echo "check.sh: cannot unpack $bundle" >&2; exit 1; }
else
  bin=$build
fi
doppel=$bin/doppel
[ -x "$doppel" ] || { echo "check.sh: no $doppel (cmake --preset portable && cmake --build build-portable, or --bundle)" >&2; exit 1; }
# cuBLAS is the one library not linked in: find it where the CUDA toolkit or pip's torch put it
if ldd "$doppel" 2>/dev/null | grep -q "libcublas.*not found"; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c "import nvidia, os; print(' '.join(os.path.join(p, s, 'lib') for p in nvidia.__path__ for s in os.listdir(p)))" 2>/dev/null); do
    [ -e "$d/libcublas.so.13" ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
fi
export DOPPEL_TEST_SOURCE_DIR=$repo OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
t_all=$SECONDS

# ---- doppel info
"$doppel" info --json >"$out/info.json" 2>"$work/info.err"; rc=$?
summary=$("$doppel" info 2>/dev/null | grep -E "^CUDA (device|runtime)" | tr -s ' ' | paste -sd ';' -)
json_row kind=info rc=$rc "summary=$summary" "info=$(cat "$out/info.json" 2>/dev/null || echo null)"
if [ $mode = cuda ] && ! grep -q "^CUDA device: *[^n]" <("$doppel" info); then
  echo "check.sh: doppel sees no CUDA device:"; "$doppel" info; exit 1
fi

# ---- the switched suites: the same checks as under EMU, on the device
for s in kernels block forward_gpu generate train_step; do
  t0=$SECONDS
  DOPPEL_TEST_BACKEND=$mode "$bin/test_${s}_emu" >"$out/suite_$s.log" 2>&1; rc=$?
  backend=$(sed -n 's/^backend: \([a-z]*\).*/\1/p' "$out/suite_$s.log" | head -1)
  json_row kind=suite name=$s rc=$rc "backend=${backend:-none}" seconds=$((SECONDS - t0)) \
    "last=$(tail -1 "$out/suite_$s.log" | cut -c1-160)"
done

# ---- the kernel sandbox: every variant validated and timed (cuBLAS as the peer where it has one)
if [ $mode = cuda ]; then sandboxes=$(ls "$bin"/dev/cuda/sandbox_* 2>/dev/null | grep -v "_emu$")
else sandboxes="$bin/dev/cuda/sandbox_gemv_nf4_emu"; fi # one twin: the parsing, not the numbers
for prog in $sandboxes; do
  name=$(basename "$prog")
  extra=(); [ $mode = emu ] && extra=(--shape 37,200 --blocks 64)
  timeout 120 "$prog" "${extra[@]}" >"$out/$name.log" 2>&1; rc=$?
  # the production variant's lines and the cuBLAS peer's, for the table; all of it in the log
  hl=$(grep -E "^(variant 2|peer)|within tolerance" "$out/$name.log" | tr -s ' ' | head -4)
  json_row kind=sandbox name=$name rc=$rc "highlights=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1].splitlines()))' "$hl")" \
    "log=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()[-20000:]))' "$out/$name.log")"
done

# ---- training, peer, chat on generated models
"$doppel" prep "$repo/tests/fixtures/sample-export.csv" --persona mossy --out "$work/d.jsonl" \
  --quiet >/dev/null 2>"$work/prep.err"; rc=$?
json_row kind=step name=prep rc=$rc "note=sample export to $(wc -l <"$work/d.jsonl" 2>/dev/null) conversations"
tok=$work/tokenizer.json
zstd -dc "$repo/tests/fixtures/tokenizers/qwen3.tokenizer.json.zst" >"$tok" 2>/dev/null ||
  python3 -c "import sys; from compression import zstd; open(sys.argv[2],'wb').write(zstd.decompress(open(sys.argv[1],'rb').read()))" \
    "$repo/tests/fixtures/tokenizers/qwen3.tokenizer.json.zst" "$tok" 2>/dev/null ||
  cp "$bin/qwen3.tokenizer.json" "$tok" # pack.sh puts it in the bundle for machines without zstd
total_mib=$(python3 -c "import json; d=json.load(open('$out/info.json')); print(int(d.get('cuda',{}).get('total_mem',0)/2**20) or 24576)" 2>/dev/null || echo 24576)

if ! python3 -c "import torch, transformers, peft" 2>/dev/null; then
  json_row kind=step "name=models, training, peer, chat" rc=77 \
    "note=SKIPPED: python3 lacks torch, transformers or peft (pip install them)"
  models=""
fi
for mdl in ${models//,/ }; do
  case $mdl in
    1.5b) cfg=$repo/configs/models/qwen2.5-1.5b-instruct/config.json ;;
    7b) cfg=$repo/configs/models/qwen2.5-7b-instruct/config.json ;;
    tiny) cfg=$work/tiny-config.json
          python3 -c "import json; c=json.load(open('$repo/configs/models/qwen2.5-1.5b-instruct/config.json')); c.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2); json.dump(c, open('$cfg','w'))" ;;
    *) echo "check.sh: unknown model $mdl (1.5b, 7b)" >&2; exit 2 ;;
  esac
  m=$work/model-$mdl
  t0=$SECONDS
  py make-model "$cfg" "$m" "$tok" >"$work/make-$mdl.json" 2>"$work/make-$mdl.err"; rc=$?
  json_row kind=step "name=make model $mdl" rc=$rc seconds=$((SECONDS - t0)) \
    "note=$(cat "$work/make-$mdl.json" 2>/dev/null; [ $rc = 0 ] || tail -1 "$work/make-$mdl.err" | cut -c1-200)"
  [ $rc = 0 ] || continue

  plan=$("$doppel" plan --model "$m" --seq "$seq" --vram "${total_mib}MiB" 2>&1 | sed -n 's/^ *total *\([0-9.]*\).*/\1/p')
  dev=$mode
  # doppel train, with the device memory watched from outside (cudaMemGetInfo is device-wide)
  if [ $mode = cuda ]; then
    rm -f "$work/mem.json" "$work/mem.json.ready"
    py watch-mem "$work/mem.json" & watcher=$!
    for _ in $(seq 300); do [ -e "$work/mem.json.ready" ] && break; sleep 0.1; done
  fi
  t0=$SECONDS
  "$doppel" train --model "$m" --data "$work/d.jsonl" --out "$work/run-$mdl" --device $dev \
    --max-steps "$steps" --max-seq "$seq" --persona mossy >"$work/train-$mdl.log" 2>&1; rc=$?
  peak=null
  if [ $mode = cuda ]; then
    kill -TERM $watcher; wait $watcher
    peak=$(python3 -c "import json; print(json.load(open('$work/mem.json'))['peak_bytes'])" 2>/dev/null || echo null)
  fi
  tps=$(sed -n 's/^train: \([0-9.]*\) tokens\/s.*/\1/p' "$work/train-$mdl.log" | tail -1)
  cp "$work/train-$mdl.log" "$out/"
  # the peer: transformers + PEFT on the same model, data, sequence length and steps
  pdev=cuda; [ $mode = emu ] && pdev=cpu
  if [ $mode = cuda ]; then
    rm -f "$work/mem.json" "$work/mem.json.ready"
    py watch-mem "$work/mem.json" & watcher=$!
    for _ in $(seq 300); do [ -e "$work/mem.json.ready" ] && break; sleep 0.1; done
  fi
  py peer "$m" "$work/d.jsonl" --steps "$steps" --seq "$seq" --device $pdev >"$work/peer-$mdl.json" 2>"$work/peer-$mdl.err"; prc=$?
  ppeak=null
  if [ $mode = cuda ]; then
    kill -TERM $watcher; wait $watcher
    ppeak=$(python3 -c "import json; print(json.load(open('$work/mem.json'))['peak_bytes'])" 2>/dev/null || echo null)
  fi
  peer=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['peak_bytes']=json.loads(sys.argv[2]); d['rc']=int(sys.argv[3]); print(json.dumps(d))" \
    "$work/peer-$mdl.json" "$ppeak" $prc 2>/dev/null || echo "{\"rc\": $prc, \"error\": $(tail -1 "$work/peer-$mdl.err" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}")
  [ $prc = 0 ] || rc=$((rc ? rc : 10 + prc))
  json_row kind=train model=$mdl device=$dev rc=$rc steps=$steps seq=$seq seconds=$((SECONDS - t0)) \
    "tokens_per_s=${tps:-null}" "peak_bytes=$peak" "plan_mib=${plan:-null}" "peer=$peer"

  # chat: greedy decode on the same model
  cdev=$mode
  "$doppel" chat --model "$m" --device $cdev --prompt "tell me about the weekend" --temperature 0 \
    --max-tokens 128 --stats --quiet >"$work/chat-$mdl.out" 2>"$work/chat-$mdl.err"; rc=$?
  stats=$(sed -n 's/.*\[prompt \([0-9]*\) tokens ([0-9]* cached) in \([0-9.]*\) s; \([0-9]*\) tokens in [0-9.]* s, \([0-9.]*\) tok\/s.*/\1 \2 \3 \4/p' "$work/chat-$mdl.err" | tail -1)
  read -r pt ps nt ts <<<"${stats:-0 0 0 0}"
  cp "$work/chat-$mdl.err" "$out/chat-$mdl.log"
  json_row kind=chat model=$mdl device=$cdev rc=$rc prompt_tokens=$pt prefill_s=$ps tokens=$nt tok_per_s=$ts

  # serve: the trained adapter as persona mossy, 8 slots, batched decode steps on the device
  "$doppel" serve --model "$m" --adapter mossy="$work/run-$mdl" --device $cdev --parallel 8 \
    --port 0 --max-context 512 >"$work/serve-$mdl.out" 2>"$work/serve-$mdl.err" & spid=$!
  port=
  for _ in $(seq 3000); do
    port=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve-$mdl.err" | grep -o '[0-9]*$')
    [ -n "$port" ] && grep -q ready "$work/serve-$mdl.err" && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.1
  done
  stok=64; [ $mode = emu ] && stok=8
  if grep -q ready "$work/serve-$mdl.err"; then
    timeout 600 python3 "$repo/tests/bench/bench_serve.py" "$port" mossy --tokens $stok --rounds 1 \
      --streams 1,4,8 --pid $spid >"$work/bench-serve-$mdl.out" 2>&1; rc=$?
  else
    rc=1
  fi
  kill -INT $spid 2>/dev/null; wait $spid
  cat "$work/serve-$mdl.err" "$work/bench-serve-$mdl.out" >"$out/serve-$mdl.log" 2>/dev/null
  tps=$(sed -n 's/^\([0-9]*\) streams: *\([0-9.]*\) tok\/s.*/\1:\2/p' "$work/bench-serve-$mdl.out" | paste -sd, -)
  json_row kind=serve model=$mdl device=$cdev rc=$rc tokens=$stok "tok_per_s_by_streams=${tps:-none}"
  rm -rf "$m" "$work/run-$mdl" # a 7B model is 15 GB
done

echo "gpu check ($mode) in $((SECONDS - t_all)) s; logs and JSON in $out"
[ $mode = emu ] && echo "(--emu: every figure below is EMU's or the CPU's on tiny shapes, not a GPU's)"
py report "$results" --json "$out/gpu-check.json"
