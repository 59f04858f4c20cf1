#!/bin/bash
# Teaches SmolLM2-135M to call LOAD_FILE with a small LoRA adapter, then asks it held-out
# questions about real files through `doppel chat --tools build/tools --yes` and counts how
# often it called the tool correctly, beside the base model on the same prompts (issue 14).
# Takes minutes on the CPU: a script, not a ctest.
#
#   tests/bench/tool_adapter.sh [RUN_DIR]        (default /tmp/doppel-tool-adapter)
#   STEPS=80 (training steps)  REUSE=1 (keep RUN_DIR/adapter if it is there)
#   WHO="base adapter" (which to ask; "base" alone needs no training)
#   TRAIN_SECONDS=N (stop training after N s as Ctrl-C does: the adapter so far is kept)
#
# RUN_DIR gets data/ (made by tests/bench/make_tool_data.py from the chat's own system
# prompt), adapter/ (doppel train), scratch/ (the files asked about), base.txt and
# adapter.txt (the chat transcripts), sessions/ (each prompt's saved session) and score.txt.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOPPEL=${DOPPEL:-$ROOT/build/doppel}
TOOLS=${TOOLS:-$ROOT/build/tools}
MODEL=${MODEL:-$HOME/.cache/doppel/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
RUN=${1:-/tmp/doppel-tool-adapter}
STEPS=${STEPS:-80}
WHO=${WHO:-base adapter}
BASE_SYSTEM="You are a helpful assistant."
[ -x "$DOPPEL" ] && [ -x "$TOOLS/load_file" ] || { echo "build doppel and build/tools first" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "no $MODEL: run .ci/fetch-smollm2" >&2; exit 1; }
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)

# 1. the system prompt chat will send (the base prompt + the toolbox's rules), from /save
printf '/save %s/session0.json\n/quit\n' "$RUN" |
    "$DOPPEL" chat --model "$MODEL" --tools "$TOOLS" --system "$BASE_SYSTEM" --quiet >/dev/null
python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["system"])' \
    "$RUN/session0.json" >"$RUN/system.txt"

# 2. the training set and the adapter
python3 "$ROOT/tests/bench/make_tool_data.py" "$RUN/system.txt" "$RUN/data"
if [ "$WHO" = base ]; then
    echo "no adapter asked for: not training"
elif [ "${REUSE:-0}" = 1 ] && [ -f "$RUN/adapter/adapter_model.safetensors" ]; then
    echo "reusing $RUN/adapter"
else
    rm -rf "$RUN/adapter"
    start=$(date +%s)
    limit=()
    [ -n "${TRAIN_SECONDS:-}" ] && limit=(timeout -s INT "$TRAIN_SECONDS")
    nice "${limit[@]}" "$DOPPEL" train --config "$ROOT/configs/cpu-demo.json" --model "$MODEL" \
        --data "$RUN/data/train.jsonl" --val "$RUN/data/val.jsonl" --out "$RUN/adapter" \
        --system "$BASE_SYSTEM" --persona tool-user --max-seq 384 --batch-tokens 768 \
        --max-steps "$STEPS" --eval-every 20 --early-stop 0 --save-every 40 --samples 0 \
        2>&1 | tee "$RUN/train.log" | grep -E '^(train|step|val)' | tail -n 12
    echo "training: $(($(date +%s) - start)) s"
fi

# 3. real files, and questions phrased unlike the training set's, about files it never saw
S=$RUN/scratch
rm -rf "$S" && mkdir -p "$S/recipes" "$S/journal"
printf '# weather-cli\nA tiny command-line tool that prints the forecast for your town.\nInstall with: make install\n' >"$S/README.md"
printf 'Pancakes\n2 eggs\n1 cup flour\n1 cup milk\nCook 2 minutes per side.\n' >"$S/recipes/pancakes.txt"
printf "Mom's birthday: 14 March\nGift idea: a blue scarf\n" >"$S/birthday.txt"
printf 'port: 7070\nlog_level: warn\n' >"$S/server.yaml"
printf 'name,role\nZoe,designer\nMax,developer\n' >"$S/team.csv"
printf 'Went to the museum with Leo. Rained all afternoon.\n' >"$S/journal/monday.md"
printf 'Dentist moved to Friday 11am.\n' >"$S/my notes.txt"
printf 'Flight BA 2490 departs 07:35 from gate 12.\n' >"$S/flight.txt"
printf 'Locker code: 4815\n' >"$S/gym.txt"
printf 'Plant watering: fern every 3 days, cactus every 2 weeks.\n' >"$S/plants.md"
# prompt <TAB> file the call must name ("-": no call) <TAB> a word the answer must hold
# (alternatives split by |)
cat >"$RUN/prompts.tsv" <<'EOF'
Hey, could you peek into README.md and tell me what this project does?	README.md	forecast
I need to know how many eggs the pancakes take - it's written in recipes/pancakes.txt	recipes/pancakes.txt	2
birthday.txt has it: when is Mom's birthday?	birthday.txt	March
Which port is configured? Check server.yaml.	server.yaml	7070
From team.csv: who is the designer?	team.csv	Zoe
Where did I go on Monday? journal/monday.md	journal/monday.md	museum
What did I write in "my notes.txt"?	my notes.txt	Friday
My flight details are in flight.txt. What gate do I go to?	flight.txt	12
What's my locker code? I saved it to gym.txt	gym.txt	4815
How often should I water the cactus? See plants.md	plants.md	weeks
Tell me what budget.txt says.	budget.txt	
Give me the first line of README.md.	README.md	weather
What is the capital of Italy?	-	Rome
How many legs does a spider have?	-	8|eight
Good morning!	-	
EOF

# 4. the same prompts, greedy, to the base model and to the adapter; one REPL each, every
# prompt's session saved and then forgotten; two replies at most per prompt (the call, then
# the answer), 64 tokens each: the base model otherwise loops on calls for minutes
for who in $WHO; do
    mkdir -p "$RUN/sessions/$who"
    i=0
    : >"$RUN/$who.in"
    while IFS=$'\t' read -r prompt _ _; do
        printf '%s\n/save %s/sessions/%s/%02d.json\n/reset\n' "$prompt" "$RUN" "$who" $i \
            >>"$RUN/$who.in"
        i=$((i + 1))
    done <"$RUN/prompts.tsv"
    extra=()
    [ "$who" = adapter ] && extra=(--adapter "$RUN/adapter")
    (cd "$S" && "$DOPPEL" chat --model "$MODEL" "${extra[@]}" --system "$BASE_SYSTEM" \
        --tools "$TOOLS" --yes --tool-rounds 2 --temperature 0 --max-tokens 64 --seed 1 --quiet \
        <"$RUN/$who.in" >"$RUN/$who.txt" 2>"$RUN/$who.err") || true
done

# 5. the score: a call is right when the first reply is exactly [LOAD_FILE path] for the file
# the prompt names (no call for the prompts that need none); the answer is right when the
# reply after the tool's output holds the expected word (every model asked so far in RUN_DIR)
python3 - "$RUN" <<'EOF' | tee "$RUN/score.txt"
import json, os, re, shlex, sys
run = sys.argv[1]
rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(run, "prompts.tsv"))]
asked = [w for w in ("base", "adapter") if os.path.isdir(os.path.join(run, "sessions", w))]
for who in asked:
    calls = answers = need = 0
    lines = []
    for i, (prompt, want, word) in enumerate(rows):
        p = os.path.join(run, "sessions", who, "%02d.json" % i)
        msgs = json.load(open(p))["messages"] if os.path.exists(p) else []
        asst = [m["content"] for m in msgs if m["role"] == "assistant"]
        tools = [m["content"] for m in msgs if m["role"] == "tool"]
        first = asst[0].strip() if asst else ""
        m = re.fullmatch(r"\[LOAD_FILE (.+)\]", first)
        named = shlex.split(m.group(1)) if m else None
        if want == "-":
            ok_call = not tools
        else:
            need += 1
            ok_call = named == [want]
        last = asst[-1] if asst else ""
        ok_answer = ok_call and (not word or any(w.lower() in last.lower()
                                                 for w in word.split("|")))
        calls += ok_call
        answers += ok_answer
        lines.append("  %-4s %-6s %-60s -> %s" % ("call" if ok_call else "MISS",
                     "answer" if ok_answer else "-", prompt[:60], first[:60].replace("\n", " ")))
    print("%s: %d/%d right calls (%d prompts name a file, %d need no tool); %d/%d right answers"
          % (who, calls, len(rows), need, len(rows) - need, answers, len(rows)))
    print("\n".join(lines))
    # the transcript: each prompt, then what chat printed for it (the REPL echoes nothing)
    out = open(os.path.join(run, who + ".txt"), encoding="utf-8", errors="replace").read()
    chunks = re.split(r"^\(conversation cleared[^\n]*\n", out, flags=re.M)
    with open(os.path.join(run, who + ".transcript.txt"), "w") as f:
        for (prompt, _, _), chunk in zip(rows, chunks):
            chunk = re.sub(r"^\(saved \d+ messages to [^\n]*\n", "", chunk, flags=re.M)
            f.write("> %s\n%s\n" % (prompt, chunk.rstrip("\n")))
EOF
