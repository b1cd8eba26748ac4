"""Rewrites the `blake2b` metadata of safetensors checkpoints written by release builds before
the Digest fix (their digest was all zeros because -Ounchecked skipped the hashing calls).
The digest is BLAKE2b-256 of the data buffer, as CheckpointStore computes it.

usage: python3 scripts/fix_digest.py IN [OUT]   (OUT defaults to IN, rewritten in place)
"""
import hashlib, json, struct, sys

src = sys.argv[1]
dst = sys.argv[2] if len(sys.argv) > 2 else src
blob = open(src, "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
header = json.loads(blob[8:8 + n])
old = header["__metadata__"]["blake2b"]
new = hashlib.blake2b(blob[8 + n:], digest_size=32).hexdigest()
text = blob[8:8 + n].replace(old.encode(), new.encode(), 1)
assert len(text) == n
open(dst, "wb").write(blob[:8] + text + blob[8 + n:])
print(f"{dst}: blake2b {old[:12]}… → {new[:12]}…")
