"""Recompute Downpour's MNIST predictions with NumPy alone.

Usage: python_interop.py CHECKPOINT PREDICTIONS_CSV MNIST_DIR [COUNT]

Loads the checkpoint with the safetensors package, runs the MLP forward
pass in NumPy on the first COUNT test images (20 by default), and compares
the class and the class probabilities with the rows `downpour predict`
wrote. Exits with status 1 on any difference.
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


def predict(tensors, layers, x):
    """Return the class probabilities of the MLP: ReLU between layers, softmax at the end."""
    h = x
    for layer in range(layers):
        h = h @ tensors[f"layers.{layer}.weight"].T + tensors[f"layers.{layer}.bias"]
        if layer < layers - 1:
            h = np.maximum(h, 0)
    h = h - h.max(axis=1, keepdims=True)
    e = np.exp(h)
    return e / e.sum(axis=1, keepdims=True)


def main():
    checkpoint, predictions_csv, mnist_dir = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 20

    tensors = load_file(checkpoint)
    with safe_open(checkpoint, framework="np") as f:
        description = json.loads(f.metadata()["downpour.model"])
    layers = len(description["hidden"]) + 1
    for name, array in tensors.items():
        print(f"{name}: {array.dtype} {list(array.shape)}")

    x = read_idx_images(f"{mnist_dir}/t10k-images-idx3-ubyte.gz", count)
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


if __name__ == "__main__":
    main()
