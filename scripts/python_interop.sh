#!/usr/bin/env bash
# Checks that Python reads a Downpour checkpoint: trains a small MLP on the
# bundled MNIST for one epoch, then recomputes with NumPy alone the class
# probabilities of the first 20 test images and compares them with the
# output of `downpour predict`. Then trains a linear regression with
# standardized features on a generated CSV file and compares the predicted
# values of its first 50 rows the same way, with the scaling read from the
# checkpoint's metadata. Installs numpy and safetensors with pip into a
# temporary virtual environment.
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

# y = 3·x0 - 0.2·x1 + 5 + noise, with x1 on a scale 100 times larger.
"$work/venv/bin/python" - "$work/linear.csv" <<'PYTHON'
import sys
import numpy as np
rng = np.random.default_rng(7)
x = np.column_stack([rng.normal(0, 1, 2000), rng.normal(50, 100, 2000)])
y = 3 * x[:, 0] - 0.2 * x[:, 1] + 5 + rng.normal(0, 0.1, 2000)
np.savetxt(sys.argv[1], np.column_stack([x, y]), delimiter=",", header="x0,x1,y", comments="")
PYTHON
if ! "$downpour" train --data "$work/linear.csv" --model linear --scale standardize \
    --lr 0.01 --eval-every 20 --patience 10 --run-dir "$work/linear" >"$work/linear.log" 2>&1; then
  cat "$work/linear.log" >&2
  exit 1
fi
"$downpour" predict --checkpoint "$work/linear/best.safetensors" --data "$work/linear.csv" \
  --output "$work/linear-predictions.csv"
"$work/venv/bin/python" scripts/python_interop.py "$work/linear/best.safetensors" \
  "$work/linear-predictions.csv" "$work/linear.csv" 50
