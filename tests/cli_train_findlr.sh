#!/usr/bin/env bash
# doppel train --find-lr on the tiny Llama fixture and the bundled sample: it runs, writes
# nothing into --out (not even the directory), prints a finite suggested lr inside the sweep,
# writes the CSV it was asked for with one row per step and the lrs rising exponentially; bad
# combinations are refused before loading.
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-findlr.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
common=(--model "$model" --data "$tmp/d.jsonl" --max-seq 128 --batch-tokens 256 --r 4 --quiet)

"$bin" train "${common[@]}" --find-lr --find-lr-steps 30 --find-lr-min 1e-5 --find-lr-max 0.5 \
  --out "$tmp/run" --find-lr-csv "$tmp/sweep.csv" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc = 0 ] || { echo "FAIL: --find-lr exit $rc"; cat "$tmp/err"; fail=1; }
[ -e "$tmp/run" ] && { echo "FAIL: --find-lr wrote into --out:"; ls -R "$tmp/run"; fail=1; }
sug=$(sed -n 's/^suggested peak lr: \([^ ]*\) .*/\1/p' "$tmp/out")
python3 - "$sug" "$tmp/sweep.csv" <<'PY' || fail=1
import csv, math, sys
s = float(sys.argv[1])  # a missing line fails here
rows = list(csv.DictReader(open(sys.argv[2])))
lrs = [float(r["lr"]) for r in rows]
ok = math.isfinite(s) and 1e-5 / 10 <= s <= 0.5 and 8 <= len(rows) <= 30
ok &= abs(lrs[0] - 1e-5) < 1e-12 and all(b > a for a, b in zip(lrs, lrs[1:]))
# exponential: a constant ratio between steps, (0.5 / 1e-5) ** (1 / 29)
ratio = (0.5 / 1e-5) ** (1 / 29)
ok &= all(abs(b / a - ratio) < 1e-5 * ratio for a, b in zip(lrs, lrs[1:]))
# the suggestion is a tenth of a swept lr
ok &= any(abs(s - lr / 10) <= 1e-3 * s for lr in lrs)
print(f"suggested {s:.3g}, {len(rows)} steps from {lrs[0]:.2g} to {lrs[-1]:.2g}: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
grep -q "smoothed loss vs lr" "$tmp/out" || { echo "FAIL: no plot in the terminal"; fail=1; }

expect2() { # what args...: refused with exit 2
  local what=$1; shift
  "$bin" train "$@" >"$tmp/o2" 2>&1
  local got=$?
  [ "$got" = 2 ] || { echo "FAIL: $what: exit $got, expected 2"; cat "$tmp/o2"; fail=1; }
}
expect2 "--find-lr --resume" "${common[@]}" --find-lr --resume --out "$tmp/run"
expect2 "--find-lr-steps 3" "${common[@]}" --find-lr --find-lr-steps 3
expect2 "min above max" "${common[@]}" --find-lr --find-lr-min 1 --find-lr-max 0.1
[ -e "$tmp/run" ] && { echo "FAIL: a refused --find-lr created --out"; fail=1; }
exit $fail
