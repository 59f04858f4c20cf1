"""doppel serve over plain HTTP (Python's standard library only), for tests/cli_serve.sh:
statuses and OpenAI-shaped errors, streaming, stop strings, logprobs, personas, greedy output
equal to `doppel chat --prompt`, then a bounded load run: 8 clients, >= 200 requests (stream
and not) with malformed, oversized, unauthorized and cancelled requests interleaved.

usage: serve_checks.py PORT KEY EXPECT.json
EXPECT.json: {"models": [...], "greedy": {"model id": "chat's reply"}, "max_body": N}
Prints one line per failure; exit status 1 when any check failed."""
import http.client
import json
import socket
import sys
import threading
import time

PORT, KEY = int(sys.argv[1]), sys.argv[2]
EXPECT = json.load(open(sys.argv[3]))
failures = []
lock = threading.Lock()


def fail(msg):
    with lock:
        failures.append(msg)
    print("FAIL:", msg, flush=True)


def request(method, path, body=None, key=KEY, raw=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    text = r.read()
    c.close()
    return r.status, r.getheader("Content-Type") or "", text


def chat(body, key=KEY):
    status, _, text = request("POST", "/v1/chat/completions", body, key)
    return status, json.loads(text) if text else None


def stream(body, key=KEY):
    """the SSE events of a streamed completion: (status, [parsed chunks], saw [DONE])"""
    body = dict(body, stream=True)
    status, ctype, text = request("POST", "/v1/chat/completions", body, key)
    if status != 200:
        return status, [], False
    if not ctype.startswith("text/event-stream"):
        fail("stream Content-Type " + ctype)
    events, done = [], False
    for block in text.decode().split("\n\n"):
        if not block.strip():
            continue
        if not block.startswith("data: "):
            fail("not an SSE data line: %r" % block[:80])
            continue
        payload = block[6:]
        if payload == "[DONE]":
            done = True
        else:
            if done:
                fail("an event after [DONE]")
            events.append(json.loads(payload))
    return status, events, done


def expect_error(what, status, got_status, obj, param=None, code=None):
    if got_status != status:
        fail("%s: status %s, expected %s (%s)" % (what, got_status, status, obj))
        return
    err = (obj or {}).get("error") if isinstance(obj, dict) else None
    if not err or set(err) != {"message", "type", "param", "code"} or not err["message"]:
        fail("%s: error object not shaped as OpenAI's: %s" % (what, obj))
        return
    if param is not None and err["param"] != param:
        fail("%s: param %r, expected %r" % (what, err["param"], param))
    if code is not None and err["code"] != code:
        fail("%s: code %r, expected %r" % (what, err["code"], code))


def msgs(text="hello there", name="Bob"):
    return [{"role": "user", "name": name, "content": text}]


def functional():
    s, _, t = request("GET", "/health", key=None)
    if s != 200 or json.loads(t) != {"status": "ok"}:
        fail("/health: %s %s" % (s, t))
    s, _, t = request("GET", "/v1/models")
    ids = [m["id"] for m in json.loads(t)["data"]] if s == 200 else []
    if ids != EXPECT["models"]:
        fail("/v1/models: %s %s" % (s, t))
    for m in json.loads(t)["data"] if s == 200 else []:
        if m["object"] != "model" or "created" not in m or "owned_by" not in m:
            fail("/v1/models entry %s" % m)

    # greedy = doppel chat --prompt, for the base model and every persona
    for model, want in EXPECT["greedy"].items():
        body = {"model": model, "messages": msgs(), "temperature": 0, "max_tokens": 12}
        s, r = chat(body)
        if s != 200:
            fail("greedy %s: status %s %s" % (model, s, r))
            continue
        got = r["choices"][0]["message"]["content"]
        if got != want:
            fail("greedy %s: %r, doppel chat says %r" % (model, got, want))
        if r["object"] != "chat.completion" or not r["id"].startswith("chatcmpl-"):
            fail("completion shape %s" % r)
        u = r["usage"]
        if u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"] or u["completion_tokens"] < 1:
            fail("usage %s" % u)
        # streamed: the deltas add up to the same text; usage in a last chunk with no choices
        s, ev, done = stream(dict(body, stream_options={"include_usage": True}))
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in ev if e["choices"])
        if s != 200 or not done or text != want:
            fail("stream %s: status %s done %s text %r (want %r)" % (model, s, done, text, want))
        if ev and (ev[0]["choices"][0]["delta"].get("role") != "assistant"
                   or ev[-1]["choices"] or any(ev[-1]["usage"][k] != u[k] for k in
                                                ("prompt_tokens", "completion_tokens", "total_tokens"))
                   or ev[-2]["choices"][0]["finish_reason"] != r["choices"][0]["finish_reason"]):
            fail("stream chunks %s ... %s" % (ev[0], ev[-2:]))
        if any(e["object"] != "chat.completion.chunk" or e["id"] != ev[0]["id"] for e in ev):
            fail("chunk ids/objects differ")

    # stop: a string from the greedy reply cuts it there, finish_reason "stop"
    base = EXPECT["models"][0]
    want = EXPECT["greedy"][base]
    if len(want) >= 4:
        cut = want[2:4]
        body = {"model": base, "messages": msgs(), "temperature": 0, "max_tokens": 12, "stop": [cut]}
        s, r = chat(body)
        if s != 200 or r["choices"][0]["message"]["content"] != want[:want.index(cut)] or \
                r["choices"][0]["finish_reason"] != "stop":
            fail("stop %r: %s %s" % (cut, s, r))
        s, ev, done = stream(body)
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in ev if e["choices"])
        if text != want[:want.index(cut)]:
            fail("streamed stop %r: %r" % (cut, text))
    else:
        fail("greedy reply too short for the stop check: %r" % want)

    # logprobs: greedy without penalties picks the most likely token, which heads top_logprobs
    body = {"model": base, "messages": msgs(), "temperature": 0, "repeat_penalty": 1, "max_tokens": 6,
            "logprobs": True, "top_logprobs": 3}
    s, r = chat(body)
    content = r["choices"][0]["logprobs"]["content"] if s == 200 else []
    if s != 200 or len(content) != r["usage"]["completion_tokens"]:
        fail("logprobs: %s %s" % (s, r))
    for t in content:
        top = t["top_logprobs"]
        if len(top) != 3 or top[0]["token"] != t["token"] or abs(top[0]["logprob"] - t["logprob"]) > 1e-6 \
                or not t["logprob"] <= 0 or sorted([x["logprob"] for x in top], reverse=True) != [x["logprob"] for x in top] \
                or sum(2.718281828 ** x["logprob"] for x in top) > 1 + 1e-5 or bytes(t["bytes"]).decode("utf-8", "replace") != t["token"]:
            fail("logprobs entry %s" % t)

    # seeded sampling is reproducible
    body = {"model": base, "messages": msgs(), "temperature": 1.0, "seed": 7, "max_tokens": 10}
    a, b = chat(body)[1], chat(body)[1]
    if a["choices"][0]["message"]["content"] != b["choices"][0]["message"]["content"]:
        fail("seed 7 gave two replies")

    # errors: the status, OpenAI's shape, the field named
    ok_msgs = msgs()
    for what, b, st, param, code in [
        ("malformed JSON", None, 400, None, None),
        ("no model", {"messages": ok_msgs}, 400, "model", None),
        ("unknown model", {"model": "nobody", "messages": ok_msgs}, 404, "model", "model_not_found"),
        ("bad temperature", {"model": base, "messages": ok_msgs, "temperature": "x"}, 400, "temperature", None),
        ("bad role", {"model": base, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", None),
        ("NUL", {"model": base, "messages": [{"role": "user", "content": "a\u0000b"}]}, 400, "messages[0].content", None),
        ("max_tokens over the cap", {"model": base, "messages": ok_msgs, "max_tokens": 10**6}, 400, "max_tokens", None),
        ("context", {"model": base, "messages": msgs("hello there " * 250)}, 400, "messages", "context_length_exceeded"),
    ]:
        raw = "{not json" if b is None else None
        s, _, t = request("POST", "/v1/chat/completions", b, raw=raw)
        expect_error(what, st, s, json.loads(t), param, code)
    s, _, t = request("POST", "/v1/chat/completions", {"model": base, "messages": ok_msgs}, key=None)
    expect_error("no key", 401, s, json.loads(t))
    s, _, t = request("GET", "/v1/models", key="wrong" + KEY)
    expect_error("wrong key", 401, s, json.loads(t))
    s, _, t = request("POST", "/v1/chat/completions", raw="x" * (EXPECT["max_body"] + 1))
    expect_error("oversized", 413, s, json.loads(t))
    s, _, t = request("GET", "/v1/chat/completions")
    expect_error("GET on a POST route", 405, s, json.loads(t))
    s, _, t = request("GET", "/v2/nothing")
    expect_error("unknown URL", 404, s, json.loads(t))

    # tokenize, metrics, the page
    s, _, t = request("POST", "/tokenize", {"content": "hello there"})
    if s != 200 or not json.loads(t)["tokens"]:
        fail("/tokenize %s %s" % (s, t))
    s, ctype, t = request("GET", "/metrics")
    if s != 200 or b'doppel_requests_total{status="400"}' not in t or b"doppel_tokens_predicted_total" not in t:
        fail("/metrics %s %s" % (s, t[:200]))
    s, ctype, t = request("GET", "/", key=None)
    if s != 200 or not ctype.startswith("text/html") or b"<html" not in t.lower():
        fail("/ %s %s" % (s, ctype))


def metric(name):
    _, _, t = request("GET", "/metrics")
    for line in t.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def cancelled_stream(model):
    """opens a stream, reads its first bytes, closes the socket"""
    body = json.dumps({"model": model, "messages": msgs(), "stream": True, "max_tokens": 200,
                       "temperature": 1})
    s = socket.create_connection(("127.0.0.1", PORT), timeout=30)
    s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (KEY, len(body), body)).encode())
    head = s.recv(256)
    s.close()
    return head.startswith(b"HTTP/1.1 200")


def load(n_clients=8, per_client=26):
    models = EXPECT["models"]
    counts = {"ok": 0, "fault": 0, "cancel": 0}

    def client(c):
        for i in range(per_client):
            k = c * per_client + i
            model = models[k % len(models)]
            kind = k % 13
            try:
                if kind == 3:
                    s, _, t = request("POST", "/v1/chat/completions", raw="{\"model\": [")
                    expect_error("load: malformed", 400, s, json.loads(t))
                elif kind == 6:
                    s, _, t = request("POST", "/v1/chat/completions", raw="{" + " " * (EXPECT["max_body"] * 2) + "}")
                    expect_error("load: oversized", 413, s, json.loads(t))
                elif kind == 9:
                    s, _, t = request("POST", "/v1/chat/completions", {"model": model, "messages": msgs()}, key="nope")
                    expect_error("load: unauthorized", 401, s, json.loads(t))
                elif kind == 11:
                    if not cancelled_stream(model):
                        fail("load: cancelled stream got no 200")
                    with lock:
                        counts["cancel"] += 1
                    continue
                else:
                    body = {"model": model, "messages": msgs("msg %d" % k, "P%d" % c), "max_tokens": 8 + k % 9,
                            "temperature": 0.8, "seed": k}
                    if k % 2:
                        s, ev, done = stream(body)
                        ok = s == 200 and done and ev
                    else:
                        s, r = chat(body)
                        ok = s == 200 and r["choices"][0]["finish_reason"] in ("stop", "length")
                    if not ok:
                        fail("load: request %d (%s) status %s" % (k, "stream" if k % 2 else "json", s))
                        continue
                    with lock:
                        counts["ok"] += 1
                    continue
                with lock:
                    counts["fault"] += 1
            except Exception as e:  # a dropped connection or a bad body is a failure
                fail("load: request %d raised %r" % (k, e))

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(counts.values())
    print("load: %d requests from %d clients in %.1f s: %d completions, %d faults answered, %d cancelled"
          % (total, n_clients, time.time() - t0, counts["ok"], counts["fault"], counts["cancel"]))
    if total < 200:
        fail("load: only %d requests" % total)
    # every cancelled or finished job has left its slot, and the server still answers
    for _ in range(100):
        if metric("doppel_requests_processing") == 0 and metric("doppel_requests_deferred") == 0:
            break
        time.sleep(0.1)
    else:
        fail("load: requests still processing after the run")
    s, r = chat({"model": models[0], "messages": msgs(), "temperature": 0, "max_tokens": 12})
    if s != 200 or r["choices"][0]["message"]["content"] != EXPECT["greedy"][models[0]]:
        fail("after the load run: %s %s" % (s, r))


def stalled_client():
    """a client that connects and never finishes its request is dropped after --timeout"""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=EXPECT["timeout"] + 10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    t0 = time.time()
    try:
        data = s.recv(4096)
    except (socket.timeout, ConnectionResetError):
        data = None
    waited = time.time() - t0
    s.close()
    if data != b"" or not EXPECT["timeout"] - 0.5 <= waited <= EXPECT["timeout"] + 5:
        fail("stalled client: recv %r after %.1f s (timeout %d s)" % (data, waited, EXPECT["timeout"]))
    else:
        print("stalled client dropped after %.1f s" % waited)


functional()
stalled_client()
load()
print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
