#!/usr/bin/env bash
# Checks that Python reads a Downpour checkpoint: trains a small MLP on the
# bundled MNIST for one epoch, then recomputes with NumPy alone the class
# probabilities of the first 20 test images and compares them with the
# output of `downpour predict`. Installs numpy and safetensors with pip into
# a temporary virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet numpy safetensors

cargo build --release --quiet
downpour=./target/release/downpour
if ! "$downpour" train --model mlp:32 --max-epochs 1 --eval-every 200 \
    --run-dir "$work/run" >"$work/train.log" 2>&1; then
  cat "$work/train.log" >&2
  exit 1
fi
"$downpour" predict --checkpoint "$work/run/best.safetensors" --data data/mnist \
  --output "$work/predictions.csv"
"$work/venv/bin/python" scripts/python_interop.py "$work/run/best.safetensors" \
  "$work/predictions.csv" data/mnist 20
