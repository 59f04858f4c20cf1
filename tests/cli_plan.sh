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
# --config: the file's train section is planned as the same flags on the command line
# (rtx3060-12gb.json: batch-tokens 4096 wins over max-seq 2048, r 16), and a "plan" section's
# --model is read after the parsed options would have been freed (ASan: use after free)
m7=configs/models/qwen2.5-7b-instruct
tmp=$(mktemp -d /tmp/doppel-cli-plan.XXXXXX)
"$bin" plan --config configs/rtx3060-12gb.json --model $m7 >"$tmp/cfg" 2>"$tmp/err"; rc=$?
"$bin" plan --model $m7 --seq 4096 --r 16 >"$tmp/flags" 2>&1
"$bin" plan --model $m7 >"$tmp/defaults" 2>&1
[ $rc = 0 ] && cmp -s "$tmp/cfg" "$tmp/flags" \
  || { echo "FAIL: plan --config rtx3060-12gb.json (exit $rc) differs from --seq 4096 --r 16"; diff "$tmp/cfg" "$tmp/flags"; cat "$tmp/err"; fail=1; }
cmp -s "$tmp/cfg" "$tmp/defaults" && { echo "FAIL: plan --config planned the defaults"; fail=1; }
# the command line wins over the file
"$bin" plan --config configs/rtx3060-12gb.json --model $m7 --seq 1024 --r 8 >"$tmp/cfg2" 2>&1
"$bin" plan --model $m7 --seq 1024 --r 8 >"$tmp/flags2" 2>&1
cmp -s "$tmp/cfg2" "$tmp/flags2" || { echo "FAIL: command-line options do not win over --config"; diff "$tmp/cfg2" "$tmp/flags2"; fail=1; }
# everything from a file: a "plan" section (wins over "train") naming the model
printf '{"train": {"max-seq": 512, "r": 4, "model": "nowhere"},\n "plan": {"model": "%s", "vram": "8GB", "seq": 3000}}\n' "$m7" >"$tmp/p.json"
"$bin" plan --config "$tmp/p.json" >"$tmp/cfg3" 2>"$tmp/err"; rc=$?
"$bin" plan --model $m7 --vram 8GB --seq 3000 --r 4 >"$tmp/flags3" 2>&1
[ $rc = 0 ] && cmp -s "$tmp/cfg3" "$tmp/flags3" \
  || { echo "FAIL: plan --config with a plan section (exit $rc)"; diff "$tmp/cfg3" "$tmp/flags3"; cat "$tmp/err"; fail=1; }
# a usage error after the config was read frees it (the ASan build checks for leaks)
"$bin" plan --config "$tmp/p.json" --seq 0 >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL: --config + --seq 0 exit $rc, expected 2"; fail=1; }
"$bin" plan --config "$tmp/p.json" --nope >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL: --config + --nope exit $rc, expected 2"; fail=1; }
rm -rf "$tmp"
rm -f /tmp/plan-err.$$
[ $fail = 0 ] && echo "cli_plan: all checks passed"
exit $fail
