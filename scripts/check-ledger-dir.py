#!/usr/bin/env python3
"""An independent check of a Lifeledger ledger directory.

Using only FORMAT.md sections 3, 4, 15, 16 and 17 (no Lifeledger code):
reads the manifest, walks every chain's segment files up to the
acknowledged lengths, checks every header, frame, record hash and chain
link, and every sealed segment's size and hash. Prints one line per chain;
exits 1 naming the chain and first bad seq if anything fails, 0 if the
directory is intact. Needs the `blake3` and `zstandard` packages from PyPI.

usage: check-ledger-dir.py LEDGER_DIR
"""
import os
import struct
import sys

import blake3
import zstandard

ENTRY_CONTEXT = "lifeledger 2026-11 entry v1"
MAGIC = b"LLSEG\x00\x00\x01"


class Bad(Exception):
    def __init__(self, chain, seq, why):
        super().__init__(f"chain {chain!r}: BROKEN at seq {seq}: {why}")


def read_manifest(path):
    data = open(path, "rb").read()
    text = data.decode("utf-8")
    if not text.endswith("\n"):
        raise ValueError("manifest does not end with a newline")
    body, _, last = text[:-1].rpartition("\n")
    body += "\n"
    if not last.startswith("end ") or blake3.blake3(body.encode()).hexdigest() != last[4:]:
        raise ValueError("manifest checksum does not match")
    lines = body.splitlines()
    if lines[0] != "lifeledger-manifest/1" or not lines[1].startswith("generation "):
        raise ValueError("manifest does not start as specified")
    chains = {}
    current = None
    for line in lines[2:]:
        f = line.split(" ")
        if f[0] == "chain" and len(f) == 5:
            current = {"next": int(f[2]), "head": f[3], "sealed": [], "open": None}
            chains[f[1]] = current
        elif f[0] == "sealed" and len(f) == 5:
            current["sealed"].append((int(f[1]), int(f[2]), int(f[3]), f[4]))
        elif f[0] == "open" and len(f) == 3:
            current["open"] = (int(f[1]), int(f[2]))
        else:
            raise ValueError(f"unknown manifest line {line!r}")
    return chains


def entry_link(encoding):
    """(chain, seq, prev_hash) from an entry encoding (section 3)."""
    if encoding[0] != 1:
        raise ValueError("entry version is not 1")
    (n,) = struct.unpack(">I", encoding[1:5])
    chain = encoding[5 : 5 + n].decode("utf-8")
    (seq,) = struct.unpack(">Q", encoding[5 + n : 13 + n])
    prev = encoding[13 + n : 45 + n]
    return chain, seq, prev


def check_chain(ledger, name, state):
    folder = os.path.join(ledger, "segments", "c-" + name.replace("/", "%2F"))
    segments = [(s[0], s[2], [f"{s[0]:020}-{s[1]:020}-{s[3]}.seg", f"{s[0]:020}.open"]) for s in state["sealed"]]
    if state["open"]:
        first, size = state["open"]
        segments.append((first, size, [f"{first:020}.open"]))
    for first, nxt, _size, digest in state["sealed"]:
        names = (f"{first:020}-{nxt:020}-{digest}.seg", f"{first:020}.open")
        path = next((os.path.join(folder, n) for n in names if os.path.exists(os.path.join(folder, n))), None)
        if path is None or blake3.blake3(open(path, "rb").read()).hexdigest() != digest:
            raise Bad(name, first, "sealed segment missing or changed")
    expected, prev = 0, bytes(32)
    for first, size, names in segments:
        path = next((os.path.join(folder, n) for n in names if os.path.exists(os.path.join(folder, n))), None)
        if path is None:
            raise Bad(name, expected, f"segment {names[0]} missing")
        data = open(path, "rb").read()[:size]
        if len(data) < size:
            raise Bad(name, expected, "segment shorter than acknowledged")
        if data[:8] != MAGIC:
            raise Bad(name, expected, "bad segment magic")
        (n,) = struct.unpack(">H", data[8:10])
        end = 10 + n + 8
        if blake3.blake3(data[:end]).digest() != data[end : end + 32] or data[10 : 10 + n].decode() != name:
            raise Bad(name, expected, "bad segment header")
        (hfirst,) = struct.unpack(">Q", data[10 + n : end])
        if hfirst != first or first != expected:
            raise Bad(name, expected, "segment does not start where the chain stands")
        pos = end + 32
        while pos < size:
            if pos + 17 > size:
                raise Bad(name, expected, "frame header cut")
            body_len, codec, ffirst, count = struct.unpack(">IBQI", data[pos : pos + 17])
            body = data[pos + 17 : pos + 17 + body_len]
            digest = data[pos + 17 + body_len : pos + 17 + body_len + 32]
            if codec not in (0, 1) or ffirst != expected or len(body) != body_len or len(digest) != 32:
                raise Bad(name, expected, "bad frame header")
            frame_ok = blake3.blake3(data[pos : pos + 17] + body).digest() == digest
            if codec == 1:
                # A damaged compressed frame vouches for none of its records.
                if not frame_ok:
                    raise Bad(name, ffirst, "frame hash does not match its bytes")
                try:
                    body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 30)
                except zstandard.ZstdError as e:
                    raise Bad(name, ffirst, f"frame does not decompress: {e}")
                body_len = len(body)
            r = 0
            for _ in range(count):
                if r + 36 > body_len:
                    raise Bad(name, expected, "record framed past the end of its frame")
                (length,) = struct.unpack(">I", body[r : r + 4])
                if r + 36 + length > body_len:
                    raise Bad(name, expected, "record framed past the end of its frame")
                stored = body[r + 4 : r + 36]
                encoding = body[r + 36 : r + 36 + length]
                if blake3.blake3(encoding, derive_key_context=ENTRY_CONTEXT).digest() != stored:
                    raise Bad(name, expected, "entry hash does not match its encoding")
                chain, seq, link = entry_link(encoding)
                if chain != name or seq != expected or link != prev:
                    raise Bad(name, expected, "entry is not linked into the chain")
                prev, expected, r = stored, expected + 1, r + 36 + length
            if r != body_len or not frame_ok:
                raise Bad(name, ffirst, "frame hash does not match its bytes")
            pos += 17 + struct.unpack(">I", data[pos : pos + 4])[0] + 32
    if expected != state["next"] or prev.hex() != state["head"]:
        raise Bad(name, expected, f"acknowledged {state['next']} entries, {expected} readable")
    return expected


def main():
    ledger = sys.argv[1]
    try:
        chains = read_manifest(os.path.join(ledger, "manifest"))
    except (OSError, ValueError, UnicodeDecodeError, IndexError) as e:
        print(f"manifest unreadable: {e}")
        return 1
    broken = False
    for name, state in chains.items():
        if state["next"] == 0:
            continue
        try:
            n = check_chain(ledger, name, state)
            print(f"chain {name!r}: intact, {n} entries")
        except Bad as e:
            print(e)
            broken = True
        except (ValueError, struct.error, UnicodeDecodeError, IndexError) as e:
            print(f"chain {name!r}: BROKEN: {e}")
            broken = True
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
