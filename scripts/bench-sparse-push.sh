#!/usr/bin/env bash
# Compares the bytes per push of sparse and dense gradients for softmax
# regression on LIBSVM data: the bundled agaricus set, and a generated
# wide set (20,000 features, 25 stored values per row, 2 classes). Prints
# one Markdown table row per run, from the `push_traffic` totals in
# summary.json, which sum the encoded size of every PushRequest sent.
#
# Usage: scripts/bench-sparse-push.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The wide set: each row has 25 features drawn from 20,000; the label is
# the sign of a fixed random weight vector's product with the row.
python3 - "$out/wide.libsvm" <<'PY'
import random, sys
rng = random.Random(7)
features, rows, per_row = 20000, 12000, 25
weights = [rng.gauss(0, 1) for _ in range(features)]
with open(sys.argv[1], "w") as out:
    for _ in range(rows):
        picked = sorted(rng.sample(range(features), per_row))
        score = sum(weights[i] for i in picked)
        out.write(("1" if score > 0 else "0") + "".join(f" {i + 1}:1" for i in picked) + "\n")
PY

echo "| data | features | θ values | gradients | pushes | values per push | bytes per push | test accuracy | wall s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
run() {
  local name=$1 data=$2 form=$3
  shift 3
  local flags=()
  if [ "$form" = dense ]; then flags+=(--dense); fi
  ./target/release/downpour train --data "$data" --format libsvm --model softmax \
    --run-dir "$out/$name-$form" "${flags[@]}" "$@" >"$out/$name-$form.log" 2>&1
  python3 - "$out/$name-$form/summary.json" "$name" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = s["push_traffic"]
print(f"| {sys.argv[2]} | {s['splits']['features']} | {s['parameters']} | {s['gradients']} "
      f"| {t['pushes']} | {t['values'] / max(t['pushes'], 1):.0f} | {t['bytes_per_push']:.0f} "
      f"| {s['test_accuracy']:.4f} | {s['wall_seconds']:.2f} |")
PY
}
for form in sparse dense; do
  run agaricus data/agaricus/agaricus.txt.train "$form" \
    --test-data data/agaricus/agaricus.txt.test --eval-every 20 --patience 5
done
for form in sparse dense; do
  run wide "$out/wide.libsvm" "$form" --eval-every 100 --patience 5 --max-epochs 5
done
