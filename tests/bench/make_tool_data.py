#!/usr/bin/env python3
"""Synthetic conversations that teach a small model to call LOAD_FILE (doppel chat --tools),
in doppel's training JSONL ({"messages": [...]}), turn for turn what `doppel chat --tools`
keeps in its history:

  system     the chat's system prompt (SYSTEM_FILE: the base prompt + the toolbox's rules)
  user       a question about a file, naming it
  assistant  [LOAD_FILE path]                       (chat keeps the reply up to its call)
  tool       [LOAD_FILE path] returned:\\n<file>     (dp_toolbox_result's words, no trailing
                                                      newline; the `tool` role of SmolLM2's
                                                      plain ChatML template)
  assistant  the answer, taken from the file

plus conversations that need no file (answered directly, no call) and a few where the file is
missing (the tool's failure, and the assistant says so). Everything is drawn from a seeded
generator, so a run is reproducible.

    python3 tests/bench/make_tool_data.py SYSTEM_FILE OUT_DIR [--n-train 240 --n-val 24]

writes OUT_DIR/train.jsonl and OUT_DIR/val.jsonl. The held-out prompts of
tests/bench/tool_adapter.sh use other phrasings, other file names and other contents.
"""
import argparse
import json
import os
import random

NAMES = ["Ana", "Bruno", "Carla", "Diego", "Elena", "Farid", "Greta", "Hugo", "Iris", "Jonas",
         "Kemi", "Lars", "Mira", "Nuno", "Olga", "Pavel", "Rosa", "Sami", "Tara", "Vera"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["9am", "10:30", "noon", "2pm", "3pm", "4:15pm", "6pm", "8pm"]
PLACES = ["the library", "room 204", "the cafe on Elm Street", "the office", "the park",
          "the train station", "Carla's flat", "the gym"]
FOODS = ["milk", "eggs", "bread", "rice", "apples", "coffee", "cheese", "tomatoes", "onions",
         "butter", "pasta", "lentils", "yogurt", "bananas", "oats", "spinach"]
TASKS = ["call the plumber", "pay the rent", "renew the passport", "water the plants",
         "return the library books", "book the dentist", "fix the bike", "send the invoice",
         "clean the fridge", "update the resume", "buy a birthday card", "back up the laptop"]
COLORS = ["blue", "green", "red", "yellow", "purple", "orange", "black", "white"]
CITIES = ["Lisbon", "Oslo", "Porto", "Kyoto", "Lima", "Dakar", "Quito", "Riga", "Tunis", "Hanoi"]
ANIMALS = ["cat", "dog", "parrot", "rabbit", "turtle", "hamster"]
STEMS = ["notes", "todo", "plan", "list", "info", "memo", "details", "reminder", "log", "draft"]
EXTS = [".txt", ".md", ".txt", ".txt", ".md", ".cfg", ".ini", ".notes", ""]
DIRS = ["", "", "", "", "docs/", "notes/", "home/", "work/", "misc/"]


def listing(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# Each kind: (stem words, file text, [(question, answer)]), from a random source.
def kind_meeting(r):
    who, day, time, place = r.choice(NAMES), r.choice(DAYS), r.choice(TIMES), r.choice(PLACES)
    text = f"Meeting with {who}\nDay: {day}\nTime: {time}\nPlace: {place}\n"
    return ["meeting", "calendar", "appointments"], text, [
        (f"When is the meeting with {who}?", f"The meeting with {who} is on {day} at {time}."),
        ("Where is the meeting?", f"It is at {place}."),
        (f"What day do I meet {who}?", f"On {day}, at {time}."),
        ("What time is the meeting?", f"At {time} on {day}."),
    ]


def kind_shopping(r):
    items = r.sample(FOODS, r.randint(2, 5))
    text = "Shopping list\n" + "".join(f"- {i}\n" for i in items)
    return ["shopping", "groceries", "buy"], text, [
        ("What do I need to buy?", f"You need to buy {listing(items)}."),
        ("What is on my shopping list?", f"{listing(items).capitalize()}."),
        ("How many things are on the shopping list?",
         f"{len(items)} things: {listing(items)}."),
        (f"Do I need to buy {items[0]}?", f"Yes, {items[0]} is on the list."),
    ]


def kind_todo(r):
    tasks = r.sample(TASKS, r.randint(2, 4))
    text = "".join(f"[ ] {t}\n" for t in tasks)
    return ["todo", "tasks", "chores"], text, [
        ("What do I still have to do?", f"You still have to {listing(tasks)}."),
        ("What is the first task?", f"The first task is to {tasks[0]}."),
        ("What is on my to-do list?", f"{listing(tasks).capitalize()}."),
        ("How many tasks are left?", f"{len(tasks)}: {listing(tasks)}."),
    ]


def kind_contact(r):
    who = r.choice(NAMES)
    phone = f"555-{r.randint(1000, 9999)}"
    city = r.choice(CITIES)
    text = f"Name: {who}\nPhone: {phone}\nCity: {city}\n"
    return ["contacts", "phone", "address"], text, [
        (f"What is {who}'s phone number?", f"{who}'s number is {phone}."),
        (f"Where does {who} live?", f"{who} lives in {city}."),
        ("Whose contact is it?", f"It is {who}'s: phone {phone}, in {city}."),
    ]


def kind_config(r):
    port = r.choice([80, 443, 3000, 5000, 8000, 8080, 8443, 9090])
    host = r.choice(["localhost", "0.0.0.0", "example.org", "10.0.0.5"])
    workers = r.randint(1, 16)
    debug = r.choice(["true", "false"])
    text = f"[server]\nhost = {host}\nport = {port}\nworkers = {workers}\ndebug = {debug}\n"
    return ["server", "config", "settings"], text, [
        ("What port does the server use?", f"Port {port}."),
        ("How many workers are configured?", f"{workers} workers."),
        ("Is debug mode on?", "Yes, debug is true." if debug == "true" else
         "No, debug is false."),
        ("Which host does the server listen on?", f"It listens on {host}."),
    ]


def kind_pet(r):
    animal, name, color = r.choice(ANIMALS), r.choice(NAMES), r.choice(COLORS)
    food = r.choice(["fish", "seeds", "carrots", "kibble", "lettuce"])
    text = f"My {animal} is called {name}.\nFur or feathers: {color}.\nEats {food} twice a day.\n"
    return ["pet", animal, "animals"], text, [
        (f"What is my {animal} called?", f"Your {animal} is called {name}."),
        (f"What does my {animal} eat?", f"{food.capitalize()}, twice a day."),
        (f"What color is my {animal}?", f"{color.capitalize()}."),
    ]


def kind_trip(r):
    city, day, who = r.choice(CITIES), r.choice(DAYS), r.choice(NAMES)
    nights = r.randint(2, 9)
    text = f"Trip to {city}\nLeaving on {day}\nStaying {nights} nights\nTravelling with {who}\n"
    return ["trip", "travel", "holiday"], text, [
        ("Where am I travelling to?", f"To {city}."),
        ("When do I leave?", f"You leave on {day}."),
        ("How long is the trip?", f"{nights} nights in {city}."),
        ("Who is coming on the trip?", f"{who} is travelling with you."),
    ]


def kind_password_hint(r):
    color, animal = r.choice(COLORS), r.choice(ANIMALS)
    num = r.randint(10, 99)
    text = f"wifi network: {color.upper()}-{animal.upper()}\nhint: favourite {animal} + {num}\n"
    return ["wifi", "network", "router"], text, [
        ("What is the wifi network called?", f"It is called {color.upper()}-{animal.upper()}."),
        ("What is the wifi hint?", f"The hint is: favourite {animal} + {num}."),
    ]


KINDS = [kind_meeting, kind_shopping, kind_todo, kind_contact, kind_config, kind_pet, kind_trip,
         kind_password_hint]

# How a user names the file and asks; {f} the path, {q} the question.
ASK = [
    "{q} It's in {f}.",
    "Read {f} and tell me: {q}",
    "Can you check {f}? {q}",
    "Look at {f}. {q}",
    "{q} (see {f})",
    "Open {f} please. {q}",
    "According to {f}, {q}",
    "{q} The answer is in the file {f}.",
    "I wrote it down in {f}. {q}",
    "Check the file {f}: {q}",
    "what's in {f}? {q}",
    "Please load {f}. {q}",
]
ASK_WHOLE = ["What's in {f}?", "Show me what {f} says.", "What does {f} contain?",
             "Summarize {f}.", "Read me {f}."]

NO_TOOL = [
    ("What is the capital of France?", "Paris."),
    ("Hi!", "Hello! How can I help?"),
    ("How many days are in a week?", "Seven."),
    ("What is 12 times 3?", "36."),
    ("Say hello in Spanish.", "Hola."),
    ("What color is the sky on a clear day?", "Blue."),
    ("Thanks!", "You're welcome!"),
    ("What is the boiling point of water in Celsius?", "100 degrees Celsius at sea level."),
    ("Name a fruit that is yellow.", "A banana."),
    ("How are you?", "I'm fine, thanks. What can I do for you?"),
    ("What is 7 plus 8?", "15."),
    ("Which planet is closest to the sun?", "Mercury."),
    ("Give me a synonym for happy.", "Glad."),
    ("What language is spoken in Brazil?", "Portuguese."),
]


def path_for(r, stems):
    stem = r.choice(stems + STEMS) if r.random() < 0.8 else r.choice(stems)
    sep = r.choice(["_", "-", ""])
    if r.random() < 0.3:
        stem = stem + sep + r.choice(STEMS)
    path = r.choice(DIRS) + stem + r.choice(EXTS)
    return path


def call_arg(path):
    return f'"{path}"' if " " in path else path


def conversation(r, system):
    roll = r.random()
    msgs = [{"role": "system", "content": system}]
    if roll < 0.15:  # no file: a direct answer, no call
        q, a = r.choice(NO_TOOL)
        return msgs + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    stems, text, qas = r.choice(KINDS)(r)
    path = path_for(r, stems)
    if r.random() < 0.08:  # a path with a space, quoted in the call
        path = path.replace(".", " 2.", 1) if "." in path else path + " 2"
    call = f"[LOAD_FILE {call_arg(path)}]"
    if roll < 0.22:  # the file is missing
        q, _ = r.choice(qas)
        told = (f"{call} failed (exit status 1):\nload_file: {path}: No such file or directory")
        return msgs + [
            {"role": "user", "content": r.choice(ASK).format(f=path, q=q)},
            {"role": "assistant", "content": call},
            {"role": "tool", "content": told},
            {"role": "assistant", "content": f"I could not find {path}: there is no such file."},
        ]
    if roll < 0.34:  # the whole file
        user = r.choice(ASK_WHOLE).format(f=path)
        answer = f"{path} says:\n{text.rstrip()}"
    else:
        q, answer = r.choice(qas)
        user = r.choice(ASK).format(f=path, q=q)
    return msgs + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": call},
        {"role": "tool", "content": f"{call} returned:\n{text.rstrip()}"},
        {"role": "assistant", "content": answer},
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("system_file")
    ap.add_argument("out_dir")
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-val", type=int, default=24)
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    with open(a.system_file, encoding="utf-8") as f:
        system = f.read()
    r = random.Random(a.seed)
    os.makedirs(a.out_dir, exist_ok=True)
    for name, n in (("train.jsonl", a.n_train), ("val.jsonl", a.n_val)):
        with open(os.path.join(a.out_dir, name), "w", encoding="utf-8") as f:
            for _ in range(n):
                f.write(json.dumps({"messages": conversation(r, system)}, ensure_ascii=False)
                        + "\n")
    print(f"{a.out_dir}: {a.n_train} training and {a.n_val} validation conversations")


if __name__ == "__main__":
    main()
