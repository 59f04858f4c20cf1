#!/usr/bin/env bash
# doppel chat end to end on the tiny fixture model: --prompt answers once, the REPL reads
# commands from a pipe (/probs /save /reset /load /temp /quit), bad flags and inputs exit 2 / 1.
set -u
bin="$1"
model=tests/fixtures/tiny-llama
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0 pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# one answer, greedy, deterministic: two runs print the same reply
"$bin" chat --model "$model" --prompt "hello there" --temperature 0 --max-tokens 12 --quiet >"$tmp/a" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && ok || bad "--prompt exit $rc: $(cat "$tmp/err")"
[ -s "$tmp/a" ] && ok || bad "--prompt printed nothing"
"$bin" chat --model "$model" --prompt "hello there" --temperature 0 --max-tokens 12 --quiet --precision fp32 >"$tmp/b" 2>/dev/null
"$bin" chat --model "$model" --prompt "hello there" --temperature 0 --max-tokens 12 --quiet --precision fp32 >"$tmp/c" 2>/dev/null
cmp -s "$tmp/b" "$tmp/c" && ok || bad "greedy replies differ between runs"
# sampling with a seed is reproducible
"$bin" chat --model "$model" --prompt "hi" --seed 5 --temperature 1 --max-tokens 12 --quiet >"$tmp/d" 2>/dev/null
"$bin" chat --model "$model" --prompt "hi" --seed 5 --temperature 1 --max-tokens 12 --quiet >"$tmp/e" 2>/dev/null
cmp -s "$tmp/d" "$tmp/e" && ok || bad "seeded replies differ between runs"

# the REPL over a pipe
printf 'hello\n/probs\nhow are you\n/save %s\n/reset\n/load %s\n/temp 0\n/temp x\n/nope\nok\n/quit\n' \
  "$tmp/s.json" "$tmp/s.json" |
  "$bin" chat --model "$model" --max-tokens 6 --as Bob --system "be brief" --quiet >"$tmp/repl" 2>&1
rc=$?
[ $rc -eq 0 ] && ok || bad "REPL exit $rc"
grep -q "next-token table on" "$tmp/repl" && ok || bad "/probs did not toggle"
grep -q "%" "$tmp/repl" && ok || bad "/probs printed no probabilities"
grep -q "saved 4 messages" "$tmp/repl" && ok || bad "/save: $(cat "$tmp/repl")"
grep -q "loaded 4 messages" "$tmp/repl" && ok || bad "/load"
grep -q "temperature 0" "$tmp/repl" && ok || bad "/temp"
grep -q "/temp needs a number" "$tmp/repl" && ok || bad "/temp x accepted"
grep -q "commands:" "$tmp/repl" && ok || bad "unknown command gave no help"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['system']=='be brief'; assert d['messages'][0]=={'role':'user','content':'[Bob]: hello'}; assert d['messages'][1]['role']=='assistant'" "$tmp/s.json" 2>/dev/null && ok || bad "saved session: $(cat "$tmp/s.json")"

# --decode int8 answers (int8 products where the CPU has AVX512-VNNI and a shape fits, else fp32
# with a notice: either way stderr says which); a bad value is a usage error
"$bin" chat --model "$model" --prompt "hello there" --temperature 0 --max-tokens 12 --decode int8 >"$tmp/i8" 2>"$tmp/i8.err"
rc=$?
[ $rc -eq 0 ] && [ -s "$tmp/i8" ] && ok || bad "--decode int8 exit $rc: $(cat "$tmp/i8.err")"
grep -q "int8 decode activations\|decoding in fp32" "$tmp/i8.err" && ok || bad "--decode int8 not reported: $(cat "$tmp/i8.err")"
"$bin" chat --model "$model" --decode int4 --prompt hi >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q -- "--decode" "$tmp/err" && ok || bad "--decode int4: $(cat "$tmp/err")"

# errors: usage 2, runtime 1, each with a message
"$bin" chat --prompt hi >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q -- "--model" "$tmp/err" && ok || bad "no --model"
"$bin" chat --model "$model" --device tpu --prompt hi >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--device tpu"
"$bin" chat --model "$model" --adapter "$tmp/noadapter" --prompt hi >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "noadapter" "$tmp/err" && ok || bad "--adapter missing: $(cat "$tmp/err")"
"$bin" chat --model "$tmp/none" --prompt hi >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "none" "$tmp/err" && ok || bad "missing model: $(cat "$tmp/err")"
"$bin" chat --model "$model" --top-p 2 --prompt hi >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--top-p 2"
# usage errors found while parsing, after --config was read and arguments gathered: exit 2 and
# nothing left allocated (the ASan build's leak check turns a leak into another exit status)
printf '{"chat": {"model": "%s", "max-tokens": 4}}\n' "$model" >"$tmp/chat.json"
"$bin" chat --config "$tmp/chat.json" stray words >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -q "too many arguments" "$tmp/err" && ok || bad "stray arguments: exit $rc: $(cat "$tmp/err")"
"$bin" chat --config "$tmp/chat.json" --nope >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && ok || bad "--nope with --config: exit $rc: $(cat "$tmp/err")"
"$bin" chat --config "$tmp/chat.json" --max-tokens >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && ok || bad "--max-tokens without a value: exit $rc: $(cat "$tmp/err")"
"$bin" chat --config "$tmp/chat.json" --precision int3 --prompt hi >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && ok || bad "--precision int3 with --config: exit $rc: $(cat "$tmp/err")"
echo '{"messages": 3}' >"$tmp/badsess.json"
printf '/load %s\n/quit\n' "$tmp/badsess.json" | "$bin" chat --model "$model" --quiet >"$tmp/o" 2>&1
grep -q "badsess.json" "$tmp/o" && ok || bad "bad session file not named: $(cat "$tmp/o")"
# a message longer than the context: a clear error, the REPL goes on
long=$(python3 -c "print('hello there how are you ' * 40)")
printf '%s\nhi\n/quit\n' "$long" | "$bin" chat --model "$model" --max-context 64 --max-tokens 4 --quiet >"$tmp/o" 2>&1
grep -q -- "--max-context" "$tmp/o" && ok || bad "too-long message: $(cat "$tmp/o")"

# an adapter from a short `doppel train` run: its persona is announced, replies still come,
# and with the adapter's weights the greedy reply differs from the base model's
if "$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 &&
  "$bin" train --model "$model" --data "$tmp/d.jsonl" --out "$tmp/ad" --max-seq 128 --batch-tokens 256 \
    --r 4 --lr 5e-2 --max-steps 4 --persona mossy --quiet >/dev/null 2>"$tmp/err"; then
  "$bin" chat --model "$model" --adapter "$tmp/ad" --prompt "hello there" --temperature 0 --max-tokens 12 \
    --precision fp32 >"$tmp/ad.out" 2>"$tmp/ad.err"
  [ $? -eq 0 ] && ok || bad "chat --adapter: $(cat "$tmp/ad.err")"
  grep -q "persona mossy" "$tmp/ad.err" && ok || bad "adapter persona not announced: $(cat "$tmp/ad.err")"
  cmp -s "$tmp/ad.out" "$tmp/b" && bad "the adapter changed nothing" || ok
else
  bad "could not train an adapter: $(cat "$tmp/err")"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
