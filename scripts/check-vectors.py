#!/usr/bin/env python3
"""An independent check of ledger/testdata/entry-vectors.json.

Rebuilds every vector's entry encoding from its fields using only the rules
in FORMAT.md (no Lifeledger code), then checks the encoding and the BLAKE3
hash. Needs the `blake3` package from PyPI.
"""
import json
import struct
import sys

import blake3


def u32(n):
    return struct.pack(">I", n)


def u64(n):
    return struct.pack(">Q", n)


def i64(n):
    return struct.pack(">q", n)


def i32(n):
    return struct.pack(">i", n)


def lp(b):
    return u32(len(b)) + b


def encode(v):
    out = bytes([1])
    out += lp(v["chain"].encode())
    out += u64(v["seq"])
    out += bytes.fromhex(v["prev_hash"])
    out += i64(v["received_at_unix_nanos"])
    s = v["source"]
    if "file" in s:
        out += bytes([1]) + lp(s["file"].encode()) + u64(s["line"])
    else:
        out += bytes([2]) + lp(s["topic"].encode()) + i32(s["partition"]) + i64(s["offset"])
    b = v["body"]
    if b["type"] == "event":
        out += bytes([1]) + lp(bytes.fromhex(b["raw_hex"])) + lp(b["event_id"].encode())
        out += lp(bytes.fromhex(b["canonical_hex"]))
    else:
        out += bytes([2]) + lp(bytes.fromhex(b["raw_hex"])) + bytes([b["class"]])
        out += lp(b["reason"].encode())
    return out


def main(path):
    doc = json.load(open(path))
    ctx = doc["hash_context"]
    assert blake3.blake3(b"", derive_key_context=ctx).hexdigest() == doc["derive_key_of_empty_input"]
    prev_by_chain = {}
    for v in doc["vectors"]:
        enc = encode(v)
        assert enc.hex() == v["encoding_hex"], f"encoding differs: {v['name']}"
        h = blake3.blake3(enc, derive_key_context=ctx).hexdigest()
        assert h == v["hash"], f"hash differs: {v['name']}"
        expected_prev = prev_by_chain.get(v["chain"], "00" * 32)
        assert v["prev_hash"] == expected_prev, f"chain link differs: {v['name']}"
        prev_by_chain[v["chain"]] = h
    print(f"{len(doc['vectors'])} vectors reproduced independently")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ledger/testdata/entry-vectors.json")
