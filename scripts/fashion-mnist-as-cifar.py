#!/usr/bin/env python3
"""Writes Fashion-MNIST as CIFAR-10 binary batches, for the CIFAR ResNets without CIFAR.

Each record is CIFAR-10's: one label byte, then 3 planes of 32x32 bytes. The 28x28 grey image
is centred in 32x32 (two zero pixels on every side) and copied to all three planes. The first
--train training images go to data_batch_1.bin ... data_batch_5.bin (a fifth each); all 10,000
test images go to test_batch.bin. Python's standard library only.

Usage: python3 scripts/fashion-mnist-as-cifar.py OUT [--train 10000] [--source DIR]
"""
import argparse
import gzip
import os


def idx(path, header):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read()[header:]


def find(directory, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise SystemExit(f"{directory}: no {stem} or {stem}.gz (Debian: apt-get install dataset-fashion-mnist)")


def records(images, labels, count):
    out = bytearray()
    for i in range(count):
        plane = bytearray(32 * 32)
        image = images[i * 784:(i + 1) * 784]
        for y in range(28):
            plane[(y + 2) * 32 + 2:(y + 2) * 32 + 30] = image[y * 28:(y + 1) * 28]
        out.append(labels[i])
        out += plane * 3
    return bytes(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=10000, help="training images written (a multiple of 5, at most 60000)")
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    if args.train <= 0 or args.train % 5 or args.train > 60000:
        raise SystemExit("--train must be a positive multiple of 5, at most 60000")
    os.makedirs(args.out, exist_ok=True)
    train = records(idx(find(args.source, "train-images-idx3-ubyte"), 16), idx(find(args.source, "train-labels-idx1-ubyte"), 8), args.train)
    per = args.train // 5 * 3073
    for b in range(5):
        with open(os.path.join(args.out, f"data_batch_{b + 1}.bin"), "wb") as f:
            f.write(train[b * per:(b + 1) * per])
    test = records(idx(find(args.source, "t10k-images-idx3-ubyte"), 16), idx(find(args.source, "t10k-labels-idx1-ubyte"), 8), 10000)
    with open(os.path.join(args.out, "test_batch.bin"), "wb") as f:
        f.write(test)
    print(f"wrote {args.train} training and 10000 test images to {args.out}")


if __name__ == "__main__":
    main()
