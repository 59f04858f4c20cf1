#!/usr/bin/env bash
# doppel plan on the shipped model configs: the on-paper targets of issue 7 and usage errors.
set -u
bin=$1
fail=0
max_seq() { "$bin" plan --model "$1" --vram 12GB --r 16 | sed -n 's/^max seq: \([0-9]*\) tokens$/\1/p'; }
s7=$(max_seq configs/models/qwen2.5-7b-instruct)
s3=$(max_seq configs/models/qwen2.5-3b-instruct)
echo "max seq in 12 GB: Qwen2.5-7B $s7, Qwen2.5-3B $s3"
[ -n "$s7" ] && [ "$s7" -ge 4096 ] || { echo "FAIL: 7B max seq '$s7' < 4096"; fail=1; }
[ -n "$s3" ] && [ "$s3" -ge 16384 ] || { echo "FAIL: 3B max seq '$s3' < 16384"; fail=1; }
# the config file alone works too, and a smaller card gives a shorter sequence
s7_8=$(max_seq configs/models/qwen2.5-7b-instruct/config.json)
[ "$s7_8" = "$s7" ] || { echo "FAIL: config.json path gives $s7_8, dir gives $s7"; fail=1; }
s7_small=$("$bin" plan --model configs/models/qwen2.5-7b-instruct --vram 8GB | sed -n 's/^max seq: \([0-9]*\).*/\1/p')
[ "$s7_small" -lt "$s7" ] || { echo "FAIL: 8 GB allows $s7_small >= $s7"; fail=1; }
"$bin" plan --model /nonexistent/model >/dev/null 2>/tmp/plan-err.$$; rc=$?
[ $rc = 1 ] && grep -q "/nonexistent/model" /tmp/plan-err.$$ || { echo "FAIL: missing model: exit $rc"; cat /tmp/plan-err.$$; fail=1; }
"$bin" plan --model configs/models/qwen2.5-7b-instruct --seq 0 >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL: --seq 0 exit $rc, expected 2"; fail=1; }
"$bin" plan --model configs/models/qwen2.5-7b-instruct --vram lots >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL: --vram lots exit $rc, expected 2"; fail=1; }
rm -f /tmp/plan-err.$$
[ $fail = 0 ] && echo "cli_plan: all checks passed"
exit $fail
