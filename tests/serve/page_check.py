"""Drives headless Chromium over the DevTools protocol (--remote-debugging-pipe: JSON messages
separated by NUL on fds 3/4, Python's standard library only) for tests/cli_serve_page.sh:
opens the page, types a message, presses Send, waits for the streamed reply to finish, checks
the DOM, opens the next-token table and saves a screenshot.

usage: page_check.py CHROMIUM URL SCREENSHOT.png"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

chrome, url, shot = sys.argv[1:4]
to_chrome_r, to_chrome_w = os.pipe()
from_chrome_r, from_chrome_w = os.pipe()
profile = tempfile.mkdtemp(prefix="doppel-chrome-")
# chromium reads commands on fd 3 and writes replies on fd 4
proc = subprocess.Popen(
    [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
     "--user-data-dir=" + profile, "--window-size=1200,760"],
    pass_fds=(3, 4, to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    preexec_fn=lambda: (os.dup2(to_chrome_r, 3), os.dup2(from_chrome_w, 4)))
os.close(to_chrome_r)
os.close(from_chrome_w)
reader = os.fdopen(from_chrome_r, "rb")
writer = os.fdopen(to_chrome_w, "wb")
next_id = [0]
pending = b""


def call(method, params=None, session=None):
    global pending
    next_id[0] += 1
    msg = {"id": next_id[0], "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    writer.write(json.dumps(msg).encode() + b"\0")
    writer.flush()
    while True:
        while b"\0" not in pending:
            chunk = os.read(from_chrome_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            pending += chunk
        raw, pending = pending.split(b"\0", 1)
        reply = json.loads(raw)
        if reply.get("id") == next_id[0]:
            if "error" in reply:
                raise RuntimeError("%s: %s" % (method, reply["error"]))
            return reply["result"]


def js(session, expr):
    r = call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session)
    if "exceptionDetails" in r:
        raise RuntimeError("%s: %s" % (expr, r["exceptionDetails"]))
    return r["result"].get("value")


failures = []
try:
    target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    call("Page.enable", {}, s)
    call("Page.navigate", {"url": url}, s)
    deadline = time.time() + 150  # a hang guard, not a timing: a sanitizer build decodes slowly
    while time.time() < deadline and js(s, "document.querySelectorAll('.chip').length") in (None, 0):
        time.sleep(0.1)
    chips = js(s, "[...document.querySelectorAll('.chip')].map(c => c.textContent + (c.classList.contains('on') ? '*' : ''))")
    print("personas:", chips)
    # a person's steps: a name, a message, Send
    js(s, "document.getElementById('name').value = 'Tester';"
          "document.getElementById('max-tokens').value = '40';"
          "document.getElementById('input').value = 'Hi! What is your favourite food?';"
          "document.getElementById('send').click(); true")
    t0 = time.time()
    first = None
    while time.time() < deadline:
        n = js(s, "(document.querySelector('.msg.bot .text') || {}).textContent || ''")
        if n and first is None:
            first = time.time() - t0
        if js(s, "!!document.querySelector('.msg.bot[data-done]')"):
            break
        time.sleep(0.05)
    dom = js(s, """(() => { const m = [...document.querySelectorAll('.msg')];
        return m.map(e => ({cls: e.className, who: e.querySelector('.who').textContent,
                            text: e.querySelector('.text').textContent, done: e.dataset.done || null})); })()""")
    print("bubbles:", json.dumps(dom)[:400])
    print("first text after %.2f s, finished after %.2f s" % (first or -1, time.time() - t0))
    if len(dom) != 2:
        failures.append("expected 2 bubbles, got %d" % len(dom))
    else:
        me, bot = dom
        if "me" not in me["cls"] or me["who"] != "Tester" or me["text"] != "Hi! What is your favourite food?":
            failures.append("my bubble: %s" % me)
        if "bot" not in bot["cls"] or "error" in bot["cls"] or bot["done"] != "1" or not bot["text"].strip():
            failures.append("the reply: %s" % bot)
        if first is None or first > time.time() - t0:
            failures.append("no text streamed before the end")
    js(s, "document.querySelector('.msg.bot').click(); true")
    cells = js(s, "document.querySelectorAll('#probs td').length")
    if not cells or cells < 2:
        failures.append("no next-token table (%s cells)" % cells)
    if js(s, "document.getElementById('status').textContent") != "ready":
        failures.append("status is not ready")
    png = call("Page.captureScreenshot", {"format": "png"}, s)["data"]
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png))
    print("screenshot:", shot)
except Exception as e:
    failures.append("chromium: %r" % e)
finally:
    try:
        call("Browser.close")
    except Exception:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    subprocess.run(["rm", "-rf", profile])
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
