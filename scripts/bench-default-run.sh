#!/usr/bin/env bash
# Runs the default `downpour train` (the bundled MNIST, MLP 784-256-128-10,
# two workers) RUNS times under /usr/bin/time and prints one Markdown table
# row per run: wall seconds, examples per second, epochs, updates, test
# accuracy, stop reason and peak resident memory.
#
# Usage: scripts/bench-default-run.sh [RUNS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
cargo build --release --quiet
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "| run | wall s | examples/s | epochs | updates | test accuracy | stop reason | peak RSS MiB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for run in $(seq 1 "$runs"); do
  /usr/bin/time -f "%M" -o "$out/time-$run" \
    ./target/release/downpour train --run-dir "$out/run-$run" >"$out/log-$run" 2>&1
  python3 - "$out/run-$run/summary.json" "$out/time-$run" "$run" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
peak_kib = int(open(sys.argv[2]).read().split()[-1])
print(f"| {sys.argv[3]} | {summary['wall_seconds']:.1f} | {summary['examples_per_second']:.0f} "
      f"| {summary['epochs']:.2f} | {summary['updates']} | {summary['test_accuracy']:.4f} "
      f"| {summary['stop_reason']} | {peak_kib / 1024:.0f} |")
PY
done
