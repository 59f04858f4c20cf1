#!/usr/bin/env bash
# Benchmark of doppel prep (not a test): a generated 600,000-message DCE export, in time order
# and newest first, against a straightforward Python csv-module implementation of the same rule
# (tests/reference/prep_reference.py), run in the same session. Prints MB/s, messages/s, peak
# RSS (/usr/bin/time -v) and the ratios; checks that both produce the same conversations.
#   tests/bench/bench_prep.sh [path/to/doppel] [messages]
set -euo pipefail
bin=${1:-build/doppel}
n=${2:-600000}
dir=${BENCH_DIR:-/tmp/doppel-bench}
mkdir -p "$dir"
gen=tests/reference/make_sample_export.py
for kind in fwd rev small; do
  f="$dir/export-$kind.csv"
  [ -s "$f" ] && continue
  case $kind in
    fwd) python3 $gen --messages "$n" --out "$f" ;;
    rev) python3 $gen --messages "$n" --reverse --crlf --out "$f" ;;
    small) python3 $gen --messages $((n / 3)) --out "$f" ;;
  esac
done
size() { stat -c %s "$1"; }
# run LABEL CMD...: prints one row; wall/cpu/rss from /usr/bin/time -v
row() {
  local label=$1 input=$2; shift 2
  /usr/bin/time -v "$@" >"$dir/out.txt" 2>"$dir/time.txt" || { cat "$dir/time.txt"; exit 1; }
  local wall cpu rss mb
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$dir/time.txt")
  cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {print u+s}' "$dir/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {print $2/1024}' "$dir/time.txt")
  mb=$(awk -v b="$(size "$input")" 'BEGIN {print b/1e6}')
  printf "%-44s %7.2f %7.2f %8.1f %8.1f %10.0f %9.1f %6.2f\n" "$label" "$wall" "$cpu" \
    "$(awk -v m=$mb -v t=$wall 'BEGIN{print m/t}')" "$(awk -v m=$mb -v t=$cpu 'BEGIN{print m/t}')" \
    "$(awk -v n=$n -v t=$wall 'BEGIN{print n/t}')" "$rss" "$(awk -v r=$rss -v m=$mb 'BEGIN{print r/m}')"
  echo "$wall $cpu $rss" >"$dir/last.txt"
}
echo "input: $n messages, $(awk -v b=$(size $dir/export-fwd.csv) 'BEGIN{printf "%.1f", b/1e6}') MB (time order), $(awk -v b=$(size $dir/export-rev.csv) 'BEGIN{printf "%.1f", b/1e6}') MB (newest first, CRLF); $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
printf "%-44s %7s %7s %8s %8s %10s %9s %6s\n" "run" "wall s" "cpu s" "MB/s" "MB/cpu-s" "msg/s" "RSS MB" "RSS/in"
common=(--persona mossy --val-fraction 0 --quiet)
row "doppel prep (time order, streamed)" "$dir/export-fwd.csv" "$bin" prep "$dir/export-fwd.csv" "${common[@]}" --out "$dir/doppel.jsonl" --stats "$dir/stats.json"
read dw dc dr <"$dir/last.txt"
row "doppel prep (newest first, streamed back)" "$dir/export-rev.csv" "$bin" prep "$dir/export-rev.csv" "${common[@]}" --out "$dir/doppel-rev.jsonl"
row "doppel prep --sort-in-memory" "$dir/export-fwd.csv" "$bin" prep "$dir/export-fwd.csv" "${common[@]}" --sort-in-memory --out "$dir/doppel-sort.jsonl"
n_small=$((n / 3)); n_save=$n; n=$n_small
row "doppel prep, 1/3 of the messages (streamed)" "$dir/export-small.csv" "$bin" prep "$dir/export-small.csv" "${common[@]}" --out "$dir/doppel-small.jsonl"
n=$n_save
row "python3 csv module (prep_reference.py)" "$dir/export-fwd.csv" python3 tests/reference/prep_reference.py "$dir/export-fwd.csv" --persona mossy --out "$dir/python.jsonl"
read pw pc pr <"$dir/last.txt"
same=$(python3 -c "
import json, sys
def load(p): return [json.loads(l)['messages'] for l in open(p)]
a, b, c, d = (load(sys.argv[i]) for i in range(1, 5))
print('yes' if a == b == c == d else 'NO')" "$dir/doppel.jsonl" "$dir/doppel-rev.jsonl" "$dir/doppel-sort.jsonl" "$dir/python.jsonl")
echo "same conversations (doppel time order / newest first / sorted / python): $same"
awk -v pw=$pw -v dw=$dw -v pc=$pc -v dc=$dc -v pr=$pr -v dr=$dr 'BEGIN {
  printf "doppel vs python: %.1fx faster (wall), %.1fx less CPU, %.1fx less memory\n", pw/dw, pc/dc, pr/dr }'
# the floor: libcsv itself on the same file (doppel prep cannot parse faster than this)
libcsv_bench=$(dirname "$bin")/bench_libcsv
[ -x "$libcsv_bench" ] && "$libcsv_bench" "$dir/export-fwd.csv"
mbin=$(awk -v b="$(size "$dir/export-fwd.csv")" 'BEGIN{print b/1e6}')
awk -v pc="$pc" -v mb="$mbin" 'BEGIN { printf "30x less CPU than python would need %.0f MB/cpu-s\n", mb / (pc / 30) }'
# the two threads' CPU seconds: on two free cores the larger one bounds the wall time
python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
r, t = d['reader_cpu_seconds'], d['timeline_cpu_seconds']
print(f'threads: reader {r:.2f} CPU s, timeline+output {t:.2f} CPU s -> on two free cores about '
      f'{d[\"input_bytes\"] / 1e6 / max(r, t):.0f} MB/s, {d[\"rows\"] / max(r, t):.0f} msg/s')" "$dir/stats.json"
