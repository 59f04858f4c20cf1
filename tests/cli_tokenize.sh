#!/usr/bin/env bash
# doppel tokenize end to end: --jsonl over ../shared's reference-ids.jsonl must give every
# line's ids; --ids, the piece listing, stdin, and the exit codes of bad input.
set -u
bin=$1
shared=${DOPPEL_SHARED:-../shared}
[ -d "$shared/tokenizers/qwen3" ] || { echo "SKIPPED: $shared/tokenizers not found"; exit 77; }
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in qwen3 llama3; do
  ref=$shared/tokenizers/$m/reference-ids.jsonl
  python3 -c 'import json,sys; [print(json.dumps({"text": json.loads(l)["text"]})) for l in open(sys.argv[1]) if l.strip()]' "$ref" >"$tmp/in.jsonl"
  "$bin" tokenize --model "$shared/tokenizers/$m" --jsonl <"$tmp/in.jsonl" >"$tmp/out.jsonl" || { echo "FAIL: $m --jsonl exit $?"; fail=1; }
  python3 - "$ref" "$tmp/out.jsonl" <<'PY' || { echo "FAIL: $m --jsonl ids differ from reference-ids.jsonl"; fail=1; }
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
assert len(ref) == len(out), (len(ref), len(out))
for r, o in zip(ref, out):
    assert r["text"] == o["text"] and r["ids"] == o["ids"], (r, o)
PY
done
got=$("$bin" tokenize --model "$shared/tokenizers/qwen3/tokenizer.json" --ids "Hello, my dog is cute")
[ "$got" = "9707 11 847 5562 374 18838" ] || { echo "FAIL: --ids gave '$got'"; fail=1; }
got=$(printf 'Hello, my dog is cute' | "$bin" tokenize --model "$shared/tokenizers/qwen3" --ids)
[ "$got" = "9707 11 847 5562 374 18838" ] || { echo "FAIL: stdin --ids gave '$got'"; fail=1; }
"$bin" tokenize --model "$shared/tokenizers/qwen3" "Hello, my dog" >"$tmp/p.txt" || fail=1
grep -q '^ *5562  " dog"$' "$tmp/p.txt" || { echo "FAIL: piece listing"; cat "$tmp/p.txt"; fail=1; }
"$bin" tokenize --model /nonexistent/tok.json hi 2>/dev/null; [ $? = 1 ] || { echo "FAIL: missing model exit"; fail=1; }
"$bin" tokenize hi 2>/dev/null; [ $? = 2 ] || { echo "FAIL: no --model exit"; fail=1; }
echo '{"x":1}' | "$bin" tokenize --model "$shared/tokenizers/qwen3" --jsonl 2>"$tmp/err"; [ $? = 1 ] || { echo "FAIL: bad jsonl exit"; fail=1; }
grep -q 'stdin:1' "$tmp/err" || { echo "FAIL: bad jsonl message"; fail=1; }
printf 'ok\xC3(' | "$bin" tokenize --model "$shared/tokenizers/qwen3" 2>"$tmp/err"; [ $? = 1 ] || { echo "FAIL: invalid UTF-8 exit"; fail=1; }
grep -q 'offset 2' "$tmp/err" || { echo "FAIL: invalid UTF-8 message"; cat "$tmp/err"; fail=1; }
[ $fail = 0 ] && echo "cli_tokenize: all passed"
exit $fail
