#!/usr/bin/env python3
"""Independent check of an exported LeNet checkpoint (train-base or sample output).

Loads the safetensors file with the `safetensors` package (numpy backend, the same loader
PyTorch's safetensors uses), re-implements the paper's LeNet variant in numpy with PyTorch
semantics (conv weight [out, in, kh, kw], replicate padding, avg-pool 2, classifier on the
top-left feature position) and prints its Fashion-MNIST test accuracy, to compare with the
accuracy the Swift tool reports. Not used by CI.

    python3 -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install safetensors numpy
    /tmp/stvenv/bin/python scripts/check_lenet_numpy.py runs/lenet-32.safetensors
"""
import gzip, json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)

def conv_replicate(x, w, b):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="edge")
    cols = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # n, c, h, w, k, k
    return np.einsum("nchwij,ocij->nohw", cols, w, optimize=True) + b[None, :, None, None]

def pool(x):
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))

def main(path, data="/usr/share/datasets/fashion-mnist"):
    t = load_file(path)
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
    mean, std = json.loads(meta["input_mean"])[0], json.loads(meta["input_std"])[0]
    x = (idx(f"{data}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255 - mean) / std
    y = idx(f"{data}/t10k-labels-idx1-ubyte.gz")
    correct = 0
    for s in range(0, len(x), 500):
        h = x[s:s + 500, None]
        for layer in ("conv1", "conv2", "conv3"):
            h = pool(np.maximum(conv_replicate(h, t[f"{layer}.weight"], t[f"{layer}.bias"]), 0))
        logits = h[:, :, 0, 0] @ t["fc.weight"].T + t["fc.bias"]
        correct += int((logits.argmax(1) == y[s:s + 500]).sum())
    print(f"{path}: keys {sorted(t)}; numpy test accuracy {100 * correct / len(x):.2f}% "
          f"(metadata test_accuracy {meta.get('test_accuracy', '-')})")

if __name__ == "__main__":
    main(*sys.argv[1:])
