#!/usr/bin/env bash
# The CLI contract: --help for every command, exit codes 0 / 1 / 2, errors on stderr.
set -u
bin=$1
fail=0
expect() { # expected-code description command...
  local want=$1 what=$2; shift 2
  "$@" >/tmp/doppel-cli-out.$$ 2>/tmp/doppel-cli-err.$$
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"; cat /tmp/doppel-cli-err.$$; fail=1
  fi
}
expect 0 "--help" "$bin" --help
grep -q "usage: doppel <command>" /tmp/doppel-cli-out.$$ || { echo "FAIL: --help text"; fail=1; }
expect 0 "--version" "$bin" --version
grep -q "^doppel [0-9]" /tmp/doppel-cli-out.$$ || { echo "FAIL: --version text"; fail=1; }
expect 2 "no command" "$bin"
expect 2 "unknown command" "$bin" frobnicate
grep -q "unknown command" /tmp/doppel-cli-err.$$ || { echo "FAIL: unknown command message"; fail=1; }
for c in prep train chat serve merge eval info quantize plan tokenize; do
  expect 0 "$c --help" "$bin" "$c" --help
  grep -q "usage: doppel $c" /tmp/doppel-cli-out.$$ || { echo "FAIL: $c --help has no usage line"; fail=1; }
  [ -s /tmp/doppel-cli-err.$$ ] && { echo "FAIL: $c --help wrote to stderr"; fail=1; }
  expect 2 "$c --no-such-option" "$bin" "$c" --no-such-option
  grep -q "doppel $c:" /tmp/doppel-cli-err.$$ || { echo "FAIL: $c usage error not on stderr"; fail=1; }
done
expect 0 "info" "$bin" info
grep -q "CUDA device:" /tmp/doppel-cli-out.$$ || { echo "FAIL: info has no CUDA device line"; fail=1; }
expect 0 "info --json" "$bin" info --json
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert 'cuda_compiled' in d and 'libraries' in d" \
  /tmp/doppel-cli-out.$$ || { echo "FAIL: info --json"; fail=1; }
rm -f /tmp/doppel-cli-out.$$ /tmp/doppel-cli-err.$$
[ $fail = 0 ] && echo "cli_help: all checks passed"
exit $fail
