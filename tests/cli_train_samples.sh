#!/usr/bin/env bash
# Samples while training on the tiny Llama fixture: each evaluation stores the adapter's replies
# to the first --samples validation contexts in metrics.h5 (sample_step, sample_context,
# sample_text); a run stopped and resumed holds the same replies as one that never stopped
# (the samples of the repeated steps are dropped, the sampler's seed is fixed); --samples 0
# stores none.
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-samples.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
python3 -c "import h5py" 2>/dev/null || { echo "SKIPPED: no h5py"; exit 77; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
run=(--model "$model" --data "$tmp/d.jsonl" --val "$tmp/d.val.jsonl" --max-seq 128
     --batch-tokens 256 --r 4 --lr 2e-3 --max-steps 6 --eval-every 3 --samples 2
     --sample-tokens 12 --quiet)
"$bin" train "${run[@]}" --out "$tmp/full" || { echo "FAIL: full run"; fail=1; }
"$bin" train "${run[@]}" --out "$tmp/part" --stop-at 4 || { echo "FAIL: stopped run"; fail=1; }
"$bin" train "${run[@]}" --out "$tmp/part" --resume || { echo "FAIL: resumed run"; fail=1; }
"$bin" train "${run[@]}" --out "$tmp/none" --samples 0 || { echo "FAIL: --samples 0"; fail=1; }
python3 - "$tmp" <<'PY' || fail=1
import sys, h5py
t = sys.argv[1]
def samples(run):
    with h5py.File(f"{t}/{run}/metrics.h5", "r") as f:
        return list(f["sample_step"][:]), list(f["sample_context"][:]), list(f["sample_text"][:])
s, c, x = samples("full")
ok = s == [3, 3, 6, 6] and c == [0, 1, 0, 1] and all(len(v) > 0 for v in x)
ok &= x[0] != x[2]  # the adapter changed between the evaluations
ok &= samples("part") == (s, c, x)
ok &= samples("none")[0] == []
print(f"samples: steps {s}, contexts {c}; resumed equal: {samples('part') == (s, c, x)}: "
      f"{'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
exit $fail
