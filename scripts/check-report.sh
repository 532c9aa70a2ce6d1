#!/usr/bin/env bash
# Renders a run's report.html in headless Chromium, keeps a screenshot of it
# as report.png in the run directory, and checks that the page shows at
# least MIN_PLOTS SVG plots.
#
# Usage: scripts/check-report.sh RUN_DIR [MIN_PLOTS]
#
# Chromium comes from Debian's chromium package, installed with apt-get
# when missing (which needs root). The report is written first with the
# release build of downpour.
set -euo pipefail
cd "$(dirname "$0")/.."

run_dir=${1:?usage: scripts/check-report.sh RUN_DIR [MIN_PLOTS]}
min_plots=${2:-10}
if [ ! -f "$run_dir/summary.json" ]; then
  echo "check-report: $run_dir/summary.json not found; pass the directory of a finished run" >&2
  exit 2
fi

if ! command -v chromium >/dev/null; then
  echo "check-report: installing Debian's chromium package" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

cargo build --release --quiet --bin downpour
./target/release/downpour report "$run_dir"
page="file://$(realpath "$run_dir/report.html")"

# --no-sandbox because CI containers run as root, where Chromium's sandbox
# cannot start. The page loads nothing from the network, so the
# sandbox guards against nothing here.
browser=(chromium --headless --no-sandbox --disable-gpu --hide-scrollbars)
"${browser[@]}" --window-size=1240,2750 --screenshot="$run_dir/report.png" "$page" 2>/dev/null
if [ ! -s "$run_dir/report.png" ]; then
  echo "check-report: Chromium wrote no screenshot" >&2
  exit 1
fi

# Count the plots in the DOM Chromium built from the page, not in the file.
plots=$("${browser[@]}" --dump-dom "$page" 2>/dev/null | grep -o '<figure><svg' | wc -l)
echo "check-report: $plots SVG plots rendered; screenshot in $run_dir/report.png"
if [ "$plots" -lt "$min_plots" ]; then
  echo "check-report: expected at least $min_plots plots" >&2
  exit 1
fi
