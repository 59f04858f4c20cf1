#!/usr/bin/env bash
# doppel eval from the command line on the tiny Llama fixture and the bundled sample export:
# usage errors (exit 2); the held-out loss of the base and of a trained adapter equal to the
# validation losses the training run recorded (before and after); the same replies for the same
# seed; the JSON's figures; and, when torch + transformers + PEFT are importable, the loss equal
# to transformers + PEFT's (tests/reference/check_eval_peft.py).
set -u
bin=$1
fail=0
tmp=$(mktemp -d /tmp/doppel-cli-eval.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
model=tests/fixtures/tiny-llama
[ -f "$model/config.json" ] || { echo "SKIPPED: $model is missing"; exit 77; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
bad() { echo "FAIL: $*"; fail=1; }
expect() { # code what command...
  local want=$1 what=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  [ "$got" = "$want" ] || { bad "$what: exit $got, expected $want"; cat "$tmp/err"; }
}

"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 \
  || { echo "FAIL: prep"; exit 1; }
expect 2 "no --data" "$bin" eval --model "$model"
expect 2 "missing data" "$bin" eval --model "$model" --data "$tmp/nope.jsonl"
expect 2 "bad precision" "$bin" eval --model "$model" --data "$tmp/d.val.jsonl" --precision int3
expect 2 "adapter not a dir" "$bin" eval --model "$model" --data "$tmp/d.val.jsonl" --adapter "$tmp/nope"
expect 1 "unknown persona" "$bin" eval --model "$model" --data "$tmp/d.val.jsonl" \
  --export tests/fixtures/sample-export.csv --persona nobody --contexts 1 --max-tokens 2 --quiet
grep -q "list-authors" "$tmp/err" || bad "unknown persona message: $(cat "$tmp/err")"

expect 0 "train" "$bin" train --model "$model" --data "$tmp/d.jsonl" --val "$tmp/d.val.jsonl" \
  --max-seq 128 --batch-tokens 256 --grad-accum 2 --r 4 --lr 2e-3 --eval-every 4 --max-steps 8 \
  --out "$tmp/run" --persona mossy --quiet
ev=("$bin" eval --model "$model" --adapter "$tmp/run" --data "$tmp/d.val.jsonl"
    --export tests/fixtures/sample-export.csv --contexts 3 --max-tokens 6 --bootstrap 200 --quiet)
expect 0 "eval" "${ev[@]}" --json "$tmp/e.json"
cp "$tmp/out" "$tmp/table.txt"
grep -q "held-out loss" "$tmp/table.txt" && grep -q "authorship: persona share" "$tmp/table.txt" \
  || { bad "no table"; cat "$tmp/table.txt"; }
expect 0 "eval again" "${ev[@]}" --json "$tmp/e2.json"
python3 - "$tmp" <<'PY' || fail=1
import json, math, sys
d = sys.argv[1]
e, e2 = json.load(open(f"{d}/e.json")), json.load(open(f"{d}/e2.json"))
tr = json.load(open(f"{d}/run/doppel.json"))["training"]
ok = True
def need(cond, what):
    global ok
    if not cond:
        print("FAIL:", what); ok = False
names = [s["name"] for s in e["systems"]]
need(names == ["base", f"{d}/run", f"{d}/run/best"], f"systems {names}")
base, run = e["systems"][0], e["systems"][1]
# the base (LoRA B = 0 before training) and the final adapter: the run's own validation losses
for what, got, want in (("base", base["loss"], tr["val_loss_before"]), ("adapter", run["loss"], tr["val_loss_after"])):
    print(f"{what}: eval loss {got:.9f}, training validation loss {want:.9f}, |diff| {abs(got - want):.2e} (tol {1e-6 * want:.1e})")
    need(abs(got - want) <= 1e-6 * want, f"{what} loss differs from training's validation loss")
for s in e["systems"]:
    need(abs(s["perplexity"] - math.exp(s["loss"])) <= 1e-9 * s["perplexity"], "perplexity != exp(loss)")
    need(s["loss_lo"] <= s["loss"] <= s["loss_hi"], "loss outside its interval")
    need(len(s["replies"]) == 3 and 0 <= s["authorship"] <= 1, "replies / authorship")
    need(0 <= s["word_jsd"] <= 1 and 0 <= s["degeneration"]["distinct1"] <= 1, "style / degeneration ranges")
need(e["classifier"]["held_out_accuracy"] > 0.7, f"classifier accuracy {e['classifier']['held_out_accuracy']}")
need(e["real"]["style"]["lowercase_share"] == 1.0, "mossy's real replies are all lowercase")
need([s["replies"] for s in e["systems"]] == [s["replies"] for s in e2["systems"]], "same seed, other replies")
sys.exit(0 if ok else 1)
PY

# transformers + PEFT on the same tokens, fp32 base
if python3 -c "import torch, transformers, peft, tokenizers" 2>/dev/null; then
  expect 0 "eval fp32" "$bin" eval --model "$model" --adapter "$tmp/run" --data "$tmp/d.val.jsonl" \
    --precision fp32 --contexts 0 --json "$tmp/f.json" --quiet
  python3 tests/reference/check_eval_peft.py --model "$model" --adapter "$tmp/run" \
    --data "$tmp/d.val.jsonl" --max-seq 128 --eval-json "$tmp/f.json" 2>/dev/null \
    || bad "doppel eval's loss differs from transformers + PEFT's"
else
  echo "note: torch/transformers/peft not importable: the PEFT comparison did not run"
fi
[ $fail = 0 ] && echo "cli_eval: all checks passed"
exit $fail
