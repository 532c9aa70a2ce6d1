#!/usr/bin/env python3
"""Runs `downpour train` over a grid of settings and prints a Markdown table.

Two grids are built in:

  knobs        2 workers, async: the transport knobs (--push-every,
               --fetch-every, --push-bf16) against the defaults; wall time
               matters, so run it on an idle machine.
  consistency  4, 8 and 16 workers in one process, async, bounded and sync,
               with and without staleness compensation. It counts updates,
               not seconds, so machine load changes the result less.

Every run stops when the validation accuracy reaches --target (97.5% by
default) or after --max-epochs. Early stopping is off (patience 1000), so a
run that stalls goes on to the epoch limit. Each row gives the median over
--runs runs.

Usage: bench/sweep.py knobs|consistency [--runs N] [--out DIR]
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "downpour"

KNOBS = [
    ("defaults", []),
    ("--push-bf16", ["--push-bf16"]),
    ("--fetch-every 2", ["--fetch-every", "2"]),
    ("--push-every 2", ["--push-every", "2"]),
    ("--push-every 4", ["--push-every", "4"]),
    ("--push-every 2 --fetch-every 2", ["--push-every", "2", "--fetch-every", "2"]),
    ("--push-every 2 --push-bf16", ["--push-every", "2", "--push-bf16"]),
]

MODES = [
    ("async", ["--consistency", "async"]),
    ("async, lr/(s+1)", ["--consistency", "async", "--staleness-scaling"]),
    ("async, DC λ=0.04", ["--consistency", "async", "--dc-lambda", "0.04"]),
    ("bounded:2", ["--consistency", "bounded:2"]),
    ("bounded:2, lr/(s+1)", ["--consistency", "bounded:2", "--staleness-scaling"]),
    ("bounded:2, DC λ=0.04", ["--consistency", "bounded:2", "--dc-lambda", "0.04"]),
    ("sync", ["--consistency", "sync"]),
]


def grid(name):
    if name == "knobs":
        return [(label, ["--workers", "2", *flags]) for label, flags in KNOBS]
    rows = []
    for workers in (4, 8, 16):
        for label, flags in MODES:
            rows.append((f"{workers} workers, {label}", ["--workers", str(workers), *flags]))
    return rows


def run_once(flags, run_dir, target, max_epochs):
    command = [
        str(BINARY),
        "train",
        "--run-dir",
        str(run_dir),
        "--eval-every",
        "100",
        "--target-accuracy",
        str(target),
        "--max-epochs",
        str(max_epochs),
        "--patience",
        "1000",
        *flags,
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        if "diverged" in completed.stderr:
            return {"diverged": True}
        sys.stderr.write(completed.stderr[-4000:])
        raise SystemExit(f"downpour failed: {' '.join(command)}")
    summary = json.loads((run_dir / "summary.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    hit = next((e for e in events if 1.0 - e["validation_error"] >= target), None)
    return {
        "diverged": False,
        "reached": hit is not None,
        "seconds": hit["wall_seconds"] if hit else float("inf"),
        "updates": hit["updates"] if hit else float("inf"),
        "epochs": hit["epoch"] if hit else float("inf"),
        "examples_per_second": summary["examples_per_second"],
        "pushes_per_update": summary["pushes"] / max(summary["updates"], 1),
        "mean_staleness": summary["staleness"]["mean"],
        "max_staleness": summary["staleness"]["max"],
        "test_accuracy": summary["test_accuracy"],
    }


def fmt(value, digits):
    if value == float("inf"):
        return "not reached"
    return f"{value:,.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", choices=["knobs", "consistency"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.975)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--match", default="", help="run only the rows whose label contains this")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "runs" / f"sweep-{args.grid}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)

    rows = [row for row in grid(args.grid) if args.match in row[0]]
    results = {label: [] for label, _ in rows}
    # Runs are interleaved across rows, so that a slow spell of the machine
    # does not fall on one row only.
    for run in range(args.runs):
        for index, (label, flags) in enumerate(rows):
            result = run_once(flags, out / f"row{index}-run{run}", args.target, args.max_epochs)
            results[label].append(result)
            if result["diverged"]:
                print(f"[{run + 1}/{args.runs}] {label}: diverged", file=sys.stderr, flush=True)
                continue
            print(
                f"[{run + 1}/{args.runs}] {label}: {fmt(result['seconds'], 1)} s, "
                f"{fmt(result['updates'], 0)} updates, "
                f"{result['examples_per_second']:,.0f} examples/s",
                file=sys.stderr,
                flush=True,
            )

    target = f"{100 * args.target:g}%"
    print(f"median of {args.runs} run(s); {os.cpu_count()} CPUs; {stamp}")
    print()
    print(
        f"| settings | s to {target} | updates to {target} | epochs to {target} | "
        "examples/s | pushes per update | mean / max staleness | test acc. at stop |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, _ in rows:
        diverged = sum(r["diverged"] for r in results[label])
        runs = [r for r in results[label] if not r["diverged"]]
        if not runs:
            print(f"| {label} | diverged in {diverged}/{diverged} | | | | | | |")
            continue

        def median(key):
            return statistics.median(r[key] for r in runs)

        reached = sum(r["reached"] for r in runs)
        note = "" if reached == len(runs) else f" ({reached}/{len(runs)} reached)"
        if diverged:
            note += f" ({diverged} diverged)"
        print(
            f"| {label}{note} | {fmt(median('seconds'), 1)} | {fmt(median('updates'), 0)} | "
            f"{fmt(median('epochs'), 2)} | {median('examples_per_second'):,.0f} | "
            f"{median('pushes_per_update'):.1f} | {median('mean_staleness'):.2f} / "
            f"{max(r['max_staleness'] for r in runs)} | {median('test_accuracy'):.4f} |"
        )


if __name__ == "__main__":
    main()
