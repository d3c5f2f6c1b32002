#!/usr/bin/env python3
"""An independent check of the known-answer vectors in ledger/testdata/.

Using only the rules in FORMAT.md (no Lifeledger code): rebuilds every entry
encoding from its fields and checks its BLAKE3 hash (entry-vectors.json);
recomputes Merkle roots, verifies the inclusion and consistency proofs with
the RFC 9162 algorithms, and recomputes the ledger root and key ID of the
checkpoint (audit-vectors.json). Needs the `blake3` package from PyPI. The
Ed25519 signature itself is not checked here (no Ed25519 in the standard
library); `cargo test` checks it.
"""
import base64
import hashlib
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


def b3(data):
    return blake3.blake3(data).digest()


def leaf(entry_hash):
    return b3(b"\x00" + entry_hash)


def node(left, right):
    return b3(b"\x01" + left + right)


def mth(leaves):
    if not leaves:
        return b3(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(index, size, leaf_hash, proof, root):
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(m, n, old_root, new_root, proof):
    proof = list(proof)
    if m & (m - 1) == 0:
        proof.insert(0, old_root)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        assert sn != 0
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def check_audit(path):
    doc = json.load(open(path))
    entries = [bytes.fromhex(h) for h in doc["entry_hashes"]]
    for i, e in enumerate(entries):
        assert e == b3(struct.pack(">Q", i)), f"entry hash {i}"
    leaves = [leaf(e) for e in entries]
    assert [l.hex() for l in leaves] == doc["leaf_hashes"], "leaf hashes"
    assert b3(b"").hex() == doc["empty_root"]
    for r in doc["roots"]:
        assert mth(leaves[: r["size"]]).hex() == r["root"], f"root at size {r['size']}"
    inc = doc["inclusion"]
    root7 = mth(leaves)
    assert verify_inclusion(inc["index"], inc["size"], leaves[inc["index"]], [bytes.fromhex(p) for p in inc["proof"]], root7)
    con = doc["consistency"]
    assert verify_consistency(con["old_size"], con["new_size"], mth(leaves[: con["old_size"]]), root7,
                              [bytes.fromhex(p) for p in con["proof"]])
    cp = doc["checkpoint"]
    lines = cp["body"].rstrip("\n").split("\n")
    origin, size, root_b64, time = lines[0], int(lines[1]), lines[2], lines[3]
    chains = [l.split(" ") for l in lines[4:]]
    ledger = b"\x02"
    for _, name, csize, croot in chains:
        ledger += struct.pack(">I", len(name)) + name.encode() + struct.pack(">Q", int(csize)) + base64.b64decode(croot)
    assert b3(ledger).hex() == cp["ledger_root"] and base64.b64decode(root_b64).hex() == cp["ledger_root"], "ledger root"
    assert size == sum(int(c[2]) for c in chains), "checkpoint size"
    assert base64.b64decode(chains[0][3]) == root7
    name, key_id, key_b64 = cp["public_key"].split("+", 2)
    key = base64.b64decode(key_b64)
    assert key[0] == 1 and len(key) == 33
    assert hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == key_id == cp["key_id"], "key id"
    body, sig = cp["note"].split("\n\n", 1)
    assert body + "\n" == cp["body"]
    assert sig.startswith("\u2014 " + name + " ")
    blob = base64.b64decode(sig.split(" ")[2])
    assert blob[:4].hex() == key_id and len(blob) == 68, "signature line"
    print(f"Merkle roots for sizes 0-{len(leaves)}, an inclusion and a consistency proof, "
          "the ledger root and the key ID reproduced independently")


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
    check_audit(sys.argv[2] if len(sys.argv) > 2 else "ledger/testdata/audit-vectors.json")
