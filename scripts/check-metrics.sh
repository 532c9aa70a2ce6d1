#!/usr/bin/env bash
# Checks the Prometheus endpoints against promtool. Starts a cluster of
# separate processes on 127.0.0.1 (a parameter server, a coordinator and
# two workers, each with --metrics-addr), scrapes every endpoint while the
# cluster trains on the bundled MNIST, then does the same for the one
# endpoint of `downpour train`. Each scrape must pass
# `promtool check metrics` and contain the metrics its node records.
# Installs Debian's prometheus package, which ships promtool, when promtool
# is missing.
#
# Usage: scripts/check-metrics.sh
# METRICS_CHECK_PORT sets the first of the 7 ports used (default 17550).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "check-metrics: installing Debian's prometheus package for promtool" >&2
  apt-get update -qq
  # A policy-rc.d that exits with 101 keeps the package from starting the
  # Prometheus server; one the machine has already is left in place.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
command -v curl >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
}

cargo build --release --quiet
bin=./target/release/downpour
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

base=${METRICS_CHECK_PORT:-17550}
ps_port=$base
coordinator_port=$((base + 1))
ps_metrics=$((base + 2))
coordinator_metrics=$((base + 3))
worker0_metrics=$((base + 4))
worker1_metrics=$((base + 5))
train_metrics=$((base + 6))

DOWNPOUR_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export DOWNPOUR_TOKEN
failures=0

# Prints the value of the first sample of METRIC in FILE whose line
# contains every further argument, or nothing.
value_of() {
  local file=$1 metric=$2
  shift 2
  local line
  line=$(grep -E "^${metric}(\{| )" "$file" | { grep -F -- "${1:-}" || true; } | head -n 1)
  echo "${line##* }"
}

# Waits up to 120 s until METRIC in the scrape of PORT exceeds 0.
wait_for_positive() {
  local port=$1 metric=$2
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$port/metrics" >"$work/poll" 2>/dev/null; then
      local value
      value=$(value_of "$work/poll" "$metric")
      if [ -n "$value" ] && awk -v v="$value" 'BEGIN { exit !(v > 0) }'; then
        return 0
      fi
    fi
    sleep 0.2
  done
  echo "check-metrics: $metric on port $port never rose above 0" >&2
  return 1
}

# Scrapes PORT into NAME.prom, runs promtool on it and checks that each
# further METRIC is present.
check_scrape() {
  local name=$1 port=$2
  shift 2
  local file="$work/$name.prom"
  curl -sf "http://127.0.0.1:$port/metrics" >"$file"
  if promtool check metrics <"$file"; then
    echo "check-metrics: $name: promtool accepts $(grep -vc '^#' "$file") samples"
  else
    echo "check-metrics: $name: promtool rejected the scrape of port $port" >&2
    failures=$((failures + 1))
  fi
  for metric in "$@"; do
    if ! grep -qE "^${metric}(\{| )" "$file"; then
      echo "check-metrics: $name: $metric is missing from the scrape" >&2
      failures=$((failures + 1))
    fi
  done
}

ps_metrics_list=(downpour_ps_updates_total downpour_ps_pushes_applied_total
  downpour_ps_pushes_rejected_total downpour_ps_duplicate_pushes_total
  downpour_ps_push_staleness_updates_bucket downpour_rpc_server_duration_seconds_bucket)
coordinator_metrics_list=(downpour_coordinator_validation_error_ratio
  downpour_coordinator_examples_per_second downpour_rpc_server_duration_seconds_bucket)
worker_metrics_list=(downpour_worker_examples_per_second downpour_worker_gradient_norm
  downpour_worker_examples_total downpour_rpc_client_duration_seconds_bucket)

echo "check-metrics: cluster of separate processes"
"$bin" ps --listen "127.0.0.1:$ps_port" --metrics-addr "127.0.0.1:$ps_metrics" \
  >"$work/ps.log" 2>&1 &
pids+=($!)
"$bin" coordinator --listen "127.0.0.1:$coordinator_port" --ps "127.0.0.1:$ps_port" \
  --workers 2 --max-epochs 3 --eval-every 50 --run-dir "$work/cluster-run" \
  --metrics-addr "127.0.0.1:$coordinator_metrics" >"$work/coordinator.log" 2>&1 &
coordinator_pid=$!
pids+=($coordinator_pid)
for index in 0 1; do
  port=$((worker0_metrics + index))
  "$bin" worker --coordinator "127.0.0.1:$coordinator_port" --name "worker-$index" \
    --metrics-addr "127.0.0.1:$port" >"$work/worker-$index.log" 2>&1 &
  pids+=($!)
done

if wait_for_positive "$coordinator_metrics" downpour_coordinator_evaluations_total; then
  check_scrape ps "$ps_metrics" "${ps_metrics_list[@]}"
  check_scrape coordinator "$coordinator_metrics" "${coordinator_metrics_list[@]}"
  check_scrape worker-0 "$worker0_metrics" "${worker_metrics_list[@]}"
  check_scrape worker-1 "$worker1_metrics" "${worker_metrics_list[@]}"
  updates=$(value_of "$work/ps.prom" downpour_ps_updates_total)
  if ! awk -v v="$updates" 'BEGIN { exit !(v > 0) }'; then
    echo "check-metrics: ps: downpour_ps_updates_total is '$updates' while training" >&2
    failures=$((failures + 1))
  fi
else
  failures=$((failures + 1))
  tail -n 20 "$work"/*.log >&2
fi
# The cluster has been checked; it need not finish its epochs.
for pid in "${pids[@]}"; do
  kill "$pid" 2>/dev/null || true
done
wait 2>/dev/null || true
pids=()

echo "check-metrics: downpour train"
"$bin" train --max-epochs 3 --eval-every 50 --run-dir "$work/train-run" \
  --metrics-addr "127.0.0.1:$train_metrics" >"$work/train.log" 2>&1 &
pids+=($!)
if wait_for_positive "$train_metrics" downpour_coordinator_evaluations_total; then
  check_scrape train "$train_metrics" "${ps_metrics_list[@]}" \
    "${coordinator_metrics_list[@]}" "${worker_metrics_list[@]}"
  for node in ps-0 coordinator local-0 local-1; do
    if ! grep -q "node=\"$node\"" "$work/train.prom"; then
      echo "check-metrics: train: no metric of node $node" >&2
      failures=$((failures + 1))
    fi
  done
else
  failures=$((failures + 1))
  tail -n 20 "$work/train.log" >&2
fi

if [ "$failures" -gt 0 ]; then
  echo "check-metrics: $failures failures" >&2
  exit 1
fi
echo "check-metrics: every endpoint passed promtool"
