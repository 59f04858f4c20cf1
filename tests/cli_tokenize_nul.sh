#!/usr/bin/env bash
# doppel tokenize --jsonl keeps text with NUL characters whole: every text of
# tests/fixtures/nul-text-ids.jsonl must give exactly Hugging Face tokenizers' ids
# (tests/reference/make_nul_text_fixture.py) and come back unchanged in the output's "text".
# The committed tokenizers run everywhere; ../shared's real ones when present.
set -u
bin=$1
fixture=tests/fixtures/nul-text-ids.jsonl
shared=${DOPPEL_SHARED:-../shared}
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the input lines as JSON writes them: NUL as \u0000
python3 -c 'import json,sys; [print(json.dumps({"text": json.loads(l)["text"]})) for l in open(sys.argv[1]) if l.strip()]' "$fixture" >"$tmp/in.jsonl"
grep -q 'a\\u0000b' "$tmp/in.jsonl" || { echo "FAIL: the input lost its \\u0000 escapes"; exit 1; }
check() { # KEY TOKENIZER_PATH
  "$bin" tokenize --model "$2" --jsonl <"$tmp/in.jsonl" >"$tmp/out-$1.jsonl" || { echo "FAIL: $1: exit $?"; fail=1; return; }
  python3 - "$fixture" "$tmp/out-$1.jsonl" "$1" <<'PY' || fail=1
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
key, bad = sys.argv[3], 0
if len(ref) != len(out):
    print(f"FAIL: {key}: {len(out)} output lines for {len(ref)} texts"); sys.exit(1)
for r, o in zip(ref, out):
    if o["text"] != r["text"] or o["ids"] != r[key]:
        print(f"FAIL: {key}: {r['text']!r}: expected {r[key]}, got {o['ids']} for {o['text']!r}")
        bad = 1
print(f"  {key}: {len(ref)} texts {'differ' if bad else 'match Hugging Face tokenizers'}")
sys.exit(bad)
PY
}
check toy tests/fixtures/toy-tokenizer.json
check tiny_qwen3 tests/fixtures/tiny-qwen3
if [ -d "$shared/tokenizers/qwen3" ]; then
  check qwen3 "$shared/tokenizers/qwen3"
  check llama3 "$shared/tokenizers/llama3"
else
  echo "  (../shared absent: the qwen3 and llama3 columns are not checked)"
fi
# random texts (NULs, every JSON escape, surrogate pairs, U+2028, strings holding NUL before and
# inside the "text" member) come back byte for byte as Python's json module reads them
python3 - "$bin" <<'PY' || fail=1
import json, random, subprocess, sys
rng = random.Random(7)
pieces = ["\0", "a", '"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x01", "\x1f", "\x7f", "é",
          "😀", "中", "\u2028", " ", "u0000", "\\u0000", "\ud7ff", "\ue000", "\U0010ffff"]
texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
lines = [json.dumps({"z": [t, {"k": t}], "text": t} if i % 2 else {"text": t, "n": None},
                    ensure_ascii=bool(i % 3)) for i, t in enumerate(texts)]
r = subprocess.run([sys.argv[1], "tokenize", "--model", "tests/fixtures/toy-tokenizer.json",
                    "--jsonl"], input=("\n".join(lines) + "\n").encode(), capture_output=True)
out = [json.loads(l)["text"] for l in r.stdout.decode().split("\n") if l]
bad = r.returncode != 0 or out != texts
print(f"  round trip: {len(texts)} random texts ({sum(chr(0) in t for t in texts)} with NUL) "
      f"{'DIFFER: ' + r.stderr.decode()[:200] if bad else 'come back unchanged'}")
sys.exit(1 if bad else 0)
PY
# an object key holding NUL would match another key once cut: refused, naming the line
printf '{"text":"ok"}\n{"te\\u0000xt":"a","text":"b"}\n' |
  "$bin" tokenize --model tests/fixtures/toy-tokenizer.json --jsonl >/dev/null 2>"$tmp/err"
[ $? = 1 ] || { echo "FAIL: a NUL in a key: exit code"; fail=1; }
grep -q 'stdin:2: a JSON object key holds a NUL' "$tmp/err" || { echo "FAIL: a NUL in a key: $(cat "$tmp/err")"; fail=1; }
[ $fail = 0 ] && echo "cli_tokenize_nul: all passed"
exit $fail
