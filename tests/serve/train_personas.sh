# Sourced by the serve tests: the personas mossy and fern as adapters in $tmp/mossy and $tmp/fern,
# from short `doppel train` runs on the sample export (needs $bin, $model, $tmp).
"$bin" prep tests/fixtures/sample-export.csv --persona mossy --out "$tmp/d.jsonl" --quiet >/dev/null 2>&1 || { echo "FAIL: prep"; exit 1; }
for p in mossy:5e-2 fern:1e-1; do
  name=${p%%:*} lr=${p#*:}
  "$bin" train --model "$model" --data "$tmp/d.jsonl" --out "$tmp/$name" --max-seq 128 --batch-tokens 256 \
    --r 4 --lr "$lr" --max-steps 4 --persona "$name" --seed 3 --quiet >/dev/null 2>"$tmp/err" || { echo "FAIL: train $name: $(cat "$tmp/err")"; exit 1; }
done
