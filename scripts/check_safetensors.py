#!/usr/bin/env python3
"""Load a NeuMeta checkpoint with the reference `safetensors` package and print its contents.

Cross-checks the Swift writer against the Hugging Face implementation (not run by CI):

    python3 -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install safetensors numpy
    /tmp/stvenv/bin/python scripts/check_safetensors.py checkpoint.safetensors

Prints each tensor's name, dtype, shape and first values, then the metadata. When the metadata
holds a `blake2b` digest, it is recomputed over the data buffer (the tensor bytes in file order)
and compared. Exits non-zero if the file fails to load or the digest differs.
"""

import hashlib
import json
import struct
import sys

from safetensors import safe_open
from safetensors.numpy import load_file


def data_digest(path):
    """Hex BLAKE2b-256 of the data buffer, which starts after the 8-byte length and header."""
    with open(path, "rb") as f:
        (header_length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + header_length)
        return hashlib.blake2b(f.read(), digest_size=32).hexdigest()


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} FILE.safetensors", file=sys.stderr)
        return 2
    path = argv[1]
    tensors = load_file(path)
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        names = list(f.keys())
    for name in names:
        array = tensors[name]
        head = array.reshape(-1)[:6].tolist()
        print(f"{json.dumps(name)}: dtype={array.dtype} shape={list(array.shape)} values[:6]={head}")
    print(f"metadata: {json.dumps(metadata, ensure_ascii=False, sort_keys=True)}")
    if "blake2b" in metadata:
        actual = data_digest(path)
        if actual != metadata["blake2b"]:
            print(f"blake2b MISMATCH: recorded {metadata['blake2b']}, data hashes to {actual}")
            return 1
        print("blake2b ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
