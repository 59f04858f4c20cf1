#!/usr/bin/env bash
# doppel prep through the CLI: outputs and their formats, --stats, --preview, --list-authors,
# strict errors (exit 1, FILE:LINE, nothing written), usage errors (exit 2).
set -u
bin=$1
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sample=tests/fixtures/sample-export.csv
bad() { echo "FAIL: $*"; fail=1; }

"$bin" prep "$sample" --persona mossy --out "$tmp/train.jsonl" --stats "$tmp/stats.json" \
  --preview 2 >"$tmp/preview.txt" 2>"$tmp/err.txt" || bad "prep on the sample: exit $?"
[ -s "$tmp/train.jsonl" ] || bad "no train.jsonl"
[ -s "$tmp/train.val.jsonl" ] || bad "no train.val.jsonl (default --val-fraction 0.05)"
grep -q "conversations: " "$tmp/err.txt" || bad "no summary on stderr"
[ "$(grep -c '<|im_start|>assistant' "$tmp/preview.txt")" -ge 2 ] || bad "--preview 2 shows no ChatML"
python3 - "$tmp" <<'PY' || fail=1
import json, sys
d = sys.argv[1]
st = json.load(open(f"{d}/stats.json"))
train = [json.loads(l) for l in open(f"{d}/train.jsonl")]
val = [json.loads(l) for l in open(f"{d}/train.val.jsonl")]
ok = True
def need(cond, what):
    global ok
    if not cond:
        print("FAIL:", what); ok = False
need(st["conversations"]["train"] == len(train), "stats train count")
need(st["conversations"]["val"] == len(val), "stats val count")
need(st["rows"] == 1500 and st["kept"] + sum(st["dropped"].values()) == st["rows"], "stats rows add up")
for c in train + val:
    roles = [m["role"] for m in c["messages"]]
    need(roles == ["user", "assistant"], f"roles {roles}")
    need(all(isinstance(m["content"], str) and m["content"] for m in c["messages"]), "empty content")
# whole sessions: no session index on both sides
need(not ({c["session"] for c in train} & {c["session"] for c in val}), "a session in train and val")
# percentiles of assistant characters (code points), nearest rank as doppel documents
a = sorted(len(c["messages"][1]["content"]) for c in train + val)
want = [a[int(q * (len(a) - 1) + 0.5)] for q in (0.5, 0.9, 0.99, 1.0)]
got = [st["assistant_chars"][k] for k in ("p50", "p90", "p99", "max")]
need(want == got, f"assistant_chars percentiles {got}, expected {want}")
# the persona's style: no capital letters in her turns
need(all(c["messages"][1]["content"] == c["messages"][1]["content"].lower() for c in train), "persona style")
sys.exit(0 if ok else 1)
PY

# .zst output, no val file, multi mode
"$bin" prep "$sample" --persona mossy --out "$tmp/t.jsonl.zst" --val-fraction 0 --mode multi \
  --quiet 2>/dev/null || bad "prep .zst: exit $?"
[ -e "$tmp/t.val.jsonl.zst" ] && bad "--val-fraction 0 wrote a val file"
zstd -dc "$tmp/t.jsonl.zst" | python3 -c "
import json, sys
n = 0
for l in sys.stdin:
    r = [m['role'] for m in json.loads(l)['messages']]
    assert r[0] == 'user' and r[-1] == 'assistant' and len(r) % 2 == 0, r
    n += 1
assert n > 0
" || bad "multi-mode .zst output"

# a zstd-compressed CSV gives the same conversations
zstd -q -c "$sample" >"$tmp/sample.csv.zst"
"$bin" prep "$tmp/sample.csv.zst" --persona mossy --out "$tmp/z.jsonl" --val-fraction 0 --quiet 2>/dev/null \
  || bad "prep on a .csv.zst: exit $?"
"$bin" prep "$sample" --persona mossy --out "$tmp/p.jsonl" --val-fraction 0 --quiet 2>/dev/null
cmp -s "$tmp/z.jsonl" "$tmp/p.jsonl" || bad ".csv.zst output differs from .csv output"

# --list-authors
"$bin" prep --list-authors "$sample" >"$tmp/authors.txt" 2>&1 || bad "--list-authors: exit $?"
grep -q "829104736521048064 .*mossy, mossy.exe" "$tmp/authors.txt" || bad "--list-authors misses mossy's two names"

# strict errors: exit 1, FILE:LINE on stderr, no output and no temporary file
printf 'AuthorID,Author,Date,Content,Attachments,Reactions\n"1","a","2025-01-01T00:00:00.0000000+00:00","x","",""\n"1","a","10/6/2023 12:37 AM","y","",""\n' >"$tmp/bad.csv"
"$bin" prep "$tmp/bad.csv" --persona a --out "$tmp/bad.jsonl" 2>"$tmp/err.txt"
[ $? = 1 ] || bad "bad date: exit code"
grep -q "bad.csv:3: date \"10/6/2023 12:37 AM\"" "$tmp/err.txt" || { bad "bad date message"; cat "$tmp/err.txt"; }
ls "$tmp" | grep -q "^bad.jsonl" && bad "output left behind after an error"
"$bin" prep "$tmp/bad.csv" --persona a --out "$tmp/bad.jsonl" --lenient 2>"$tmp/err.txt"
grep -q "skipped 1 malformed record" "$tmp/err.txt" || bad "--lenient summary"
printf 'AuthorID,Author,Date,Content,Attachments,Reactions\r\n' >"$tmp/empty.csv"
"$bin" prep "$tmp/empty.csv" --persona a --out "$tmp/e.jsonl" 2>"$tmp/err.txt"
[ $? = 1 ] && grep -q "no messages" "$tmp/err.txt" || bad "empty export"
"$bin" prep "$sample" --persona nobody --out "$tmp/n.jsonl" 2>"$tmp/err.txt"
[ $? = 1 ] && grep -q "829104736521048064" "$tmp/err.txt" || bad "unknown persona does not list authors"
"$bin" prep "$sample" --persona mossy --out "$tmp/x.jsonl" --mode wrong 2>/dev/null
[ $? = 2 ] || bad "--mode wrong: not a usage error"
"$bin" prep --persona mossy --out "$tmp/x.jsonl" 2>/dev/null
[ $? = 2 ] || bad "no export: not a usage error"

# the shared exports through the CLI, when present
shared=${DOPPEL_SHARED:-../shared}
if [ -f "$shared/data/dce/export-hard.csv" ]; then
  "$bin" prep "$shared/data/dce/export-hard.csv" --persona kaiaku --val-fraction 0 \
    --out "$tmp/hard.jsonl" --quiet 2>/dev/null || bad "export-hard: exit $?"
  python3 -c "
import json, sys
a = [json.loads(l)['messages'] for l in open(sys.argv[1])]
b = [json.loads(l)['messages'] for l in open(sys.argv[2])]
sys.exit(0 if a == b else 1)" "$tmp/hard.jsonl" "$shared/data/dce/export-hard.expected.jsonl" \
    || bad "export-hard.csv through the CLI differs from the expected output"
fi
[ $fail = 0 ] && echo "cli_prep: all checks passed"
exit $fail
