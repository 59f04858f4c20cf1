#!/usr/bin/env bash
# The shipped chat tools run by hand: load_file refuses escapes (.., absolute paths, symlinks
# out, binaries, directories) and fetch_url fetches text from a loopback server started here
# (python3 -m http.server) and refuses binaries, other schemes, errors, slow servers and big
# bodies past its cap; then `doppel chat --tools` on the tiny fixture model.
set -u
bin="$1"
tools=$(cd "$(dirname "$bin")" && pwd)/tools
model=tests/fixtures/tiny-llama
[ -x "$tools/load_file" ] && [ -x "$tools/fetch_url" ] || { echo "SKIP: $tools not built"; exit 77; }
tmp=$(mktemp -d)
server_pid=
trap '[ -n "$server_pid" ] && kill $server_pid 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0 pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# ---- load_file, in a working directory with a file outside it
mkdir -p "$tmp/work/sub" "$tmp/outside"
echo "inside text" >"$tmp/work/sub/a.txt"
echo "secret" >"$tmp/outside/secret.txt"
printf 'PNG\x00\x01\x02' >"$tmp/work/img.bin"
printf '\xff\xfe bad utf8' >"$tmp/work/latin.txt"
ln -s "$tmp/outside/secret.txt" "$tmp/work/link_out"
ln -s "$tmp/outside" "$tmp/work/dir_out"
ln -s sub/a.txt "$tmp/work/link_in"
lf() { (cd "$tmp/work" && "$tools/load_file" "$@") >"$tmp/o" 2>&1; }
lf sub/a.txt && grep -qx "inside text" "$tmp/o" && ok || bad "load_file sub/a.txt: $(cat "$tmp/o")"
lf link_in && grep -qx "inside text" "$tmp/o" && ok || bad "a symlink inside: $(cat "$tmp/o")"
lf ./sub/../sub/a.txt && ok || bad "sub/../sub/a.txt: $(cat "$tmp/o")"
lf "$tmp/work/sub/a.txt" && ok || bad "absolute path inside: $(cat "$tmp/o")"
for p in ../outside/secret.txt "$tmp/outside/secret.txt" link_out dir_out/secret.txt \
  sub/../../outside/secret.txt /etc/passwd; do
  lf "$p"; rc=$?
  [ $rc -ne 0 ] && grep -q "outside the current directory" "$tmp/o" && ! grep -q secret "$tmp/o" -x &&
    ! grep -q "^root:" "$tmp/o" && ok || bad "load_file $p: exit $rc: $(cat "$tmp/o")"
done
lf img.bin; [ $? -ne 0 ] && grep -q "binary" "$tmp/o" && ok || bad "binary file: $(cat "$tmp/o")"
lf latin.txt; [ $? -ne 0 ] && grep -q "binary" "$tmp/o" && ok || bad "non-UTF-8 file: $(cat "$tmp/o")"
lf sub; [ $? -ne 0 ] && grep -q "directory" "$tmp/o" && ok || bad "a directory: $(cat "$tmp/o")"
lf; [ $? -eq 2 ] && ok || bad "no argument accepted"
lf a b; [ $? -eq 2 ] && ok || bad "two arguments accepted"
python3 -c "print('é' * 40000)" >"$tmp/work/big.txt"
(cd "$tmp/work" && DOPPEL_LOAD_FILE_MAX_BYTES=1001 "$tools/load_file" big.txt) >"$tmp/o" 2>&1
[ $? -eq 0 ] && grep -q "the first 1000 are shown" "$tmp/o" && ok || bad "big file not cut at a character: $(tail -c 200 "$tmp/o")"

# ---- fetch_url against a loopback server
mkdir -p "$tmp/www"
echo "hello from loopback" >"$tmp/www/page.txt"
echo '{"a": 1}' >"$tmp/www/data.json"
printf '\x89PNG\r\n\x1a\n\x00\x00' >"$tmp/www/pic.png"
python3 -c "print('x' * 100000)" >"$tmp/www/big.txt"
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$tmp/www" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:$port
"$tools/fetch_url" "$url/page.txt" >"$tmp/o" 2>&1 && grep -qx "hello from loopback" "$tmp/o" && ok || bad "fetch text: $(cat "$tmp/o")"
"$tools/fetch_url" "$url/data.json" >"$tmp/o" 2>&1 && grep -q '"a": 1' "$tmp/o" && ok || bad "fetch json: $(cat "$tmp/o")"
"$tools/fetch_url" "$url/pic.png" >"$tmp/o" 2>&1; [ $? -eq 1 ] && grep -q "not text" "$tmp/o" && ok || bad "binary fetched: $(cat "$tmp/o")"
"$tools/fetch_url" "$url/missing" >"$tmp/o" 2>&1; [ $? -eq 1 ] && grep -q "404" "$tmp/o" && ok || bad "404: $(cat "$tmp/o")"
DOPPEL_FETCH_MAX_BYTES=5000 "$tools/fetch_url" "$url/big.txt" >"$tmp/o" 2>&1
[ $? -eq 0 ] && grep -q "cut at 5000 bytes" "$tmp/o" && [ "$(head -c 5000 "$tmp/o" | tr -d x | wc -c)" -eq 0 ] && ok || bad "size cap: $(tail -c 100 "$tmp/o")"
"$tools/fetch_url" "file:///etc/passwd" >"$tmp/o" 2>&1; [ $? -eq 2 ] && ! grep -q "^root:" "$tmp/o" && ok || bad "file:// accepted"
"$tools/fetch_url" "ftp://127.0.0.1/x" >"$tmp/o" 2>&1; [ $? -eq 2 ] && ok || bad "ftp:// accepted"
# a server that never answers: the time cap
python3 -c "
import socket, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); print(s.getsockname()[1], flush=True)
c, _ = s.accept(); time.sleep(30)" >"$tmp/slowport" &
slow_pid=$!
for _ in $(seq 50); do [ -s "$tmp/slowport" ] && break; sleep 0.1; done
start=$(date +%s)
DOPPEL_FETCH_TIMEOUT=1 "$tools/fetch_url" "http://127.0.0.1:$(cat "$tmp/slowport")/" >"$tmp/o" 2>&1; rc=$?
took=$(($(date +%s) - start))
kill $slow_pid 2>/dev/null
[ $rc -eq 1 ] && [ $took -le 5 ] && grep -qi "timed out\|timeout" "$tmp/o" && ok || bad "slow server: exit $rc after ${took}s: $(cat "$tmp/o")"
# a redirect to another scheme is not followed
cat >"$tmp/redir.py" <<'PY'
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302); self.send_header("Location", "file:///etc/passwd"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H); print(s.server_address[1], flush=True); s.serve_forever()
PY
python3 "$tmp/redir.py" >"$tmp/redirport" &
redir_pid=$!
for _ in $(seq 50); do [ -s "$tmp/redirport" ] && break; sleep 0.1; done
"$tools/fetch_url" "http://127.0.0.1:$(cat "$tmp/redirport")/" >"$tmp/o" 2>&1; rc=$?
kill $redir_pid 2>/dev/null
[ $rc -ne 0 ] && ! grep -q "^root:" "$tmp/o" && ok || bad "redirect to file:// followed: $(cat "$tmp/o")"

# ---- doppel chat --tools
"$bin" chat --help | grep -q -- "--tools DIR" && ok || bad "--help has no --tools"
"$bin" chat --model "$model" --tools "$tmp/none" --prompt hi >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "$tmp/none" "$tmp/err" && ok || bad "missing tools dir: $(cat "$tmp/err")"
"$bin" chat --model "$model" --tools "$tools" --tool-timeout 0 --prompt hi >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && ok || bad "--tool-timeout 0 accepted"
"$bin" chat --model "$model" --tools "$tools" --tool-rounds 0 --prompt hi >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--tool-rounds" "$tmp/err" && ok || bad "--tool-rounds 0 accepted"
# the tiny model's 256 positions cannot hold the tools' rules: a clear error, the REPL goes on
printf 'hello\n/quit\n' | "$bin" chat --model "$model" --tools "$tools" --max-tokens 8 --quiet >"$tmp/o" 2>&1
[ $? -eq 0 ] && grep -q -- "--max-context" "$tmp/o" && ok || bad "tiny model with tools: $(cat "$tmp/o")"
# SmolLM2 (when fetched): the turn ends cleanly and the saved session holds the rules in its
# system prompt, the user's message and a reply
smol=${DOPPEL_SMOLLM2:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ -f "$smol" ]; then
  printf 'hello\n/save %s\n/quit\n' "$tmp/s.json" |
    "$bin" chat --model "$smol" --tools "$tools" --max-tokens 8 --temperature 0 --quiet >"$tmp/o" 2>&1
  [ $? -eq 0 ] && ok || bad "chat --tools: $(cat "$tmp/o")"
  python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert '- LOAD_FILE: shows a text file' in d['system'] and '- FETCH_URL: downloads' in d['system'], d['system']
assert d['messages'][0] == {'role': 'user', 'content': 'hello'} and d['messages'][1]['role'] == 'assistant', d" "$tmp/s.json" &&
    ok || bad "saved session: $(cat "$tmp/s.json")"
else
  echo "note: $smol missing, chat --tools on SmolLM2 not run"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
