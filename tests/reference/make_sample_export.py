#!/usr/bin/env python3
"""Writes a synthetic DiscordChatExporter export (CSV as DCE >= 2.42.3 writes it, or JSON) of an
English group chat from a fixed seed. The persona `mossy` has a measurable style: never a capital
letter, signature words ("lowkey", "ngl", "fr"), and the skull emoji closing about half of her
messages; everyone else writes capitalized sentences with punctuation.

  make_sample_export.py --messages 1500 --out tests/fixtures/sample-export.csv
  make_sample_export.py --messages 600000 --out /tmp/big.csv            (the benchmark input)
  make_sample_export.py --format json --out sample.json                   (same messages as JSON)
  make_sample_export.py --reverse ...                                      (newest first)
"""
import argparse, datetime, json, random

PERSONA = ("829104736521048064", "mossy")
OTHERS = [
    ("412345678901234567", "Theo"),
    ("523456789012345678", "priya.k"),
    ("634567890123456789", "Sam Walker"),
    ("745678901234567890", "juno"),
    ("301245678901234567", "OldTimer#4821"),
]
BOT = ("155149108183695360", "Dyno#3861")
# The persona renames herself halfway through (same id): the name resolves to every id and
# every message of that id is hers.
PERSONA_LATER = "mossy.exe"

WORDS = ("game tonight pizza movie work deadline train weekend coffee rain music album "
         "concert homework exam cat dog bug server build patch meeting lunch dinner trip beach "
         "project idea plan ticket show episode season book class code review").split()
OTHER_OPENERS = ["Did anyone", "I think", "Honestly,", "Wait,", "Okay so", "Has anyone seen",
                 "We should", "Does the", "I can't believe", "Remember when", "Who wants"]
OTHER_ENDS = [".", "!", "?", "...", " :)", "."]
SIG = ["lowkey", "ngl", "fr", "fr fr", "no cap", "vibes"]
MOSSY_FILLER = ["that", "is", "so", "the", "honestly", "kinda", "just", "literally", "same",
                "omg", "wait", "ok", "yeah", "nah", "we", "should", "go", "tonight"]
SYSTEM = ["Pinned a message.", "Joined the server.", "Started a call that lasted 1,204 minutes.",
          "Started a call that lasted 7 minutes.", "Changed the channel name: general-chat"]


def other_text(rng):
    n = rng.randint(2, 9)
    body = " ".join(rng.choice(WORDS) for _ in range(n))
    s = f"{rng.choice(OTHER_OPENERS)} {body}{rng.choice(OTHER_ENDS)}"
    r = rng.random()
    if r < 0.04:
        s += "\nAlso " + " ".join(rng.choice(WORDS) for _ in range(3)) + "."
    elif r < 0.06:
        s = f'He said "{rng.choice(WORDS)}", then left, obviously.'
    elif r < 0.07:
        s = "  " + s + "  "  # stray spaces: trimmed by the rule
    elif r < 0.08:
        s = "```py\nprint(\"hi\")\n```"
    return s


def mossy_text(rng):
    n = rng.randint(2, 8)
    words = [rng.choice(MOSSY_FILLER) for _ in range(n)]
    words.insert(rng.randrange(len(words) + 1), rng.choice(SIG))
    if rng.random() < 0.4:
        words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS))
    s = " ".join(words)
    if rng.random() < 0.5:
        s += " 💀"
    elif rng.random() < 0.2:
        s += " 😭😭"
    return s


def generate(n, seed):
    rng = random.Random(seed)
    t = datetime.datetime(2024, 3, 1, 18, 0, 0, tzinfo=datetime.timezone.utc)
    msgs = []
    while len(msgs) < n:
        # a burst of chat, then silence
        burst = rng.randint(3, 40)
        for _ in range(burst):
            if len(msgs) >= n:
                break
            t += datetime.timedelta(seconds=rng.randint(5, 200), microseconds=rng.randint(0, 999999))
            r = rng.random()
            kind = "Default"
            attach = react = ""
            if r < 0.30:
                aid, name = PERSONA
                if len(msgs) > n // 2:
                    name = PERSONA_LATER
                text = mossy_text(rng)
            elif r < 0.31:
                aid, name = BOT
                text = f"Welcome @{rng.choice(OTHERS)[1]} to the server!"
            elif r < 0.325:
                aid, name = rng.choice(OTHERS)
                text = rng.choice(SYSTEM)
                kind = "System"
            elif r < 0.335:
                aid, name = rng.choice(OTHERS)
                text = ""  # sticker- or embed-only message
                attach = f"https://cdn.discordapp.com/attachments/1/{len(msgs)}/img.png"
            else:
                aid, name = rng.choice(OTHERS)
                text = other_text(rng)
                if rng.random() < 0.1:
                    text = f"@{PERSONA[1]} " + text
            if rng.random() < 0.05:
                react = "💀 (2),👍 (1)"
            msgs.append((aid, name, t, text, attach, react, kind))
        t += datetime.timedelta(seconds=rng.randint(400, 40000))
    return msgs


def dce_date(t, tz):
    local = t.astimezone(tz)
    off = local.utcoffset()
    sign = "-" if off < datetime.timedelta(0) else "+"
    m = abs(int(off.total_seconds())) // 60
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0{sign}{m // 60:02d}:{m % 60:02d}"


def zone_for(t):
    # the exporting machine's zone: UTC-5 before a DST change on 2024-03-10 07:00 UTC, UTC-4 after
    dst = t >= datetime.datetime(2024, 3, 10, 7, 0, tzinfo=datetime.timezone.utc)
    return datetime.timezone(datetime.timedelta(hours=-4 if dst else -5))


def q(s):
    return '"' + s.replace('"', '""') + '"'


def write_csv(msgs, out, crlf):
    nl = "\r\n" if crlf else "\n"
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("AuthorID,Author,Date,Content,Attachments,Reactions" + nl)
        for aid, name, t, text, attach, react, _ in msgs:
            f.write(",".join([q(aid), q(name), q(dce_date(t, zone_for(t))), q(text), q(attach), q(react)]) + nl)


def write_json(msgs, out):
    def js(x):  # DCE escapes non-ASCII, so emoji come out as UTF-16 surrogate pairs
        return json.dumps(x, ensure_ascii=True)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write('{\n  "guild": {"id": "1", "name": "Sample Guild", "iconUrl": ""},\n')
        f.write('  "channel": {"id": "2", "type": "GuildTextChat", "category": "Text", "name": "general", "topic": null},\n')
        f.write('  "dateRange": {"after": null, "before": null},\n  "exportedAt": "2024-06-01T00:00:00-04:00",\n')
        f.write('  "messages": [')
        for i, (aid, name, t, text, attach, react, kind) in enumerate(msgs):
            if kind == "System":
                kind = {"Pinned": "ChannelPinnedMessage", "Joined": "GuildMemberJoin",
                        "Started": "Call", "Changed": "ChannelNameChange"}[text.split()[0]]
            disc = "0000"
            if "#" in name:
                name, disc = name.split("#")
            ts = dce_date(t, zone_for(t))
            frac = ts[20:27].rstrip("0")
            ts = ts[:19] + ("." + frac if frac else "") + ts[27:]
            m = {"id": str(10**17 + i), "type": kind, "timestamp": ts, "timestampEdited": None,
                 "callEndedTimestamp": None, "isPinned": False, "content": text,
                 "author": {"id": aid, "name": name, "discriminator": disc, "nickname": name,
                            "color": None, "isBot": aid == BOT[0], "roles": [], "avatarUrl": ""},
                 "attachments": [{"id": "9", "url": attach, "fileName": "img.png", "fileSizeBytes": 1}] if attach else [],
                 "embeds": [], "stickers": [], "reactions": [], "mentions": [], "inlineEmojis": []}
            f.write(("," if i else "") + "\n    " + js(m))
        f.write("\n  ],\n  \"messageCount\": %d\n}\n" % len(msgs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=20240301)
    ap.add_argument("--format", choices=["csv", "json"], default="csv")
    ap.add_argument("--crlf", action="store_true")
    ap.add_argument("--reverse", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    msgs = generate(a.messages, a.seed)
    if a.reverse:
        msgs.reverse()
    if a.format == "csv":
        write_csv(msgs, a.out, a.crlf)
    else:
        write_json(msgs, a.out)


if __name__ == "__main__":
    main()
