#!/usr/bin/env bash
# Runs Downpour and the Python peer baselines one after the other on this
# machine, with the same MNIST split and hyperparameters, then prints one
# Markdown table of medians and Downpour/peer ratios (bench/summarize.py).
#
# Usage: bench/run_peers.sh
#
# Environment:
#   RUNS        runs per system (default 3, or 1 with QUICK=1)
#   SYSTEMS     space-separated subset of: downpour downpour-pe2 torch1
#               torch2 hogwild rpc sklearn (default: all seven)
#   QUICK       1 for an end-to-end check: 5 epochs instead of 15, one run
#   MAX_EPOCHS  training budget in epochs for every system (default 15)
#   PEERS_DIR   folder of the peer scripts (default ../shared/peers next to
#               the repository root)
#   BENCH_VENV  virtual environment for the peers (default bench/.venv)
#   BENCH_OUT   folder for logs and run directories
#               (default runs/bench-<date>-<time>)
#   PYTHON      interpreter that creates the virtual environment (python3)
#   RUN_TIMEOUT seconds before one run is killed (default 1800)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
peers_dir=${PEERS_DIR:-$repo/../shared/peers}
venv=${BENCH_VENV:-$repo/bench/.venv}
quick=${QUICK:-0}
all_systems="downpour downpour-pe2 torch1 torch2 hogwild rpc sklearn"
systems=${SYSTEMS:-$all_systems}
run_timeout=${RUN_TIMEOUT:-1800}
if [[ $quick == 1 ]]; then
  runs=${RUNS:-1}
  max_epochs=${MAX_EPOCHS:-5}
else
  runs=${RUNS:-3}
  max_epochs=${MAX_EPOCHS:-15}
fi
out=${BENCH_OUT:-$repo/runs/bench-$(date +%Y%m%d-%H%M%S)}

log() { echo "run_peers: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$runs'"
[[ $max_epochs =~ ^[1-9][0-9]*$ ]] || die "MAX_EPOCHS must be a positive integer, got '$max_epochs'"
needs_python=0
needs_torch=0
for system in $systems; do
  case $system in
    downpour | downpour-pe2) ;;
    sklearn) needs_python=1 ;;
    torch1 | torch2 | hogwild | rpc) needs_python=1 needs_torch=1 ;;
    *) die "unknown system '$system' in SYSTEMS; expected some of: $all_systems" ;;
  esac
done
if [[ $needs_python == 1 && ! -f $peers_dir/mnist_data.py ]]; then
  die "peer scripts not found in '$peers_dir'; set PEERS_DIR to the folder with torch_train.py"
fi

# The peers' packages go into a virtual environment of their own, so the
# script works from a fresh clone and leaves the system Python untouched.
if [[ $needs_python == 1 ]]; then
  if [[ ! -x $venv/bin/python ]]; then
    log "creating virtual environment $venv"
    "${PYTHON:-python3}" -m venv "$venv" || die "failed to create $venv (is the python3 venv module installed?)"
  fi
  if ! "$venv/bin/python" -c 'import numpy, sklearn, threadpoolctl' 2>/dev/null; then
    log "installing numpy scikit-learn threadpoolctl into $venv"
    "$venv/bin/pip" install --quiet numpy scikit-learn threadpoolctl || die "pip install of numpy scikit-learn threadpoolctl failed; see the pip output above"
  fi
  if [[ $needs_torch == 1 ]] && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    # NOTE: the PyPI wheel is the CUDA build. torch 2.15.0 downloaded about
    # 3 GB and took 5.6 GB installed on 2026-12-04.
    log "installing torch into $venv (a download of several GB)"
    "$venv/bin/pip" install torch || die "pip install torch failed; see the pip output above"
  fi
fi

if [[ " $systems " == *" downpour"* ]]; then
  log "building Downpour (cargo build --release)"
  (cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"
fi

mkdir -p "$out"
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  commit="$commit (with uncommitted changes)"
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "cores: $(nproc)"
  echo "memory_gib: $(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)"
  echo "kernel: $(uname -sr)"
  echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
  echo "downpour_commit: $commit"
  echo "runs: $runs"
  echo "max_epochs: $max_epochs"
  echo "quick: $quick"
  echo "systems: $systems"
} >"$out/meta.txt"

# Runs one system once; the output goes to $out/<system>-<run>.log and, for
# Downpour, the run directory $out/<system>-<run>.
run_system() {
  local system=$1 run=$2
  local logfile="$out/$system-$run.log"
  local -a command
  case $system in
    downpour)
      command=("$repo/target/release/downpour" train --data "$repo/data/mnist"
        --eval-every 195 --max-epochs "$max_epochs" --run-dir "$out/downpour-$run") ;;
    downpour-pe2)
      # Each push averages 2 minibatches: one update per 128 examples, so
      # validation every 98 updates is again about a quarter epoch.
      command=("$repo/target/release/downpour" train --data "$repo/data/mnist"
        --push-every 2 --eval-every 98 --max-epochs "$max_epochs"
        --run-dir "$out/downpour-pe2-$run") ;;
    torch1)
      command=("$venv/bin/python" "$peers_dir/torch_train.py" --model B --threads 1
        --max-epochs "$max_epochs") ;;
    torch2)
      command=("$venv/bin/python" "$peers_dir/torch_train.py" --model B --threads 2
        --max-epochs "$max_epochs") ;;
    hogwild)
      command=("$venv/bin/python" "$peers_dir/torch_hogwild.py" --model B --procs 2
        --max-epochs "$max_epochs") ;;
    rpc)
      command=("$venv/bin/python" "$peers_dir/torch_rpc_ps.py" --model B --transport tcp
        --max-epochs "$max_epochs") ;;
    sklearn)
      command=("$venv/bin/python" "$peers_dir/sklearn_peers.py" --which mlp-manual --threads 2
        --max-epochs "$max_epochs") ;;
  esac
  echo "${command[*]}" >"$out/$system-$run.cmd"
  local start=$SECONDS status=0
  MNIST_DIR="$repo/data/mnist" timeout --kill-after=30 "$run_timeout" "${command[@]}" >"$logfile" 2>&1 ||
    status=$?
  if ((status == 0)); then
    log "  $system finished in $((SECONDS - start)) s"
  elif ((status == 124)); then
    log "  $system timed out after $run_timeout s; see $logfile"
    failures=$((failures + 1))
  else
    log "  $system failed with exit status $status after $((SECONDS - start)) s; see $logfile"
    failures=$((failures + 1))
  fi
}

# Runs are interleaved (every system once, then again) so that a slow
# stretch of the machine spreads over all systems instead of hitting one.
failures=0
log "writing logs to $out"
for run in $(seq 1 "$runs"); do
  for system in $systems; do
    log "run $run/$runs: $system"
    run_system "$system" "$run"
  done
done

summarizer_python=python3
[[ -x $venv/bin/python ]] && summarizer_python=$venv/bin/python
"$summarizer_python" "$repo/bench/summarize.py" "$out" | tee "$out/table.md"
if ((failures > 0)); then
  die "$failures run(s) failed; their logs are in $out"
fi
