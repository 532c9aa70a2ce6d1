#!/usr/bin/env bash
# Checks the TensorBoard event files against events.jsonl. Trains on the
# bundled MNIST with --tensorboard, then reads the event file back with the
# tensorboard Python package (installed from PyPI into a fresh venv) and
# compares every scalar with events.jsonl (scripts/check_tensorboard.py).
#
# Usage: scripts/check-tensorboard.sh
# TENSORBOARD_VENV names a venv to create or reuse (default: a temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=${TENSORBOARD_VENV:-$work/venv}

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    echo "check-tensorboard: installing Debian's python3-venv" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check tensorboard

cargo build --release --quiet
./target/release/downpour train --max-epochs 1 --eval-every 100 --tensorboard \
  --run-dir "$work/run" >"$work/train.log" 2>&1 || {
  tail -n 20 "$work/train.log" >&2
  exit 1
}
"$venv/bin/python" scripts/check_tensorboard.py "$work/run"
