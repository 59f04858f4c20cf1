"""The official `openai` Python client against doppel serve (SmolLM2, base + one persona):
non-stream and stream, stop, logprobs, `name` fields, both models, greedy output equal to
`doppel chat --prompt`, errors raised as the client's own exception classes, and a client that
drops its stream cancels the generation.

usage: openai_client.py PORT EXPECT.json   (EXPECT: {"models": [...], "greedy": {model: reply}})"""
import json
import socket
import sys
import time
import urllib.request

import openai

PORT = int(sys.argv[1])
EXPECT = json.load(open(sys.argv[2]))
BASE_URL = "http://127.0.0.1:%d/v1" % PORT
client = openai.OpenAI(base_url=BASE_URL, api_key="k", max_retries=0, timeout=60)
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg, flush=True)


MSGS = [{"role": "user", "name": "Bob", "content": "hello there"}]

ids = [m.id for m in client.models.list().data]
if ids != EXPECT["models"]:
    fail("models.list: %s" % ids)

for model, want in EXPECT["greedy"].items():
    r = client.chat.completions.create(model=model, messages=MSGS, temperature=0, max_tokens=16)
    got = r.choices[0].message.content
    if got != want:
        fail("%s greedy: %r; doppel chat --prompt: %r" % (model, got, want))
    if r.usage.completion_tokens < 1 or r.choices[0].finish_reason not in ("stop", "length"):
        fail("%s: %s" % (model, r))
    chunks = list(client.chat.completions.create(model=model, messages=MSGS, temperature=0, max_tokens=16,
                                                  stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if text != want:
        fail("%s stream: %r vs %r" % (model, text, want))
    if chunks[-1].usage is None or chunks[-1].usage.completion_tokens != r.usage.completion_tokens:
        fail("%s stream usage: %s" % (model, chunks[-1]))
print("greedy replies:", EXPECT["greedy"])

base = EXPECT["models"][0]
want = EXPECT["greedy"][base]
words = want.split()
if len(words) >= 3:
    stop = " " + words[2]
    r = client.chat.completions.create(model=base, messages=MSGS, temperature=0, max_tokens=16, stop=[stop, "zzz"])
    if r.choices[0].message.content != want[:want.index(stop)] or r.choices[0].finish_reason != "stop":
        fail("stop %r: %r %s" % (stop, r.choices[0].message.content, r.choices[0].finish_reason))
else:
    fail("greedy reply too short for the stop check: %r" % want)

r = client.chat.completions.create(model=base, messages=MSGS, temperature=0, max_tokens=5, logprobs=True,
                                   top_logprobs=4, extra_body={"repeat_penalty": 1.0})
lp = r.choices[0].logprobs.content
if len(lp) != r.usage.completion_tokens or any(len(t.top_logprobs) != 4 or t.top_logprobs[0].token != t.token
                                               for t in lp):
    fail("logprobs: %s" % lp)

# the group chat: two named speakers in one user turn, then the persona
group = [{"role": "user", "name": "Ana", "content": "who is up"}, {"role": "user", "name": "Bob", "content": "me"}]
for model in EXPECT["models"]:
    r = client.chat.completions.create(model=model, messages=group, max_tokens=8, seed=1)
    if not r.choices[0].message.content and r.choices[0].finish_reason != "stop":
        fail("group chat %s: %s" % (model, r))

for call, exc in [(lambda: client.chat.completions.create(model="nobody", messages=MSGS), openai.NotFoundError),
                  (lambda: client.chat.completions.create(model=base, messages=MSGS, temperature=9),
                   openai.BadRequestError)]:
    try:
        call()
        fail("no error raised")
    except exc as e:
        if not e.body or "message" not in e.body:
            fail("error body %s" % e.body)

# a dropped stream cancels: a long reply (frequency_penalty -2 keeps it from ending early) is
# abandoned after its first bytes; the server is idle well before it could have finished
def metric(name):
    for line in urllib.request.urlopen("http://127.0.0.1:%d/metrics" % PORT).read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])


before = metric("doppel_tokens_predicted_total")
body = json.dumps({"model": base, "messages": MSGS, "stream": True, "max_tokens": 400, "temperature": 0,
                   "frequency_penalty": -2})
s = socket.create_connection(("127.0.0.1", PORT))
s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
s.recv(4096)
time.sleep(0.3)
s.close()
t0 = time.time()
while metric("doppel_requests_processing") != 0 and time.time() - t0 < 10:
    time.sleep(0.05)
made = metric("doppel_tokens_predicted_total") - before
print("cancelled stream: %d of 400 tokens generated, idle %.2f s after the close" % (made, time.time() - t0))
if metric("doppel_requests_processing") != 0 or made >= 400:
    fail("the dropped stream was not cancelled (%d tokens)" % made)

print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
