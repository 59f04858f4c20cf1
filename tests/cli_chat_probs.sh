#!/usr/bin/env bash
# chat's /probs shows each candidate token's own bytes as `doppel tokenize` does: on the tiny
# fixture model (a byte-level vocabulary) the table holds byte fragments of characters, which
# must print as \xNN, never as U+FFFD.
set -u
bin="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '/probs\nhello\n/quit\n' |
  "$bin" chat --model tests/fixtures/tiny-llama --max-tokens 4 --temperature 0 --quiet >"$tmp/out" 2>&1
rc=$?
fail=0
[ $rc = 0 ] || { echo "FAIL: chat exit $rc: $(cat "$tmp/out")"; fail=1; }
grep -- '<-' "$tmp/out" >"$tmp/table" || { echo "FAIL: no next-token table"; cat "$tmp/out"; fail=1; }
grep -qE '"\\x[89A-F][0-9A-F]"' "$tmp/table" || { echo "FAIL: no byte fragment shown as \\xNN"; cat "$tmp/table"; fail=1; }
if grep -q $'\xEF\xBF\xBD' "$tmp/table"; then echo "FAIL: U+FFFD in the table"; cat "$tmp/table"; fail=1; fi
# the same form as tokenize's piece listing: a byte token there is "\xNN" too
"$bin" tokenize --model tests/fixtures/tiny-llama $'\xC3\xA9' >"$tmp/tok" 2>&1
grep -qE '^ *[0-9]+  "(\\xC3|\\xA9|\\xC3\\xA9|é)"$' "$tmp/tok" || { echo "FAIL: tokenize pieces:"; cat "$tmp/tok"; fail=1; }
[ $fail = 0 ] && echo "cli_chat_probs: all passed"
exit $fail
