"""Recompute Downpour's predictions with NumPy alone.

Usage: python_interop.py CHECKPOINT PREDICTIONS_CSV DATA [COUNT]

Loads the checkpoint with the safetensors package, scales the features with
the checkpoint's `downpour.scaling` metadata, runs the forward pass in
NumPy on the first COUNT examples (20 by default), and compares the result
with the rows `downpour predict` wrote. For a classifier DATA is an MNIST
folder, whose test images are read, and the classes and class
probabilities are compared. For a linear regression (`downpour.task` is
`regression`) DATA is a CSV file with a header and the target last, and
the predicted values are compared. Exits with status 1 on any difference.
"""

import csv
import gzip
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def read_idx_images(path, count):
    """Return the first `count` images of a gzipped IDX file as float32 rows in [0, 1]."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, images, rows, columns = np.frombuffer(data[:16], dtype=">u4")
    if magic != 0x803:
        raise SystemExit(f"{path}: not an IDX images file (magic {magic:#x})")
    pixels = np.frombuffer(data[16:], dtype=np.uint8, count=count * rows * columns)
    return pixels.reshape(count, rows * columns).astype(np.float32) / np.float32(255)


def scale(metadata, x):
    """Apply the feature scaling stored in the checkpoint, if any."""
    if "downpour.scaling" not in metadata:
        return x
    scaling = json.loads(metadata["downpour.scaling"])
    offset = np.array(scaling["offset"], dtype=np.float32)
    divisor = np.array(scaling["divisor"], dtype=np.float32)
    return (x - offset) / divisor


def outputs(tensors, layers, x):
    """Return the last layer's outputs: ReLU between layers, nothing after the last."""
    h = x
    for layer in range(layers):
        h = h @ tensors[f"layers.{layer}.weight"].T + tensors[f"layers.{layer}.bias"]
        if layer < layers - 1:
            h = np.maximum(h, 0)
    return h


def predict(tensors, layers, x):
    """Return the class probabilities of the MLP: softmax of the last layer's outputs."""
    h = outputs(tensors, layers, x)
    h = h - h.max(axis=1, keepdims=True)
    e = np.exp(h)
    return e / e.sum(axis=1, keepdims=True)


def main():
    checkpoint, predictions_csv, mnist_dir = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 20

    tensors = load_file(checkpoint)
    with safe_open(checkpoint, framework="np") as f:
        metadata = f.metadata()
    description = json.loads(metadata["downpour.model"])
    layers = len(description["hidden"]) + 1
    for name, array in tensors.items():
        print(f"{name}: {array.dtype} {list(array.shape)}")
    print(f"task {metadata['downpour.task']}, scaling {'downpour.scaling' in metadata}")

    if metadata["downpour.task"] == "regression":
        check_regression(tensors, layers, metadata, predictions_csv, mnist_dir, count)
        return
    x = scale(metadata, read_idx_images(f"{mnist_dir}/t10k-images-idx3-ubyte.gz", count))
    probabilities = predict(tensors, layers, x)

    with open(predictions_csv, newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    classes = len(probabilities[0])
    downpour = np.array(
        [[float(row[f"p_{c}"]) for c in range(classes)] for row in rows], dtype=np.float32
    )
    downpour_classes = np.array([int(row["class"]) for row in rows])

    difference = float(np.abs(downpour - probabilities).max())
    same_class = int((downpour_classes == probabilities.argmax(axis=1)).sum())
    print(
        f"{same_class} of {count} classes match; "
        f"largest probability difference {difference:.2e}"
    )
    if same_class != count or difference > 1e-4:
        sys.exit(1)


def check_regression(tensors, layers, metadata, predictions_csv, data_csv, count):
    """Compare the predicted values of the first `count` rows of a CSV file."""
    table = np.loadtxt(data_csv, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)
    x = scale(metadata, table[:count, :-1])
    values = outputs(tensors, layers, x)[:, 0]
    with open(predictions_csv, newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    downpour = np.array([float(row["value"]) for row in rows], dtype=np.float32)
    difference = float((np.abs(downpour - values) / (1 + np.abs(values))).max())
    print(f"{count} values compared; largest relative difference {difference:.2e}")
    if len(rows) != count or difference > 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    main()
