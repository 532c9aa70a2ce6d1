"""Checks a run directory's TensorBoard event file against events.jsonl.

Reads the event file with TensorBoard's own EventAccumulator and checks
that it contains exactly the numbers of events.jsonl: one scalar series per
numeric field (nested fields as `outer/inner`, list items as `list/0`,
booleans as 0 and 1), at step `updates`, with each value equal to the
JSON value rounded to float32, which is how TensorBoard stores scalars.

Usage: python check_tensorboard.py RUN_DIR
"""

import glob
import json
import os
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def flatten(value, path, out):
    """Appends (tag, number) for every number in value, as the writer does."""
    if isinstance(value, bool):
        out.append((path, 1.0 if value else 0.0))
    elif isinstance(value, (int, float)):
        out.append((path, float(value)))
    elif isinstance(value, dict):
        for key, item in value.items():
            flatten(item, f"{path}/{key}" if path else key, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            flatten(item, f"{path}/{index}" if path else str(index), out)


def main(run_dir):
    files = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    if len(files) != 1:
        sys.exit(f"{run_dir}: expected one events.out.tfevents.* file, found {len(files)}")

    expected = {}
    with open(os.path.join(run_dir, "events.jsonl"), encoding="utf-8") as rows:
        for line_number, line in enumerate(rows, start=1):
            row = json.loads(line)
            scalars = []
            flatten(row, "", scalars)
            for tag, number in scalars:
                expected.setdefault(tag, []).append((row["updates"], number))
    if not expected:
        sys.exit(f"{run_dir}/events.jsonl: no rows to compare")

    accumulator = EventAccumulator(files[0], size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    errors = []
    if tags != set(expected):
        errors.append(
            f"tags differ: only in the event file {sorted(tags - set(expected))}, "
            f"only in events.jsonl {sorted(set(expected) - tags)}"
        )
    compared = 0
    for tag in sorted(tags & set(expected)):
        events = accumulator.Scalars(tag)
        wanted = expected[tag]
        if len(events) != len(wanted):
            errors.append(f"{tag}: {len(events)} events, but events.jsonl has {len(wanted)} values")
            continue
        for event, (step, number) in zip(events, wanted):
            compared += 1
            if event.step != step:
                errors.append(f"{tag}: step {event.step}, but events.jsonl has updates {step}")
            if event.value != float(np.float32(number)):
                errors.append(
                    f"{tag} at step {step}: {event.value!r} in the event file, "
                    f"{number!r} in events.jsonl"
                )
    if errors:
        for error in errors[:20]:
            print(f"check-tensorboard: {error}", file=sys.stderr)
        sys.exit(f"check-tensorboard: {len(errors)} mismatches")
    print(
        f"check-tensorboard: {compared} scalars in {len(tags)} tags match events.jsonl "
        f"({os.path.basename(files[0])})"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
