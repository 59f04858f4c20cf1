#!/usr/bin/env python3
"""The reply rule of REFERENCE.md §2 written the straightforward way (Python's csv module,
datetime, a list sort): the independent reference for doppel prep's tests and the peer of its
benchmark (tests/bench/bench_prep.sh).

  prep_reference.py EXPORT.csv [EXPORT.csv...] --persona NAME_OR_ID [--gap 300] --out out.jsonl
"""
import argparse, csv, datetime, json, re, sys

SYSTEM = re.compile(r"Pinned a message\.|Joined the server\.|Started a call that lasted [\d,]+ minutes?\."
                    r"|Changed the channel name: .+|Changed the channel icon\.|Added .+ to the group\."
                    r"|Added a recipient\.|Left the group\.|Removed .+ from the group\.|Started a thread\.")
DATE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,7}))?([+-]\d\d:\d\d|Z)$")


def instant(s):
    m = DATE.match(s)
    if not m:
        raise ValueError(f"bad date {s!r}")
    base = datetime.datetime.fromisoformat(m.group(1) + (m.group(3) if m.group(3) != "Z" else "+00:00"))
    frac = int((m.group(2) or "0").ljust(7, "0"))
    return int(base.timestamp()) * 10_000_000 + frac  # 100 ns ticks, exact


def read(paths):
    rows = []
    for p in paths:
        with open(p, encoding="utf-8-sig", newline="") as f:
            r = csv.reader(f)
            header = next(r)
            assert header == ["AuthorID", "Author", "Date", "Content", "Attachments", "Reactions"], header
            for row in r:
                rows.append((instant(row[2]), len(rows), row[0], row[1], row[3]))
    return rows


def chunk(rows, persona, gap_s):
    ids = {a for _, _, a, n, _ in rows if n == persona or a == persona}
    rows.sort(key=lambda m: (m[0], m[1]))
    kept = []
    for t, i, a, n, c in rows:
        c = c.replace("\r\n", "\n").strip()
        if c and not SYSTEM.fullmatch(c):
            kept.append((t, a, n, c))
    out, ctx, run, prev = [], [], [], None

    def flush():
        if run and ctx:
            out.append([{"role": "user", "content": "\n".join(ctx)},
                        {"role": "assistant", "content": "\n".join(run)}])

    for t, a, n, c in kept:
        if prev is not None and t - prev >= gap_s * 10_000_000:
            flush()
            ctx, run = [], []
        prev = t
        if a in ids:
            run.append(c)
        else:
            if run:
                flush()
                ctx, run = [], []
            ctx.append(f"[{n}]: {c}")
    flush()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exports", nargs="+")
    ap.add_argument("--persona", required=True)
    ap.add_argument("--gap", type=int, default=300)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    convs = chunk(read(a.exports), a.persona, a.gap)
    with open(a.out, "w", encoding="utf-8") as f:
        for c in convs:
            f.write(json.dumps({"messages": c}, ensure_ascii=False) + "\n")
    print(f"{len(convs)} conversations", file=sys.stderr)


if __name__ == "__main__":
    main()
