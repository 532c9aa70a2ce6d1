"""Summarize a bench/run_peers.sh output folder as one Markdown table.

Usage: python3 bench/summarize.py OUT_DIR

OUT_DIR contains meta.txt, one <system>-<run>.log per run and, for Downpour,
the run directories downpour-<run>/. The peers' figures come from the last
`RESULT {json}` line of their logs. Uses only the standard library.
"""

import json
import math
import statistics
import sys
from pathlib import Path

TARGET_ACCURACY = 0.975
# Training examples per epoch: the first 50,000 MNIST training images.
TRAIN_EXAMPLES = 50_000

LABELS = {
    "downpour": "Downpour, async SGD, 2 workers",
    "downpour-pe2": "Downpour, async SGD, 2 workers, --push-every 2",
    "torch1": "PyTorch, 1 thread",
    "torch2": "PyTorch, 2 threads",
    "hogwild": "PyTorch Hogwild, 2 processes",
    "rpc": "PyTorch RPC parameter server (TCP)",
    "sklearn": "scikit-learn MLP, 2 BLAS threads",
}

# The `peer` field and the settings that a RESULT line must carry for each
# system, so that a log from another peer or setting is rejected.
EXPECTED_PEER = {
    "torch1": ("pytorch", {"threads": 1}),
    "torch2": ("pytorch", {"threads": 2}),
    "hogwild": ("pytorch-hogwild", {"procs": 2}),
    "rpc": ("pytorch-rpc-ps", {}),
    "sklearn": ("scikit-learn", {"which": "mlp-manual"}),
}


def read_meta(out_dir):
    """Parse meta.txt, written by run_peers.sh as `key: value` lines."""
    meta = {}
    for line in (out_dir / "meta.txt").read_text().splitlines():
        key, _, value = line.partition(":")
        meta[key.strip()] = value.strip()
    return meta


def read_result_line(log_path):
    """Return the JSON object of the last `RESULT ` line in a log, or None."""
    if not log_path.exists():
        return None
    result = None
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return result


def read_downpour(out_dir, system, run):
    """Read one Downpour run directory into the common row format."""
    run_dir = out_dir / f"{system}-{run}"
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    seconds = epochs = None
    with open(run_dir / "events.jsonl") as events:
        for line in events:
            event = json.loads(line)
            # The tolerance absorbs the rounding of errors/validation_size.
            if event["validation_error"] <= 1.0 - TARGET_ACCURACY + 1e-9:
                seconds, epochs = event["wall_seconds"], event["epoch"]
                break
    return {
        "examples_per_second": summary["examples_per_second"],
        "seconds_to_target": seconds,
        "epochs_to_target": epochs,
        "test_accuracy": summary["test_accuracy"],
        "step_only_examples_per_second": None,
        "stop": f"{summary['stop_reason']} at {summary['epochs']:.2f} epochs",
    }


def read_peer(system, result, max_epochs):
    """Map one peer's RESULT object onto the common row format.

    The examples/s figure includes the validation passes. The Hogwild and
    RPC peers report it directly. For torch_train.py and sklearn_peers.py it
    is the budget's examples over their total training wall time, which is
    exact because they train every epoch of the budget.
    """
    if system in ("torch1", "torch2", "sklearn"):
        wall_rate = max_epochs * TRAIN_EXAMPLES / result["wall_total_15_epochs_s"]
        test_accuracy = result["max15_test_acc_at_best_val"]
        step_only = result["examples_per_s_steady"]
    elif system == "hogwild":
        wall_rate = result["examples_per_s_wall"]
        test_accuracy = result["test_acc_at_max_best_val"]
        step_only = result["examples_per_s_steady_sum"]
    else:
        wall_rate = result["examples_per_s"]
        test_accuracy = result["test_acc_at_max_best_val"]
        step_only = None
    return {
        "examples_per_second": wall_rate,
        "seconds_to_target": result["wall_s_to_target"],
        "epochs_to_target": result["epochs_to_target"],
        "test_accuracy": test_accuracy,
        "step_only_examples_per_second": step_only,
        "stop": f"{max_epochs} epochs",
    }


def check_peer(system, result, log_path):
    """Raise ValueError when a RESULT line comes from another peer or setting."""
    peer, fields = EXPECTED_PEER[system]
    if result.get("peer") != peer:
        raise ValueError(f"{log_path}: expected peer '{peer}', found '{result.get('peer')}'")
    for key, value in fields.items():
        if result.get(key) != value:
            raise ValueError(f"{log_path}: expected {key}={value}, found {result.get(key)}")
    if result.get("target") != TARGET_ACCURACY:
        raise ValueError(f"{log_path}: expected target {TARGET_ACCURACY}, found {result.get('target')}")


def collect(out_dir, systems, runs, max_epochs):
    """Return {system: [row or None per run]} and the peers' package versions."""
    rows, versions = {}, {}
    for system in systems:
        rows[system] = []
        for run in range(1, runs + 1):
            if system.startswith("downpour"):
                rows[system].append(read_downpour(out_dir, system, run))
                continue
            log_path = out_dir / f"{system}-{run}.log"
            result = read_result_line(log_path)
            if result is None:
                rows[system].append(None)
                continue
            check_peer(system, result, log_path)
            for package in ("torch", "sklearn", "numpy"):
                if package in result:
                    versions[package] = result[package]
            try:
                rows[system].append(read_peer(system, result, max_epochs))
            except KeyError as error:
                raise ValueError(f"{log_path}: the RESULT line has no field {error}") from error
    return rows, versions


def median_of(rows, key):
    """Return the median over finished runs, counting a run that never reached the target as infinite."""
    values = [math.inf if row[key] is None else row[key] for row in rows if row is not None]
    return statistics.median(values) if values else None


def format_rate(value):
    return "n/a" if value is None else f"{value:,.0f}"


def format_seconds(value):
    if value is None:
        return "n/a"
    return "not reached" if math.isinf(value) else f"{value:.1f}"


def format_accuracy(value):
    return "n/a" if value is None else f"{value:.4f}"


def format_ratio(numerator, denominator):
    if numerator is None or denominator is None:
        return "n/a"
    if math.isinf(numerator) or math.isinf(denominator) or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:.2f}"


def print_main_table(rows, systems, runs):
    """One row per system; for every Downpour variant run, two ratio columns."""
    variants = [system for system in systems if system.startswith("downpour")]
    header = "| system | runs | examples/s | s to 97.5% val. acc. | test acc. "
    for variant in variants:
        header += f"| examples/s {variant}/peer | s to 97.5% {variant}/peer "
    print(header + "|")
    print("| --- " * (5 + 2 * len(variants)) + "|")
    reference = {
        variant: (median_of(rows[variant], "examples_per_second"),
                  median_of(rows[variant], "seconds_to_target"))
        for variant in variants
    }
    for system in systems:
        finished = [row for row in rows[system] if row is not None]
        rate = median_of(finished, "examples_per_second")
        seconds = median_of(finished, "seconds_to_target")
        accuracy = median_of(finished, "test_accuracy")
        reached = sum(1 for row in finished if row["seconds_to_target"] is not None)
        seconds_text = format_seconds(seconds)
        if finished and reached < len(finished):
            seconds_text += f" ({reached} of {len(finished)} reached)"
        line = (f"| {LABELS[system]} | {len(finished)} of {runs} | {format_rate(rate)} | {seconds_text} "
                f"| {format_accuracy(accuracy)} ")
        for variant in variants:
            if system.startswith("downpour"):
                line += "| | "
                continue
            variant_rate, variant_seconds = reference[variant]
            line += f"| {format_ratio(variant_rate, rate)} | {format_ratio(variant_seconds, seconds)} "
        print(line + "|")


def print_run_table(rows, systems):
    print("| system | run | examples/s | s to 97.5% | epochs to 97.5% | test acc. "
          "| step-only examples/s | stopped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for system in systems:
        for run, row in enumerate(rows[system], start=1):
            if row is None:
                print(f"| {LABELS[system]} | {run} | failed: no result | | | | | |")
                continue
            seconds = row["seconds_to_target"]
            epochs = row["epochs_to_target"]
            print(f"| {LABELS[system]} | {run} | {format_rate(row['examples_per_second'])} "
                  f"| {'not reached' if seconds is None else f'{seconds:.1f}'} "
                  f"| {'not reached' if epochs is None else f'{epochs:.2f}'} "
                  f"| {format_accuracy(row['test_accuracy'])} "
                  f"| {format_rate(row['step_only_examples_per_second'])} | {row['stop']} |")


NOTES = """\
How to read it: each figure is the median over the finished runs. A
Downpour/peer ratio above 1 for examples/s means Downpour processes more
examples per second. A ratio below 1 for seconds to 97.5% means Downpour
reaches the target sooner.

- examples/s: training examples over the wall time of training, validation
  passes included and data loading excluded. For Downpour it is
  `examples_per_second` of summary.json (examples up to the stop decision).
  For the Hogwild and RPC peers it is their `examples_per_s_wall` and
  `examples_per_s` fields. For torch_train.py and sklearn_peers.py it is
  the epoch budget times 50,000 over `wall_total_15_epochs_s`, since their
  own examples/s fields count optimizer-step time only.
- step-only examples/s (per-run table): the peers' own figure that leaves
  out validation and bookkeeping. It is `examples_per_s_steady`, the
  median over the quarter-epoch segments after the first, or for Hogwild
  `examples_per_s_steady_sum`, summed over the processes. It is higher
  than the wall-time figure as a rule, and Downpour has no counterpart.
- s to 97.5%: seconds from the start of training to the first
  validation pass with at least 97.5% accuracy on the last 10,000 training
  images, validation passes included. Downpour validates every 195 updates
  (`--eval-every 195`) and the peers every quarter epoch. The
  single-process peers validate after 195 or 196 minibatches, and Hogwild
  and RPC each time the shared example count passes a multiple of 12,500.
- test acc.: accuracy on the 10,000 test images of the θ with the best
  validation accuracy. The peers always train the whole budget and pick
  the best θ of all its validation passes. Downpour stops early after 20
  validation passes without improvement, or at the budget, and keeps the
  best θ up to then.
- Downpour shuffles the 50,000 training images once with its own
  generator and seed (42), and the peers with numpy's default_rng(0). So
  the minibatch order differs, but the split is the same."""


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py OUT_DIR (a folder written by bench/run_peers.sh)")
    out_dir = Path(sys.argv[1])
    if not (out_dir / "meta.txt").exists():
        sys.exit(f"{out_dir}: meta.txt not found; expected a folder written by bench/run_peers.sh")
    meta = read_meta(out_dir)
    systems = meta["systems"].split()
    runs = int(meta["runs"])
    max_epochs = int(meta["max_epochs"])
    try:
        rows, versions = collect(out_dir, systems, runs, max_epochs)
    except ValueError as error:
        sys.exit(f"summarize.py: {error}")

    quick = " Quick mode: a check of the script, not a measurement." if meta["quick"] == "1" else ""
    print(f"Date: {meta['date']}. Machine: {meta['cpu']}, {meta['cores']} cores, "
          f"{meta['memory_gib']} GiB, {meta['kernel']}. {meta['rustc']}, Downpour "
          f"{meta['downpour_commit']}.")
    if versions:
        print("Peers: " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())) + ".")
    print(f"Budget: {max_epochs} epochs per run, {runs} run(s) per system, run one after the "
          f"other and interleaved.{quick}")
    print()
    print_main_table(rows, systems, runs)
    print()
    print_run_table(rows, systems)
    print()
    print(NOTES)


if __name__ == "__main__":
    main()
