#!/usr/bin/env bash
# The README's demo: the whole pipeline on the bundled sample export, as far as it is built.
# Today: the build and machine report. Each issue that lands extends this script.
set -euo pipefail
bin=${1:-build/doppel}
out=${DEMO_OUT:-demo-out}
mkdir -p "$out"
echo "== doppel info"
"$bin" info
echo
echo "== what is built so far"
for c in prep train chat; do
  if "$bin" "$c" >/dev/null 2>&1 </dev/null; [ $? -eq 2 ] && "$bin" "$c" 2>&1 | grep -q "not built yet"; then
    echo "  doppel $c: not built yet"
  else
    echo "  doppel $c: available"
  fi
done
echo
echo "== doppel prep: the bundled sample export -> ChatML conversations (persona: mossy)"
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$out/train.jsonl" \
  --stats "$out/prep-stats.json" --preview 2
