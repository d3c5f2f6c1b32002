#!/usr/bin/env python3
"""An independent check of the known-answer vectors in ledger/testdata/.

Using only the rules in FORMAT.md (no Lifeledger code): rebuilds every entry
encoding from its fields and checks its BLAKE3 hash (entry-vectors.json);
recomputes Merkle roots, verifies the inclusion and consistency proofs with
the RFC 9162 algorithms, and recomputes the ledger root and key ID of the
checkpoint (audit-vectors.json). Needs the `blake3` package from PyPI. The
Ed25519 signature of the vector checkpoint is not checked here; `cargo test`
checks it.

With a third argument, a tamper-corpus directory (tests/tamper-corpus/), it
also verifies every bundle there as FORMAT.md sections 11 and 12 say, with
the `cryptography` package for Ed25519, and checks that each gets the class
and first bad seq its `.expected.json` names (and that intact ones get
none). Events are re-derived semantically: the recorded event id and
canonical JSON must say what the raw bytes say (event_time normalised to
UTC, defaulted fields allowed), without the event schema.
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


# ---- bundles (FORMAT.md sections 3, 4, 8-12) --------------------------------

ENTRY_CONTEXT = "lifeledger 2026-11 entry v1"


class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, n):
        if self.i + n > len(self.d):
            raise ValueError("truncated")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def bytes_(self):
        return self.take(self.u32())

    def str_(self):
        return self.bytes_().decode("utf-8")

    def hashes(self):
        return [self.take(32) for _ in range(self.u32())]

    def done(self):
        return self.i == len(self.d)


def decode_entry(enc):
    r = Reader(enc)
    if r.u8() != 1:
        raise ValueError("version")
    e = {"chain": r.str_(), "seq": r.u64(), "prev": r.take(32), "received_at": r.i64()}
    tag = r.u8()
    if tag == 1:
        e["source"] = ("file", r.str_(), r.u64())
    elif tag == 2:
        e["source"] = ("kafka", r.str_(), r.i32(), r.i64())
    else:
        raise ValueError("source tag")
    tag = r.u8()
    if tag == 1:
        e["body"] = ("event", r.bytes_(), r.str_(), r.bytes_())
    elif tag == 2:
        e["body"] = ("rejected", r.bytes_(), r.u8(), r.str_())
    else:
        raise ValueError("body tag")
    if not r.done():
        raise ValueError("trailing bytes")
    return e


def entry_hash(enc):
    return blake3.blake3(enc, derive_key_context=ENTRY_CONTEXT).digest()


def read_bundle(data):
    magic = b"LIFELEDGER-BUNDLE\n"
    if not data.startswith(magic):
        raise ValueError("not a bundle")
    r = Reader(data[len(magic):])
    if r.u32() != 1:
        raise ValueError("bundle version")
    records = []
    while True:
        tag, payload = r.u8(), r.bytes_()
        if tag == 0:
            if struct.unpack(">Q", payload)[0] != len(records) or not r.done():
                raise ValueError("end record")
            return records
        records.append((tag, payload))


def parse_key(text):
    name, key_id, b64 = text.strip().split("+", 2)
    key = base64.b64decode(b64)
    if key[0] != 1 or len(key) != 33:
        raise ValueError("key type")
    if hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() != key_id:
        raise ValueError("key id")
    return name, bytes.fromhex(key_id), key[1:]


def verify_note(note, key):
    """The checkpoint's body fields, or ("wrong_key"|"forged_signature", why)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    name, key_id, pk = key
    body, _, sigs = note.partition("\n\n")
    body += "\n"
    blobs = []
    for line in sigs.split("\n"):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014":
            return ("forged_signature", "bad signature line")
        blob = base64.b64decode(parts[2])
        if parts[1] == name and blob[:4] == key_id:
            blobs.append(blob[4:])
    if not blobs:
        return ("wrong_key", "no signature by the key given")
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(blobs[0], body.encode())
    except InvalidSignature:
        return ("forged_signature", "signature does not verify")
    lines = body.rstrip("\n").split("\n")
    chains = {}
    ledger = b"\x02"
    for l in lines[4:]:
        _, cname, csize, croot = l.split(" ")
        chains[cname] = (int(csize), base64.b64decode(croot))
        ledger += struct.pack(">I", len(cname.encode())) + cname.encode() + struct.pack(">Q", int(csize)) \
            + base64.b64decode(croot)
    if b3(ledger) != base64.b64decode(lines[2]) or int(lines[1]) != sum(c[0] for c in chains.values()):
        return ("forged_signature", "ledger root or size does not match the chain lines")
    return {"origin": lines[0], "size": int(lines[1]), "time": lines[3], "chains": chains}


def normalise_time(t):
    from datetime import datetime, timezone
    d = datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(timezone.utc)
    frac = f"{d.microsecond:06d}".rstrip("0")
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (("." + frac) if frac else "") + "Z"


def event_says_its_bytes(raw, event_id, canonical):
    try:
        got, rec = json.loads(raw), json.loads(canonical)
    except ValueError:
        return False
    if got.get("event_id") != event_id:
        return False
    got["event_time"] = normalise_time(got["event_time"])

    def same(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            # Every field received is recorded, with the same value; the
            # record may add defaulted fields (false).
            return all(k in b and same(v, b[k]) for k, v in a.items()) and \
                all(k in a or b[k] is False for k in b)
        return a == b
    return same(got, rec)


def is_publication(canonical):
    try:
        v = json.loads(canonical)
        return v.get("kind", {}).get("type") == "policy_published", v.get("kind", {}).get("policy_hash")
    except ValueError:
        return False, None


def check_body(chain, e):
    """None, or (class, why) for an event on the wrong chain or contradicting its bytes."""
    if e["body"][0] != "event":
        return None
    _, raw, event_id, canonical = e["body"]
    if not event_says_its_bytes(raw, event_id, canonical):
        return ("changed_entry", "event contradicts its raw bytes")
    try:
        kind = json.loads(canonical).get("kind", {}).get("type")
    except ValueError:
        kind = None
    reserved = {"policy_published": "policy", "history_imported": "imports"}
    if (kind in reserved and reserved[kind] != chain) or \
            (chain in reserved.values() and reserved.get(kind) != chain):
        return ("misplaced_publication", "a ledger record off its chain, or another event on it")
    return None


def verify_bundle(data, key, trusted=None):
    """Findings: (class, chain, first bad seq)."""
    records = read_bundle(data)
    findings = []
    manifest = json.loads(records[0][1]) if records and records[0][0] == 1 else {}
    partial = manifest.get("scope", {}).get("kind", "full") != "full"
    for tag, p in records:
        if tag == 2:
            try:
                if parse_key(p.decode())[2] != key[2]:
                    findings.append(("wrong_key", None, None))
            except ValueError:
                findings.append(("wrong_key", None, None))
    checkpoints = []
    for tag, p in records:
        if tag == 4:
            c = verify_note(p.decode(), key)
            if isinstance(c, tuple):
                findings.append((c[0], None, None))
            else:
                checkpoints.append(c)
    trusted_cp = None
    if trusted is not None:
        t = verify_note(trusted, key)
        if isinstance(t, tuple):
            findings.append((t[0], None, None))
        else:
            trusted_cp = t
    if not checkpoints:
        findings.append(("no_checkpoint", None, None))
    checkpoints.sort(key=lambda c: (c["size"], c["time"]))
    signed = {}
    for c in checkpoints + ([trusted_cp] if trusted_cp else []):
        for name, (size, root) in c["chains"].items():
            if signed.setdefault((name, size), root) != root:
                findings.append(("fork", name, None))
    entries, proofs = {}, {}
    for tag, p in records:
        if tag == 5:
            h, enc = p[:32], p[32:]
            try:
                chain = decode_entry(enc)["chain"]
            except (ValueError, UnicodeDecodeError):
                chain = ""
            entries.setdefault(chain, []).append((h, enc))
        elif tag == 6:
            r = Reader(p)
            chain, seq, size, proof = r.str_(), r.u64(), r.u64(), r.hashes()
            proofs[(chain, seq)] = (size, proof)
    latest = checkpoints[-1] if checkpoints else None
    names = set(entries) | {n for (n, _) in signed}
    for name in sorted(names):
        es = entries.get(name, [])
        sizes = sorted(s for (n, s) in signed if n == name)
        latest_size = latest["chains"].get(name, (0, None))[0] if latest else 0
        if partial:
            prev = None
            for h, enc in es:
                try:
                    e = decode_entry(enc)
                except (ValueError, UnicodeDecodeError):
                    findings.append(("changed_entry", name, None))
                    break
                seq = e["seq"]
                if entry_hash(enc) != h:
                    findings.append(("changed_entry", name, seq))
                    break
                if prev and seq <= prev[0]:
                    findings.append(("swapped_entry", name, seq))
                    break
                if prev and seq == prev[0] + 1 and e["prev"] != prev[1]:
                    findings.append(("inserted_entry", name, seq))
                    break
                bad = check_body(name, e)
                if bad:
                    findings.append((bad[0], name, seq))
                    break
                size, proof = proofs.get((name, seq), (None, None))
                root = signed.get((name, size))
                if root is None or not verify_inclusion(seq, size, leaf(h), proof, root):
                    findings.append(("bad_proof", name, seq))
                    break
                prev = (seq, h)
            continue
        prev, leaves, broken = b"\x00" * 32, [], False
        for i, (h, enc) in enumerate(es):
            try:
                e = decode_entry(enc)
            except (ValueError, UnicodeDecodeError):
                findings.append(("changed_entry", name, i))
                broken = True
                break
            cls = None
            if entry_hash(enc) != h:
                cls = "changed_entry"
            elif e["chain"] != name:
                cls = "inserted_entry"
            elif e["seq"] > i:
                later = any(decode_entry(x)["seq"] == i for _, x in es[i + 1:])
                cls = "swapped_entry" if later else "removed_entry"
            elif e["seq"] < i or e["prev"] != prev:
                cls = "inserted_entry"
            else:
                bad = check_body(name, e)
                cls = bad[0] if bad else None
            if cls:
                findings.append((cls, name, i))
                broken = True
                break
            leaves.append(leaf(h))
            prev = h
        if broken:
            continue
        vouched = 0
        for size in sizes:
            root = signed[(name, size)]
            if size > len(leaves):
                findings.append(("truncation", name, len(leaves)))
                break
            if mth(leaves[:size]) == root:
                vouched = max(vouched, size)
                continue
            trusted_only = trusted_cp and trusted_cp["chains"].get(name, (None,))[0] == size and \
                not any(c["chains"].get(name, (None,))[0] == size for c in checkpoints)
            findings.append(("fork" if trusted_only else "recomputed_chain", name, 0 if trusted_only else vouched))
            break
        if trusted_cp and trusted_cp["chains"].get(name, (0,))[0] > latest_size:
            findings.append(("rollback", name, latest_size))
        sound = not any(f[1] == name for f in findings)
        if sound and latest and len(leaves) > latest_size:
            findings.append(("unvouched_tail", name, latest_size))
    # Policy texts are evidence (section 12).
    published = {}
    for h, enc in entries.get("policy", []):
        try:
            e = decode_entry(enc)
        except (ValueError, UnicodeDecodeError):
            continue
        if e["body"][0] == "event":
            ok, hash_hex = is_publication(e["body"][3])
            if ok:
                published.setdefault(hash_hex, e["seq"])
    texts = set()
    for tag, p in records:
        if tag == 3:
            hx = blake3.blake3(p).hexdigest()
            texts.add(hx)
            if hx not in published:
                findings.append(("unpublished_policy", "policy", None))
    for hx, seq in published.items():
        if hx not in texts:
            findings.append(("missing_policy", "policy", seq))
    consistency = {}
    for tag, p in records:
        if tag == 7:
            r = Reader(p)
            chain, old, new, proof = r.str_(), r.u64(), r.u64(), r.hashes()
            consistency[(chain, old, new)] = proof
            a, b = signed.get((chain, old)), signed.get((chain, new))
            if a is not None and b is not None and not verify_consistency(old, new, a, b, proof):
                findings.append(("fork", chain, None))
    if partial:
        by_chain = {}
        for c in checkpoints:
            for name, (size, _) in c["chains"].items():
                if size > 0:
                    by_chain.setdefault(name, set()).add(size)
        for name, sizes in by_chain.items():
            sizes = sorted(sizes)
            for old, new in zip(sizes, sizes[1:]):
                if (name, old, new) not in consistency:
                    findings.append(("missing_consistency", name, None))
    return findings


def check_corpus(directory):
    import os
    cases = sorted(f[:-len(".expected.json")] for f in os.listdir(directory) if f.endswith(".expected.json"))
    failures = []
    for name in cases:
        expected = json.load(open(os.path.join(directory, name + ".expected.json")))
        key = parse_key(open(os.path.join(directory, expected["key"])).read())
        trusted = None
        if expected.get("trusted_checkpoint"):
            trusted = open(os.path.join(directory, expected["trusted_checkpoint"])).read()
        data = open(os.path.join(directory, name + ".bundle"), "rb").read()
        findings = verify_bundle(data, key, trusted)
        if expected["class"] == "intact":
            if findings:
                failures.append(f"{name}: expected intact, found {findings}")
        elif not any(c == expected["class"] and s == expected["first_bad_seq"] for c, _, s in findings):
            failures.append(f"{name}: expected {expected['class']} at {expected['first_bad_seq']}, found {findings}")
    if failures:
        sys.exit("tamper corpus, verified independently:\n" + "\n".join(failures))
    print(f"{len(cases)} tamper-corpus bundles verified independently, each with its expected verdict")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ledger/testdata/entry-vectors.json")
    check_audit(sys.argv[2] if len(sys.argv) > 2 else "ledger/testdata/audit-vectors.json")
    if len(sys.argv) > 3:
        check_corpus(sys.argv[3])
