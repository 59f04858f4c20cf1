# Sourced by the serve tests (needs $bin, $model, $tmp).

# the personas mossy and fern as adapters in $tmp/mossy and $tmp/fern, from short `doppel train`
# runs on the sample export
train_personas() {
  "$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 || { echo "FAIL: prep"; exit 1; }
  for p in mossy:5e-2 fern:1e-1; do
    name=${p%%:*} lr=${p#*:}
    "$bin" train --model "$model" --data "$tmp/d.jsonl" --out "$tmp/$name" --max-seq 128 --batch-tokens 256 \
      --r 4 --lr "$lr" --max-steps 4 --persona "$name" --seed 3 --quiet >/dev/null 2>"$tmp/err" || { echo "FAIL: train $name: $(cat "$tmp/err")"; exit 1; }
  done
}

# wait_ready LOG TENTHS [PID]: waits up to TENTHS tenths of a second (less when process PID
# ends) for `doppel serve --port 0`'s log LOG to say its port and "ready"; sets $port (empty
# when it did not come up)
wait_ready() {
  port=
  for _ in $(seq "$2"); do
    port=$(grep -o 'http://127.0.0.1:[0-9]*' "$1" | grep -o '[0-9]*$')
    [ -n "$port" ] && grep -q "ready" "$1" && return 0
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && break
    sleep 0.1
  done
  port=
}
